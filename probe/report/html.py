"""The report as one self-contained HTML file (the heat map inlined)."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from typing import Any

from probe.core.verdicts import CANT_TELL, VERDICTS, tag_label
from probe.report.cells import SITE_COLUMNS, counts_rows, header_items, site_cells
from probe.report.colours import CANT_TELL_COLOUR, text_colour, verdict_colour
from probe.report.heatmap import heatmap_png
from probe.report.model import (
    Report,
    cant_tell,
    evidence_lines,
    is_blocked,
    short_time,
    verdict_order,
)
from probe.report.terminal import conf

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
        return (f'<span class="v" style="background:{bg};color:{text_colour(bg)}" title="{_e(CANT_TELL)}: no '
                f'control to tell it from an outage">{_e(verdict)}?</span>')
    bg = verdict_colour(verdict)
    return f'<span class="v" style="background:{bg};color:{text_colour(bg)}">{_e(verdict)}</span>'


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
                     key=verdict_order)
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
        *(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in header_items(report)),
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
        cells = [_e(c) for c in site_cells(s)]
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
    header, body = counts_rows(report)
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
              _e(conf(e["confidence"]))] for e in entries),
            ("t", "nw", "", "num"),
        ))
        parts.append("</section>")
    parts.append("</div></body></html>")
    return "\n".join(parts) + "\n"
