"""`probe analyze`: (re-)derive the verdict of every measurement in a database.

Idempotent: each run replaces the verdicts of the current classifier version and
leaves raw observations untouched, so a better classifier can be re-run on old data.

Built for a million measurements a minute on a laptop: measurements are read a batch
at a time (one query per table), classified in a process pool over batches when there
are many (one worker per core; the main process only writes), and written a batch per
transaction. A verdict that is current (same classifier, probe version, fingerprints
and run-wide context: the run's signature) is not derived again unless asked
(``force``), so analysing an unchanged database returns at once. Memory stays flat:
only a bounded number of batches is ever in flight.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import itertools
import json
import os
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from probe import __version__, store
from probe.analysis.classify import classify
from probe.analysis.fingerprints import FingerprintDB, default_fingerprints
from probe.analysis.persist import verdict_tuple
from probe.analysis.runctx import LINK_SAMPLE_MIN_BYTES, RunAggregates, context_from_aggregates
from probe.analysis.view import Context
from probe.core.records import utcnow
from probe.core.verdicts import CLASSIFIER_VERSION, LOW_CONFIDENCE
from probe.core.workers import exit_with_parent

# Measurements per read, per job of the pool and per write transaction.
BATCH = 1000
# Below this many measurements to classify, starting worker processes costs more than
# it saves: they are classified in this process.
POOL_MIN = 5000


@dataclass
class AnalyzeSummary:
    measurements: int = 0  # in scope, each with a current verdict now
    classified: int = 0  # derived by this call
    current: int = 0  # already current: not derived again
    by_verdict: Counter = field(default_factory=Counter)
    # blocked verdicts under LOW_CONFIDENCE (typically: little to compare with)
    weak_blocked: int = 0
    # likely verdicts of failures that could not be told from outages (no control)
    cant_tell: Counter = field(default_factory=Counter)


def run_context(db: sqlite_utils.Database, run: dict, fingerprints: FingerprintDB,
                lab_networks: tuple[str, ...] = ()) -> Context:
    """What the classifier needs to know about the run a measurement belongs to, from
    the store's aggregates (the rules over them: analysis.runctx, shared with the
    pipeline). ``lab_networks`` add to those recorded with the run (a lab's data
    imported or measured without them)."""
    total, failed = store.dns_failure_counts(db, run["run_id"])
    aggregates = RunAggregates(total=total or 0, dns_failed=failed or 0,
                               connects=store.connects_by_family(db, run["run_id"]),
                               downloads=store.download_samples(db, run["run_id"], LINK_SAMPLE_MIN_BYTES))
    return context_from_aggregates(run, aggregates, fingerprints, lab_networks)


def context_signature(ctx: Context) -> str:
    """What a run's verdicts depend on besides each measurement's own rows: the
    classifier and probe versions, the fingerprints and the run-wide context. A run
    whose signature is unchanged need not be classified again."""
    parts = [CLASSIFIER_VERSION, __version__, ctx.fingerprints.digest(), ctx.cc, ctx.asn,
             sorted(str(n) for n in ctx.lab_networks), ctx.run_dns_failure_rate, ctx.run_size,
             sorted(ctx.broken_families), ctx.link_bytes_per_s]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


@dataclass
class _Job:
    """One batch of one run's measurements, classified together (possibly elsewhere)."""

    run_id: str
    ctx: Context  # its fingerprints left out when sent to a worker (each has its own)
    ids: list[str]


def classify_batch(db: sqlite_utils.Database, ids: list[str], ctx: Context) -> list[tuple]:
    """Read a batch of measurements and classify each: verdict rows ready to store.
    The cycle collector is paused meanwhile: records and views form no cycles (they
    are freed as they go), and its passes over a batch's many young objects took a
    third of the time."""
    now = utcnow()
    paused = gc.isenabled()
    gc.disable()
    try:
        return [verdict_tuple(m.measurement_id, classify(m, ctx), now) for m in store.load_measurements(db, ids)]
    finally:
        if paused:
            gc.enable()


def analyze_db(
    db: sqlite_utils.Database,
    *,
    fingerprints: FingerprintDB | None = None,
    run_id: str | None = None,
    lab_networks: tuple[str, ...] = (),
    only: set[str] | None = None,
    force: bool = False,
    workers: int | None = None,
) -> AnalyzeSummary:
    """Classify every measurement whose verdict is not current (of one run, or only
    the ids in ``only``: what a collector just received) and store the verdicts in
    batches. ``force`` re-derives current verdicts too; ``workers`` caps the process
    pool (default: one per core; 1 classifies in this process)."""
    fingerprints = fingerprints or default_fingerprints()
    summary = AnalyzeSummary()
    jobs = _jobs(db, store.runs(db, run_id), fingerprints, lab_networks, only, force, summary)
    for job, rows in _execute(db, jobs, fingerprints, workers):
        if isinstance(job, _RunDone):  # results come in order: the run's batches are all stored
            store.set_analysis_state(db, job.run_id, CLASSIFIER_VERSION, job.signature, job.inputs, utcnow(),
                                     LOW_CONFIDENCE)
        elif rows is not None:
            store.save_verdict_tuples(db, rows)
            _tally(summary, rows)
    return summary


@dataclass
class _RunDone:
    """Marks the end of a run's jobs: the signature to record once they are stored
    (None when only some of its measurements were classified: ``only``)."""

    run_id: str
    signature: str | None
    inputs: str | None = None


def _inputs(run: dict, shape: tuple[int, int] | None, fingerprints: FingerprintDB,
            lab_networks: tuple[str, ...]) -> str:
    """What a run's context is computed from, cheap to read: the versions, the
    fingerprints, the run's row and the count and last rowid of its measurements."""
    parts = [CLASSIFIER_VERSION, __version__, fingerprints.digest(), sorted(lab_networks), run.get("cc"),
             run.get("asn"), run.get("config"), list(shape or ())]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


def _jobs(db: sqlite_utils.Database, runs: list[dict], fingerprints: FingerprintDB, lab_networks: tuple[str, ...],
          only: set[str] | None, force: bool, summary: AnalyzeSummary) -> Iterator[_Job | _RunDone]:
    """The batches to classify, run by run, each run's followed by its _RunDone. A run
    whose inputs are as they were when all its verdicts were derived, and none of whose
    measurements lacks one, is counted from its state and not read at all."""
    states = store.analysis_states(db) if only is None and not force else {}
    shapes = store.run_shapes(db)
    unjudged = store.unjudged_counts(db, CLASSIFIER_VERSION) if states else {}
    for run in runs:
        rid = run["run_id"]
        inputs = _inputs(run, shapes.get(rid), fingerprints, lab_networks)
        state = states.get(rid)
        if state is not None and state["inputs"] == inputs and not unjudged.get(rid):
            _tally_counts(summary, json.loads(state["counts"] or "[]"))
            continue
        ids = [mid for mid, _ in store.measurement_ids(db, rid) if only is None or mid in only]
        if not ids:
            continue
        ctx = run_context(db, run, fingerprints, lab_networks)
        signature = context_signature(ctx)
        if state is not None and state["signature"] == signature:
            current = store.current_verdicts(db, rid, CLASSIFIER_VERSION)
            _tally(summary, [(mid, None, *current[mid]) for mid in ids if mid in current], classified=False)
            ids = [mid for mid in ids if mid not in current]
        for start in range(0, len(ids), BATCH):
            yield _Job(rid, ctx, ids[start:start + BATCH])
        yield _RunDone(rid, signature, inputs) if only is None else _RunDone(rid, None)


def _tally_counts(summary: AnalyzeSummary, counts: list[list]) -> None:
    """Count a run's current verdicts from its state: [verdict, blocked, weak, n] rows."""
    for verdict, blocked, weak, n in counts:
        summary.measurements += n
        summary.current += n
        summary.by_verdict[verdict] += n
        summary.weak_blocked += n if blocked and weak else 0
        if blocked is None:
            summary.cant_tell[verdict] += n


def _tally(summary: AnalyzeSummary, rows: list[tuple], classified: bool = True) -> None:
    """Count verdict rows (VERDICT_COLUMNS order: verdict, blocked, confidence at 2-4)."""
    for row in rows:
        verdict, blocked, confidence = row[2], row[3], row[4]
        summary.measurements += 1
        if classified:
            summary.classified += 1
        else:
            summary.current += 1
        summary.by_verdict[verdict] += 1
        summary.weak_blocked += bool(blocked) and confidence < LOW_CONFIDENCE
        if blocked is None:
            summary.cant_tell[verdict] += 1


Done = tuple[_Job, list[tuple]] | tuple[_RunDone, None]


def _execute(db: sqlite_utils.Database, jobs: Iterator[_Job | _RunDone], fingerprints: FingerprintDB,
             workers: int | None) -> Iterator[Done]:
    """Classify the jobs in this process, or, once there are POOL_MIN measurements to
    do in a database file, in a pool of processes; yield each job with its rows, in
    the order of ``jobs`` (so a run's marker comes after all its rows)."""
    file = store.db_file(db)
    path = file if file not in (":memory:", "?", "") else None  # workers open the file itself
    workers = workers or len(os.sched_getaffinity(0))
    buffered: list[_Job | _RunDone] = []
    count = 0
    for item in jobs:
        buffered.append(item)
        count += len(item.ids) if isinstance(item, _Job) else 0
        if path is not None and workers > 1 and count >= POOL_MIN:
            yield from _in_pool(path, itertools.chain(buffered, jobs), fingerprints, workers)
            return
    for item in buffered:
        yield (item, classify_batch(db, item.ids, item.ctx)) if isinstance(item, _Job) else (item, None)


def _in_pool(path: str, jobs: Iterator[_Job | _RunDone], fingerprints: FingerprintDB, workers: int) -> Iterator[Done]:
    import multiprocessing

    # spawn: workers start from a clean interpreter (never a fork of a process with
    # threads, as `probe run` has), as direct children that notice when we are gone
    context = multiprocessing.get_context("spawn")
    in_flight: deque[tuple[_Job | _RunDone, Future | None]] = deque()
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(path, fingerprints, os.getpid())) as pool:
        for item in jobs:
            future = None
            if isinstance(item, _Job):
                future = pool.submit(_work, item.ids, dataclasses.replace(item.ctx, fingerprints=_NO_FINGERPRINTS))
            in_flight.append((item, future))
            while len(in_flight) > 2 * workers or (in_flight and in_flight[0][1] is None):
                yield _next(in_flight)
        while in_flight:
            yield _next(in_flight)


def _next(in_flight: deque[tuple[_Job | _RunDone, Future | None]]) -> Done:
    item, future = in_flight.popleft()
    if isinstance(item, _Job):
        assert future is not None
        return item, future.result()
    return item, None


_NO_FINGERPRINTS = FingerprintDB([])
_worker: dict[str, Any] = {}


def _start_worker(path: str, fingerprints: FingerprintDB, parent: int) -> None:
    """In each worker: the database opened read-only (WAL: readers never wait for the
    writer), the fingerprints indexed once, and a watch that ends the worker when
    `probe analyze` is gone (killed, even with SIGKILL): no orphan keeps a core busy."""
    _worker["db"] = store.open_db(path, create=False, readonly=True)
    _worker["fingerprints"] = fingerprints
    exit_with_parent(parent)


def _work(ids: list[str], ctx: Context) -> list[tuple]:
    return classify_batch(_worker["db"], ids, dataclasses.replace(ctx, fingerprints=_worker["fingerprints"]))
