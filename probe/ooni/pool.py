"""Decoding OONI documents in worker processes while the importing process writes.

Why: turning a measurement's JSON into records (json.loads, ooni_to_measurement, the
rows with their gzipped bodies) is CPU work, about a millisecond per real measurement,
while only one process can write to SQLite. So the importing process reads lines and
writes rows, and a pool of workers (one per core) decodes chunks of lines.

Chunks go out in the input's order and their results are taken back in that order, so
the database gets the rows a single-process import would write, with the same ids; at
most a few chunks are in flight, so memory stays flat whatever the size of the input.
A small input never pays for a pool: it is decoded in the importing process until
``pool_after`` documents have been seen.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from probe.core.i18n import _
from probe.core.workers import exit_with_parent
from probe.ooni.files import OoniImportError

T = TypeVar("T")
R = TypeVar("R")

POOL_AFTER = 2000  # documents: below about 2 s of work, starting workers costs more than it saves
CHUNK_DOCUMENTS = 200  # a chunk is also one write transaction of the import
CHUNK_CHARS = 4 * 1024 * 1024  # ... and is cut earlier for huge lines, so memory stays flat
IN_FLIGHT_PER_WORKER = 2  # one being decoded, one waiting: the workers never starve


def pool_possible() -> bool:
    """Workers are forked, not spawned: ``python -m probe`` has no ``__main__`` guard a
    spawned child could import safely, and a fork starts in milliseconds. Elsewhere
    than Linux an import decodes in its own process, as before."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def _worker_init(parent: int) -> None:
    # Ctrl-C is the importing process's to handle; a worker just finishes or is ended.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(parent)


def _chunks(items: Iterable[T], size: Callable[[T], int]) -> Iterator[list[T]]:
    chunk: list[T] = []
    chars = 0
    for item in items:
        chunk.append(item)
        chars += size(item)
        if len(chunk) >= CHUNK_DOCUMENTS or chars >= CHUNK_CHARS:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


class Decoder:
    """Runs a chunk function over a stream of items, in worker processes once the work
    is large enough; shared by all the files of one import, so that many small files
    start the pool once. ``workers=0`` never starts one."""

    def __init__(self, workers: int | None = None, pool_after: int = POOL_AFTER) -> None:
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self.pool_after = pool_after
        self.seen = 0
        self._pool: ProcessPoolExecutor | None = None

    @property
    def parallel(self) -> bool:
        """Whether a pool has been started (for tests and the benchmark)."""
        return self._pool is not None

    def _pool_if_worth(self) -> ProcessPoolExecutor | None:
        if self._pool is None and self.workers > 0 and self.seen > self.pool_after and pool_possible():
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"),
                                             initializer=_worker_init, initargs=(os.getpid(),))
        return self._pool

    def map_chunks(self, fn: Callable[[list[T], str], list[R]], items: Iterable[T], arg: str,
                   size: Callable[[T], int] = lambda _item: 1) -> Iterator[list[R]]:
        """``fn(chunk, arg)`` for each chunk of ``items``, results in the input's order.
        ``fn`` must be a module-level function (it is sent to the workers by name)."""
        pending: deque[Future[list[R]]] = deque()
        try:
            for chunk in _chunks(items, size):
                self.seen += len(chunk)
                pool = self._pool_if_worth()
                if pool is None:
                    yield fn(chunk, arg)
                    continue
                pending.append(pool.submit(fn, chunk, arg))
                while len(pending) >= self.workers * IN_FLIGHT_PER_WORKER:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool as exc:
            raise OoniImportError(_("a decoding process stopped unexpectedly ({error})").format(error=exc)) from None
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
