"""Reports over classified measurements: what is blocked, where, how, and since when.

Two halves, kept apart so each can be tested and changed alone:

* pure functions from ``store.report_rows`` rows to report structures
  (``collect``, ``site_network_table``, ``site_history``, ``method_counts``, ...);
* renderers from those structures to text (terminal, JSON, CSV, Markdown, one
  self-contained HTML file with a chart of sites x networks).

A "network" is a vantage point's country and ASN (``BY/AS6697``): that is what a
censor's policy follows, so several volunteers on the same ISP are one network, and
their databases can be merged. A "site" is a target URL (its domain labels charts).

Everything that comes from a database (titles, evidence, network names) is data from
the open internet or from a censor's blockpage: the HTML renderer escapes all of it and
forbids scripts with a Content-Security-Policy, and no renderer turns it into links.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

import sqlite_utils

from probe import store
from probe.analysis.crossnet import apply_crossnet, judge_across
from probe.core.records import utcnow
from probe.core.verdicts import CANT_TELL, LAYERS, LOW_CONFIDENCE, VERDICTS, tag_label

Row = dict[str, Any]

# The confidence from which a verdict is called "high" (explain's words, the headline's
# "K with high confidence"): one threshold, so the two never disagree.
HIGH_CONFIDENCE = 0.8

# Verdicts whose confidence means nothing to a reader: ``error`` says the probe could
# not measure, so "how sure" has no object. ``ok`` and ``down`` keep theirs (how sure
# the site is reachable, or down for everyone, is worth knowing).
NO_CONFIDENCE_VERDICTS = frozenset({"error"})

# How a site fares on one network, as the chart and the sort order see it: worst first.
STATUSES = ("blocked", "cant_tell", "error", "down", "ok")

# What the cross-network stage adds to a row, carried into every table and export.
CROSS_FIELDS = ("own_verdict", "own_blocked", "own_confidence", "cross_rule_id", "cross_version", "networks_compared")
# What a deep measurement (probe run --deep) adds: the trigger, injection, the censor's hop.
DEEP_FIELDS = ("trigger", "injected", "censor_hop", "censor_address", "where")

# --- collecting ------------------------------------------------------------------------


def collect(dbs: Sequence[sqlite_utils.Database], classifier_version: str | None = None) -> list[Row]:
    """Every classified measurement of every database, each row tagged with its ``db``.

    Several volunteers' databases (or the same one sent twice) are merged: a
    measurement id seen again is the same observation, so the first copy wins. Without
    ``classifier_version`` each database contributes its own newest classifier's
    verdicts, so an old database still shows up in the report. ``db`` is the file's
    name, never its path: reports are mailed and published, and a path names the
    volunteer's account (with ``run_id`` it still says where a row came from).
    """
    seen: set[str] = set()
    out: list[Row] = []
    for db in dbs:
        version = classifier_version
        if version is None:
            versions = store.classifier_versions(db)
            if not versions:
                continue
            version = versions[-1]
        name = db_name(store.db_file(db))
        examined = store.deep_measurement_ids(db)
        for row in store.report_rows(db, version):
            if row["measurement_id"] in seen:
                continue
            seen.add(row["measurement_id"])
            row["db"] = name
            if row["measurement_id"] in examined:
                _add_deep(db, row)
            out.append(row)
    out.sort(key=lambda r: (r["url"] or "", r["measured_at"] or "", r["measurement_id"]))
    # Many networks side by side: each measurement judged with the others of its URL
    # (analysis.crossnet); a measurement's own verdict stays in own_verdict.
    return apply_crossnet(out, judge_across(out))


def _add_deep(db: sqlite_utils.Database, row: Row) -> None:
    """The deep measurement's findings on the row (DEEP_FIELDS)."""
    from probe.analysis.deep import summarise

    result = store.load_deep(db, row["measurement_id"])
    if result is not None:
        found = summarise(result, own_asn=row.get("asn"))
        row.update({k: found.get(k) for k in DEEP_FIELDS})


def db_name(path: str) -> str:
    """``/home/anna/results/probe.db`` -> ``probe.db``: no path of the machine leaves it."""
    return PurePath(path).name or path


def runs_by_db(rows: Iterable[Row]) -> dict[str, list[str]]:
    """Database file name -> the short ids (as `probe show` lists them) of the runs it
    contributed: with the file name, that is how a report names where data came from."""
    runs: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        rid = str(r.get("run_id") or "")[:8]
        if rid:
            runs[r.get("db") or "?"].add(rid)
    return {name: sorted(ids) for name, ids in runs.items()}


# --- small helpers shared by the structures and the renderers ---------------------------


def network_sort_key(network: str) -> tuple:
    """``BY/AS6697`` before ``BY/AS25106``: ASNs in numeric order, within a country."""
    cc, _, asn = network.partition("/")
    digits = asn[2:] if asn[:2].upper() == "AS" else asn
    return (cc, int(digits) if digits.isdigit() else float("inf"), asn)


def network_of(row: Row) -> str:
    """``BY/AS6697``: the censor's policy follows country and ASN, not the volunteer."""
    cc, asn = row.get("cc"), row.get("asn")
    if not cc and not asn:
        return "unknown"  # a run without network lookup, e.g. an offline machine
    return f"{cc or '??'}/{asn or 'AS?'}"


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def short_time(value: str | None) -> str:
    """Minutes are enough for people; exports keep the full timestamp."""
    t = _parse_time(value)
    return t.strftime("%Y-%m-%d %H:%M") if t else (value or "")


def _latest_key(row: Row) -> tuple:
    t = _parse_time(row.get("measured_at"))
    return (t or datetime.min.replace(tzinfo=UTC), row.get("measured_at") or "", row["measurement_id"])


def is_blocked(verdict: str | None) -> bool:
    """A verdict of the blocked kind (whether or not this measurement could tell)."""
    return bool(verdict and VERDICTS.get(verdict, (False, ""))[0])


def blocked_word(blocked: bool | None) -> str:
    """yes / no / can't tell: what a person reads in every human format."""
    return CANT_TELL if blocked is None else ("yes" if blocked else "no")


def cant_tell(row: Row) -> bool:
    """The row's failure could not be told from an outage (blocked is null)."""
    return row.get("blocked", False) is None


def shown_verdict(row: Row) -> str:
    """The verdict as tables show it: a failure that could not be told from an outage
    keeps its likely verdict, marked; qualifiers (IPv4 only, slow link) follow."""
    marks = [CANT_TELL] if cant_tell(row) else []
    marks += [tag_label(t) for t in row.get("tags") or []]
    return f"{row['verdict']} ({', '.join(marks)})" if marks else row["verdict"]


def verdict_family(verdict: str | None) -> str:
    """``ok``, ``down``, ``error`` or the layer (``dns``, ``tcp``, ``tls``, ``http``)."""
    v = verdict or "error"
    return v.split(".", 1)[0]


def site_status(entry: Row) -> str:
    """One of STATUSES: what the chart colours and the sort order ranks. ``blocked``
    only when the measurement could tell; a blocked-kind failure without a control is
    ``cant_tell``; ``error`` (could not measure) and ``down`` are not blocked."""
    if entry.get("blocked") is True:
        return "blocked"
    if entry.get("blocked", False) is None:
        return "cant_tell"
    if entry.get("verdict") in ("error", "down"):
        return str(entry["verdict"])
    return "ok"


def confidence_level(verdict: str | None, blocked: bool | None, confidence: float | None) -> str | None:
    """``high``, ``medium`` or ``low`` (the scale of `probe explain`), CANT_TELL when
    the verdict had no control to tell it from an outage, None when confidence means
    nothing (``error``, or no number). Untranslated keys: renderers put them in words."""
    if verdict in NO_CONFIDENCE_VERDICTS:
        return None
    if blocked is None and is_blocked(verdict):
        return CANT_TELL
    if not isinstance(confidence, (int, float)):
        return None
    return "high" if confidence >= HIGH_CONFIDENCE else "medium" if confidence >= LOW_CONFIDENCE else "low"


def evidence_lines(evidence: Iterable[Any] | None) -> list[str]:
    out = []
    for e in evidence or []:
        text = e.get("text") if isinstance(e, dict) else e
        if text:
            out.append(str(text))
    return out


def _group(rows: Iterable[Row]) -> dict[tuple[str, str], list[Row]]:
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r["url"], network_of(r))].append(r)
    for group in groups.values():
        group.sort(key=_latest_key)
    return groups


def _latest_per_site_network(rows: Iterable[Row]) -> list[Row]:
    return [group[-1] for group in _group(rows).values()]


# --- report structures -----------------------------------------------------------------


def site_network_table(rows: Iterable[Row]) -> list[Row]:
    """One entry per site (URL) and network: the latest verdict, and how settled it is.

    ``first_seen``/``last_seen`` bound the measurements that gave the same verdict as
    the latest one (when this reading was observed); ``first_measured``/``last_measured``
    bound all of them. ``agree`` of ``total`` measurements gave the latest verdict: 5/5
    is a stable block, 1/5 a change worth a second look.
    """
    out = []
    for (url, network), group in _group(rows).items():
        latest = group[-1]
        same = [r for r in group if r["verdict"] == latest["verdict"]]
        seen: list[str] = []
        for r in group:
            if r["verdict"] not in seen:
                seen.append(r["verdict"])
        out.append(
            {
                "url": url,
                "domain": latest.get("domain"),
                "category": latest.get("category"),
                "network": network,
                "cc": latest.get("cc"),
                "asn": latest.get("asn"),
                "network_name": latest.get("network_name"),
                "verdict": latest["verdict"],
                "blocked": latest["blocked"],
                "tags": list(latest.get("tags") or []),
                "confidence": latest.get("confidence"),
                "layer": latest.get("layer"),
                "rule_id": latest.get("rule_id"),
                "evidence": latest.get("evidence") or [],
                "measurement_id": latest["measurement_id"],
                **{k: latest.get(k) for k in CROSS_FIELDS},
                **{k: latest.get(k) for k in DEEP_FIELDS},
                "first_seen": same[0].get("measured_at"),
                "last_seen": same[-1].get("measured_at"),
                "first_measured": group[0].get("measured_at"),
                "last_measured": group[-1].get("measured_at"),
                "agree": len(same),
                "total": len(group),
                "verdicts_seen": seen,
            }
        )
    return order_sites(out)


def site_sort_key(entries: Sequence[Row]) -> tuple:
    """Blocked sites first (those blocked on more networks, then with more confidence,
    first), then those that can't tell, could not be measured, are down, and last the
    ones that work: a reader sees what matters without scrolling."""
    ranks = [STATUSES.index(site_status(e)) for e in entries]
    blocked = [e for e in entries if site_status(e) == "blocked"]
    best = max((e.get("confidence") or 0.0 for e in blocked), default=0.0)
    first = entries[0]
    return (min(ranks, default=len(STATUSES)), -len(blocked), -best, (first.get("domain") or "").lower(),
            first["url"])


def order_sites(entries: Iterable[Row]) -> list[Row]:
    """Site x network entries, each site's networks together (in network order), the
    sites in ``site_sort_key`` order."""
    by_url: dict[str, list[Row]] = defaultdict(list)
    for e in entries:
        by_url[e["url"]].append(e)
    for group in by_url.values():
        group.sort(key=lambda e: network_sort_key(e["network"]))
    return [e for url in sorted(by_url, key=lambda u: site_sort_key(by_url[u])) for e in by_url[url]]


def site_grid(entries: Sequence[Row]) -> list[tuple[str, dict[str, Row]]]:
    """The chart's rows: (url, {network: entry}) in the order of ``entries`` (which
    ``order_sites`` made blocked first)."""
    rows: dict[str, dict[str, Row]] = {}
    for e in entries:
        rows.setdefault(e["url"], {})[e["network"]] = e
    return list(rows.items())


def single_reading(entries: Iterable[Row]) -> bool:
    """Every site was measured once per network (one run, say): then "since", "last
    seen", "first/last measured" are one date and the history is the table itself."""
    return all(e["total"] == 1 for e in entries)


@dataclass(frozen=True)
class NetworkSummary:
    """The headline's numbers for one network: of ``sites`` sites measured, ``blocked``
    look blocked (``high`` of them with high confidence), by ``methods`` (verdict,
    count), most frequent first; ``cant_tell`` more failed as censors make sites fail,
    but had no control to tell them from an outage."""

    network: str
    names: tuple[str, ...]
    sites: int
    blocked: int
    high: int
    cant_tell: int
    methods: tuple[tuple[str, int], ...]


def network_summaries(entries: Iterable[Row]) -> list[NetworkSummary]:
    """One summary per network, in network order, from the latest verdict of each site."""
    per: dict[str, list[Row]] = defaultdict(list)
    for e in entries:
        per[e["network"]].append(e)
    out = []
    for network in sorted(per, key=network_sort_key):
        group = per[network]
        blocked = [e for e in group if site_status(e) == "blocked"]
        methods = Counter(shown_verdict(e) for e in blocked)
        names: list[str] = []
        for e in group:
            if e.get("network_name") and e["network_name"] not in names:
                names.append(e["network_name"])
        out.append(NetworkSummary(
            network=network,
            names=tuple(names),
            sites=len({e["url"] for e in group}),
            blocked=len(blocked),
            high=sum(1 for e in blocked if (e.get("confidence") or 0.0) >= HIGH_CONFIDENCE),
            cant_tell=sum(1 for e in group if site_status(e) == "cant_tell"),
            methods=tuple(sorted(methods.items(), key=lambda kv: (-kv[1], verdict_order(kv[0])))),
        ))
    return out


def site_history(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Every verdict of every site, oldest first, all networks interleaved: when did a
    block start, and did it start everywhere at once."""
    out: dict[str, list[Row]] = defaultdict(list)
    for r in sorted(rows, key=_latest_key):
        out[r["url"]].append(
            {
                "measured_at": r.get("measured_at"),
                "network": network_of(r),
                "verdict": r["verdict"],
                "blocked": r["blocked"],
                "confidence": r.get("confidence"),
            }
        )
    return dict(sorted(out.items(), key=lambda kv: kv[0]))


def verdict_order(verdict: str) -> tuple[int, int, str]:
    order = list(VERDICTS)
    base, _, marked = verdict.partition(" (")
    return (order.index(base) if base in VERDICTS else len(order), bool(marked), verdict)


def method_counts(rows: Iterable[Row]) -> dict[str, int]:
    """How many site×network pairs currently (latest verdict) show each verdict: the
    censor's methods, counted once per site and network however often it was measured.
    A failure that could not be told from an outage counts apart ("tcp.refused (can't
    tell)"): it is not yet evidence of the method."""
    counts = Counter(shown_verdict(r) for r in _latest_per_site_network(rows))
    return {v: counts[v] for v in sorted(counts, key=verdict_order)}


def method_counts_by_network(rows: Iterable[Row]) -> dict[str, dict[str, int]]:
    """``method_counts`` per network: ISPs in one country need not block alike."""
    per: dict[str, Counter] = defaultdict(Counter)
    for r in _latest_per_site_network(rows):
        per[network_of(r)][shown_verdict(r)] += 1
    return {n: {v: per[n][v] for v in sorted(per[n], key=verdict_order)}
            for n in sorted(per, key=network_sort_key)}


def layer_counts(rows: Iterable[Row]) -> dict[str, int]:
    """Blocked site×network pairs (latest verdict) by the layer where blocking was
    first seen: is this censor mostly a DNS, an IP, an SNI or an HTTP filter? Only
    verdicts that could tell count ("can't tell" ones are counted apart)."""
    counts = {layer: 0 for layer in LAYERS}
    for r in _latest_per_site_network(rows):
        if r.get("blocked") is True:
            family = verdict_family(r["verdict"])
            counts[family] = counts.get(family, 0) + 1
    return counts


def cant_tell_count(rows: Iterable[Row]) -> int:
    """Site×network pairs whose latest measurement failed in a way censors use but could
    not be told from an outage (there was no control)."""
    return sum(cant_tell(r) for r in _latest_per_site_network(rows))


def networks(rows: Iterable[Row]) -> list[Row]:
    """The vantage points present, with their names and how much each measured."""
    info: dict[str, Row] = {}
    for r in rows:
        n = network_of(r)
        entry = info.setdefault(n, {"network": n, "cc": r.get("cc"), "asn": r.get("asn"),
                                    "names": [], "measurements": 0})
        entry["measurements"] += 1
        name = r.get("network_name")
        if name and name not in entry["names"]:
            entry["names"].append(name)
    return [info[k] for k in sorted(info, key=network_sort_key)]


def site_labels(rows: Iterable[Row]) -> dict[str, str]:
    """URL -> the domain, or the URL without scheme when two URLs share a domain."""
    by_domain: dict[str, set[str]] = defaultdict(set)
    domain_of: dict[str, str] = {}
    for r in rows:
        d = r.get("domain") or r["url"]
        domain_of[r["url"]] = d
        by_domain[d].add(r["url"])
    return {
        url: d if len(by_domain[d]) == 1 else url.split("://", 1)[-1]
        for url, d in domain_of.items()
    }


@dataclass
class Report:
    """Everything the table, Markdown and HTML renderers show, computed once."""

    rows: list[Row]
    sources: list[str]
    generated_at: str
    sites: list[Row] = field(default_factory=list)
    history: dict[str, list[Row]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    counts_by_network: dict[str, dict[str, int]] = field(default_factory=dict)
    layers: dict[str, int] = field(default_factory=dict)
    layers_by_network: dict[str, dict[str, int]] = field(default_factory=dict)
    cant_tell: int = 0
    cant_tell_by_network: dict[str, int] = field(default_factory=dict)
    networks: list[Row] = field(default_factory=list)
    classifier_versions: list[str] = field(default_factory=list)
    first_measured: str | None = None
    last_measured: str | None = None
    summaries: list[NetworkSummary] = field(default_factory=list)
    single_reading: bool = False


def build_report(rows: list[Row], sources: Sequence[str] | None = None, generated_at: str | None = None) -> Report:
    """Compute every structure from the rows; ``sources`` are the databases asked (also
    those that had nothing to contribute), for the header."""
    times = sorted((r["measured_at"] for r in rows if r.get("measured_at")), key=lambda t: _parse_time(t) or t)
    by_network: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_network[network_of(r)].append(r)
    sites = site_network_table(rows)
    return Report(
        rows=rows,
        sources=list(sources) if sources is not None else sorted({r.get("db") or "?" for r in rows}),
        generated_at=generated_at or utcnow(),
        sites=sites,
        history=site_history(rows),
        counts=method_counts(rows),
        counts_by_network=method_counts_by_network(rows),
        layers=layer_counts(rows),
        layers_by_network={n: layer_counts(rs) for n, rs in by_network.items()},
        cant_tell=cant_tell_count(rows),
        cant_tell_by_network={n: cant_tell_count(rs) for n, rs in by_network.items()},
        networks=networks(rows),
        classifier_versions=sorted({r["classifier_version"] for r in rows if r.get("classifier_version")},
                                   key=store.version_key),
        first_measured=times[0] if times else None,
        last_measured=times[-1] if times else None,
        summaries=network_summaries(sites),
        single_reading=single_reading(sites),
    )












