"""`probe analyze`: (re-)derive the verdict of every measurement in a database.

Idempotent: each run replaces the verdicts of the current classifier version and
leaves raw observations untouched, so a better classifier can be re-run on old data.
Measurements are loaded one at a time and verdicts written in batches: memory stays flat.
"""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlite_utils

from probe import store

from .classify import classify
from .fingerprints import FingerprintDB, default_fingerprints
from .persist import save_verdicts
from .verdicts import LOW_CONFIDENCE, Verdict
from .view import Context

BATCH = 200


@dataclass
class AnalyzeSummary:
    measurements: int = 0
    by_verdict: Counter = field(default_factory=Counter)
    # blocked verdicts under LOW_CONFIDENCE (typically: little to compare with)
    weak_blocked: int = 0
    # likely verdicts of failures that could not be told from outages (no control)
    cant_tell: Counter = field(default_factory=Counter)


def run_context(db: sqlite_utils.Database, run: dict, fingerprints: FingerprintDB,
                lab_networks: tuple[str, ...] = ()) -> Context:
    """What the classifier needs to know about the run a measurement belongs to.
    ``lab_networks`` add to those recorded with the run (a lab's data imported or
    measured without them)."""
    config = json.loads(run.get("config") or "{}")
    nets = []
    for text in [*(config.get("lab_networks") or []), *lab_networks]:
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            pass
    total, failed = db.execute(
        """
        select count(*), sum(case when not exists (
                 select 1 from dns_answers a where a.measurement_id = m.measurement_id and a.side = 'local'
                 and a.answer_type in ('A', 'AAAA'))
               and exists (select 1 from dns_queries q where q.measurement_id = m.measurement_id and q.side = 'local')
               then 1 else 0 end)
        from measurements m where m.run_id = ?
        """,
        [run["run_id"]],
    ).fetchone()
    return Context(
        cc=run.get("cc"),
        asn=run.get("asn"),
        lab_networks=tuple(nets),
        fingerprints=fingerprints,
        run_dns_failure_rate=(failed or 0) / total if total else None,
        run_size=total or 0,
    )


def analyze_db(
    db: sqlite_utils.Database,
    *,
    fingerprints: FingerprintDB | None = None,
    run_id: str | None = None,
    progress: Callable[[int, Verdict], None] | None = None,
    lab_networks: tuple[str, ...] = (),
) -> AnalyzeSummary:
    fingerprints = fingerprints or default_fingerprints()
    summary = AnalyzeSummary()
    runs = list(db.query("select * from runs" + (" where run_id = ?" if run_id else ""), [run_id] if run_id else []))
    for run in runs:
        ctx = run_context(db, run, fingerprints, lab_networks)
        ids = [r["measurement_id"] for r in db.query(
            "select measurement_id from measurements where run_id = ? order by started_at", [run["run_id"]])]
        batch: list[tuple[str, Verdict]] = []
        for mid in ids:
            m = store.load_measurement(db, mid)
            if m is None:
                continue
            v = classify(m, ctx)
            batch.append((mid, v))
            summary.measurements += 1
            summary.by_verdict[v.verdict] += 1
            summary.weak_blocked += v.blocked is True and v.confidence < LOW_CONFIDENCE
            if v.blocked is None:
                summary.cant_tell[v.verdict] += 1
            if progress is not None:
                progress(summary.measurements, v)
            if len(batch) >= BATCH:
                save_verdicts(db, batch)
                batch = []
        if batch:
            save_verdicts(db, batch)
    return summary
