"""A verdict as a `verdicts` row, and saving a batch of them through the store.

A verdict is derived data: re-deriving replaces the row of the same measurement and
classifier version, and never touches the raw observations it came from."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import sqlite_utils

from probe import store
from probe.core.records import utcnow
from probe.core.verdicts import Verdict


def verdict_row(measurement_id: str, v: Verdict) -> dict[str, Any]:
    return {
        "measurement_id": measurement_id,
        "classifier_version": v.classifier_version,
        "verdict": v.verdict,
        "blocked": None if v.blocked is None else int(v.blocked),
        "confidence": round(v.confidence, 3),
        "layer": v.layer,
        "rule_id": v.rule_id,
        "evidence": json.dumps([asdict(e) for e in v.evidence], ensure_ascii=False, default=str),
        "layers": json.dumps({k: asdict(f) for k, f in v.layers.items()}, ensure_ascii=False, default=str),
        "tags": json.dumps(v.tags) if v.tags else None,
        "analyzed_at": utcnow(),
    }


def save_verdicts(db: sqlite_utils.Database, items: Iterable[tuple[str, Verdict]]) -> int:
    """Upsert verdicts, in one transaction; returns how many were written."""
    return store.save_verdict_rows(db, [verdict_row(mid, v) for mid, v in items])

