"""Running the real `probe` CLI in a subprocess, and reading the SQLite it leaves."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Every CLI run of the current test: (argv, exit code, stderr). conftest checks after
# each test that no run printed a traceback, whatever the test itself asserts.
RUNS: list[tuple[tuple[str, ...], int | None, str]] = []
# no getaddrinfo, DoH or vantage lookup: nothing leaves the machine
QUIET = ["--no-system-resolver", "--no-doh", "--no-vantage-lookup"]


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    # English, whatever the machine's locale: the tests read the messages (test_i18n
    # runs the other languages on purpose).
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "LANGUAGE": "en", **(extra or {})}


async def probe(*args: str, timeout: float = 60, cwd: Path | None = None, send_signal_after: float | None = None,
                env: dict[str, str] | None = None):
    """Run `python -m probe ARGS`; returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "probe", *args, cwd=cwd or ROOT, env=_env(env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )
    if send_signal_after is not None:
        await asyncio.sleep(send_signal_after)
        proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    RUNS.append((args, proc.returncode, err.decode(errors="replace")))
    return proc.returncode, out.decode(), err.decode()


def probe_sync(*args: str, timeout: float = 60, cwd: Path | None = None, env: dict[str, str] | None = None,
               preexec_fn=None) -> tuple[int, str, str]:
    """`probe ARGS` without an event loop (for tests that set resource limits)."""
    p = subprocess.run([sys.executable, "-m", "probe", *args], cwd=cwd or ROOT, env=_env(env), capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=timeout, preexec_fn=preexec_fn)
    err = p.stderr.decode(errors="replace")
    RUNS.append((args, p.returncode, err))
    return p.returncode, p.stdout.decode(errors="replace"), err


def rows(db: Path, sql: str, params=()) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
