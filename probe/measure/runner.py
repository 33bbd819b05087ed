"""A run: measure every pending target of a run with bounded concurrency, store each as
it finishes, stop on time.

Targets are paged from the database (not held in memory) and fed to a fixed pool of
workers, so memory stays flat however long the list is. A worker is free for the next
target as soon as a target's network work is done; the target's late-DNS window
(``--dns-wait``) then closes in the background, and the measurement is stored when it
has, with what it heard (``Pending``). The workers start spread over half a second, and
connections to any one address are capped (``probe.measure.pacing``). ``--max-runtime`` is a hard
deadline: when it passes, URLs still in flight are cancelled, marked ``not_measured`` and
left for ``--resume`` (OONI lets them finish and overruns; volunteers asked for better).
``--max-bytes`` is a data cap that holds the same way: when the run has downloaded that
much, what is in flight is cancelled and left for ``--resume``. A target whose network
work is done is not cancelled by either: its late-DNS window ends by itself within
``--dns-wait`` (1 s by default), and it is stored.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

import sqlite_utils

from probe import store
from probe.core.records import Measurement
from probe.core.scrub import Scrubber, scrub_control, scrub_measurement
from probe.measure.control import TRANSIENT
from probe.measure.http import ByteMeter
from probe.measure.netwatch import NetworkWatch
from probe.measure.pacing import HostLimiter, start_delay
from probe.measure.url import Contexts, Control, Pending, ProbeConfig, measure_network


class Reporter(Protocol):
    def started(self, total: int, already_done: int) -> None: ...
    def measured(self, m: Measurement) -> None: ...
    def cancelled(self, url: str) -> None: ...
    def finished(self, summary: RunSummary) -> None: ...


@dataclass
class RunSummary:
    run_id: str
    measured: int = 0
    not_measured: int = 0
    status: str = "finished"  # finished | interrupted | timed_out | data_cap | network_changed
    elapsed_s: float = 0.0
    cancelled_urls: list[str] = field(default_factory=list)
    controls_retried: int = 0  # control answers lost for a passing reason, asked again at the end
    controls_recovered: int = 0  # ... and got that time
    network_change: list[str] = field(default_factory=list)  # what changed (words), when the run stopped for it
    marked: int = 0  # measurements in flight while the network changed
    lost_controls: Counter = field(default_factory=Counter)  # reason -> measurements still without one
    storage_error: str | None = None  # the database refused a write (full disk, ...): the run stopped there
    disk_full: bool = False
    bytes_used: int = 0  # downloaded by the measurements (page bodies and headers)


async def run_targets(
    db: sqlite_utils.Database,
    run_id: str,
    config: ProbeConfig,
    *,
    control: Control | None,
    concurrency: int,
    reporter: Reporter,
    max_runtime: float | None = None,
    max_bytes: int | None = None,
    install_signal_handlers: bool = True,
) -> RunSummary:
    """Measure the run's pending targets; returns when all are done or time is up."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    contexts = Contexts.for_config(config)
    scrubber = config.scrubber()  # the volunteer's address in pages: bodies as they stream, the rest here
    summary = RunSummary(run_id)
    meter = contexts.meter = ByteMeter(max_bytes)
    contexts.hosts = HostLimiter(config.per_host_connections)
    counts = store.count_targets(db, run_id)
    reporter.started(total=sum(counts.values()), already_done=counts["done"])

    targets = store.paged_targets(db, run_id)
    in_flight: dict[asyncio.Task, str] = {}  # network work, holding a worker
    closing: dict[asyncio.Task, str] = {}  # late-DNS windows, holding no worker
    # Measurements waiting for their window, at most a few per worker: what bounds the
    # sockets held open (three per target) when targets finish faster than the window.
    backlog = asyncio.Semaphore(LATE_BACKLOG_PER_WORKER * max(1, concurrency))
    stop = asyncio.Event()
    watch = NetworkWatch(network_anchors(config))

    def request_stop(status: str, cancel: bool = True) -> None:
        if not stop.is_set():
            summary.status = status
            stop.set()
            if cancel:  # not the closing windows: their network work (and data) is spent, they end by themselves
                for task in list(in_flight):
                    task.cancel()

    def network_moved() -> None:
        """Stop handing out targets; those in flight finish (and are marked), the
        caller continues the run on the new network."""
        if watch.check():
            summary.network_change = watch.changes[-1].what
            request_stop("network_changed", cancel=False)

    async def watching() -> None:
        while not stop.is_set():
            await asyncio.sleep(WATCH_INTERVAL)
            network_moved()

    handlers: list[signal.Signals] = []
    if install_signal_handlers:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, request_stop, "interrupted")
                handlers.append(sig)
            except (NotImplementedError, RuntimeError):
                pass
    timer = loop.call_later(max_runtime, request_stop, "timed_out") if max_runtime else None
    meter.on_cap = lambda: request_stop("data_cap")

    async def worker() -> None:
        await asyncio.sleep(start_delay(config.start_spread))
        while not stop.is_set():
            target = next(targets, None)
            if target is None:
                return
            epoch = watch.epoch
            task = asyncio.ensure_future(
                measure_network(target.url, config, contexts=contexts, control=control, category=target.category)
            )
            in_flight[task] = target.url
            try:
                pending = await task
                network_moved()
            except asyncio.CancelledError:
                summary.cancelled_urls.append(target.url)
                reporter.cancelled(target.url)
                if not stop.is_set():
                    raise
                return
            finally:
                in_flight.pop(task, None)
            await backlog.acquire()
            closer = asyncio.ensure_future(finish(pending, epoch))
            closing[closer] = target.url
            closer.add_done_callback(closed)

    def closed(closer: asyncio.Task) -> None:
        url = closing.pop(closer)
        backlog.release()
        if closer.cancelled():  # the run itself was cancelled (a second Ctrl-C): left for --resume
            summary.cancelled_urls.append(url)
            reporter.cancelled(url)

    async def finish(pending: Pending, epoch: int) -> None:
        """Close the target's late-DNS window, then store the measurement: only a
        finished measurement is stored, so a killed run loses none that finished."""
        m = await pending.finish()
        network_moved()
        m.network_epoch, m.network_changed = epoch, watch.epoch != epoch
        summary.marked += m.network_changed
        scrub_measurement(m, scrubber)  # before anything is written, or reported
        try:
            store.save_measurement(db, run_id, m)
        except store.StoreError as exc:
            # What is stored is safe; this target stays pending, for --resume.
            summary.storage_error, summary.disk_full = str(exc), isinstance(exc, store.StoreFull)
            request_stop("interrupted")
            return
        summary.measured += 1
        reporter.measured(m)

    watcher = asyncio.ensure_future(watching())
    try:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
        while closing:  # the last windows (each closes by itself within --dns-wait)
            for outcome in await asyncio.gather(*list(closing), return_exceptions=True):
                if isinstance(outcome, Exception):
                    raise outcome
        if control is not None and not stop.is_set() and summary.storage_error is None:
            left = max_runtime - (loop.time() - t0) if max_runtime else None
            budget = max(60.0, 2 * config.control_timeout) if left is None else min(left, max(60.0, 2 * config.control_timeout))
            await retry_lost_controls(db, run_id, control, budget, summary, scrubber)
    finally:
        watcher.cancel()
        if timer is not None:
            timer.cancel()
        for sig in handlers:
            loop.remove_signal_handler(sig)
    try:
        if summary.cancelled_urls:
            store.mark_not_measured(db, run_id, summary.cancelled_urls)
    except store.StoreError as exc:  # they stay pending: --resume measures them all the same
        summary.storage_error = summary.storage_error or str(exc)
    counts = store.count_targets(db, run_id)
    summary.not_measured = counts["pending"] + counts["not_measured"]
    if summary.status == "finished" and summary.not_measured:
        summary.status = "interrupted"
    if summary.status != "network_changed":  # that run is split by the caller
        try:
            store.set_run_status(db, run_id, summary.status)
        except store.StoreError as exc:  # left 'running': --resume finds it as unfinished
            summary.storage_error = summary.storage_error or str(exc)
    if control is not None:
        summary.lost_controls = Counter(r["reason"] or "unknown" for r in store.lost_controls(db, run_id))
    summary.elapsed_s = round(loop.time() - t0, 3)
    summary.bytes_used = meter.used
    reporter.finished(summary)
    return summary


# Measurements whose late-DNS window is still open, per worker, before a worker waits
# for one to close: with the default 1 s window a worker finishes about 4 reachable
# targets a second, so this only holds back a run of very quick failures.
LATE_BACKLOG_PER_WORKER = 8

# How often the network is looked at between measurements (it is also looked at as each
# measurement ends): a few syscalls and two small file reads.
WATCH_INTERVAL = 1.0


def network_anchors(config: ProbeConfig) -> list[str]:
    """What the network watch asks the route towards: the resolvers and the sink (the
    control helper's address, when there is one)."""
    return [*config.resolvers, *([config.dns_sink] if config.dns_sink else [])]


async def retry_lost_controls(db: sqlite_utils.Database, run_id: str, control: Control, budget: float,
                              summary: RunSummary, scrubber: Scrubber | None = None) -> None:
    """Ask the control once more for every measurement of the run whose answer was lost
    for a passing reason (load, a broken connection, a timeout): only the control is
    asked again, nothing measured locally is repeated, and the verdict is re-derived
    from the new answer. Bounded by ``budget`` seconds; what it did not get stays lost."""
    lost = [r for r in store.lost_controls(db, run_id) if r["reason"] in TRANSIENT]
    if not lost:
        return
    summary.controls_retried = len(lost)
    revive = getattr(control, "revive", None)
    if revive is not None:
        await revive()

    async def one(row: dict) -> None:
        result = await control.measure(row["url"], json.loads(row["addresses"] or "[]"))
        if scrubber is not None:
            scrub_control(result, scrubber)
        try:
            store.replace_control(db, row["measurement_id"], result)
        except store.StoreError as exc:  # the first (failed) answer stays; the run is safe
            summary.storage_error = summary.storage_error or str(exc)
            summary.disk_full = summary.disk_full or isinstance(exc, store.StoreFull)
            return
        if result.failure is None:
            summary.controls_recovered += 1

    try:
        async with asyncio.timeout(budget):
            await asyncio.gather(*(one(r) for r in lost))
    except TimeoutError:
        pass
