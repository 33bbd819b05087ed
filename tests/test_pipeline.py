"""The Beam pipeline (probe/analysis/pipeline.py) gives the verdicts `probe analyze`
gives, and the run's Context built from records (probe/analysis/runctx.py) equals the
one `probe analyze` builds from SQL.

Why both: the pipeline must not be a second classifier. It reuses ``classify``; what
it could get wrong is the input to it: the records (read from OONI files or an export
folder instead of the store) and the Context (aggregated in Python instead of SQL).
The runctx tests need no Beam; the pipeline tests skip only when apache_beam is not
importable (CI installs the ``beam`` extra, so they run there). One pipeline run per
input kind, all started at once, serves the whole module.
"""

from __future__ import annotations

import copy
import csv
import glob
import gzip
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clirun
import pytest
from clirun import ROOT, probe_sync, rows
from collector_data import add, measurement, new_run

from probe import store
from probe.analysis.analyze import run_context
from probe.analysis.fingerprints import default_fingerprints
from probe.analysis.runctx import context_from_measurements
from probe.core.verdicts import CLASSIFIER_VERSION
from probe.ooni.database import import_ooni

DATA = ROOT / "tests" / "data" / "ooni"
PATTERNS = [str(DATA / "real" / "*"), str(DATA / "synthetic-qa" / "*.json")]
# what the shell would hand `probe import-ooni` for those patterns: the same strings
# the pipeline matches, since ids of documents without ids of their own derive from them
FILES = sorted(f for pattern in PATTERNS for f in glob.glob(pattern))
VERDICT_COLUMNS = ("verdict", "blocked", "confidence", "rule_id", "layer")


def _documents() -> Iterator[dict[str, Any]]:
    for f in FILES:
        text = "".join(line for line in Path(f).read_text(encoding="utf-8").splitlines(keepends=True)
                       if not line.lstrip().startswith("//"))
        yield json.loads(text)


def one_run_jsonl(path: Path) -> Path:
    """Every whole sample document as one OONI report (a run of 60-odd measurements, as
    a volunteer's), so the run-level Context has something to aggregate: each also
    connects to a working IPv4 and a failing IPv6 address on its port (a broken IPv6 at
    the vantage point), and its pages are large and slow enough to be link samples."""
    lines = []
    for i, doc in enumerate(d for d in _documents() if "test_keys" in d):
        doc = copy.deepcopy(doc)
        doc.update(report_id="20260101T000000Z_webconnectivity_BY_6697_n1_pipelinetest", probe_cc="BY",
                   probe_asn="AS6697", measurement_uid=f"pipeline-test-{i}")
        tk = doc["test_keys"]
        url = doc.get("input") or ""
        port = 443 if url.startswith("https") else 80
        tk["tcp_connect"] = [*(tk.get("tcp_connect") or []),
                             {"ip": "192.0.2.1", "port": port, "status": {"success": True, "failure": None}, "t0": 0.1,
                              "t": 0.2},
                             {"ip": "2001:db8::1", "port": port,
                              "status": {"success": False, "failure": "generic_timeout_error"}, "t0": 0.1, "t": 10.1}]
        for n, r in enumerate(tk.get("requests") or []):
            if isinstance(r, dict) and isinstance(r.get("response"), dict) and r["response"].get("code"):
                r["response"]["body_length"] = 100_000 + 1000 * i + n
                r.update(t0=0.5, t=0.5 + 0.1 * (1 + i % 7))
        lines.append(json.dumps(doc))
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


# --- the run's Context: from records, as from SQL ------------------------------------------------


def _contexts_agree(db, lab_networks: tuple[str, ...] = ()) -> list:
    fps = default_fingerprints()
    contexts = []
    for run in store.runs(db, None):
        records = [store.load_measurement(db, mid) for mid, _ in store.measurement_ids(db, run["run_id"])]
        from_sql = run_context(db, run, fps, lab_networks)
        from_records = context_from_measurements(run, [m for m in records if m is not None], fps, lab_networks)
        assert from_records == from_sql, run["run_id"]
        contexts.append(from_records)
    return contexts


def test_run_context_from_records_equals_the_sql_one(tmp_path):
    db = store.open_db(tmp_path / "probe.db")
    for f in FILES:
        assert import_ooni(db, f, source=f).usable == 1
    merged = one_run_jsonl(tmp_path / "one-run.jsonl.gz")
    assert import_ooni(db, merged, source=str(merged), lab_networks=["10.77.0.0/16"]).imported == len(FILES) - 1
    contexts = _contexts_agree(db)
    _contexts_agree(db, ("192.0.2.0/24", "2001:db8::/32"))
    assert len(contexts) == len(FILES) + 1
    # each rule of the Context had something to decide in the big run
    big = max(contexts, key=lambda c: c.run_size)
    assert big.run_size == len(FILES) - 1
    assert big.broken_families == frozenset({6})
    assert big.link_bytes_per_s is not None
    assert big.run_dns_failure_rate is not None and 0 < big.run_dns_failure_rate < 1
    assert [str(n) for n in big.lab_networks] == ["10.77.0.0/16"]


# --- the pipeline, against `probe import-ooni` + `probe analyze` ----------------------------------


def _pipeline(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LANGUAGE": "en"}
    return subprocess.Popen([sys.executable, "-m", "probe.analysis.pipeline", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Any]:
    """The sample files imported and analysed with the real CLI, exported both ways, and
    the pipeline run over each input kind (in parallel: DirectRunner start-up is slow)."""
    pytest.importorskip("apache_beam", reason="the `beam` extra is not installed (pip install -e '.[beam]')")
    tmp = tmp_path_factory.mktemp("pipeline")
    merged = str(one_run_jsonl(tmp / "one-run.jsonl.gz"))
    # the OONI files need no database: that pipeline runs while the CLI imports them
    ooni = [a for p in [*PATTERNS, merged] for a in ("--input", p)]
    procs = {"ooni": _pipeline(*ooni, "--output", str(tmp / "ooni" / "out"), "--verdicts")}
    try:
        return _prepare_and_wait(tmp, merged, procs)
    finally:
        for proc in procs.values():
            if proc.poll() is None:  # the fixture failed before waiting: leave nothing running
                proc.kill()
                proc.wait()


def _prepare_and_wait(tmp: Path, merged: str, procs: dict[str, subprocess.Popen]) -> dict[str, Any]:
    db = tmp / "probe.db"
    code, _, err = probe_sync("import-ooni", *FILES, merged, "--db", str(db))
    assert code == 0, err
    # and a run as our probe stores it (its measurements' addresses are not in an export:
    # the pipeline rebuilds them the probe's way, not the import's)
    ours = store.open_db(db)
    own = add(ours, new_run(ours, "BY", "AS25106"),
              [measurement(f"https://site{i}.example/", kind) for i, kind in enumerate(["ok", "reset", "refused"] * 4)])
    store.close(ours)
    code, _, err = probe_sync("analyze", "--db", str(db))
    assert code == 0, err
    assert probe_sync("export-ooni", "--db", str(db), "-o", str(tmp / "export-ooni.jsonl"))[0] == 0
    assert probe_sync("export", "--db", str(db), "--format", "jsonl", "-o", str(tmp / "export"))[0] == 0
    for kind, path in (("export-ooni", tmp / "export-ooni.jsonl"), ("export", tmp / "export")):
        procs[kind] = _pipeline("--input", str(path), "--output", str(tmp / kind / "out"), "--verdicts")
    done = {}
    for kind, proc in procs.items():
        _out, err = proc.communicate(timeout=300)
        done[kind] = (proc.returncode, err.decode(errors="replace"))
    every = {r[0]: tuple(r[1:]) for r in rows(
        db, f"select measurement_id, {', '.join(VERDICT_COLUMNS)} from verdicts where classifier_version = ?",
        [CLASSIFIER_VERSION])}
    assert len(every) == 2 * len(FILES) - 1 + len(own)
    # the OONI files hold the imported measurements; both exports hold every one
    want = {"ooni": {k: v for k, v in every.items() if k not in own}, "export-ooni": every, "export": every}
    return {"tmp": tmp, "want": want, "done": done}


def _verdicts(out: Path) -> dict[str, tuple]:
    got = {}
    for f in sorted(out.parent.glob(out.name + "-verdicts-*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            r["blocked"] = None if r["blocked"] is None else int(r["blocked"])  # as the verdicts table stores it
            got[r["measurement_id"]] = tuple(r[c] for c in VERDICT_COLUMNS)
    return got


@pytest.mark.parametrize("kind", ["ooni", "export-ooni", "export"])
def test_pipeline_gives_the_verdicts_of_probe_analyze(runs, kind):
    code, err = runs["done"][kind]
    assert code == 0, err
    assert "Traceback" not in err
    assert f"classified {len(runs['want'][kind])} measurements" in err
    assert _verdicts(runs["tmp"] / kind / "out") == runs["want"][kind]


@pytest.mark.parametrize("kind", ["ooni", "export-ooni", "export"])
def test_aggregates_sum_to_the_measurements(runs, kind):
    pq = pytest.importorskip("pyarrow.parquet")
    out = runs["tmp"] / kind / "out"
    [parquet] = out.parent.glob(out.name + "-aggregates-*.parquet")
    table = pq.read_table(parquet).to_pylist()
    csv_rows = [r for f in sorted(out.parent.glob(out.name + "-aggregates-*.csv"))
                for r in csv.DictReader(f.open(encoding="utf-8"))]
    verdicts = [json.loads(line) for f in sorted(out.parent.glob(out.name + "-verdicts-*.jsonl"))
                for line in f.read_text(encoding="utf-8").splitlines()]
    n = len(runs["want"][kind])
    assert sum(r["measurements"] for r in table) == sum(int(r["measurements"]) for r in csv_rows) == n
    assert sum(r["blocked"] for r in table) == sum(v["blocked"] is True for v in verdicts) > 0
    assert sum(r["cant_tell"] for r in table) == sum(v["blocked"] is None for v in verdicts)
    keys = [(r["domain"], r["asn"], r["cc"], str(r["day"]), r["verdict"]) for r in table]
    assert len(keys) == len(set(keys)) == len(csv_rows)
    # the one big run is counted per domain on its own network
    assert sum(r["measurements"] for r in table if (r["cc"], r["asn"]) == ("BY", "AS6697")) == len(FILES) - 1


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    pytest.importorskip("apache_beam", reason="the `beam` extra is not installed (pip install -e '.[beam]')")
    monkeypatch.setenv("LANGUAGE", "en")  # main() takes the language from the environment, as `probe` does
    from probe.analysis import pipeline

    for args in (["--input", str(tmp_path / "absent.jsonl")], ["--input", str(tmp_path)],
                 ["--input", str(DATA / "real" / "*"), "--fingerprints", str(tmp_path / "none.csv")]):
        with pytest.raises(SystemExit) as exc:
            pipeline.main([*args, "--output", str(tmp_path / "out")])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not list(tmp_path.glob("out*"))
    assert clirun.RUNS == []
