"""Benchmark: `probe import-ooni` on OONI web_connectivity data at scale.

Not a test: it prints figures (README, "Import at scale"). Run with
    python benchmarks/import_benchmark.py [N ...] [--per-file K] [--probe-root DIR] [--files] [--keep DIR]
(default N: 100000; K: 50000 measurements per file). For each N it writes a directory
of .jsonl.gz files in OONI's format, made from the real sample measurements of
tests/data/ooni (every one with a top level, bodies left at their real size), each copy
with its own measurement_uid, report_id (one report per 1000 measurements), input
(a query string added to the URL) and measurement_start_time, so nothing is a
duplicate. Then it runs `python3 -m probe import-ooni DIR --db NEW.db` in a fresh
process and reports measurements/s, CPU seconds per 1000 measurements (all processes
of the import; unlike the wall time, not changed by other load on the machine), and the
peak RSS (VmHWM) of the probe process itself, polled from /proc, and the largest peak
of one of its worker processes apart.

`--probe-root DIR` runs the command from another checkout (e.g. a copy of the code
before the parallel import, with `--files`, as it took files only), to compare before
and after on the same files.
`probe import-ooni` does not classify (`probe analyze` does, separately), so the time
is import time only.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "data" / "ooni"
REPORT_SIZE = 1000  # measurements per OONI report, so per imported run
START = datetime(2025, 1, 1, tzinfo=UTC)


def samples() -> list[dict]:
    """The real and simulated measurements of the test data that have a top level
    (the test_keys-only .jsonc cannot carry an id or a report)."""
    out = []
    for path in sorted(p for folder in ("real", "synthetic-qa") for p in (SAMPLES / folder).iterdir()
                       if ".json" in p.name):
        text = "\n".join(ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.lstrip().startswith("//"))
        doc = json.loads(text)
        if isinstance(doc, dict) and "test_keys" in doc:
            out.append(doc)
    return out


def variant(doc: dict, i: int) -> dict:
    """Copy ``i`` of a sample: its own ids, report, input and time."""
    out = copy.copy(doc)  # only top-level keys change; test_keys (and bodies) are shared
    out["measurement_uid"] = f"20250101000000.{i:09d}_BY_webconnectivity_bench"
    if "id" in out:
        out["id"] = f"bench-{i:09d}"
    out["report_id"] = f"20250101T000000Z_webconnectivity_BY_6697_n1_bench{i // REPORT_SIZE:06d}"
    url = str(doc.get("input") or "http://example.org/")
    out["input"] = url + ("&" if "?" in url else "?") + f"bench={i}"
    out["measurement_start_time"] = (START + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S")
    return out


def lines(n: int, start: int, docs: list[dict]) -> Iterator[str]:
    for i in range(start, start + n):
        yield json.dumps(variant(docs[i % len(docs)], i), ensure_ascii=False) + "\n"


def generate(folder: Path, n: int, per_file: int) -> int:
    """Write n measurements as .jsonl.gz files of per_file each; returns the bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = samples()
    for k, start in enumerate(range(0, n, per_file)):
        with gzip.open(folder / f"bench-{k:04d}.jsonl.gz", "wt", encoding="utf-8", compresslevel=1) as fh:
            fh.writelines(lines(min(per_file, n - start), start, docs))
    return sum(p.stat().st_size for p in folder.iterdir())


def hwm_kib(pid: int) -> int | None:
    """The peak resident memory of one process (VmHWM), or None once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                for c in (task / "children").read_text().split()]
    except OSError:
        return []


def run_import(probe_root: Path, folder: Path, db: Path, as_files: bool) -> tuple[float, float, int, int, str]:
    """(seconds, CPU seconds of the probe process and its workers, peak KiB of the probe
    process, largest peak KiB of one worker, last line of its output). CPU time comes
    from wait4 on that one process (its workers included, as it reaps them): a figure
    other load on the machine does not change, unlike the wall time."""
    env = {**os.environ, "PYTHONPATH": str(probe_root)}
    inputs = [str(p) for p in sorted(folder.iterdir())] if as_files else [str(folder)]
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "probe", "import-ooni", *inputs, "--db", str(db)],
                            cwd=probe_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = worker_peak = 0
    while True:
        peak = max(peak, hwm_kib(proc.pid) or 0)
        for child in children(proc.pid):
            worker_peak = max(worker_peak, hwm_kib(child) or 0)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.1)
    took = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"import failed ({proc.returncode}): {err[-800:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return took, cpu, peak, worker_peak, out.strip().splitlines()[-1] if out.strip() else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[100_000])
    parser.add_argument("--per-file", type=int, default=50_000)
    parser.add_argument("--probe-root", type=Path, default=ROOT, help="checkout whose `probe` is timed")
    parser.add_argument("--files", action="store_true",
                        help="name the files, not their directory (for code that reads files only)")
    parser.add_argument("--keep", type=Path, default=None, help="keep (and reuse) the generated files here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            folder = (args.keep or Path(tmp)) / f"ooni-{n}"
            t = time.perf_counter()
            if not folder.is_dir():
                size = generate(folder, n, args.per_file)
                print(f"N={n}: generated {size / 1e6:.0f} MB of .jsonl.gz in {time.perf_counter() - t:.0f} s", flush=True)
            db = Path(tmp) / f"import-{n}.db"
            took, cpu, peak, worker_peak, last = run_import(args.probe_root.resolve(), folder, db, args.files)
            print(f"N={n}: {took:.1f} s, {n / took:.0f} measurements/s, {cpu / n * 1000:.2f} CPU s per 1000 "
                  f"(load average {os.getloadavg()[0]:.1f}), peak RSS {peak / 1024:.0f} MiB "
                  f"(probe process; largest worker {worker_peak / 1024:.0f} MiB), "
                  f"database {db.stat().st_size / 1e6:.0f} MB", flush=True)
            print(f"    last line: {last}", flush=True)
            db.unlink()


if __name__ == "__main__":
    main()
