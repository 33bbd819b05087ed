"""The report on a terminal, as rich tables."""

from __future__ import annotations

from typing import Any

from probe.core.verdicts import CANT_TELL
from probe.report.colours import terminal_style
from probe.report.model import Report, Row, short_time, shown_verdict


def conf(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else ""


def network_label(n: Row) -> str:
    return n["network"] + (f" ({', '.join(n['names'])})" if n["names"] else "")


def render_terminal(report: Report, console: Any) -> None:
    """Rich tables on the console: the site×network table and the counts by method."""
    from rich.table import Table
    from rich.text import Text

    console.print(Text.assemble(("Report", "bold"), f" of {len(report.rows)} classified measurements, "
                                f"{len({s['url'] for s in report.sites})} sites, {len(report.networks)} networks"))
    console.print(Text("networks: " + "; ".join(network_label(n) for n in report.networks)))
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
            Text(conf(s["confidence"])),
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
