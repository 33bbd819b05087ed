"""Benchmark: targets per second and peak memory of `probe run` against local servers.

Not a test: it prints figures (README, "Performance"). Run with
    python benchmarks/run_benchmark.py [N ...]      (default: 1000 3000)
Each run measures N distinct names (http://bN.bench.test:PORT/) that a local DNS server
resolves to 127.0.0.1, served by one local aiohttp site, through the real CLI in a
subprocess, with the default settings but --concurrency 32 and no system resolver.
Peak memory is the probe process's own maximum RSS (from wait4, per run); comparing N=1000 with N=3000 shows
whether memory stays flat as the list grows. The run ends by classifying what it
measured; `probe analyze` is then timed once more on its own (classifier throughput).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from servers import Answer, DnsServer, WebServer, site_app  # noqa: E402


async def probe(*args: str) -> None:
    """`python -m probe ARGS` in a subprocess; a failure ends the benchmark."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "probe", *args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"probe {args[0]} failed: {err.decode()[-500:]}")


def probe_peak(*args: str) -> int:
    """`python -m probe ARGS` to its end; the peak RSS (KiB) of that process alone, from
    wait4 (getrusage(RUSAGE_CHILDREN) is the largest of all children so far, so a later,
    smaller run would report an earlier run's peak). Blocking: run it in a thread."""
    proc = subprocess.Popen([sys.executable, "-m", "probe", *args], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()  # until it exits (closes its end)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"probe {args[0]} failed: {err.decode()[-500:]}")
    return usage.ru_maxrss


async def bench(n: int, concurrency: int = 32, dns_wait: float = 1.0) -> dict:
    zone = {f"b{i}.bench.test": Answer(a=["127.0.0.1"]) for i in range(n)}
    async with DnsServer(zone) as dns, WebServer(site_app(body_size=20_000)) as web:
        with tempfile.TemporaryDirectory() as tmp:
            targets = Path(tmp) / "targets.txt"
            targets.write_text("".join(f"{web.url('/', hostname=f'b{i}.bench.test')} NEWS\n" for i in range(n)))
            db = Path(tmp) / "bench.db"
            t0 = time.monotonic()
            peak_kib = await asyncio.to_thread(
                probe_peak, "run", "--yes", "--targets", str(targets), "--db", str(db),
                "--resolver", dns.address, "--no-system-resolver", "--no-doh", "--no-vantage-lookup",
                "--lab-network", "127.0.0.0/8",  # loopback stands for the internet here
                "--concurrency", str(concurrency), "--dns-wait", str(dns_wait))
            elapsed = time.monotonic() - t0
            t1 = time.monotonic()
            await probe("analyze", "--db", str(db))
            analyze_s = time.monotonic() - t1
            conn = sqlite3.connect(db)
            measured = conn.execute("select count(*) from measurements").fetchone()[0]
            ok = conn.execute("select count(*) from http_requests where status = 200").fetchone()[0]
            verdicts = dict(conn.execute("select verdict, count(*) from verdicts group by verdict").fetchall())
            conn.close()
            size = db.stat().st_size
    return {
        "targets": n,
        "dns_wait": dns_wait,
        "measured": measured,
        "http_200": ok,
        "seconds": round(elapsed, 1),
        "targets_per_s": round(n / elapsed, 1),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "db_kib_per_target": round(size / 1024 / n, 1),
        "verdicts": verdicts,
        "analyze_s": round(analyze_s, 1),
        "analyzed_per_s": round(measured / analyze_s),
    }


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 3000]
    for n in sizes:
        print(asyncio.run(bench(n)), flush=True)
    print(asyncio.run(bench(sizes[0], dns_wait=0)), flush=True)


if __name__ == "__main__":
    main()
