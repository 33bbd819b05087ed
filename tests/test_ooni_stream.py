"""`probe import-ooni` at scale: directories, streaming, decoding in worker processes.

Real files made from the sample measurements of tests/data/ooni (each copy with its own
measurement_uid, report and time), real processes, no mocks. The pool threshold is
lowered through Decoder's own parameter where a test needs the pool on a small file,
so the suite stays fast.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from click.testing import CliRunner

from probe import store
from probe.cli.ooni import import_ooni_cmd
from probe.ooni import database as ooni_db
from probe.ooni.files import expand_inputs
from probe.ooni.pool import POOL_AFTER, Decoder, pool_possible

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "ooni"
# small ones, from two networks; bug_351 gets a redirect hop that is not in OONI's requests
SMALL = ["synthetic-qa/dnsBlockingNXDOMAIN.json", "synthetic-qa/successWithHTTP.json",
         "real/backend-fastpath__report2.json", "real/backend-fastpath__bug_351.json"]
TABLES = ("runs", "run_targets", "measurements", "dns_queries", "dns_answers", "tcp_connects",
          "tls_handshakes", "http_requests", "control_results")


def sample(name: str) -> dict:
    text = "\n".join(ln for ln in (DATA / name).read_text(encoding="utf-8").splitlines()
                     if not ln.lstrip().startswith("//"))
    return json.loads(text)


def docs(n: int, start: int = 0) -> list[str]:
    """n distinct OONI measurements as JSONL lines, 50 per report."""
    bases = [sample(name) for name in SMALL]
    out = []
    for i in range(start, start + n):
        doc = copy.copy(bases[i % len(bases)])
        doc["measurement_uid"] = f"20250101000000.{i:09d}_BY_webconnectivity_test"
        doc["report_id"] = f"20250101T000000Z_webconnectivity_BY_6697_n1_test{i // 50:05d}"
        doc["measurement_start_time"] = f"2025-01-01 {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
        out.append(json.dumps(doc))
    return out


def write_gz(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def dump(db_path: Path) -> dict[str, list[tuple]]:
    """Every row of every table the import writes, in rowid order: the whole database."""
    conn = sqlite3.connect(db_path)
    try:
        return {t: conn.execute(f"select * from {t} order by rowid").fetchall() for t in TABLES}
    finally:
        conn.close()


def test_a_directory_imports_every_ooni_file_inside_in_path_order(tmp_path):
    folder = tmp_path / "ooni"
    (folder / "2025-01" / "02").mkdir(parents=True)
    write_gz(folder / "2025-01" / "02" / "b.jsonl.gz", docs(3, 0))
    (folder / "2025-01" / "a.jsonl").write_text("\n".join(docs(2, 3)) + "\n", encoding="utf-8")
    (folder / "one.json").write_text(json.dumps(sample(SMALL[0]), indent=2), encoding="utf-8")
    (folder / "README.md").write_text("not a measurement", encoding="utf-8")
    found = expand_inputs([folder])
    assert [p.relative_to(folder).as_posix() for p in found] == ["2025-01/02/b.jsonl.gz", "2025-01/a.jsonl", "one.json"]

    db_path = tmp_path / "p.db"
    result = CliRunner().invoke(import_ooni_cmd, [str(folder), "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    assert [line.split(" from ")[1].split(" (")[0] for line in result.stdout.splitlines()] == [str(p) for p in found]
    assert len(dump(db_path)["measurements"]) == 6

    empty = tmp_path / "empty"
    empty.mkdir()
    refused = CliRunner().invoke(import_ooni_cmd, [str(empty), "--db", str(db_path)])
    assert refused.exit_code == 2 and "no OONI file" in refused.stderr and "Traceback" not in refused.output


def cli_import(path: Path, db: Path) -> subprocess.Popen:
    """`probe import-ooni PATH --db DB` as a user runs it: the default pool threshold."""
    return subprocess.Popen([sys.executable, "-m", "probe", "import-ooni", str(path), "--db", str(db)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_parallel_import_writes_exactly_the_rows_of_a_single_process_import(tmp_path):
    n = POOL_AFTER + 400  # past the default threshold: the command decodes in its pool
    path = write_gz(tmp_path / "big.jsonl.gz", docs(n))
    single, parallel = tmp_path / "single.db", tmp_path / "parallel.db"
    with Decoder(workers=0) as inline:
        one = ooni_db.import_ooni(store.open_db(single), path, source=str(path), decoder=inline)
        assert not inline.parallel
    out, err = cli_import(path, parallel).communicate(timeout=110)
    assert f"imported {n} measurements" in out, err
    assert one.imported == n and len(one.run_ids) > 18  # 18 reports, some of them on two networks
    assert dump(single) == dump(parallel)


def test_a_bad_line_in_the_middle_is_reported_and_the_rest_imported(tmp_path):
    lines = docs(600)
    lines[299] = "{not json"
    lines[450] = json.dumps({"test_name": "dnscheck", "input": "dot://1.1.1.1", "test_keys": {}})
    path = write_gz(tmp_path / "bad.jsonl.gz", lines)
    db = store.open_db(tmp_path / "p.db")
    with Decoder(workers=2, pool_after=100) as pool:
        summary = ooni_db.import_ooni(db, path, source="bad", decoder=pool)
    assert (summary.imported, summary.errors, summary.skipped) == (598, 1, 1)
    assert summary.messages[0].startswith("line 300: not valid JSON")
    assert summary.messages[1] == "line 451: skipped: not web_connectivity but 'dnscheck'"


IMPORT_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from probe import store
    from probe.ooni.database import import_ooni
    from probe.ooni.pool import Decoder
    with Decoder(workers=2, pool_after=100) as decoder:
        s = import_ooni(store.open_db(Path(sys.argv[2])), Path(sys.argv[1]), source="f", decoder=decoder)
    peak = [ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM")]
    print(s.imported, s.duplicates, peak[0].split()[1] if peak else 0)
""")


def run_import(path: Path, db: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", IMPORT_SCRIPT, str(path), str(db)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)


def test_memory_stays_flat_as_the_file_grows(tmp_path):
    peaks = {}
    for n in (200, 800):
        path = write_gz(tmp_path / f"{n}.jsonl.gz", docs(n))
        out, _ = run_import(path, tmp_path / f"{n}.db").communicate(timeout=120)
        imported, _, peak = out.split()
        assert int(imported) == n
        peaks[n] = int(peak)
    assert peaks[800] < peaks[200] * 1.25, peaks  # 4x the measurements, about the same memory


def children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def alive(pid: int) -> bool:
    """Running, not gone nor a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_a_killed_import_run_again_stores_every_measurement_once(tmp_path):
    n = 2 * POOL_AFTER  # the command, at its defaults, starts its pool half-way
    path = write_gz(tmp_path / "f.jsonl.gz", docs(n))
    db_path = tmp_path / "p.db"
    store.close(store.open_db(db_path))  # the schema exists before the import, so it can be watched
    proc = cli_import(path, db_path)
    deadline = time.monotonic() + 60
    workers: list[int] = []
    stored = 0
    while proc.poll() is None and time.monotonic() < deadline and not (workers and stored):
        time.sleep(0.02)
        workers = workers or children(proc.pid)
        conn = sqlite3.connect(db_path, timeout=5)
        stored = conn.execute("select count(*) from measurements").fetchone()[0]
        conn.close()
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert workers or not pool_possible()
    deadline = time.monotonic() + 10  # orphaned workers notice within a second and exit
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(w) for w in workers)
    conn = sqlite3.connect(db_path, timeout=5)
    kept = conn.execute("select count(*) from measurements").fetchone()[0]
    conn.close()
    assert 0 < kept < n  # killed mid-way, with its finished batches kept

    out, err = cli_import(path, db_path).communicate(timeout=110)
    assert f"imported {n - kept} measurements" in out and f"({kept} skipped" in out, (out, err)
    rows = dump(db_path)
    assert len(rows["measurements"]) == len({r[0] for r in rows["measurements"]}) == n
    conn = sqlite3.connect(db_path)
    assert conn.execute("select count(*) from run_targets where status != 'done'").fetchone()[0] == 0
    conn.close()
    # the same database as one import that was never killed: runs (times, target counts,
    # the file's digest: what only the whole file tells) and targets included
    clean = tmp_path / "clean.db"
    out, err = cli_import(path, clean).communicate(timeout=110)
    assert f"imported {n} measurements" in out, (out, err)
    assert {t: sorted(r) for t, r in dump(db_path).items()} == {t: sorted(r) for t, r in dump(clean).items()}
