"""Benchmark: uploads into a collector, and reports on its database.

Not a test: it prints figures (README, "Performance"). Run with
    python benchmarks/collector_benchmark.py [N ...]      (default: 1000 5000)
For each N: a volunteer's database of N measurements (built in code: an ok page of
2 KiB, one of every 50 sites reset; 50 sites per run), a collector (`probe collector
serve`, at its defaults) in its own process, then through the real CLI: `probe upload`
(measurements/s, including classification on the collector), `probe upload` again
(nothing new: the cost of asking), and `probe report --format json` and `probe report
--events` on the collector's database (which judge every measurement across networks).
Half the measurements are uploaded as a second network (another volunteer), so the
cross-network stage has peers to compare.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from collector_data import add, measurement, new_run  # noqa: E402
from servers import unused_port  # noqa: E402

from probe import store  # noqa: E402


def volunteer(path: Path, n: int, asn: str) -> None:
    db = store.open_db(path)
    try:
        for start in range(0, n, 50):
            run_id = new_run(db, "BY", asn)
            add(db, run_id, [measurement(f"https://site{i}.example/", "reset" if i == 7 else "ok")
                             for i in range(min(50, n - start))])
    finally:
        store.close(db)


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "probe", *args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"probe {' '.join(args)} failed: {err.decode()[-500:]}")
    return time.perf_counter() - t, out.decode()


async def bench(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cdb = d / "collector.db"
        port = unused_port()
        url = f"http://127.0.0.1:{port}"
        _, tok_a = await cli("collector", "token", "add", "a", "--db", str(cdb))
        _, tok_b = await cli("collector", "token", "add", "b", "--db", str(cdb))
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "probe", "collector", "serve", "--db", str(cdb), "--port", str(port), cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        await asyncio.sleep(2)
        try:
            volunteer(d / "a.db", n // 2, "AS6697")
            volunteer(d / "b.db", n - n // 2, "AS25106")
            cfg = d / "c.ini"
            cfg.write_text("[consent]\nversion = 1\n[upload-consent]\nversion = 1\n")
            times = []
            for name, tok in (("a", tok_a.strip()), ("b", tok_b.strip())):
                env = {"BYNET_PROBE_CONFIG": str(cfg), "BYNET_PROBE_COLLECTOR_TOKEN": tok}
                took, _ = await cli("upload", "--db", str(d / f"{name}.db"), "--collector", url, env=env)
                times.append(took)
            again, _ = await cli("upload", "--db", str(d / "a.db"), "--collector", url,
                                 env={"BYNET_PROBE_CONFIG": str(cfg), "BYNET_PROBE_COLLECTOR_TOKEN": tok_a.strip()})
        finally:
            server.send_signal(signal.SIGTERM)
            await server.wait()
        report, _ = await cli("report", "--db", str(cdb), "--format", "json")
        events, _ = await cli("report", "--db", str(cdb), "--events", "--format", "json")
        size = cdb.stat().st_size / 1e6
        print(f"N={n}: upload {sum(times):.1f} s ({n / sum(times):.0f} measurements/s, classified on arrival); "
              f"upload with nothing new {again:.1f} s; report --format json {report:.1f} s; report --events "
              f"{events:.1f} s; collector database {size:.1f} MB")


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 5000]
    for n in sizes:
        asyncio.run(bench(n))


if __name__ == "__main__":
    main()
