"""A verdict as a `verdicts` row, and saving a batch of them through the store.

A verdict is derived data: re-deriving replaces the row of the same measurement and
classifier version, and never touches the raw observations it came from."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

import sqlite_utils

from probe import store
from probe.core.records import utcnow
from probe.core.verdicts import Evidence, LayerFinding, Verdict

_FINDING_FIELDS = tuple(f.name for f in dataclasses.fields(LayerFinding))


def _plain(value: Any) -> Any:
    """JSON for what json cannot encode by itself: a dataclass as its fields (as
    dataclasses.asdict would give), anything else as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def _evidence(e: Evidence) -> dict[str, Any]:
    return {"text": e.text, "fields": e.fields}


def _finding(f: LayerFinding) -> dict[str, Any]:
    """dataclasses.asdict(f) without its deep copy: the same keys in the same order
    (a fifth of the classifier's time went to copying what is only serialised)."""
    out = {name: getattr(f, name) for name in _FINDING_FIELDS}
    out["evidence"] = [_evidence(e) for e in f.evidence]
    return out


# one encoder for every row (json.dumps with options builds a new one per call)
_dumps = json.JSONEncoder(ensure_ascii=False, default=_plain).encode


def verdict_tuple(measurement_id: str, v: Verdict, analyzed_at: str) -> tuple:
    """The row in store.VERDICT_COLUMNS order."""
    return (
        measurement_id,
        v.classifier_version,
        v.verdict,
        None if v.blocked is None else int(v.blocked),
        round(v.confidence, 3),
        v.layer,
        v.rule_id,
        _dumps([_evidence(e) for e in v.evidence]),
        _dumps({k: _finding(f) for k, f in v.layers.items()}),
        json.dumps(v.tags) if v.tags else None,
        analyzed_at,
    )


def save_verdicts(db: sqlite_utils.Database, items: Iterable[tuple[str, Verdict]]) -> int:
    """Upsert verdicts, in one transaction; returns how many were written."""
    now = utcnow()
    return store.save_verdict_tuples(db, [verdict_tuple(mid, v, now) for mid, v in items])
