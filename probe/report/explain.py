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
from probe.core.verdicts import CANT_TELL, LAYERS, LOW_CONFIDENCE, TAGS, VERDICTS
from probe.report.model import evidence_lines, short_time


class NothingToExplain(Exception):
    """No measurement of that URL, or no verdict for it yet; the message says what to do."""


def confidence_words(confidence: float | None) -> str:
    """``high (0.95)``: a number alone means little to a volunteer."""
    if confidence is None:
        return "unknown"
    word = "high" if confidence >= 0.8 else "medium" if confidence >= LOW_CONFIDENCE else "low"
    return f"{word} ({confidence:.2f})"


def _blocked_words(verdict: str, blocked: bool | None, confidence: float | None = None) -> str:
    if blocked is None:
        return (f"{CANT_TELL}: it failed here in a way censors use ({verdict} is the likely reading), but a "
                "site that is down for everyone fails the same way, and there was no control helper to tell "
                "them apart. Measure again with one: probe config set control URL (or --control URL)")
    if blocked and confidence is not None and confidence < LOW_CONFIDENCE:
        return ("perhaps: it failed here in a way censors use, but there was too little to compare "
                "with to be sure (see below)")
    if blocked:
        return "yes: this site is blocked on this network"
    if verdict == "ok":
        return "no: the site works on this network"
    if verdict == "down":
        return "no: the site is down everywhere (not censorship)"
    if verdict == "error":
        return "no verdict possible: the probe could not measure it"
    return "no"


def _show_hint(url: str, db_option: str | None) -> str:
    return f"probe show {url}" + (f" --db {db_option}" if db_option else "")


def explain_measurement(
    db: sqlite_utils.Database,
    ref: str,
    *,
    db_option: str | None = None,
    classifier_version: str | None = None,
) -> str:
    """The explanation of the latest measurement of ``ref`` (URL, host or measurement
    id), by the newest classifier that judged it. Raises NothingToExplain, with the
    next step in its message, when there is nothing to explain. ``db_option`` is
    repeated in the suggested commands when the database is not the default one."""
    mid = store.find_measurement_id(db, ref)
    if mid is None:
        raise NothingToExplain(f"no measurement of {ref} in this database (measure it with `probe run`)")
    m = store.measurement_row(db, mid)
    assert m is not None  # found above
    run = store.get_run(db, m["run_id"]) or {}
    url = m["url"]
    v = store.latest_verdict(db, mid, classifier_version)
    db_flag = f" --db {db_option}" if db_option else ""
    if v is None:
        raise NothingToExplain(
            f"{url} (measured {short_time(m['started_at'])} UTC) has no verdict yet: "
            f"run `probe analyze{db_flag}` first, then `probe explain {ref}{db_flag}`"
        )

    verdict = v["verdict"]
    blocked = None if v["blocked"] is None else bool(v["blocked"])
    meaning = VERDICTS.get(verdict, (blocked, "a verdict this probe version does not know"))[1]
    network = " ".join(x for x in (run.get("cc"), run.get("asn")) if x) or "an unknown network"
    if run.get("network_name"):
        network += f" ({run['network_name']})"
    evidence = evidence_lines(json.loads(v["evidence"] or "[]"))
    layers: dict[str, Any] = json.loads(v["layers"] or "{}")

    lines = [
        f"{url}",
        f"measured {short_time(m['started_at'])} UTC from {network}",
        "",
        f"Verdict:     {verdict}",
        f"Meaning:     {meaning}",
        f"Blocked:     {_blocked_words(verdict, blocked, v['confidence'])}",
        f"Confidence:  {confidence_words(v['confidence'])}",
        *(f"Note:        {TAGS[t][1]}" for t in json.loads(v.get("tags") or "[]") if t in TAGS),
        "",
        "Why:" if evidence else "Why: (no evidence lines recorded)",
        *(f"  {i}. {text}" for i, text in enumerate(evidence, 1)),
        "",
        "For researchers:",
        f"  decided by layer {v['layer'] or '-'}, rule {v['rule_id'] or '-'}; "
        f"classifier {v['classifier_version']}; measurement {mid}",
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
        lines.append("  no per-layer readings recorded")
    lines += ["", f"See the raw evidence: {_show_hint(url, db_option)}"]
    return "\n".join(lines) + "\n"


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
