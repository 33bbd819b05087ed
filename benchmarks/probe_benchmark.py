"""How close `probe run` comes to the time no run can beat, and how its memory grows.

Not a test: it prints figures (README, "Performance"). Needs root (the world's
blackholed addresses are iptables rules, removed at the end). Run with
    python3 benchmarks/probe_benchmark.py                  # 1,000 at -c 8 and 32, 10,000 at -c 8
    python3 benchmarks/probe_benchmark.py 1000:8 300:32    # N:CONCURRENCY pairs
Each run measures a fresh world (benchmarks/world.py: DNS after 50 ms, pages after
200 ms, 10% of targets blackholed, 5% reset) through the real CLI in a subprocess, at
the defaults except --concurrency, with what the world needs (its resolver, no system
resolver, no DoH, no vantage lookup, loopback as the internet) and no control helper:
a helper on this same machine would measure every target again (against the same two
cores), and its answers would not change what the probe's own scheduling costs.

Printed per run: the run's seconds (the command, start to exit), the lower bound (the
probe's worker pool scheduled with each target's physical minimum, at the probe's
default timeouts), their ratio; the start-up (command start to its first target's
DNS query), the measuring phase (as the run reports it) and what follows it
(classifying and the summary); the probe process's own peak RSS (from wait4, which
reports that one child, so runs never inherit each other's peak).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from world import ROOT, World

from probe.measure.url import ProbeConfig


@dataclass
class Figures:
    targets: int
    concurrency: int
    run_s: float
    bound_s: float
    ratio: float
    startup_s: float
    measuring_s: float
    after_s: float  # classifying and the summary, after the last measurement
    peak_rss_mib: float
    measured: int
    pages: int  # pages the world served


def probe_command(targets: Path, db: Path, resolver: str, concurrency: int | None) -> list[str]:
    """`probe run` as a volunteer runs it, but for the world's own network."""
    cmd = [sys.executable, "-m", "probe", "run", "--yes", "--no-upload", "--targets", str(targets), "--db", str(db),
           "--resolver", resolver, "--no-system-resolver", "--no-doh", "--no-vantage-lookup", "--no-control",
           "--lab-network", "127.0.0.0/8"]
    return cmd + (["--concurrency", str(concurrency)] if concurrency else [])


def run_probe(cmd: list[str], home: Path, log: Path) -> tuple[int, float]:
    """Run the command to its end: (exit status, peak RSS in KiB of that process).
    Blocking: called in a thread while the world's servers answer in the loop."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_DATA_HOME": str(home / "data"), "LANGUAGE": "en", "LC_ALL": "C.UTF-8"}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
    return proc.returncode, usage.ru_maxrss


async def bench(n: int, concurrency: int | None = None, keep_log: Path | None = None) -> Figures:
    """One run of `probe run` over a world of ``n`` targets."""
    c = concurrency or 8
    async with World(n) as world:
        with tempfile.TemporaryDirectory(prefix="probe-bench-") as tmp:
            folder = Path(tmp)
            targets = world.write_targets(folder / "targets.txt")
            db, log = folder / "bench.db", keep_log or folder / "run.log"
            cmd = probe_command(targets, db, world.resolver, concurrency)
            t0 = time.monotonic()
            status, peak_kib = await asyncio.to_thread(run_probe, cmd, folder, log)
            run_s = time.monotonic() - t0
            output = log.read_text(errors="replace")
            if status != 0:
                raise SystemExit(f"probe run exited {status}: {output[-1500:]}")
            found = re.search(r"measured in ([\d.]+)s", output)
            measuring = float(found.group(1)) if found else float("nan")
            startup = (world.first_query_at - t0) if world.first_query_at else float("nan")
            with sqlite3.connect(db) as conn:
                measured = conn.execute("select count(*) from measurements").fetchone()[0]
    bound = world.lower_bound(c, ProbeConfig().tcp_timeout)
    return Figures(n, c, round(run_s, 1), round(bound, 1), round(run_s / bound, 2), round(startup, 2),
                   round(measuring, 1), round(run_s - startup - measuring, 1), round(peak_kib / 1024, 1), measured,
                   world.requests)


def main() -> None:
    # A SIGTERM ends the benchmark as Ctrl-C does: through the world's cleanup.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    pairs = [tuple(int(x) for x in a.split(":")) for a in sys.argv[1:]] or [(1000, 8), (1000, 32), (10_000, 8)]
    print("targets  -c   run s  bound s  ratio  start-up s  measuring s  after s  peak RSS MiB")
    for pair in pairs:
        n, c = pair[0], (pair[1] if len(pair) > 1 else None)
        f = asyncio.run(bench(n, c))
        print(f"{f.targets:7d} {f.concurrency:3d} {f.run_s:7.1f} {f.bound_s:8.1f} {f.ratio:6.2f} {f.startup_s:11.2f} "
              f"{f.measuring_s:12.1f} {f.after_s:8.1f} {f.peak_rss_mib:13.1f}", flush=True)
        print("   ", asdict(f), flush=True)


if __name__ == "__main__":
    main()
