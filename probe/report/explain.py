"""`probe explain`: one site's latest verdict in words a volunteer can act on.

The text goes from the plain (what the verdict means, whether it is a block, how sure
we are) to the technical (the evidence chain, each layer's (blocked, down, ok) reading
and rule id) and ends pointing at the raw observations (`probe show`), so a researcher
can check every step. Pure functions over the database: the caller prints.
"""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from probe import store
from probe.analysis.crossnet import judge_across, network_key
from probe.core.i18n import _
from probe.core.verdicts import CANT_TELL, LAYERS, LOW_CONFIDENCE, TAGS, VERDICTS
from probe.report.model import NO_CONFIDENCE_VERDICTS, confidence_level, db_name, evidence_lines, short_time
from probe.report.words import cant_tell_word, level_word


class NothingToExplain(Exception):
    """No measurement of that URL, or no verdict for it yet; the message says what to do."""


def confidence_words(confidence: float | None) -> str:
    """``high (0.95)``: a number alone means little to a volunteer. The scale is
    model.confidence_level's (high from model.HIGH_CONFIDENCE)."""
    if confidence is None:
        return _("unknown")
    return _("{level} ({number})").format(level=level_word(confidence_level(None, False, confidence)),
                                          number=f"{confidence:.2f}")


def _confidence_line(verdict: str, blocked: bool | None, confidence: float | None) -> str | None:
    """What follows "Confidence:", or None when no confidence word would be honest:
    for ``error`` the probe measured nothing, so there is nothing to be sure of."""
    if verdict in NO_CONFIDENCE_VERDICTS:
        return None
    if confidence_level(verdict, blocked, confidence) == CANT_TELL:
        return _("{cant_tell} (no control to compare with; the likely reading scores {number})").format(
            cant_tell=cant_tell_word(), number="-" if confidence is None else f"{confidence:.2f}")
    return confidence_words(confidence)


def _blocked_words(verdict: str, blocked: bool | None, confidence: float | None = None) -> str:
    if blocked is None:
        return _("{cant_tell}: it failed here in a way censors use ({verdict} is the likely reading), but a "
                 "site that is down for everyone fails the same way, and there was no control helper to tell "
                 "them apart. Measure again with one: probe config set control URL (or --control URL)").format(
                     cant_tell=cant_tell_word(), verdict=verdict)
    if blocked and confidence is not None and confidence < LOW_CONFIDENCE:
        return _("perhaps: it failed here in a way censors use, but there was too little to compare "
                 "with to be sure (see below)")
    if blocked:
        return _("yes: this site is blocked on this network")
    if verdict == "ok":
        return _("no: the site works on this network")
    if verdict == "down":
        return _("no: the site is down everywhere (not censorship)")
    if verdict == "error":
        return _("no verdict possible: the probe could not measure it")
    return _("no")


def _show_hint(url: str, db_option: str | None) -> str:
    return f"probe show {url}" + (f" --db {db_option}" if db_option else "")


def explain_data(
    db: sqlite_utils.Database,
    ref: str,
    *,
    classifier_version: str | None = None,
    db_option: str | None = None,
    network: str | None = None,
) -> dict[str, Any]:
    """The latest verdict of ``ref`` (URL, host or measurement id) by the newest
    classifier that judged it, as plain data: what `probe explain --json` prints and
    what the text is made from. Keys and values are untranslated (researchers' form);
    ``db`` is the database's file name, never its path. Raises NothingToExplain, with
    the next step in its message, when there is nothing to explain."""
    mid = store.find_measurement_id(db, ref, network=network)
    if mid is None:
        if network:
            raise NothingToExplain(_("no measurement of {ref} on {network} in this database").format(
                ref=ref, network=network))
        raise NothingToExplain(_("no measurement of {ref} in this database (measure it with `probe run`)").format(
            ref=ref))
    m = store.measurement_row(db, mid)
    assert m is not None  # found above
    run = store.get_run(db, m["run_id"]) or {}
    url = m["url"]
    v = store.latest_verdict(db, mid, classifier_version)
    db_flag = f" --db {db_option}" if db_option else ""
    if v is None:
        raise NothingToExplain(
            _("{url} (measured {when} UTC) has no verdict yet: run `probe analyze{db_flag}` first, then "
              "`probe explain {ref}{db_flag}`").format(url=url, when=short_time(m["started_at"]), db_flag=db_flag,
                                                       ref=ref)
        )
    verdict = v["verdict"]
    blocked = None if v["blocked"] is None else bool(v["blocked"])
    confidence = v["confidence"]
    across, others = _across_networks(db, url, mid, v["classifier_version"])
    return {
        "url": url,
        "measurement_id": mid,
        "measured_at": m["started_at"],
        "run_id": m["run_id"],
        "db": db_name(store.db_file(db)),
        "network": {"cc": run.get("cc"), "asn": run.get("asn"), "name": run.get("network_name")},
        "verdict": verdict,
        "meaning": VERDICTS.get(verdict, (blocked, "a verdict this probe version does not know"))[1],
        "blocked": blocked,
        "confidence": confidence,
        "confidence_level": confidence_level(verdict, blocked, confidence),
        "tags": list(json.loads(v.get("tags") or "[]")),
        "evidence": [{"text": e.get("text"), "fields": e.get("fields") or {}} if isinstance(e, dict)
                     else {"text": str(e), "fields": {}} for e in json.loads(v["evidence"] or "[]")],
        "layer": v["layer"],
        "rule_id": v["rule_id"],
        "layers": json.loads(v["layers"] or "{}"),
        "classifier_version": v["classifier_version"],
        "across_networks": across,
        "other_networks": others,
        "deep": _deep(db, mid),
    }


def _deep(db: sqlite_utils.Database, mid: str) -> dict[str, Any] | None:
    """What a deep measurement of it found (`probe run --deep`), in words and fields."""
    from probe.analysis.deep import summarise

    result = store.load_deep(db, mid)
    return None if result is None else summarise(result)


def _across_networks(db: sqlite_utils.Database, url: str, mid: str,
                     classifier_version: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """This measurement judged with the other networks' measurements of the URL (the
    same stage `probe report` applies: probe.analysis.crossnet), and each other
    network's latest reading: on a collector's database, many networks side by side."""
    rows = list(store.report_rows(db, classifier_version, urls=[url]))
    own = next((r for r in rows if r["measurement_id"] == mid), None)
    if own is None:
        return None, []
    c = judge_across(rows).get(mid)
    latest: dict[str, dict[str, Any]] = {}
    for r in rows:  # in time order: the last one of a network is its latest
        latest[network_key(r)] = r
    latest.pop(network_key(own), None)
    others = [{"network": n, "verdict": r["verdict"], "blocked": r["blocked"], "measured_at": r["measured_at"],
               "measurement_id": r["measurement_id"]} for n, r in sorted(latest.items())]
    across = None if c is None else {
        "verdict": c.verdict, "blocked": c.blocked, "confidence": c.confidence, "rule_id": c.rule_id,
        "changed": c.changed, "evidence": c.evidence, "networks_compared": c.networks_compared,
        "cross_version": c.cross_version}
    return across, others


def explain_json(db: sqlite_utils.Database, ref: str, *, classifier_version: str | None = None,
                 network: str | None = None) -> str:
    """`probe explain --json`: ``explain_data`` as one JSON object."""
    return json.dumps(explain_data(db, ref, classifier_version=classifier_version, network=network),
                      ensure_ascii=False, indent=2, default=str) + "\n"


def explain_measurement(
    db: sqlite_utils.Database,
    ref: str,
    *,
    db_option: str | None = None,
    classifier_version: str | None = None,
    network: str | None = None,
) -> str:
    """The explanation of the latest measurement of ``ref`` (URL, host or measurement
    id), by the newest classifier that judged it. Raises NothingToExplain, with the
    next step in its message, when there is nothing to explain. ``db_option`` is
    repeated in the suggested commands when the database is not the default one."""
    d = explain_data(db, ref, classifier_version=classifier_version, db_option=db_option, network=network)
    verdict, blocked, confidence = d["verdict"], d["blocked"], d["confidence"]
    across = d["across_networks"]
    alone: str | None = None
    if across and across["changed"]:
        # what `probe report` shows: the verdict once other networks were heard
        alone = f"{verdict} ({_short_blocked(blocked)})"
        verdict, blocked, confidence = across["verdict"], across["blocked"], across["confidence"]
    net = d["network"]
    network = " ".join(x for x in (net["cc"], net["asn"]) if x) or _("an unknown network")
    if net["name"]:
        network += f" ({net['name']})"
    evidence = evidence_lines([*(across["evidence"] if across and across["changed"] else []), *d["evidence"]])
    layers: dict[str, Any] = d["layers"]

    # labels padded to one width (that of the longest, shown or not), whatever their
    # length in the volunteer's language
    labels = [_("Verdict:"), _("Meaning:"), _("Blocked:"), _("Confidence:"), _("Note:"), _("Alone:")]
    width = max(len(label) for label in labels) + 2
    fields: list[tuple[str, str]] = [
        (_("Verdict:"), verdict),
        (_("Meaning:"), _(VERDICTS[verdict][1]) if verdict in VERDICTS else d["meaning"]),
        (_("Blocked:"), _blocked_words(verdict, blocked, confidence)),
    ]
    conf_line = _confidence_line(verdict, blocked, confidence)
    if conf_line is not None:
        fields.append((_("Confidence:"), conf_line))
    fields += [(_("Note:"), _(TAGS[t][1])) for t in d["tags"] if t in TAGS]
    if alone is not None:
        fields.append((_("Alone:"), _("this measurement by itself said {verdict}").format(verdict=alone)))
    lines = [
        d["url"],
        _("measured {when} UTC from {network}").format(when=short_time(d["measured_at"]), network=network),
        "",
        *(f"{label:<{width}}{value}" for label, value in fields),
        "",
        _("Why:") if evidence else _("Why: (no evidence lines recorded)"),
        *(f"  {i}. {text}" for i, text in enumerate(evidence, 1)),
        *_other_networks_lines(d["other_networks"]),
        *_deep_lines(d["deep"]),
        "",
        _("For researchers:"),
        "  " + _("decided by layer {layer}, rule {rule}; classifier {classifier}; measurement {measurement}").format(
            layer=d["layer"] or "-", rule=d["rule_id"] or "-", classifier=d["classifier_version"],
            measurement=d["measurement_id"]),
    ]
    if layers:
        lines.append(f"  {'layer':<6} {'blocked':<8}{'down':<8}{'ok':<8}rule")
        for name in [*(n for n in LAYERS if n in layers), *(n for n in layers if n not in LAYERS)]:
            f = layers[name] or {}
            lines.append(
                f"  {name:<6} {_num(f.get('blocked'))}{_num(f.get('down'))}{_num(f.get('ok'))}"
                f"{f.get('rule_id') or '-'}" + (f" -> {f['verdict']}" if f.get("verdict") else "")
            )
    else:
        lines.append("  " + _("no per-layer readings recorded"))
    lines += ["", _("See the raw evidence: {command}").format(command=_show_hint(d["url"], db_option))]
    return "\n".join(lines) + "\n"


def _deep_lines(deep: dict[str, Any] | None) -> list[str]:
    """The trigger, whether the interference was injected, and where the censor sits."""
    if not deep:
        return []
    out = ["", _("Deep measurement:")]
    words = {"sni": _("the site's name in the TLS handshake (SNI)"), "host": _("the Host header of the HTTP request"),
             "address": _("the site's address"), "dns_name": _("the name in DNS questions"),
             "not_isolated": _("not isolated")}
    if deep.get("trigger"):
        out.append("  " + _("triggered by: {what}").format(what=words.get(deep["trigger"], deep["trigger"])))
    if deep.get("injected") == "injected":
        out.append("  " + _("the interfering packets were injected by something on the way, not sent by the site"))
    elif deep.get("injected") == "server":
        out.append("  " + _("the interfering packets came from the site itself, not from a censor"))
    if deep.get("where"):
        out.append("  " + str(deep["where"]))
    for why in deep.get("skipped") or []:
        out.append("  " + _("not done: {why}").format(why=why))
    return out


def _short_blocked(blocked: bool | None) -> str:
    if blocked is None:
        return cant_tell_word()
    return _("blocked") if blocked else _("not blocked")


def _other_networks_lines(others: list[dict[str, Any]]) -> list[str]:
    """Each other network's latest reading of the site, one line each."""
    if not others:
        return []
    out = ["", _("On other networks (latest):")]
    for o in others:
        out.append("  " + _("{network}: {verdict} ({blocked}), {when} UTC").format(
            network=o["network"], verdict=o["verdict"], blocked=_short_blocked(o["blocked"]),
            when=short_time(o["measured_at"])))
    return out


def _num(value: Any) -> str:
    return f"{value:<8.2f}" if isinstance(value, (int, float)) else f"{'-':<8}"


def explain(db: sqlite_utils.Database, ref: str, *, db_option: str | None = None,
            classifier_version: str | None = None) -> str:
    """Like explain_measurement, but "nothing to explain" is the answer rather than an
    error: what a caller that only shows text wants."""
    try:
        return explain_measurement(db, ref, db_option=db_option, classifier_version=classifier_version)
    except NothingToExplain as exc:
        return str(exc) + "\n"
