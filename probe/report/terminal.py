"""The report on a terminal, as rich tables that fit the terminal's width.

On a wide terminal, one table of sites x networks. When that table would not fit
(an 80-column terminal, long URLs), one block per site instead: the URL on a line of its
own, so it is never chopped into 8-character pieces, and the site's networks beneath
it. The headline comes first, whatever the width.
"""

from __future__ import annotations

from typing import Any

from probe.core.i18n import _
from probe.report.cells import site_cell, site_columns
from probe.report.colours import terminal_style
from probe.report.model import STATUSES, Report, Row, shown_verdict, site_status
from probe.report.words import cant_tell_word, entry_confidence, header_items, heading, headline_lines

# Columns a wide table gives room to; the rest fold. Evidence is left to `probe explain`.
_TERMINAL_COLUMNS = ("site", "network", "verdict", "confidence", "agree", "since", "last", "measured", "seen",
                     "trigger")


def conf(value: Any) -> str:
    """A bare confidence number, for researchers' columns."""
    return f"{value:.2f}" if isinstance(value, (int, float)) else ""


def _fits(console: Any, renderable: Any) -> bool:
    """Whether ``renderable`` shows at its natural width, nothing folded."""
    from rich.measure import Measurement

    unbounded = console.options.update_width(100_000)  # measured where nothing has to fold
    return Measurement.get(console, unbounded, renderable).maximum <= console.width


def render_terminal(report: Report, console: Any) -> None:
    """The headline, the particulars, the sites (a table or one block per site) and the
    counts by method, each fitted to ``console.width``."""
    from rich.text import Text

    for line, summary in zip(headline_lines(report), report.summaries, strict=True):
        console.print(Text(line, style="bold red" if summary.blocked else "bold"))
    items = dict(header_items(report))
    console.print(Text("; ".join(f"{k}: {v}" for k, v in items.items()), style="bright_black"))
    console.print()

    table = _site_table(report)
    if _fits(console, table):
        console.print(table)
    else:
        _site_blocks(report, console)
    counts = _counts_table(report, with_networks=True)
    if len(report.counts_by_network) > 1 and not _fits(console, counts):
        counts = _counts_table(report, with_networks=False)  # the headline has them per network
    console.print(counts)


def _verdict_text(s: Row) -> Any:
    from rich.text import Text

    return Text(shown_verdict(s), style=terminal_style(s["verdict"], s["blocked"]))


def _site_table(report: Report) -> Any:
    from rich.table import Table
    from rich.text import Text

    keys = [k for k in site_columns(report) if k in _TERMINAL_COLUMNS]
    table = Table(title=_("latest verdict per site and network"), show_lines=False)
    for key in keys:
        table.add_column(heading(key), overflow="fold", no_wrap=key in ("site", "network"))
    for s in report.sites:
        cells: list[Any] = []
        for key in keys:
            if key == "verdict":
                cells.append(_verdict_text(s))
            elif key == "seen":
                seen = Text()
                for i, v in enumerate(s["verdicts_seen"]):
                    if i:
                        seen.append(", ")
                    seen.append(v, style=terminal_style(v))
                cells.append(seen)
            else:
                cells.append(Text(site_cell(s, key)))
        table.add_row(*cells)
    return table


def _site_blocks(report: Report, console: Any) -> None:
    """One block per site: its URL on its own line (folded only when longer than the
    terminal), then a borderless row per network: network, verdict, confidence, date."""
    from rich.table import Table
    from rich.text import Text

    console.print(Text(_("latest verdict per site and network"), style="italic"), justify="center")
    by_url: dict[str, list[Row]] = {}
    for s in report.sites:
        by_url.setdefault(s["url"], []).append(s)
    # the same column widths for every block, so the blocks line up like one table
    widths = {
        "network": max((len(s["network"]) for s in report.sites), default=0),
        "verdict": max((len(shown_verdict(s)) for s in report.sites), default=0),
        "confidence": max((len(entry_confidence(s)) for s in report.sites), default=0),
    }
    date_key = "measured" if report.single_reading else "since"
    for url, entries in by_url.items():
        status = min((site_status(e) for e in entries), key=STATUSES.index)
        shown = url.removeprefix("https://")  # http:// stays: that a site is plain HTTP matters
        console.print(Text(shown, style="bold" if status == "blocked" else "", overflow="fold"), soft_wrap=False)
        grid = Table.grid(padding=(0, 2), pad_edge=False)
        grid.add_column(width=1)  # the indent
        grid.add_column(min_width=widths["network"], overflow="fold")
        grid.add_column(min_width=min(widths["verdict"], 30), overflow="fold")
        grid.add_column(min_width=min(widths["confidence"], 16), overflow="fold")
        grid.add_column(overflow="fold")
        for s in entries:
            when = site_cell(s, date_key)
            if not report.single_reading:
                when = _("since {date}").format(date=when) + f" ({s['agree']}/{s['total']})"
            grid.add_row("", Text(s["network"]), _verdict_text(s), Text(entry_confidence(s)),
                         Text(when, style="bright_black"))
        console.print(grid)


def _counts_table(report: Report, with_networks: bool) -> Any:
    from rich.table import Table
    from rich.text import Text

    nets = list(report.counts_by_network) if with_networks else []
    table = Table(title=_("counts by method"), caption=_("latest verdict per site and network"))
    table.add_column(heading("verdict"))
    table.add_column(_("total"), justify="right")
    for n in nets:
        table.add_column(n, justify="right")
    for verdict, count in report.counts.items():
        table.add_row(Text(verdict, style=terminal_style(verdict)), str(count),
                      *(str(report.counts_by_network[n].get(verdict, 0)) for n in nets))
    table.add_section()
    for layer, count in report.layers.items():
        table.add_row(Text(_("blocked at {layer}").format(layer=layer), style="bold"), str(count),
                      *(str(report.layers_by_network[n].get(layer, 0)) for n in nets))
    if report.cant_tell:
        table.add_row(Text(cant_tell_word(), style="yellow"), str(report.cant_tell),
                      *(str(report.cant_tell_by_network[n]) for n in nets))
    return table
