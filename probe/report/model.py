"""Reports over classified measurements: what is blocked, where, how, and since when.

Two halves, kept apart so each can be tested and changed alone:

* pure functions from ``store.report_rows`` rows to report structures
  (``collect``, ``site_network_table``, ``site_history``, ``method_counts``, ...);
* renderers from those structures to text (terminal, JSON, CSV, Markdown, one
  self-contained HTML file with a heat map).

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
from typing import Any

import sqlite_utils

from probe import store
from probe.core.records import utcnow
from probe.core.verdicts import CANT_TELL, LAYERS, VERDICTS, tag_label

Row = dict[str, Any]

# --- collecting ------------------------------------------------------------------------


def collect(dbs: Sequence[sqlite_utils.Database], classifier_version: str | None = None) -> list[Row]:
    """Every classified measurement of every database, each row tagged with its ``db``.

    Several volunteers' databases (or the same one sent twice) are merged: a
    measurement id seen again is the same observation, so the first copy wins. Without
    ``classifier_version`` each database contributes its own newest classifier's
    verdicts, so an old database still shows up in the report.
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
        path = store.db_file(db)
        for row in store.report_rows(db, version):
            if row["measurement_id"] in seen:
                continue
            seen.add(row["measurement_id"])
            row["db"] = path
            out.append(row)
    out.sort(key=lambda r: (r["url"] or "", r["measured_at"] or "", r["measurement_id"]))
    return out


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


def day_of(value: str | None) -> str:
    """The UTC date of a timestamp: the heat map's columns."""
    t = _parse_time(value)
    return t.strftime("%Y-%m-%d") if t else (value or "")[:10]


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
                "first_seen": same[0].get("measured_at"),
                "last_seen": same[-1].get("measured_at"),
                "first_measured": group[0].get("measured_at"),
                "last_measured": group[-1].get("measured_at"),
                "agree": len(same),
                "total": len(group),
                "verdicts_seen": seen,
            }
        )
    out.sort(key=lambda e: ((e["domain"] or "").lower(), e["url"], network_sort_key(e["network"])))
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


def day_matrix(rows: Iterable[Row]) -> tuple[list[str], list[str], dict[str, dict[tuple[str, str], str]]]:
    """The heat map's data: sites (URLs), days (UTC dates), and per network the verdict
    of the latest measurement of each site on each day. Networks stay apart because a
    cell mixing two ISPs would hide exactly the difference a researcher looks for."""
    rows = list(rows)
    latest: dict[tuple[str, str, str], Row] = {}
    for r in rows:
        key = (network_of(r), r["url"], day_of(r.get("measured_at")))
        if key not in latest or _latest_key(r) > _latest_key(latest[key]):
            latest[key] = r
    domains = {r["url"]: (r.get("domain") or r["url"]) for r in rows}
    sites = sorted(domains, key=lambda u: (domains[u].lower(), u))
    days = sorted({k[2] for k in latest})
    cells: dict[str, dict[tuple[str, str], str]] = defaultdict(dict)
    for (network, url, day), r in latest.items():
        cells[network][(url, day)] = CANT_TELL if cant_tell(r) else r["verdict"]
    return sites, days, {n: cells[n] for n in sorted(cells, key=network_sort_key)}


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


def build_report(rows: list[Row], sources: Sequence[str] | None = None, generated_at: str | None = None) -> Report:
    """Compute every structure from the rows; ``sources`` are the databases asked (also
    those that had nothing to contribute), for the header."""
    times = sorted((r["measured_at"] for r in rows if r.get("measured_at")), key=lambda t: _parse_time(t) or t)
    by_network: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_network[network_of(r)].append(r)
    return Report(
        rows=rows,
        sources=list(sources) if sources is not None else sorted({r.get("db", "?") for r in rows}),
        generated_at=generated_at or utcnow(),
        sites=site_network_table(rows),
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
    )












