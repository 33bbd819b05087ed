"""Failures of the volunteer's machine, not of the network: a second run on the same
database, a full disk, a read-only database, a folder that cannot be made, and target
lists that are not target lists. Each ends in one line and exit code 2 (conftest checks
that no run printed a traceback), and what was measured before is kept.

The real CLI in a subprocess, at its defaults, against local servers; full and
read-only disks are real (small tmpfs mounts), so those tests need root and say so.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import QUIET, ROOT, probe, probe_sync, rows
from servers import RawTcpServer

from probe import store
from probe.core.records import Measurement, new_id, utcnow
from probe.targets.lists import MAX_LIST_BYTES

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small or read-only tmpfs needs root (CI runs as root)")
# Nothing leaves the machine: no resolver, no DoH, no portal check, no control. The
# targets are local servers on loopback, as in a researcher's own test.
OFFLINE = [*QUIET, "--no-portal-check", "--no-control", "--no-dns-sink", "--allow-private-targets"]


def one_line(err: str) -> str:
    """The error line: the last line on stderr, which must start with "error:"."""
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err
    return last


def refused_targets(path: Path, n: int) -> Path:
    """n URLs on a closed loopback port: each is measured (connection refused) in a few ms."""
    path.write_text("".join(f"http://127.0.0.1:9/page{i}\n" for i in range(n)))
    return path


@pytest.fixture
def tmpfs(tmp_path) -> Iterator:
    """mount(size) -> a folder on a fresh tmpfs of that size; unmounted after the test."""
    mounted: list[Path] = []

    def mount(size: str, name: str = "disk") -> Path:
        where = tmp_path / name
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True)


# --- two runs, one database ------------------------------------------------------------


async def test_a_second_run_on_the_same_database_stops_at_once_naming_the_first(tmp_path):
    async with RawTcpServer("silent") as silent:  # the first run waits on it
        targets = tmp_path / "targets.txt"
        targets.write_text("".join(f"http://127.0.0.1:{silent.port}/slow{i}\n" for i in range(4)))
        db = tmp_path / "results" / "probe.db"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        first = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "probe", "run", "--targets", str(targets), "--db", str(db), *OFFLINE,
            cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL)
        try:
            lock = store.lock_path(db)
            for _ in range(200):  # until the first run holds the database
                if lock.exists() and lock.read_text().strip():
                    break
                await asyncio.sleep(0.05)
            assert lock.read_text().strip() == str(first.pid)
            started = time.monotonic()
            rc, _, err = await probe("run", "--targets", str(targets), "--db", str(db), *OFFLINE)
            assert rc == 2
            assert time.monotonic() - started < 10  # at once, not after the first run's 15 s fetches
            assert one_line(err) == (f"error: another run (pid {first.pid}) is using this database ({db}); "
                                     "wait for it to finish, or give another --db")
            # --resume is a run too
            rc, _, err = await probe("run", "--resume", "--db", str(db), *OFFLINE)
            assert rc == 2 and f"pid {first.pid}" in one_line(err)
            # reading while it runs is fine
            rc, out, err = await probe("show", "--db", str(db))
            assert rc == 0, err
            assert "running" in out
        finally:
            first.send_signal(signal.SIGINT)
            _, first_err = await asyncio.wait_for(first.communicate(), 30)
        assert first.returncode == 130, first_err.decode()
        assert "Traceback" not in first_err.decode()
    # the lock went with the first run: resuming now works
    rc, _, err = await probe("run", "--resume", "--db", str(db), *OFFLINE, "--max-runtime", "1s")
    assert rc == 0, err


def _writer(db_path: str, run_id: str, n: int, queue) -> None:
    """One process writing measurements as fast as it can, reading between writes."""
    try:
        db = store.open_db(db_path)
        for i in range(n):
            url = f"https://w{os.getpid()}.example/{i}"
            now = utcnow()
            m = Measurement(measurement_id=new_id(), url=url, hostname=url.split("/")[2], scheme="https", port=443,
                            started_at=now, finished_at=now, duration_ms=1.0)
            store.save_measurement(db, run_id, m)
            store.count_targets(db, run_id)
        queue.put(None)
    except Exception as exc:
        queue.put(f"{type(exc).__name__}: {exc}")


def test_writers_on_one_database_queue_for_the_lock_instead_of_failing(tmp_path):
    """Each write transaction takes SQLite's write lock first (BEGIN IMMEDIATE): with a
    deferred BEGIN, a write after a read fails at once with "database is locked" when
    another process committed in between, whatever the busy timeout."""
    db_path = tmp_path / "probe.db"
    db = store.open_db(db_path)
    run_id = new_id()
    store.create_run(db, {"run_id": run_id, "started_at": utcnow(), "status": "running"}, [])
    db.conn.close()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    writers = [ctx.Process(target=_writer, args=(str(db_path), run_id, 150, queue)) for _ in range(4)]
    for w in writers:
        w.start()
    results = [queue.get(timeout=120) for _ in writers]
    for w in writers:
        w.join(30)
    assert results == [None] * 4
    assert rows(db_path, "select count(*) from measurements") == [(600,)]


# --- a full disk -----------------------------------------------------------------------


@ROOT_ONLY
async def test_a_full_disk_stops_the_run_in_one_line_and_resume_finishes_it(tmp_path, tmpfs):
    disk = tmpfs("1500k")
    db = disk / "probe.db"
    targets = refused_targets(tmp_path / "targets.txt", 3000)
    rc, _, err = await probe("run", "--targets", str(targets), "--db", str(db), *OFFLINE, timeout=120)
    assert rc == 2
    line = one_line(err)
    assert line.startswith(f"error: the disk holding {db} is full: ")
    assert " measured in this run are stored and safe, " in line and " targets are left; free about " in line
    assert line.endswith(f" MB there, then: probe run --resume --db {db}")
    ((status, target_count),) = rows(db, "select status, target_count from runs")
    assert (status, target_count) == ("interrupted", 3000)
    stored = rows(db, "select count(*) from measurements")[0][0]
    assert 0 < stored < 3000
    assert rows(db, "select count(*) from run_targets where status = 'done'") == [(stored,)]

    remount(disk, "size=64m")  # the volunteer made room
    rc, _, err = await probe("run", "--resume", "--db", str(db), *OFFLINE, timeout=300)
    assert rc == 0, err
    assert rows(db, "select count(*), count(distinct url) from measurements") == [(3000, 3000)]
    assert rows(db, "select status from runs") == [("finished",)]


# --- a read-only database --------------------------------------------------------------


@ROOT_ONLY
async def test_a_read_only_database_is_read_by_reading_commands_and_refused_by_writing_ones(tmp_path, tmpfs):
    made = tmp_path / "made.db"
    rc, _, err = await probe("run", "--targets", str(refused_targets(tmp_path / "t.txt", 3)), "--db", str(made), *OFFLINE)
    assert rc == 0, err
    disk = tmpfs("8m")
    db = disk / "probe.db"
    shutil.copy(made, db)
    remount(disk, "ro")
    for args in (["show"], ["show", "http://127.0.0.1:9/page1"], ["report", "--format", "json"],
                 ["explain", "http://127.0.0.1:9/page1"], ["export-ooni", "-o", str(tmp_path / "out.jsonl")]):
        rc, out, err = await probe(*args, "--db", str(db))
        assert rc == 0, (args, err)
    assert (tmp_path / "out.jsonl").read_text().count("\n") == 3
    read_only = (f"error: {db} is read-only (a read-only disk, or no permission to write it or its folder): commands "
                 "that only read it (show, report, explain, export-ooni) work; to measure or analyse, copy it somewhere "
                 "writable or give another --db")
    ooni = ROOT / "tests" / "data" / "ooni" / "real" / "backend-fastpath__bug_351.json"
    for args in (["run", "--targets", str(tmp_path / "t.txt"), *OFFLINE], ["run", "--resume", *OFFLINE],
                 ["analyze"], ["import-ooni", str(ooni)]):
        rc, _, err = await probe(*args, "--db", str(db))
        assert rc == 2, (args, err)
        assert one_line(err) == read_only, args
    assert not list(disk.iterdir())[1:]  # nothing was created next to it


# --- a folder that cannot be made ------------------------------------------------------


async def test_a_db_folder_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    targets = refused_targets(tmp_path / "t.txt", 2)
    for command in (["run", "--targets", str(targets), *OFFLINE], ["import-ooni", str(targets)]):
        rc, _, err = await probe(*command, "--db", str(tmp_path / "afile" / "results" / "probe.db"))
        assert rc == 2
        assert one_line(err) == (f"error: cannot create the folder {tmp_path / 'afile' / 'results'} for the database "
                                 "(part of the path is a file); give another --db")


@ROOT_ONLY
async def test_a_db_folder_on_a_read_only_disk_is_one_line(tmp_path, tmpfs):
    disk = tmpfs("1m")
    remount(disk, "ro")
    rc, _, err = await probe("run", "--targets", str(refused_targets(tmp_path / "t.txt", 2)), *OFFLINE,
                             "--db", str(disk / "results" / "probe.db"))
    assert rc == 2
    assert one_line(err) == (f"error: cannot create the folder {disk / 'results'} for the database "
                             "(Read-only file system); give another --db")


# --- lists that are not lists ----------------------------------------------------------


def _limit_memory() -> None:
    limit = 2 * 1024**3  # a probe that reads /dev/zero whole would pass this in a second
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_dev_zero_as_a_target_list_is_refused_at_once_in_bounded_memory(tmp_path):
    started = time.monotonic()
    rc, _, err = probe_sync("run", "--targets", "/dev/zero", "--db", str(tmp_path / "p.db"), *OFFLINE,
                            preexec_fn=_limit_memory, timeout=60)
    assert rc == 2
    assert one_line(err) == "error: /dev/zero:1: not a text file (it holds a NUL byte)"
    assert time.monotonic() - started < 20
    assert not (tmp_path / "p.db").exists()  # refused before the database was touched


def test_binary_utf16_and_oversized_lists_are_one_line(tmp_path):
    cases = {
        "image.png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image.png:3: not a text file (it holds a NUL byte)"),
        "excel.txt": ("https://charter97.org/\n".encode("utf-16"), "excel.txt: UTF-16 text; save the file as UTF-8"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        rc, _, err = probe_sync("run", "--targets", name, "--list", cwd=tmp_path)
        assert rc == 2
        assert one_line(err) == f"error: {message}"
    big = tmp_path / "big.txt"
    line = b"https://example.org/" + b"x" * 80 + b"\n"
    with big.open("wb") as fh:
        fh.write(line * (MAX_LIST_BYTES // len(line) + 1))
    started = time.monotonic()
    rc, _, err = probe_sync("run", "--targets", str(big), "--list", preexec_fn=_limit_memory)
    assert rc == 2
    assert one_line(err) == (f"error: {big}: larger than {MAX_LIST_BYTES // 2**20} MB: not a target list, or too big "
                             "for one run (split it)")
    assert time.monotonic() - started < 20
    # the linter says the same, as one problem
    rc, out, err = probe_sync("targets", "lint", str(big))
    assert rc == 2 and "larger than" in out + err


def test_duplicates_are_summarised_in_one_line_with_their_count(tmp_path):
    path = tmp_path / "dups.txt"
    path.write_text("https://charter97.org/\nhttps://belapan.by/\n" + "https://charter97.org/\n" * 100_000)
    rc, out, err = probe_sync("run", "--targets", str(path), "--list", "--json")
    assert rc == 0, err
    assert out.count("\n") == 2  # two targets
    assert err.splitlines() == [f"warning: {path}: 100,000 duplicate lines ignored; the first, line 3, is a "
                                "duplicate of line 1 (https://charter97.org/)"]


async def test_max_runtime_counts_from_the_start_of_the_command(tmp_path):
    """The checks before measuring (here a DoH server that never answers: 4 s) are part
    of the time given: the run stops at the deadline, and says what is left."""
    async with RawTcpServer("silent") as silent:
        targets = tmp_path / "t.txt"
        targets.write_text("".join(f"http://127.0.0.1:{silent.port}/p{i}\n" for i in range(3)))
        started = time.monotonic()
        rc, _, err = await probe("run", "--targets", str(targets), "--db", str(tmp_path / "p.db"),
                                 "--no-system-resolver", "--no-vantage-lookup", "--no-portal-check", "--no-control",
                                 "--no-dns-sink", "--doh", f"http://127.0.0.1:{silent.port}/dns-query",
                                 "--max-runtime", "3s", "--allow-private-targets")
        elapsed = time.monotonic() - started
    assert rc == 0, err
    assert "3 not measured" in err and "Resume with: probe run --resume" in err
    assert elapsed < 3 + 3.5, elapsed  # not 4 s of checks + 3 s of measuring + the fetches' timeouts


def test_many_bad_lines_are_named_up_to_a_limit_then_counted(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("https://charter97.org/\n" + "".join(f"not a url {i}\n" for i in range(50)))
    rc, out, err = probe_sync("run", "--targets", str(path), "--list", "--json", "--skip-invalid")
    assert rc == 0, err
    assert out.count("\n") == 1
    lines = err.splitlines()
    assert len(lines) == 21
    assert all(line.startswith(f"warning: {path}:") and line.endswith("; line skipped") for line in lines[:20])
    assert lines[20] == f"warning: {path}: 30 more bad lines skipped (see `probe targets lint`)"
