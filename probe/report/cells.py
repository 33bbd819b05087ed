"""What the human tables (terminal, Markdown, HTML) show, column by column.

Which columns show depends on the data, so that a table answers at a glance instead of
repeating itself: one network needs no network column (the headline names it), and
one reading per site (a single run) needs one date, no agreement count and no list of
verdicts seen. JSON and CSV keep every field, always.
"""

from __future__ import annotations

from typing import Any

from probe.core.i18n import _
from probe.core.verdicts import CANT_TELL, tag_label
from probe.report.model import Report, Row, evidence_lines, is_blocked, short_time
from probe.report.words import blocked_text, cant_tell_word, entry_confidence, heading


def site_columns(report: Report) -> list[str]:
    """The column keys of the site x network table for this report (see words.HEADINGS)."""
    cols = ["site"]
    if len(report.networks) > 1:
        cols.append("network")
    cols += ["verdict", "blocked", "confidence"]
    cols += ["measured"] if report.single_reading else ["agree", "since", "last", "seen"]
    if any(s.get("trigger") or s.get("where") for s in report.sites):  # a deep measurement was made
        cols += ["trigger", "where"]
    cols.append("evidence")
    return cols


def verdict_text(s: Row) -> str:
    """``tcp.timeout (IPv4 only)``: the verdict code and its qualifiers."""
    return s["verdict"] + (f" ({', '.join(tag_label(t) for t in s['tags'])})" if s.get("tags") else "")


def site_cell(s: Row, key: str) -> str:
    """One cell of the site x network table, as plain text."""
    if key == "site":
        return str(s["url"])
    if key == "network":
        return str(s["network"])
    if key == "verdict":
        return verdict_text(s)
    if key == "blocked":
        return blocked_text(s["blocked"])
    if key == "confidence":
        return entry_confidence(s)
    if key == "agree":
        return f"{s['agree']}/{s['total']}"
    if key == "since":
        return short_time(s["first_seen"])
    if key in ("last", "measured"):
        return short_time(s["last_measured"])
    if key == "seen":
        return ", ".join(s["verdicts_seen"])
    if key == "evidence":
        return "; ".join(evidence_lines(s["evidence"]))
    if key == "trigger":
        return str(s.get("trigger") or "")
    if key == "where":
        return str(s.get("where") or "")
    raise KeyError(key)


def counts_rows(report: Report) -> tuple[list[str], list[list[Any]]]:
    """The counts by method as a header and rows: verdict, blocked, total, per network."""
    nets = list(report.counts_by_network)
    header = [heading("verdict"), heading("blocked"), _("total"), *nets]
    body: list[list[Any]] = [
        [v, cant_tell_word() if v.endswith(f"({CANT_TELL})") else blocked_text(is_blocked(v)), c,
         *(report.counts_by_network[n].get(v, 0) for n in nets)]
        for v, c in report.counts.items()
    ]
    body += [[_("blocked at {layer}").format(layer=layer), "", c,
              *(report.layers_by_network[n].get(layer, 0) for n in nets)]
             for layer, c in report.layers.items()]
    if report.cant_tell:
        body.append([cant_tell_word(), "", report.cant_tell, *(report.cant_tell_by_network[n] for n in nets)])
    return header, body
