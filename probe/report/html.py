"""The report as one self-contained HTML file: a headline, a chart of sites x networks
and the evidence, readable on a 1,400 px screen and on a phone.

No script, no image, no external resource: inline CSS only, and a Content-Security-
Policy that forbids everything else, because every string in it may come from a
censor's blockpage. Everything from the database is escaped (``_e``); the only links
are the chart's, to ids this file makes itself.

The chart is HTML, not a picture: one square per site and network, coloured by
blocked / not blocked / can't tell with confidence as saturation (colours.py), each a
link to that site's evidence. It stays readable with hundreds of sites because rows
are cut into blocks of ``CHART_BLOCK`` sites that flow side by side, each with its own
network headings, and blocked sites come first.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

from probe.core.i18n import _, language
from probe.core.verdicts import VERDICTS, tag_label
from probe.report import colours
from probe.report.cells import counts_rows, site_cell, site_columns
from probe.report.model import (
    STATUSES,
    Report,
    Row,
    confidence_level,
    evidence_lines,
    is_blocked,
    short_time,
    shown_verdict,
    site_grid,
    site_labels,
    site_status,
    verdict_order,
)
from probe.report.terminal import conf
from probe.report.words import (
    cant_tell_word,
    entry_confidence,
    header_items,
    heading,
    headline_lines,
)

CHART_BLOCK = 50  # sites per chart block: a block is about one screen high
CELL_PX = 18  # a chart square; large enough to hit with a finger, ten fit a phone

_CSS = """
*{box-sizing:border-box}
body{font-family:"DejaVu Sans",system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:24px;color:#222;
 max-width:1800px;line-height:1.35}
h1{font-size:14px;margin:0 0 4px;color:#666;font-weight:600;text-transform:uppercase;letter-spacing:.04em}
.headline{margin:0 0 12px}.headline p{font-size:20px;font-weight:700;margin:0 0 4px}
.headline p.none{color:#2e6b2e}.headline.multi p{font-size:15px;margin-bottom:3px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
dl.meta{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:2px 14px;margin:0 0 12px;font-size:13px}
dl.meta dt{font-weight:600;color:#555}dl.meta dd{margin:0;overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:12px;margin:6px 0 12px}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3;position:sticky;top:0;z-index:1}
td.num,td.k-agree{text-align:right;font-variant-numeric:tabular-nums}
table.sites{width:100%}
table.sites td{overflow-wrap:anywhere}
table.sites td.k-site{min-width:12em;overflow-wrap:break-word}
table.sites td.k-network,table.sites td.k-confidence,table.sites td.k-since,table.sites td.k-last,
table.sites td.k-measured,table.sites td.k-verdict{white-space:nowrap}
table.sites td.k-evidence{min-width:16em}
table.sites tbody{border-top:2px solid #bbb}
table.sites tr+tr td.k-site{color:#888}
table.sites :target td,table.sites tr:target td{background:#fff6c8}
td.k-evidence ul{margin:0;padding-left:16px}
div.scroll{overflow-x:auto;max-width:100%}
.v{display:inline-block;padding:1px 6px;border-radius:3px;font-family:"DejaVu Sans Mono",monospace;font-size:11px;
 white-space:nowrap}
.v.s-cant_tell{background:#fff1c2;box-shadow:none;border:1px dashed #b08400;padding:0 5px}
.note{color:#666;font-size:12px}
ul.legend{list-style:none;padding:0;margin:4px 0 12px;display:flex;flex-wrap:wrap;gap:4px 18px;font-size:12px}
ul.legend li{display:flex;align-items:center;gap:6px}
.sw{display:inline-block;width:14px;height:14px;flex:none}
div.chart{display:flex;flex-wrap:wrap;gap:14px 32px;align-items:flex-start}
div.blk{min-width:0;max-width:100%}
div.gr{display:grid;align-items:center;column-gap:0}
div.gr .lbl{overflow:hidden;text-overflow:ellipsis;white-space:nowrap;font-size:12px;padding-right:8px;
 color:#222;text-decoration:none;line-height:16px}
div.gr a.lbl:hover{text-decoration:underline}
div.gr.hd{align-items:end;margin-bottom:2px}
div.gr.hd .nw{writing-mode:vertical-rl;transform:rotate(180deg);font-size:11px;max-height:8em;overflow:hidden;
 text-overflow:ellipsis;white-space:nowrap;justify-self:center;color:#444}
a.c,span.c{display:block;width:16px;height:14px;margin:1px}
a.c:hover,a.c:focus{outline:2px solid #000;outline-offset:0}
div.hist{display:flex;flex-wrap:wrap;gap:0 28px}
details{margin:2px 0}summary{cursor:pointer;font-size:13px}
dl.verdicts{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:2px 12px;font-size:12px}
dl.verdicts dd{margin:0}
@media (max-width:700px){
 body{margin:12px}
 .headline p{font-size:17px}
 table.sites,table.sites thead,table.sites tbody,table.sites tr,table.sites td{display:block;width:auto}
 table.sites thead{display:none}
 table.sites tbody{border:none}
 table.sites tr{border:1px solid #ccc;border-radius:6px;margin:0 0 10px;padding:6px 8px}
 table.sites td{border:none;padding:2px 0 2px 7.5em;display:flow-root;text-align:left!important;
  white-space:normal!important;max-width:none!important;min-width:0!important;overflow-wrap:anywhere}
 table.sites td::before{float:left;margin-left:-7.5em;width:7em;color:#666;font-weight:600;overflow-wrap:normal}
 table.sites td.k-site{padding-left:0;font-weight:700;color:#222!important}
 table.sites td.k-site::before{content:none}
 table.sites td:empty{display:none}
 dl.meta{grid-template-columns:minmax(0,1fr)}dl.meta dd{margin:0 0 4px}
 dl.verdicts{grid-template-columns:minmax(0,1fr)}
}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _css_string(text: str) -> str:
    """A CSS string literal: every character that is not a plain letter, digit or space
    as a CSS escape, so nothing (a quote, ``</style>``) can leave the string."""
    return '"' + "".join(c if c.isalnum() or c == " " else f"\\{ord(c):x} " for c in text) + '"'


def _breakable_url(url: str) -> str:
    """The URL escaped, with line-break opportunities after each ``/`` of its path and
    before ``?``/``&``: a long URL wraps at its natural joints instead of pushing the
    evidence column off the screen, or breaking inside ``svaboda.org``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    pieces = _e(rest).replace("/", "/<wbr>").replace("?", "<wbr>?").replace("&amp;", "<wbr>&amp;")
    return (_e(scheme) + "://" if sep else "") + pieces


def _status_classes(entry: Row) -> str:
    """``s-blocked q-high``: the CSS classes of colours.css for one site x network."""
    status = site_status(entry)
    if status != "blocked":
        return f"s-{status}"
    level = confidence_level(entry.get("verdict"), True, entry.get("confidence")) or "high"
    return f"s-blocked q-{level}"


def _code_classes(verdict: str) -> str:
    """Classes for a bare verdict code (a verdict seen earlier: no blocked flag known)."""
    if is_blocked(verdict):
        return "s-blocked"
    return f"s-{verdict}" if verdict in ("ok", "down", "error") else "s-none"


def _badge(entry: Row) -> str:
    """The verdict of one site x network; ``?`` marks one that can't tell."""
    mark = "?" if site_status(entry) == "cant_tell" else ""
    title = f' title="{_e(cant_tell_word())}"' if mark else ""
    return f'<span class="v {_status_classes(entry)}"{title}>{_e(entry["verdict"])}{mark}</span>'


def _code_badge(verdict: str) -> str:
    return f'<span class="v {_code_classes(verdict)}">{_e(verdict)}</span>'


def _evidence_html(evidence: Any) -> str:
    lines = evidence_lines(evidence)
    return "<ul>" + "".join(f"<li>{_e(t)}</li>" for t in lines) + "</ul>" if lines else ""


def _plain_table(header: Sequence[str], rows: Iterable[Sequence[str]], classes: Sequence[str] = ()) -> str:
    """Cells are already-escaped HTML fragments; header strings are escaped here. In a
    scrolling box: a wide matrix scrolls inside itself, never the page."""
    out = ['<div class="scroll"><table><thead><tr>', *(f"<th>{_e(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            cls = classes[i] if i < len(classes) and classes[i] else ""
            out.append(f'<td class="{cls}">{cell}</td>' if cls else f"<td>{cell}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _legend(report: Report) -> str:
    """The chart's key: only the kinds of square that occur, in STATUSES order."""
    present = {site_status(s) for s in report.sites}
    levels = {confidence_level(s["verdict"], True, s.get("confidence")) or "high"
              for s in report.sites if site_status(s) == "blocked"}
    items: list[tuple[str, str]] = []
    for level, words in (("high", _("blocked, high confidence")), ("medium", _("blocked, medium confidence")),
                         ("low", _("blocked, low confidence"))):
        if level in levels:
            items.append((f"s-blocked q-{level}", words))
    texts = {
        "cant_tell": _("can't tell: failed as blocked sites fail, but no control to tell it from an outage"),
        "error": _("could not measure"),
        "down": _("not blocked: down for everyone"),
        "ok": _("not blocked: works"),
    }
    items += [(f"s-{st}", texts[st]) for st in STATUSES[1:] if st in present]
    if len(report.sites) < len({s["url"] for s in report.sites}) * len(report.networks):
        items.append(("s-none", _("not measured on that network")))
    return '<ul class="legend" id="legend">' + "".join(
        f'<li><span class="sw {cls}"></span>{_e(text)}</li>' for cls, text in items) + "</ul>"


def _chart(report: Report, site_ids: dict[str, int]) -> str:
    """Sites (rows, blocked first) x networks (columns), blocks of CHART_BLOCK rows."""
    nets = [n["network"] for n in report.networks]
    labels = site_labels(report.rows)
    grid = site_grid(report.sites)
    head = ['<div class="gr hd"><span class="lbl"></span>',
            *(f'<span class="nw" title="{_e(n)}">{_e(n)}</span>' for n in nets), "</div>"]
    out = ['<div class="chart">']
    for start in range(0, len(grid), CHART_BLOCK):
        out.append('<div class="blk">')
        out += head
        for url, per_network in grid[start:start + CHART_BLOCK]:
            i = site_ids[url]
            label = labels.get(url, url)
            out.append(f'<div class="gr"><a class="lbl" href="#site-{i}" title="{_e(url)}">{_e(label)}</a>')
            for j, network in enumerate(nets):
                entry = per_network.get(network)
                if entry is None:
                    out.append('<span class="c s-none"></span>')
                    continue
                # the title is all a pointer or a screen reader gets: the site is the row's
                words = f"{network}: {shown_verdict(entry)}"
                level = entry_confidence(entry)
                if level:
                    words += f" ({heading('confidence')}: {level})"
                out.append(f'<a class="c {_status_classes(entry)}" href="#site-{i}-{j}" title="{_e(words)}"></a>')
            out.append("</div>")
        out.append("</div>")
    out.append("</div>")
    return "".join(out)


def _site_table(report: Report, site_ids: dict[str, int]) -> str:
    """Every site x network with its evidence: a table on a screen, cards on a phone.
    Each site is a ``tbody`` (``#site-N``), each network a row (``#site-N-J``)."""
    keys = site_columns(report)
    net_index = {n["network"]: j for j, n in enumerate(report.networks)}
    out = ['<table class="sites"><thead><tr>', *(f'<th class="k-{k}">{_e(heading(k))}</th>' for k in keys),
           "</tr></thead>"]
    current = None
    for s in report.sites:
        i = site_ids[s["url"]]
        if s["url"] != current:
            if current is not None:
                out.append("</tbody>")
            out.append(f'<tbody id="site-{i}">')
            current = s["url"]
        out.append(f'<tr id="site-{i}-{net_index[s["network"]]}">')
        for k in keys:
            if k == "verdict":
                cell = _badge(s) + "".join(f' <span class="note">({_e(tag_label(t))})</span>'
                                           for t in s.get("tags") or [])
            elif k == "seen":
                cell = ", ".join(_code_badge(v) for v in s["verdicts_seen"])
            elif k == "evidence":
                cell = _evidence_html(s["evidence"])
            elif k == "site":
                cell = _breakable_url(s["url"])
            else:
                cell = _e(site_cell(s, k))
            out.append(f'<td class="k-{k}">{cell}</td>')
        out.append("</tr>")
    if current is not None:
        out.append("</tbody>")
    out.append("</table>")
    return "".join(out)


def _counts(report: Report) -> str:
    header, body = counts_rows(report)
    rows = []
    for n, row in enumerate(body):
        first = _code_badge(row[0]) if n < len(report.counts) else _e(row[0])
        rows.append([first, *(_e(c) for c in row[1:])])
    return _plain_table(header, rows, ("", "", *(["num"] * (len(header) - 2))))


def _history(report: Report) -> list[str]:
    parts = ["<h2>" + _e(_("History per site")) + "</h2>", '<div class="hist">']
    order = list(dict.fromkeys(s["url"] for s in report.sites))
    for url in order:
        entries = report.history.get(url, [])
        parts.append(f"<details><summary>{_e(url)} ({len(entries)})</summary>")
        parts.append(_plain_table(
            (heading("measured"), heading("network"), heading("verdict"), heading("confidence")),
            ([_e(short_time(e["measured_at"])), _e(e["network"]), _badge(e), _e(conf(e["confidence"]))]
             for e in entries),
            ("", "", "", "num"),
        ))
        parts.append("</details>")
    parts.append("</div>")
    return parts


def _verdict_meanings(report: Report) -> list[str]:
    present = sorted({s["verdict"] for s in report.sites}, key=verdict_order)
    parts = ["<h2>" + _e(_("What the verdicts mean")) + "</h2>", '<dl class="verdicts">']
    for v in present:
        meaning = _(VERDICTS[v][1]) if v in VERDICTS else _("a verdict this report does not know")
        parts.append(f"<dt>{_code_badge(v)}</dt><dd>{_e(meaning)}</dd>")
    parts.append("</dl>")
    return parts


def render_html(report: Report) -> str:
    """One self-contained HTML file (inline CSS, no script, no image, no external
    resource) that a volunteer can mail or open offline; a Content-Security-Policy
    forbids anything else even if a browser were tricked."""
    site_ids = {url: i for i, url in enumerate(dict.fromkeys(s["url"] for s in report.sites))}
    nets = len(report.networks)
    grid_css = f"div.gr{{grid-template-columns:minmax(4em,15em) repeat({max(nets, 1)},{CELL_PX}px)}}"
    # a card's labels (on a phone), once in the style rather than on 5,000 cells
    card_css = "@media (max-width:700px){" + "".join(
        f"table.sites td.k-{k}::before{{content:{_css_string(heading(k))}}}" for k in site_columns(report)
        if k != "site") + "}"  # the site is the card's title
    lines = headline_lines(report)
    title = _("Censorship measurement report")
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="{_e(language())}"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'; '
        "base-uri 'none'; form-action 'none'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)} {_e(short_time(report.generated_at))} UTC</title>",
        f"<style>{_CSS}{colours.css()}\n{grid_css}\n{card_css}</style></head><body>",
        f"<header><h1>{_e(title)}</h1>",
        f'<div class="headline{" multi" if len(lines) > 1 else ""}" id="headline">',
        *(f'<p class="{"blocked" if s.blocked else "unclear" if s.cant_tell else "none"}">{_e(line)}</p>'
          for line, s in zip(lines, report.summaries, strict=True)),
        "</div>",
        '<dl class="meta">',
        *(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in header_items(report)),
        "</dl></header>",
    ]
    if not report.sites:
        parts.append('<p class="note">' + _e(_("No classified measurements.")) + "</p></body></html>")
        return "\n".join(parts) + "\n"
    chart_note = _("Each square is the latest verdict of a site (row) on a network (column); blocked sites "
                   "come first. Click a square for its evidence.")
    counts_note = _("Latest verdict per site and network; \"blocked at\" counts blocked pairs by the first layer "
                    "where interference was seen.")
    parts += [
        '<section id="chart"><h2>' + _e(_("Sites and networks at a glance")) + "</h2>",
        f'<p class="note">{_e(chart_note)}</p>',
        _legend(report),
        _chart(report, site_ids),
        "</section>",
        '<section id="sites"><h2>' + _e(_("Latest verdict per site and network")) + "</h2>",
        _site_table(report, site_ids),
        "</section>",
        '<section id="counts"><h2>' + _e(_("Counts by method")) + "</h2>",
        f'<p class="note">{_e(counts_note)}</p>',
        _counts(report),
        "</section>",
    ]
    if not report.single_reading:
        parts += _history(report)
    parts += _verdict_meanings(report)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
