"""The report as Markdown, for issues, wikis and e-mail."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

from probe.core.verdicts import CANT_TELL
from probe.report.cells import SITE_COLUMNS, counts_rows, header_items, site_cells
from probe.report.model import Report, blocked_word, short_time
from probe.report.terminal import conf


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


def render_markdown(report: Report) -> str:
    """The report as Markdown: for an issue, a wiki or a mailing list."""
    lines = ["# Censorship measurement report", ""]
    lines += [f"- **{k}**: {_md(v)}" for k, v in header_items(report)]
    lines += ["", "## Latest verdict per site and network", ""]
    lines += _md_table(SITE_COLUMNS, (site_cells(s) for s in report.sites))
    lines += ["", "## Counts by method", "",
              "Latest verdict per site and network; \"blocked at\" counts blocked pairs by the first layer "
              f"where interference was seen; \"{CANT_TELL}\" counts sites that failed in ways censors use but, "
              "with no control to compare with, could not be told from an outage.", ""]
    header, body = counts_rows(report)
    lines += _md_table(header, body)
    lines += ["", "## History per site", ""]
    for url, entries in report.history.items():
        lines += [f"### {_md(url)}", ""]
        lines += _md_table(("measured (UTC)", "network", "verdict", "blocked", "confidence"),
                           ([short_time(e["measured_at"]), e["network"], e["verdict"], blocked_word(e["blocked"]),
                             conf(e["confidence"])] for e in entries))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
