"""`probe analyze` at scale: batched reads that give the very records one-by-one reads
give, a process pool that gives the very verdicts one process gives, current verdicts
skipped (and re-derived when anything they rest on changes), and one scan per page
that finds what every fingerprint tried alone finds."""

from __future__ import annotations

import copy
import json
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clirun import probe_sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe import store
from probe.analysis.analyze import POOL_MIN, analyze_db
from probe.analysis.fingerprints import Fingerprint, FingerprintDB, _matches, default_fingerprints
from probe.core.pagetext import decode_html
from probe.core.records import ControlResult, HttpRequest, Measurement

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import generate  # benchmarks/generate.py: realistic measurements of every shape


def _verdicts(path: Path) -> dict[str, tuple]:
    conn = sqlite3.connect(path)
    rows = conn.execute("select measurement_id, classifier_version, verdict, blocked, confidence, layer, rule_id, "
                        "evidence, layers, tags from verdicts").fetchall()
    conn.close()
    return {r[0]: r[1:] for r in rows}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,200 measurements of every shape (and the OONI corpus's), in two runs."""
    path = tmp_path_factory.mktemp("gen") / "probe.db"
    generate.build_base(path, 1200, seed=5)
    return path


def _copy(src: Path, dst: Path) -> Path:
    conn = sqlite3.connect(src)
    conn.execute("vacuum into ?", [str(dst)])
    conn.close()
    return dst


def _control_ids_cleared(m: Measurement) -> Measurement:
    m = copy.deepcopy(m)
    for q in m.control.dns if m.control else []:
        q.query_id = ""
    for h in m.control.http if m.control else []:
        h.request_id = ""
    return m


def test_batched_reads_give_back_the_records_stored(tmp_path: Path) -> None:
    """Every shape, and the OONI corpus's measurements, read back many at a time."""
    shapes = generate.Shapes(random.Random(3))
    kinds = [shape for _, shape in generate.SHAPES]
    stored = [shapes.build(kinds[i % len(kinds)], f"site{i}.example.by", i, f"2026-11-01T00:00:{i % 60:02d}.000Z")
              for i in range(300)]
    db = store.open_db(tmp_path / "probe.db")
    run_id = generate.new_run(db, "BY", "AS6697")
    store.add_run_targets(db, run_id, [m.url for m in stored])
    store.save_measurements(db, run_id, stored)
    order = random.Random(1).sample(range(len(stored)), len(stored))
    loaded = store.load_measurements(db, [*[stored[i].measurement_id for i in order], "no-such-id"])
    # in the order asked, the unknown left out (the control's rows get ids of the store's own)
    assert [_control_ids_cleared(m) for m in loaded] == [_control_ids_cleared(stored[i]) for i in order]
    assert any(m.control is not None and m.control.http for m in loaded)
    assert any(h.body_head and len(h.body_head) > 60_000 for m in loaded for h in m.http)
    assert store.load_measurement(db, stored[0].measurement_id) == loaded[order.index(0)]
    store.close(db)


def test_an_unchanged_database_is_not_classified_again(generated: Path, tmp_path: Path) -> None:
    path = _copy(generated, tmp_path / "probe.db")
    rc, out, err = probe_sync("analyze", "--db", str(path), "--json")
    assert rc == 0, err
    first = json.loads(out)
    assert (first["measurements"], first["classified"], first["current"]) == (1200, 1200, 0)
    before = _verdicts(path)
    rc, out, _ = probe_sync("analyze", "--db", str(path), "--json")
    again = json.loads(out)
    assert (again["measurements"], again["classified"], again["current"]) == (1200, 0, 1200)
    assert again["by_verdict"] == first["by_verdict"]  # the counts still cover every measurement
    assert _verdicts(path) == before
    rc, out, _ = probe_sync("analyze", "--db", str(path), "--force", "--json")
    assert (json.loads(out)["classified"], json.loads(out)["current"]) == (1200, 0)
    assert _verdicts(path) == before  # the same verdicts, derived again


def test_what_a_verdict_rests_on_changing_makes_it_stale(generated: Path, tmp_path: Path) -> None:
    path = _copy(generated, tmp_path / "probe.db")
    db = store.open_db(path, create=False)
    analyze_db(db)
    runs = [r["run_id"] for r in store.runs(db)]
    # a control answered again replaces a lost one: that measurement only
    mid = next(m for m, _ in store.measurement_ids(db, runs[0]))
    store.replace_control(db, mid, ControlResult("https://control.example/", "2026-11-01T00:00:00Z", 5.0,
                                                 "generic_timeout_error"))
    s = analyze_db(db)
    assert (s.classified, s.current) == (1, 1199)
    # other fingerprints: every run again
    fps = default_fingerprints()
    fewer = FingerprintDB([fp for fp in fps.fingerprints if fp.location != "body"])
    s = analyze_db(db, fingerprints=fewer)
    assert s.classified == 1200
    s = analyze_db(db)
    assert s.classified == 1200
    # a measurement added to a run changes the run's context: that run again, not the other
    extra = generate.Shapes(random.Random(2)).build("dns_nxdomain", "new.example.by", 1, "2026-11-01T01:00:00.000Z")
    store.save_measurement(db, runs[1], extra)
    s = analyze_db(db)
    second = len(store.measurement_ids(db, runs[1]))
    assert (s.classified, s.current) == (second, 1201 - second)
    store.close(db)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough measurements that `probe analyze`, as a user runs it, uses the pool."""
    path = tmp_path_factory.mktemp("big") / "probe.db"
    generate.build_base(path, 1000, seed=9)
    generate.scale(path, 1000, POOL_MIN + 1000)
    return path


def test_the_process_pool_gives_the_verdicts_one_process_gives(big: Path, tmp_path: Path) -> None:
    path, inline = _copy(big, tmp_path / "pool.db"), _copy(big, tmp_path / "inline.db")
    rc, _, err = probe_sync("analyze", "--db", str(path), "--json", timeout=110)
    assert rc == 0, err
    db = store.open_db(inline, create=False)
    summary = analyze_db(db, workers=1)
    store.close(db)
    pooled, single = _verdicts(path), _verdicts(inline)
    assert len(pooled) == summary.measurements == POOL_MIN + 1000
    assert pooled == single
    conn = sqlite3.connect(path)
    assert conn.execute("select count(*) from analysis_state").fetchone()[0] == 6
    conn.close()


def _pool_processes(parent: int) -> list[int]:
    """Processes started by ``parent`` (its workers), alive or not yet reaped."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def test_analyze_killed_leaves_no_worker_and_finishes_when_run_again(big: Path, tmp_path: Path) -> None:
    path = _copy(big, tmp_path / "killed.db")
    proc = subprocess.Popen([sys.executable, "-m", "probe", "analyze", "--db", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 2:
        workers = _pool_processes(proc.pid)
        time.sleep(0.1)
    assert workers, "the pool never started"
    while time.monotonic() < deadline and not _verdicts(path):
        time.sleep(0.1)
    proc.kill()  # SIGKILL: nothing of ours runs in it any more
    proc.wait()
    time.sleep(2)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()
             and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"]
    assert alive == []
    done = len(_verdicts(path))
    assert 0 < done < POOL_MIN + 1000  # whole batches were kept
    rc, out, err = probe_sync("analyze", "--db", str(path), "--json", timeout=110)
    assert rc == 0, err
    assert json.loads(out)["measurements"] == POOL_MIN + 1000 == len(_verdicts(path))
    conn = sqlite3.connect(path)
    assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    conn.close()


# --- one scan of a page -------------------------------------------------------------

FPS = default_fingerprints()
PAGE_FPS = [fp for fp in FPS.fingerprints if fp.location in ("body", "response")]
LITERALS = sorted({fp.pattern for fp in PAGE_FPS if fp.pattern_type == "contains"})


def _naive(fp: Fingerprint, h: HttpRequest, body: str) -> bool:
    """One fingerprint tried alone on the text of its location."""
    compiled = next(c for f, c in FPS._by_location[fp.location].entries if f is fp)
    if fp.location == "body":
        return bool(body) and _matches(fp, compiled, body)
    head = f"HTTP/{h.http_version or '1.1'} {h.status} {h.reason or ''}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in h.headers)
    return _matches(fp, compiled, head + "\r\n" + body)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(st.one_of(st.sampled_from(LITERALS), st.text(max_size=30)), max_size=8),
       split=st.integers(0, 40), header=st.sampled_from(["", "X-Note", "Server"]))
def test_one_scan_of_a_page_finds_what_each_fingerprint_finds(pieces: list[str], split: int, header: str) -> None:
    """Literals anywhere: inside the body, or straddling the head and the body (where
    only the response fingerprints can see them)."""
    text = "".join(pieces)
    value, body = text[:split], text[split:]
    headers = [["Content-Type", "text/html; charset=utf-8"]] + ([[header, value]] if header else [])
    h = HttpRequest("https://x.example/", "main", 0, "2026-11-01T00:00:00Z", 1.0, status=200, reason="OK",
                    headers=headers, body_head=body.encode("utf-8", "surrogatepass"), request_id="r")
    found = {(m.fingerprint.name, m.where.split(" of ")[0]) for m in FPS.match_http(h)}
    decoded = decode_html(h.body_head or b"", "text/html; charset=utf-8")
    expected = {(fp.name, fp.location) for fp in PAGE_FPS if _naive(fp, h, decoded)}
    assert {f for f in found if f[1] in ("body", "response")} == expected
