"""The report as Markdown, for issues, wikis and e-mail."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

from probe.core.i18n import _
from probe.report.cells import counts_rows, site_cell, site_columns
from probe.report.model import Report, short_time
from probe.report.terminal import conf
from probe.report.words import blocked_text, cant_tell_word, header_items, heading, headline_lines


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
    """The report as Markdown: for an issue, a wiki or a mailing list. The headline
    (one line per network) comes right under the title, blocked sites first."""
    lines = ["# " + _md(_("Censorship measurement report")), ""]
    lines += [f"**{_md(line)}**  " for line in headline_lines(report)]
    lines += [""]
    lines += [f"- **{_md(k)}**: {_md(v)}" for k, v in header_items(report)]
    keys = site_columns(report)
    lines += ["", "## " + _md(_("Latest verdict per site and network")), ""]
    lines += _md_table([heading(k) for k in keys], ([site_cell(s, k) for k in keys] for s in report.sites))
    note = _("Latest verdict per site and network; \"blocked at\" counts blocked pairs by the first layer where "
             "interference was seen; \"{cant_tell}\" counts sites that failed in ways censors use but, with no "
             "control to compare with, could not be told from an outage.").format(cant_tell=cant_tell_word())
    lines += ["", "## " + _md(_("Counts by method")), "", _md(note), ""]
    header, body = counts_rows(report)
    lines += _md_table(header, body)
    if not report.single_reading:  # with one reading per site, the history is the table above
        lines += ["", "## " + _md(_("History per site")), ""]
        order = list(dict.fromkeys(s["url"] for s in report.sites))
        for url in order:
            lines += [f"### {_md(url)}", ""]
            lines += _md_table((heading("measured"), heading("network"), heading("verdict"), heading("blocked"),
                                heading("confidence")),
                               ([short_time(e["measured_at"]), e["network"], e["verdict"], blocked_text(e["blocked"]),
                                 conf(e["confidence"])] for e in report.history.get(url, [])))
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
