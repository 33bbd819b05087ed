"""One run at a time per database: a lock file next to it, held while a run measures.

Why: two runs on one database would interleave their targets' rows safely (every write
takes SQLite's write lock first), but a volunteer who starts a second run by mistake
wants to hear so at once, with the other run's pid, not find two half-runs later. The
lock is an flock on ``<db>.lock``: the kernel drops it when the process ends, however
it ends (kill -9 included), so a stale lock file never blocks the next run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from probe.core.i18n import _
from probe.store.schema import StoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; runs are not serialised there
    fcntl = None  # type: ignore[assignment]


class StoreInUse(StoreError):
    """Another run holds the database."""


def lock_path(db_path: str | Path) -> Path:
    path = Path(db_path)
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def run_lock(db_path: str | Path) -> Iterator[None]:
    """Hold the database's run lock for the block; StoreInUse (one line, with the
    other run's pid) if another process holds it. The folder must exist."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = lock_path(db_path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(_("cannot create {path} ({reason})").format(path=path, reason=exc.strerror or exc)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise StoreInUse(_("another run (pid {pid}) is using this database ({path}); "
                               "wait for it to finish, or give another --db").format(pid=other, path=db_path)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)
