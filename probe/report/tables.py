"""Flat exports, JSON and CSV: one row per measurement, nothing summarised away."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable

from probe.report.model import CROSS_FIELDS, DEEP_FIELDS, Row, blocked_word, evidence_lines, network_of

EXPORT_FIELDS = (
    "measurement_id", "url", "domain", "category", "cc", "asn", "network_name", "network", "measured_at",
    "verdict", "blocked", "confidence", "tags", "layer", "rule_id", "evidence", "classifier_version",
    "run_id", "db", *CROSS_FIELDS, *DEEP_FIELDS,
)


def _export_row(r: Row) -> Row:
    out = {k: r.get(k) for k in EXPORT_FIELDS}
    out["network"] = network_of(r)  # "BY/AS6697": how reports and the feeds name it
    out["blocked"] = r.get("blocked")  # true, false, or null: "can't tell"
    out["tags"] = list(r.get("tags") or [])
    out["evidence"] = [
        {"text": e.get("text"), "fields": e.get("fields") or {}} if isinstance(e, dict) else {"text": str(e), "fields": {}}
        for e in (r.get("evidence") or [])
    ]
    return out


def render_json(rows: Iterable[Row]) -> str:
    """A JSON list, one object per measurement, verdict strings exactly as in the spec:
    for other tools, so nothing is summarised away."""
    return json.dumps([_export_row(r) for r in rows], ensure_ascii=False, indent=2, default=str) + "\n"


def render_csv(rows: Iterable[Row]) -> str:
    """One line per measurement for spreadsheets; evidence lines joined with " | "."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        out = _export_row(r)
        out["blocked"] = blocked_word(out["blocked"])
        out["tags"] = " ".join(out["tags"] or [])
        out["evidence"] = " | ".join(evidence_lines(out["evidence"]))
        out["own_blocked"] = blocked_word(out["own_blocked"]) if out["own_verdict"] else ""
        out["networks_compared"] = " ".join(out["networks_compared"] or [])
        writer.writerow(out)
    return buf.getvalue()
