"""Benchmark: `probe analyze` over many realistic measurements (benchmarks/generate.py).

    python benchmarks/analyze_benchmark.py N [--db PATH]

Builds (or reuses) a database of N generated measurements, removes its verdicts, then
times the real CLI in a subprocess, as a user runs it: `probe analyze` (every
measurement classified: the pool on every core), then again on the unchanged database
(every verdict current: nothing to do), then `--force` (all derived again). Peak
memory is each process's own high-water mark (VmHWM, read from /proc while it runs:
the CLI process and each worker of its pool), never a maximum over all children so far.
Not a test: it prints one JSON line per step (README, "Performance").
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (the pool's server and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def high_water_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def timed(*args: str) -> dict:
    """Run `probe ARGS`, polling every process of its tree for its peak RSS."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "probe", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    peaks: dict[int, int] = {}
    while proc.poll() is None:
        for pid in descendants(proc.pid):
            kib = high_water_kib(pid)
            if kib is not None:
                peaks[pid] = max(peaks.get(pid, 0), kib)
        time.sleep(0.2)
    out, err = proc.communicate()
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"probe {args[0]} failed: {err.decode()[-800:]}")
    main = peaks.pop(proc.pid, 0)
    others = sorted(peaks.values(), reverse=True)
    return {"seconds": round(elapsed, 1), "result": json.loads(out), "peak_rss_mib_cli": round(main / 1024),
            "peak_rss_mib_each_other_process": [round(k / 1024) for k in others]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int)
    parser.add_argument("--db", type=Path, default=None, help="where the generated database is kept (reused)")
    parser.add_argument("--steps", default="first,unchanged,force", help="which of first, unchanged, force to time")
    args = parser.parse_args()
    db = args.db or Path(f"/tmp/bynet-analyze-{args.n}.db")
    if not db.exists():
        t0 = time.monotonic()
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "generate.py"), str(db), str(args.n)], check=True)
        print(json.dumps({"generated": args.n, "seconds": round(time.monotonic() - t0, 1)}), flush=True)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("delete from verdicts")
        conn.execute("delete from analysis_state")
    conn.execute("pragma wal_checkpoint(truncate)")
    n = conn.execute("select count(*) from measurements").fetchone()[0]
    conn.close()
    print(json.dumps({"measurements": n, "db_mib": round(db.stat().st_size / 2**20), "cpus": os.cpu_count()}), flush=True)
    for step, extra in (("first", ()), ("unchanged", ()), ("force", ("--force",))):
        if step not in args.steps.split(","):
            continue
        r = timed("analyze", "--db", str(db), "--json", *extra)
        res = r.pop("result")
        r.update(step=step, classified=res["classified"], current=res["current"],
                 per_s=round(res["classified"] / r["seconds"]) if res["classified"] else None)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
