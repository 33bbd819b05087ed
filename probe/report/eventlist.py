"""`probe report --events`: the blocking events found in the merged rows (a site's
verdict on a network changing, confirmed by agreeing measurements; the rule is in
``probe.analysis.events``), as a table, JSON, CSV or Markdown."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

from probe.analysis.events import BlockingEvent, detect_events, event_to_json
from probe.core.i18n import _
from probe.report.model import Row, short_time

EVENT_FIELDS = ("event_id", "kind", "domain", "url", "network", "cc", "asn", "network_name", "before", "after",
                "since", "confirmed_at", "last_before", "measurement_ids", "evidence", "events_version")


def events_of(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """Events in the rows (already judged across networks), newest confirmed first."""
    found: Sequence[BlockingEvent] = detect_events(rows)
    return [event_to_json(e) for e in sorted(found, key=lambda e: (e.confirmed_at, e.event_id), reverse=True)]


def kind_words(e: dict[str, Any]) -> str:
    if e["kind"] == "blocked":
        return _("newly blocked ({after})").format(after=e["after"])
    if e["kind"] == "unblocked":
        return _("unblocked (was {before})").format(before=e["before"])
    return _("method changed: {before} -> {after}").format(before=e["before"], after=e["after"])


def render_events(events: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(events, ensure_ascii=False, indent=2, default=str) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=EVENT_FIELDS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for e in events:
            writer.writerow({**e, "measurement_ids": " ".join(e.get("measurement_ids") or []),
                             "evidence": " | ".join(str(x.get("text")) for x in e.get("evidence") or [])})
        return buf.getvalue()
    if not events:
        return _("no blocking events (a change needs {n} agreeing measurements on each side)").format(n=2) + "\n"
    if fmt == "markdown":
        lines = ["| " + " | ".join([_("confirmed"), _("site"), _("network"), _("change"), _("since")]) + " |",
                 "|---|---|---|---|---|"]
        for e in events:
            cells = [short_time(e["confirmed_at"]), e["domain"] or e["url"], e["network"], kind_words(e),
                     short_time(e["since"])]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines) + "\n"
    lines = []
    for e in events:
        lines.append(_("{when}  {site} on {network}: {change}, since {since}").format(
            when=short_time(e["confirmed_at"]), site=e["domain"] or e["url"], network=e["network"],
            change=kind_words(e), since=short_time(e["since"])))
        lines += ["    " + str(x.get("text")) for x in e.get("evidence") or []]
    return "\n".join(lines) + "\n"
