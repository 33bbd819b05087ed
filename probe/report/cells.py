"""What the Markdown and HTML reports both show, cell by cell."""

from __future__ import annotations

from typing import Any

from probe.core.verdicts import CANT_TELL, tag_label
from probe.report.model import (
    Report,
    Row,
    blocked_word,
    evidence_lines,
    is_blocked,
    short_time,
)
from probe.report.terminal import conf, network_label

SITE_COLUMNS = ("site", "network", "verdict", "blocked", "confidence", "agree", "verdict first seen",
                "verdict last seen", "first measured", "last measured", "verdicts seen", "evidence (latest)")


def site_cells(s: Row) -> list[Any]:
    verdict = s["verdict"] + (f" ({', '.join(tag_label(t) for t in s['tags'])})" if s.get("tags") else "")
    return [s["url"], s["network"], verdict, blocked_word(s["blocked"]), conf(s["confidence"]),
            f"{s['agree']}/{s['total']}", short_time(s["first_seen"]), short_time(s["last_seen"]),
            short_time(s["first_measured"]), short_time(s["last_measured"]), ", ".join(s["verdicts_seen"]),
            "; ".join(evidence_lines(s["evidence"]))]


def header_items(report: Report) -> list[tuple[str, str]]:
    return [
        ("databases", ", ".join(report.sources) or "-"),
        ("networks", "; ".join(network_label(n) for n in report.networks) or "-"),
        ("measured (UTC)", f"{short_time(report.first_measured)} .. {short_time(report.last_measured)}"),
        ("classifier version", ", ".join(report.classifier_versions) or "-"),
        ("measurements", f"{len(report.rows)} classified, {len({s['url'] for s in report.sites})} sites"),
        ("generated (UTC)", short_time(report.generated_at)),
    ]


def counts_rows(report: Report) -> tuple[list[str], list[list[Any]]]:
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
