"""Reports over classified measurements: what is blocked, where, how, and since when.

Two halves, kept apart so each can be tested and changed alone:

* pure functions from ``persist.report_rows`` rows to report structures
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

import base64
import csv
import html
import io
import json
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

import sqlite_utils

from probe.core.records import utcnow

from probe.analysis.persist import report_rows
from probe.core.verdicts import CANT_TELL, LAYERS, VERDICTS, tag_label

Row = dict[str, Any]

# --- collecting ------------------------------------------------------------------------


def db_path(db: sqlite_utils.Database) -> str:
    """The file behind a connection, so merged rows can say where they came from."""
    try:
        for _, name, file in db.conn.execute("PRAGMA database_list").fetchall():
            if name == "main":
                return file or ":memory:"
    except sqlite3.Error:
        pass
    return "?"


def version_key(version: str | None) -> tuple:
    """Order classifier versions numerically ("1.10.0" after "1.9.0"), unlike SQL max()."""
    parts = []
    for piece in (version or "").replace("-", ".").split("."):
        parts.append((0, int(piece), "") if piece.isdigit() else (1, 0, piece))
    return tuple(parts)


def classifier_versions(db: sqlite_utils.Database) -> list[str]:
    """Classifier versions with verdicts in this database, oldest first."""
    if "verdicts" not in db.table_names():
        return []
    found = [r[0] for r in db.execute("select distinct classifier_version from verdicts").fetchall() if r[0]]
    return sorted(found, key=version_key)


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
            versions = classifier_versions(db)
            if not versions:
                continue
            version = versions[-1]
        path = db_path(db)
        for row in report_rows(db, version):
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
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


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
    return (t or datetime.min.replace(tzinfo=timezone.utc), row.get("measured_at") or "", row["measurement_id"])


def is_blocked(verdict: str | None) -> bool:
    """A verdict of the blocked kind (whether or not this measurement could tell)."""
    return bool(verdict) and VERDICTS.get(verdict, (False, ""))[0]


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


def _verdict_order(verdict: str) -> tuple[int, int, str]:
    order = list(VERDICTS)
    base, _, marked = verdict.partition(" (")
    return (order.index(base) if base in VERDICTS else len(order), bool(marked), verdict)


def method_counts(rows: Iterable[Row]) -> dict[str, int]:
    """How many site×network pairs currently (latest verdict) show each verdict: the
    censor's methods, counted once per site and network however often it was measured.
    A failure that could not be told from an outage counts apart ("tcp.refused (can't
    tell)"): it is not yet evidence of the method."""
    counts = Counter(shown_verdict(r) for r in _latest_per_site_network(rows))
    return {v: counts[v] for v in sorted(counts, key=_verdict_order)}


def method_counts_by_network(rows: Iterable[Row]) -> dict[str, dict[str, int]]:
    """``method_counts`` per network: ISPs in one country need not block alike."""
    per: dict[str, Counter] = defaultdict(Counter)
    for r in _latest_per_site_network(rows):
        per[network_of(r)][shown_verdict(r)] += 1
    return {n: {v: per[n][v] for v in sorted(per[n], key=_verdict_order)}
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
                                   key=version_key),
        first_measured=times[0] if times else None,
        last_measured=times[-1] if times else None,
    )


# --- colours ---------------------------------------------------------------------------

# One fixed colour per verdict, by family, so the same colour means the same thing in
# every report: ok green, down grey, error light grey, dns blues, tcp purples,
# tls oranges, http reds.
VERDICT_COLOURS: dict[str, str] = {
    "ok": "#2ca02c",
    "down": "#7f7f7f",
    "error": "#d9d9d9",
    "dns.nxdomain": "#08306b",
    "dns.bogon": "#2171b5",
    "dns.blockpage": "#41b6c4",
    "dns.injection": "#6baed6",
    "dns.inconsistent": "#c6dbef",
    "tcp.timeout": "#3f007d",
    "tcp.reset": "#756bb1",
    "tcp.refused": "#bcbddc",
    "tls.reset": "#cc4c02",
    "tls.timeout": "#fe9929",
    "tls.mitm": "#fee391",
    "http.reset": "#67000d",
    "http.timeout": "#cb181d",
    "http.blockpage": "#fb6a4a",
    "http.diff": "#fcbba1",
}
UNKNOWN_COLOUR = "#ff00ff"  # a verdict this report does not know: impossible to miss
CANT_TELL_COLOUR = "#ffeda0"  # a failure that could not be told from an outage (no control)
NO_DATA_COLOUR = "#ffffff"


def verdict_colour(verdict: str) -> str:
    if verdict == CANT_TELL or verdict.endswith(f"({CANT_TELL})"):
        return CANT_TELL_COLOUR
    return VERDICT_COLOURS.get(verdict, UNKNOWN_COLOUR)


def _text_colour(background: str) -> str:
    r, g, b = (int(background[i:i + 2], 16) for i in (1, 3, 5))
    return "#000" if (0.299 * r + 0.587 * g + 0.114 * b) > 140 else "#fff"


def terminal_style(verdict: str, blocked: bool | None = False) -> str:
    """Rich style: blocked red, can't tell yellow, ok green, down/error grey."""
    if blocked is None and is_blocked(verdict):
        return "yellow"
    if is_blocked(verdict):
        return "bold red"
    if verdict == "ok":
        return "green"
    if verdict in ("down", "error"):
        return "bright_black"
    return "yellow"


# --- flat exports ----------------------------------------------------------------------

EXPORT_FIELDS = (
    "measurement_id", "url", "domain", "category", "cc", "asn", "network_name", "measured_at",
    "verdict", "blocked", "confidence", "tags", "layer", "rule_id", "evidence", "classifier_version",
    "run_id", "db",
)


def _export_row(r: Row) -> Row:
    out = {k: r.get(k) for k in EXPORT_FIELDS}
    out["blocked"] = r.get("blocked")  # true, false, or null: "can't tell"
    out["tags"] = list(r.get("tags") or [])
    out["evidence"] = [
        {"text": e.get("text"), "fields": e.get("fields") or {}} if isinstance(e, dict) else {"text": str(e), "fields": {}}
        for e in (r.get("evidence") or [])
    ]
    return out


def render_json(rows: Iterable[Row]) -> str:
    """A JSON list, one object per measurement, verdict strings exactly as in the spec:
    for other tools, so nothing is summarised away."""
    return json.dumps([_export_row(r) for r in rows], ensure_ascii=False, indent=2, default=str) + "\n"


def render_csv(rows: Iterable[Row]) -> str:
    """One line per measurement for spreadsheets; evidence lines joined with " | "."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        out = _export_row(r)
        out["blocked"] = blocked_word(out["blocked"])
        out["tags"] = " ".join(out["tags"] or [])
        out["evidence"] = " | ".join(evidence_lines(out["evidence"]))
        writer.writerow(out)
    return buf.getvalue()


# --- terminal --------------------------------------------------------------------------


def _conf(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else ""


def _network_label(n: Row) -> str:
    return n["network"] + (f" ({', '.join(n['names'])})" if n["names"] else "")


def render_terminal(report: Report, console: Any) -> None:
    """Rich tables on the console: the site×network table and the counts by method."""
    from rich.table import Table
    from rich.text import Text

    console.print(Text.assemble(("Report", "bold"), f" of {len(report.rows)} classified measurements, "
                                f"{len({s['url'] for s in report.sites})} sites, {len(report.networks)} networks"))
    console.print(Text("networks: " + "; ".join(_network_label(n) for n in report.networks)))
    console.print(Text(f"measured: {short_time(report.first_measured)} .. {short_time(report.last_measured)} UTC; "
                       f"classifier {', '.join(report.classifier_versions) or '-'}"))

    table = Table(title="latest verdict per site and network", show_lines=False)
    for col in ("site", "network", "verdict", "conf", "agree", "this verdict since", "last measured", "verdicts seen"):
        table.add_column(col, overflow="fold")
    for s in report.sites:
        seen = Text()
        for i, v in enumerate(s["verdicts_seen"]):
            if i:
                seen.append(", ")
            seen.append(v, style=terminal_style(v))
        table.add_row(
            Text(s["url"]),
            Text(s["network"]),
            Text(shown_verdict(s), style=terminal_style(s["verdict"], s["blocked"])),
            Text(_conf(s["confidence"])),
            Text(f"{s['agree']}/{s['total']}"),
            Text(short_time(s["first_seen"])),
            Text(short_time(s["last_measured"])),
            seen,
        )
    console.print(table)
    console.print(_counts_table(report, Table, Text))


def _counts_table(report: Report, Table: Any, Text: Any) -> Any:
    nets = list(report.counts_by_network)
    table = Table(title="counts by method", caption="latest verdict per site and network")
    table.add_column("verdict")
    table.add_column("total", justify="right")
    for n in nets:
        table.add_column(n, justify="right")
    for verdict, count in report.counts.items():
        table.add_row(Text(verdict, style=terminal_style(verdict)), str(count),
                      *(str(report.counts_by_network[n].get(verdict, 0)) for n in nets))
    table.add_section()
    for layer, count in report.layers.items():
        table.add_row(Text(f"blocked at {layer}", style="bold"), str(count),
                      *(str(report.layers_by_network[n].get(layer, 0)) for n in nets))
    if report.cant_tell:
        table.add_row(Text(CANT_TELL, style="yellow"), str(report.cant_tell),
                      *(str(report.cant_tell_by_network[n]) for n in nets))
    return table




# --- markdown --------------------------------------------------------------------------


def _md(value: Any) -> str:
    """A table cell: no line breaks, pipes escaped, and HTML neutralised because most
    Markdown viewers render inline HTML."""
    text = "" if value is None else str(value)
    text = html.escape(text, quote=False).replace("|", "\\|")
    return " ".join(text.split())


def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return lines


SITE_COLUMNS = ("site", "network", "verdict", "blocked", "confidence", "agree", "verdict first seen",
                "verdict last seen", "first measured", "last measured", "verdicts seen", "evidence (latest)")


def _site_cells(s: Row) -> list[Any]:
    verdict = s["verdict"] + (f" ({', '.join(tag_label(t) for t in s['tags'])})" if s.get("tags") else "")
    return [s["url"], s["network"], verdict, blocked_word(s["blocked"]), _conf(s["confidence"]),
            f"{s['agree']}/{s['total']}", short_time(s["first_seen"]), short_time(s["last_seen"]),
            short_time(s["first_measured"]), short_time(s["last_measured"]), ", ".join(s["verdicts_seen"]),
            "; ".join(evidence_lines(s["evidence"]))]


def _header_items(report: Report) -> list[tuple[str, str]]:
    return [
        ("databases", ", ".join(report.sources) or "-"),
        ("networks", "; ".join(_network_label(n) for n in report.networks) or "-"),
        ("measured (UTC)", f"{short_time(report.first_measured)} .. {short_time(report.last_measured)}"),
        ("classifier version", ", ".join(report.classifier_versions) or "-"),
        ("measurements", f"{len(report.rows)} classified, {len({s['url'] for s in report.sites})} sites"),
        ("generated (UTC)", short_time(report.generated_at)),
    ]


def _counts_rows(report: Report) -> tuple[list[str], list[list[Any]]]:
    nets = list(report.counts_by_network)
    header = ["verdict", "blocked", "total", *nets]
    body: list[list[Any]] = [
        [v, CANT_TELL if v.endswith(f"({CANT_TELL})") else ("yes" if is_blocked(v) else "no"), c,
         *(report.counts_by_network[n].get(v, 0) for n in nets)]
        for v, c in report.counts.items()
    ]
    body += [[f"blocked at {layer}", "", c, *(report.layers_by_network[n].get(layer, 0) for n in nets)]
             for layer, c in report.layers.items()]
    if report.cant_tell:
        body.append([CANT_TELL, "", report.cant_tell, *(report.cant_tell_by_network[n] for n in nets)])
    return header, body


def render_markdown(report: Report) -> str:
    """The report as Markdown: for an issue, a wiki or a mailing list."""
    lines = ["# Censorship measurement report", ""]
    lines += [f"- **{k}**: {_md(v)}" for k, v in _header_items(report)]
    lines += ["", "## Latest verdict per site and network", ""]
    lines += _md_table(SITE_COLUMNS, (_site_cells(s) for s in report.sites))
    lines += ["", "## Counts by method", "",
              "Latest verdict per site and network; \"blocked at\" counts blocked pairs by the first layer "
              f"where interference was seen; \"{CANT_TELL}\" counts sites that failed in ways censors use but, "
              "with no control to compare with, could not be told from an outage.", ""]
    header, body = _counts_rows(report)
    lines += _md_table(header, body)
    lines += ["", "## History per site", ""]
    for url, entries in report.history.items():
        lines += [f"### {_md(url)}", ""]
        lines += _md_table(("measured (UTC)", "network", "verdict", "blocked", "confidence"),
                           ([short_time(e["measured_at"]), e["network"], e["verdict"], blocked_word(e["blocked"]),
                             _conf(e["confidence"])] for e in entries))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# --- HTML ------------------------------------------------------------------------------


HEATMAP_DPI = 150  # drawn at 150 dpi, shown at 125 dpi's size: larger than print, sharp on dense screens
HEATMAP_SHOW_DPI = 125
MAX_HEATMAP_PX = 30000  # beyond this a browser struggles; very long lists get a lower dpi


class Heatmap(NamedTuple):
    png: bytes
    verdicts: list[str]  # those the chart shows, in the spec's order
    css_width: int  # the size to show it at, in CSS pixels (as if drawn at HEATMAP_SHOW_DPI)
    css_height: int


def heatmap_png(rows: list[Row], dpi: int = HEATMAP_DPI) -> Heatmap:
    """The heat map as PNG bytes, the verdicts it shows, and the size to display it at.

    Rows are sites (labelled by domain), columns UTC days, one panel per network; each
    cell is the latest verdict of that site on that day. Height grows with the number
    of sites (a fixed row height keeps labels readable up to a couple of hundred sites).
    Uses matplotlib's object API on the Agg canvas: no pyplot, no global backend switch,
    safe to call from any thread or a server.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    import matplotlib
    import numpy as np

    rows = list(rows)
    sites, days, cells = day_matrix(rows)
    labels = site_labels(rows)
    present = sorted({v for per in cells.values() for v in per.values()}, key=_verdict_order)
    index = {v: i for i, v in enumerate(present)}
    nets = list(cells) or ["-"]
    n_sites, n_days = max(len(sites), 1), max(len(days), 1)

    row_h = 0.24  # inches per site: 8 pt labels stay legible
    panel_w = min(max(2.2, 0.34 * n_days), 14.0)  # a year of days still fits a screen, cells thinner
    label_w = min(3.2, 0.8 + 0.065 * max((len(labels.get(s, s)) for s in sites), default=10))
    days_on_top = n_sites > 40
    top_margin = 1.2 if days_on_top else 0.35
    height = 1.05 + top_margin + row_h * n_sites
    width = label_w + panel_w * len(nets) + 2.6  # the legend sits on the right
    dpi = min(dpi, int(MAX_HEATMAP_PX / max(width, height)))
    site_pos = {s: i for i, s in enumerate(sites)}
    day_pos = {d: i for i, d in enumerate(days)}
    grid = 0.5 if n_days <= 60 else 0.0  # cell borders would hide narrow cells

    with matplotlib.rc_context({"font.family": "DejaVu Sans", "font.size": 8}):
        fig = Figure(figsize=(width, height), dpi=dpi)
        FigureCanvasAgg(fig)
        # margins in inches, not fractions: the figure can be 50 inches tall
        fig.subplots_adjust(top=1 - top_margin / height, bottom=0.9 / height, left=label_w / width,
                            right=1 - 2.6 / width, wspace=0.06 * len(nets))
        axes = fig.subplots(1, len(nets), sharey=True, squeeze=False)[0]
        cmap = ListedColormap([verdict_colour(v) for v in present] or [NO_DATA_COLOUR]).with_extremes(
            bad=NO_DATA_COLOUR)
        any_gap = False
        for ax, net in zip(axes, nets):
            data = np.full((n_sites, n_days), np.nan)
            for (url, day), verdict in cells.get(net, {}).items():
                data[site_pos[url], day_pos[day]] = index[verdict]
            any_gap = any_gap or bool(np.isnan(data).any())
            ax.pcolormesh(np.ma.masked_invalid(data), cmap=cmap, vmin=-0.5, vmax=max(len(present), 1) - 0.5,
                          edgecolors="#e6e6e6", linewidth=grid)
            ax.set_title(net, fontsize=9, fontweight="bold")
            ax.set_xticks([i + 0.5 for i in range(len(days))])
            step = max(1, len(days) // 40)
            ax.set_xticklabels([d if i % step == 0 else "" for i, d in enumerate(days)], rotation=90, fontsize=7)
            ax.set_xlim(0, n_days)
            ax.set_ylim(n_sites, 0)  # first site on top, as in the tables
            ax.tick_params(length=0)
            if days_on_top:  # a tall chart: the days on top too, so no scrolling back to read them
                ax.tick_params(labeltop=True)
            for spine in ax.spines.values():
                spine.set_visible(False)
        axes[0].set_yticks([i + 0.5 for i in range(len(sites))])
        axes[0].set_yticklabels([labels.get(s, s) for s in sites])
        axes[0].set_xlabel("day (UTC)")
        handles = [Patch(facecolor=verdict_colour(v), edgecolor="#999999", label=v) for v in present]
        if any_gap:
            handles.append(Patch(facecolor=NO_DATA_COLOUR, edgecolor="#999999", label="not measured"))
        axes[-1].legend(handles=handles, title="verdict", loc="upper left", bbox_to_anchor=(1.02, 1.0),
                        frameon=False, fontsize=8, title_fontsize=9, borderaxespad=0)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight", pad_inches=0.15, metadata={"Software": None})
    png = buf.getvalue()
    px_w, px_h = (int.from_bytes(png[i:i + 4], "big") for i in (16, 20))
    return Heatmap(png, present, px_w * HEATMAP_SHOW_DPI // dpi, px_h * HEATMAP_SHOW_DPI // dpi)


_CSS = """
body{font-family:"DejaVu Sans",system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:24px;color:#222;
 max-width:1800px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:14px;margin:18px 0 6px;font-weight:600}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:0 0 12px;font-size:13px}
dl.meta dt{font-weight:600;color:#555}dl.meta dd{margin:0;word-break:break-all}
table{border-collapse:collapse;font-size:12px;margin:6px 0 12px}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3;position:sticky;top:0}tr:nth-child(even) td{background:#fafafa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.url,td.nw{white-space:nowrap}td.t{min-width:5.5em}td.ev{overflow-wrap:anywhere;min-width:220px;max-width:520px}
div.scroll{overflow-x:auto}div.hist{display:flex;flex-wrap:wrap;gap:0 28px}
td.ev ul{margin:0;padding-left:16px}
.v{display:inline-block;padding:1px 6px;border-radius:3px;font-family:"DejaVu Sans Mono",monospace;font-size:11px;
 white-space:nowrap}
figure{margin:8px 0 16px}figure img{max-width:100%;height:auto;border:1px solid #eee}
ul.legend{list-style:none;padding:0;margin:4px 0 12px;columns:2;font-size:12px}
ul.legend li{margin:2px 0;break-inside:avoid}
.sw{display:inline-block;width:12px;height:12px;border:1px solid #999;vertical-align:middle;margin-right:6px}
.note{color:#666;font-size:12px}
details{margin:4px 0}summary{cursor:pointer}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _badge(verdict: str, blocked: bool | None = False) -> str:
    if blocked is None and is_blocked(verdict):
        bg = CANT_TELL_COLOUR
        return (f'<span class="v" style="background:{bg};color:{_text_colour(bg)}" title="{_e(CANT_TELL)}: no '
                f'control to tell it from an outage">{_e(verdict)}?</span>')
    bg = verdict_colour(verdict)
    return f'<span class="v" style="background:{bg};color:{_text_colour(bg)}">{_e(verdict)}</span>'


def _html_table(header: Sequence[str], rows: Iterable[Sequence[str]], classes: Sequence[str] = ()) -> str:
    """Cells are already-escaped HTML fragments; header strings are escaped here."""
    out = ['<div class="scroll"><table><thead><tr>', *(f"<th>{_e(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            cls = classes[i] if i < len(classes) and classes[i] else ""
            out.append(f'<td class="{cls}">{cell}</td>' if cls else f"<td>{cell}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _evidence_html(evidence: Any) -> str:
    lines = evidence_lines(evidence)
    return "<ul>" + "".join(f"<li>{_e(t)}</li>" for t in lines) + "</ul>" if lines else ""


def render_html(report: Report) -> str:
    """One self-contained HTML file (inline CSS, the heat map as a base64 PNG, no
    external resource, no script) that a volunteer can mail or open offline; a
    Content-Security-Policy forbids anything else even if a browser were tricked."""
    chart = heatmap_png(report.rows) if report.rows else None
    present = sorted({CANT_TELL if cant_tell(r) else r["verdict"] for r in report.rows},
                     key=_verdict_order)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        'style-src \'unsafe-inline\'">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Censorship measurement report {_e(short_time(report.generated_at))} UTC</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Censorship measurement report</h1>",
        '<dl class="meta">',
        *(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in _header_items(report)),
        "</dl>",
        "<h2>Latest verdict per site and day</h2>",
    ]
    if chart:
        parts.append(
            '<figure><img alt="heat map: rows are sites, columns are days (UTC), one panel per network, '
            f'cells coloured by the latest verdict of that day" width="{chart.css_width}" '
            f'height="{chart.css_height}" src="data:image/png;base64,{base64.b64encode(chart.png).decode("ascii")}">'
            "</figure>"
        )
    else:
        parts.append('<p class="note">No classified measurements.</p>')
    parts.append('<ul class="legend" id="legend">')
    for v in present:
        if v != CANT_TELL:
            meaning = VERDICTS.get(v, (False, "a verdict this report does not know"))[1]
            flag = "blocked" if is_blocked(v) else "not blocked"
            parts.append(f'<li><span class="sw" style="background:{verdict_colour(v)}"></span>'
                         f"<code>{_e(v)}</code> ({flag}): {_e(meaning)}</li>")
    if CANT_TELL in present:
        parts.append(f'<li><span class="sw" style="background:{CANT_TELL_COLOUR}"></span>'
                     f"<code>{_e(CANT_TELL)}</code> (marked <code>?</code> in the tables): failed in a way censors "
                     "use, but with no control to compare with it cannot be told from a site that is down for "
                     "everyone; the likely verdict is shown</li>")
    parts.append("</ul>")
    if chart and chart.verdicts != present:
        parts.append('<p class="note">The legend lists every verdict in the data; a verdict replaced later '
                     "the same day appears in the tables only.</p>")

    parts.append("<h2>Latest verdict per site and network</h2>")
    site_rows = []
    for s in report.sites:
        cells = [_e(c) for c in _site_cells(s)]
        cells[2] = _badge(s["verdict"], s["blocked"]) + "".join(
            f' <span class="note">({_e(tag_label(t))})</span>' for t in s.get("tags") or [])
        cells[10] = ", ".join(_badge(v) for v in s["verdicts_seen"])
        cells[11] = _evidence_html(s["evidence"])
        site_rows.append(cells)
    parts.append(_html_table(SITE_COLUMNS, site_rows,
                             ("url", "nw", "", "", "num", "num", "t", "t", "t", "t", "", "ev")))

    parts.append("<h2>Counts by method</h2>")
    parts.append('<p class="note">Latest verdict per site and network; "blocked at" counts blocked pairs by the '
                 "first layer where interference was seen.</p>")
    header, body = _counts_rows(report)
    count_rows = []
    for row in body:
        first = _badge(row[0]) if row[0] in VERDICTS or not str(row[0]).startswith("blocked at") else _e(row[0])
        count_rows.append([first, *(_e(c) for c in row[1:])])
    parts.append(_html_table(header, count_rows, ("", "", *(["num"] * (len(header) - 2)))))

    parts.append('<h2>History per site</h2><div class="hist">')
    for url, entries in report.history.items():
        parts.append(f"<section><h3>{_e(url)}</h3>")
        parts.append(_html_table(
            ("measured (UTC)", "network", "verdict", "confidence"),
            ([_e(short_time(e["measured_at"])), _e(e["network"]), _badge(e["verdict"], e["blocked"]),
              _e(_conf(e["confidence"]))] for e in entries),
            ("t", "nw", "", "num"),
        ))
        parts.append("</section>")
    parts.append("</div></body></html>")
    return "\n".join(parts) + "\n"
