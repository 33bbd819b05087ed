"""Verdicts in and out of the `verdicts` table (created by the store's migration 3).

A verdict is derived data: re-deriving replaces the row of the same measurement and
classifier version, and never touches the raw observations it came from."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from typing import Any

import sqlite_utils

from probe.core.records import utcnow

from probe.core.verdicts import Verdict


def version_key(version: str) -> tuple:
    """'1.10.0' after '1.9.0': compare as numbers, not text."""
    return tuple(int(p) if p.isdigit() else p for p in version.split("."))


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
    rows = [verdict_row(mid, v) for mid, v in items]
    with db.atomic():
        db["verdicts"].upsert_all(rows, pk=("measurement_id", "classifier_version"))
    return len(rows)


def report_rows(db: sqlite_utils.Database, classifier_version: str | None = None) -> Iterator[dict[str, Any]]:
    """One row per classified measurement with what a report needs: url, domain, cc,
    asn, network, measured_at, verdict, blocked, confidence, layer, rule_id, evidence
    (list of {text, fields}). The latest classifier version present is used unless one
    is named."""
    if classifier_version is None:
        versions = [r[0] for r in db.execute("select distinct classifier_version from verdicts")]
        if not versions:
            return
        classifier_version = max(versions, key=version_key)
    sql = """
        select m.measurement_id, m.url, m.hostname as domain, m.category, m.started_at as measured_at,
               r.run_id, r.cc, r.asn, r.network_name,
               v.verdict, v.blocked, v.confidence, v.layer, v.rule_id, v.evidence, v.classifier_version, v.tags
        from verdicts v
        join measurements m using (measurement_id)
        join runs r on r.run_id = m.run_id
        where v.classifier_version = ?
        order by m.url, m.started_at
    """
    for row in db.query(sql, [classifier_version]):
        row["blocked"] = None if row["blocked"] is None else bool(row["blocked"])
        row["evidence"] = json.loads(row["evidence"] or "[]")
        row["tags"] = json.loads(row["tags"] or "[]")
        yield row
