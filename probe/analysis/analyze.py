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
from probe.analysis.classify import classify
from probe.analysis.fingerprints import FingerprintDB, default_fingerprints
from probe.analysis.persist import save_verdicts
from probe.analysis.view import Context
from probe.core.verdicts import LOW_CONFIDENCE, Verdict

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
    total, failed = store.dns_failure_counts(db, run["run_id"])
    return Context(
        broken_families=_broken_families(db, run["run_id"]),
        link_bytes_per_s=config.get("link_bytes_per_s") or _link_speed_of_run(db, run["run_id"]),
        cc=run.get("cc"),
        asn=run.get("asn"),
        lab_networks=tuple(nets),
        fingerprints=fingerprints,
        run_dns_failure_rate=(failed or 0) / total if total else None,
        run_size=total or 0,
    )


# A family is the vantage point's problem, not a censor's, when it fails for at least
# this share of the run's dual-stack sites (and for at least BROKEN_FAMILY_MIN of them).
BROKEN_FAMILY_SHARE = 0.8
BROKEN_FAMILY_MIN = 3


def _broken_families(db: sqlite_utils.Database, run_id: str) -> frozenset[int]:
    rows = store.connects_by_family(db, run_id)
    dual = [r for r in rows if r["v4"] and r["v6"]]
    out = set()
    for fam, ok, other in ((4, "v4ok", "v6ok"), (6, "v6ok", "v4ok")):
        failing = sum(1 for r in dual if not r[ok] and r[other])
        if failing >= BROKEN_FAMILY_MIN and failing >= BROKEN_FAMILY_SHARE * len(dual):
            out.add(fam)
    return frozenset(out)


# Pages at least this large say something about the link's speed, not only its latency.
LINK_SAMPLE_MIN_BYTES = 64 * 1024


def _link_speed_of_run(db: sqlite_utils.Database, run_id: str) -> float | None:
    """The median download speed of the run's large pages (bytes/s): what the link
    carries when no helper measured it. A throttled site is one among many."""
    speeds = sorted(
        length / (ms / 1000) for length, ms in store.download_samples(db, run_id, LINK_SAMPLE_MIN_BYTES)
    )
    return speeds[len(speeds) // 2] if speeds else None


def analyze_db(
    db: sqlite_utils.Database,
    *,
    fingerprints: FingerprintDB | None = None,
    run_id: str | None = None,
    progress: Callable[[int, Verdict], None] | None = None,
    lab_networks: tuple[str, ...] = (),
    only: set[str] | None = None,
) -> AnalyzeSummary:
    """Classify every measurement (of one run, or only the ids in ``only``: what a
    collector just received) and store the verdicts in batches."""
    fingerprints = fingerprints or default_fingerprints()
    summary = AnalyzeSummary()
    runs = store.runs(db, run_id)
    for run in runs:
        ids = [mid for mid, _ in store.measurement_ids(db, run["run_id"]) if only is None or mid in only]
        if not ids:
            continue
        ctx = run_context(db, run, fingerprints, lab_networks)
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
