"""The site x day heat map (matplotlib), as PNG bytes."""

from __future__ import annotations

import io
from typing import NamedTuple

from probe.report.colours import NO_DATA_COLOUR, verdict_colour
from probe.report.model import Row, day_matrix, site_labels, verdict_order

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
    import matplotlib
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = list(rows)
    sites, days, cells = day_matrix(rows)
    labels = site_labels(rows)
    present = sorted({v for per in cells.values() for v in per.values()}, key=verdict_order)
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
        for ax, net in zip(axes, nets, strict=False):
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
