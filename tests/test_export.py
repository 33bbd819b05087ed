"""Researchers' exports (`probe export`): real probe databases, built by the probe's own
store and analysis code, written as Parquet, CSV and JSONL and read back: row counts,
types, a nullable `blocked`, body heads byte for byte, the newest classifier's verdict,
and nothing of the volunteer's machine (no `probe_ip`, no paths)."""

from __future__ import annotations

import base64
import csv
import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from click.testing import CliRunner
from clirun import ROOT
from test_bundles import FAKE_PROBE_IP, _measurement, _run
from test_report import BELTELECOM, _verdict, make_db

from probe import store
from probe.analysis import persist
from probe.cli.export import export_cmd
from probe.core.records import Certificate, Measurement, TlsHandshake, utcnow
from probe.core.verdicts import Verdict
from probe.report.export import ExportError, export_database, parse_timestamp
from probe.store.export import EXPORT_TABLES, export_chunks, type_name

BODY = b"\xff\xfe<title>\x00x</title>"  # the blockpage head of test_bundles._measurement: not UTF-8
OBSERVATION_TABLES = ("dns_queries", "dns_answers", "tcp_connects", "tls_handshakes", "http_requests", "control_results")
JOINED = {"run_id", "cc", "asn"}  # the run's columns every observation row carries


def _certificate() -> Certificate:
    return Certificate(subject="CN=site.test", issuer="CN=Lab CA", sans=["site.test", "www.site.test"],
                       not_before="2024-01-01T00:00:00+00:00", not_after="2025-01-01T00:00:00+00:00",
                       serial="0a", sha256="ab" * 32, der_b64=base64.b64encode(b"der").decode())


def _full_measurement(url: str = "https://site.test/") -> Measurement:
    """test_bundles' measurement (every kind of observation, local and control, a body
    head that is not text) and a handshake that showed a certificate chain."""
    m = _measurement(url)
    m.tls.append(TlsHandshake("192.0.2.1", 443, "site.test", utcnow(), 9.5, True, tls_version="TLSv1.3",
                              alpn="h2", cert_valid=True, peer_certificates=[_certificate()],
                              cert_checked_at="2024-05-01T10:00:00.000000Z"))
    return m


@dataclasses.dataclass
class Lab:
    path: Path
    db: sqlite_utils.Database
    judged: Measurement  # two classifier versions: 1.9.0 says ok, 1.10.0 tls.reset
    unjudged: Measurement  # no verdict at all
    cant_tell: Measurement  # blocked is null
    fine: Measurement  # ok: blocked is false


@pytest.fixture
def lab(tmp_path) -> Iterator[Lab]:
    path = tmp_path / "probe.db"
    db = store.open_db(path)
    ms = [_full_measurement(f"https://site{i}.test/") for i in range(4)]
    run_id = _run(db, [m.url for m in ms], cc="BY", asn="AS6697", network_name="Beltelecom")
    for m in ms:
        store.save_measurement(db, run_id, m)
    judged, unjudged, cant_tell, fine = ms
    reset = _verdict("tls.reset", 0.95, ["TLS handshake reset right after our ClientHello", "«Доступ ограничен»"])
    persist.save_verdicts(db, [
        (judged.measurement_id, dataclasses.replace(_verdict("ok", 0.9, ["same title"]), classifier_version="1.9.0")),
        (judged.measurement_id, dataclasses.replace(reset, classifier_version="1.10.0", tags=["partial:ipv4"])),
        (cant_tell.measurement_id, Verdict("tcp.timeout", None, 0.5, "tcp", "tcp.timeout.no_control")),
        (fine.measurement_id, _verdict("ok", 0.9, ["same title as the control"])),
    ])
    yield Lab(path, db, judged, unjudged, cant_tell, fine)
    db.conn.close()


def _count(db: sqlite_utils.Database, table: str) -> int:
    return db.execute(f"select count(*) from [{table}]").fetchone()[0]


def _by(rows: list[dict[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    return {r[key]: r for r in rows}


def _pyarrow() -> Any:
    return pytest.importorskip("pyarrow", reason="Parquet needs pyarrow (pip install 'bynet-probe[parquet]')")


# --- what the store hands out ------------------------------------------------------------


def test_every_stored_column_is_exported(lab):
    """A column a migration adds to an observation table must appear in the export (or
    be left out here, knowingly); runs export exactly what bundles let travel."""
    for table in OBSERVATION_TABLES:
        stored = {c.name for c in lab.db[table].columns}
        assert set(EXPORT_TABLES[table].column_names()) - JOINED == stored, table
    runs = set(EXPORT_TABLES["runs"].column_names())
    assert runs == {c.name for c in lab.db["runs"].columns} - {"probe_ip"}
    left_out = {"hostname", "control_url"}  # hostname is `domain`; control_url is in control_results
    assert {c.name for c in lab.db["measurements"].columns} - set(EXPORT_TABLES["measurements"].column_names()) == left_out


def test_chunks_are_bounded_and_hold_exactly_the_columns(lab):
    chunks = list(export_chunks(lab.db, "http_requests", chunk_rows=3))
    assert len(chunks) > 1 and all(len(c) == 3 for c in chunks[:-1]) and 1 <= len(chunks[-1]) <= 3
    rows = [r for c in chunks for r in c]
    assert len(rows) == _count(lab.db, "http_requests")
    assert all(list(r) == EXPORT_TABLES["http_requests"].column_names() for r in rows)
    tiny = list(export_chunks(lab.db, "http_requests", chunk_bytes=1))  # every row over the byte bound
    assert [len(c) for c in tiny] == [1] * len(rows)


def test_the_newest_classifier_decides_in_release_order(lab):
    rows = _by([r for c in export_chunks(lab.db, "measurements") for r in c], "measurement_id")
    judged = rows[lab.judged.measurement_id]
    # text order would say "1.9.0" > "1.10.0"
    assert (judged["classifier_version"], judged["verdict"], judged["blocked"]) == ("1.10.0", "tls.reset", True)
    assert judged["tags"] == ["partial:ipv4"]
    assert judged["evidence"] == ["TLS handshake reset right after our ClientHello", "«Доступ ограничен»"]
    assert json.loads(judged["evidence_json"])[0]["text"] == "TLS handshake reset right after our ClientHello"
    none = rows[lab.unjudged.measurement_id]
    assert {k: none[k] for k in ("verdict", "blocked", "confidence", "classifier_version", "tags", "evidence")} == \
        dict.fromkeys(("verdict", "blocked", "confidence", "classifier_version", "tags", "evidence"))
    assert rows[lab.cant_tell.measurement_id]["blocked"] is None
    assert rows[lab.cant_tell.measurement_id]["verdict"] == "tcp.timeout"
    assert rows[lab.fine.measurement_id]["blocked"] is False and rows[lab.fine.measurement_id]["tags"] == []
    assert judged["network_changed"] is True and judged["network_epoch"] == 1
    assert (judged["cc"], judged["asn"], judged["network_name"]) == ("BY", "AS6697", "Beltelecom")
    assert (judged["url"], judged["domain"]) == ("https://site0.test/", "site.test")  # the stored hostname


# --- Parquet -------------------------------------------------------------------------------


def test_parquet_types_counts_and_round_trip(lab, tmp_path):
    pa = _pyarrow()
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "out"
    files = export_database(lab.db, out, "parquet")
    assert {f.path.name for f in files} == {f"{t}.parquet" for t in EXPORT_TABLES}
    for f in files:
        table = pq.read_table(f.path)
        source = "measurements" if f.table == "measurements" else f.table
        assert table.num_rows == f.rows == _count(lab.db, source), f.table
        assert table.column_names == EXPORT_TABLES[f.table].column_names()
        assert table.schema.metadata[b"bynet_probe_table"] == f.table.encode()

    m = pq.read_table(out / "measurements.parquet")
    types = {field.name: field.type for field in m.schema}
    assert types["blocked"] == pa.bool_() and types["port"] == pa.int64() and types["confidence"] == pa.float64()
    assert types["started_at"] == pa.timestamp("us", tz="UTC") and types["tags"] == pa.list_(pa.string())
    assert m.schema.field("verdict").metadata[b"description"].startswith(b"the verdict code")
    blocked = _by(m.to_pylist(), "measurement_id")
    assert [blocked[x.measurement_id]["blocked"] for x in (lab.judged, lab.unjudged, lab.cant_tell, lab.fine)] == \
        [True, None, None, False]
    assert m.column("blocked").null_count == 2
    started = blocked[lab.judged.measurement_id]["started_at"]
    assert started == parse_timestamp(lab.judged.started_at) and started.tzinfo is not None

    http = pq.read_table(out / "http_requests.parquet")
    assert http.schema.field("body_head").type == pa.binary()
    assert http.schema.field("headers").type == pa.list_(pa.struct([("name", pa.string()), ("value", pa.string())]))
    heads = [r["body_head"] for r in http.to_pylist() if r["body_head"] is not None]
    assert heads == [BODY] * 4  # decompressed, byte for byte
    fallback = [r for r in http.to_pylist() if r["kind"] == "http_fallback"][0]
    assert fallback["headers"] == [{"name": "Server", "value": "x"}] and fallback["status"] == 302
    assert fallback["body_truncated"] is False and fallback["cc"] == "BY"

    tls = pq.read_table(out / "tls_handshakes.parquet").to_pylist()
    chain = [r["peer_certificates"] for r in tls if r["peer_certificates"]][0]
    assert chain[0]["sans"] == ["site.test", "www.site.test"]
    assert chain[0]["not_after"] == parse_timestamp("2025-01-01T00:00:00+00:00")
    assert {r["cert_valid"] for r in tls} == {None, True} and {r["success"] for r in tls} == {False, True}

    dns = pq.read_table(out / "dns_queries.parquet").to_pylist()
    replies = [r["extra_replies"] for r in dns if r["extra_replies"]][0]
    assert replies == [{"responder": "127.0.0.1:53", "delay_ms": 5.0, "rcode": "NOERROR",
                        "answers": [{"answer_type": "A", "value": "10.0.0.1", "ttl": None}]}]

    runs = pq.read_table(out / "runs.parquet")
    assert "probe_ip" not in runs.column_names
    (run,) = runs.to_pylist()
    assert run["targets_source"] == "news.txt" and run["resolvers"] == ["192.168.1.1:53"]
    assert json.loads(run["config"]) == {"ca_file": "ca.pem", "dns_timeout": 4.0}
    for f in files:  # the volunteer's address and user name are nowhere
        text = str(pq.read_table(f.path).to_pylist())
        assert FAKE_PROBE_IP not in text and "ivan" not in text, f.table

    ctrl = pq.read_table(out / "control_results.parquet").to_pylist()
    assert json.loads(ctrl[0]["raw"]) == {"version": 1, "nested": [{"a": None}]} and ctrl[0]["attempts"] == 2


def test_parquet_is_written_in_chunks(lab, tmp_path):
    """One row group per chunk: the writer never held the table whole."""
    pq = pytest.importorskip("pyarrow.parquet")
    export_database(lab.db, tmp_path / "out", "parquet", chunk_rows=2)
    meta = pq.ParquetFile(tmp_path / "out" / "http_requests.parquet").metadata
    assert meta.num_row_groups == -(-_count(lab.db, "http_requests") // 2)


def test_an_empty_database_gives_empty_files_with_their_schema(tmp_path):
    pa = _pyarrow()
    pq = pytest.importorskip("pyarrow.parquet")
    db = store.open_db(tmp_path / "empty.db")
    try:
        files = export_database(db, tmp_path / "out", "parquet")
    finally:
        db.conn.close()
    assert {f.rows for f in files} == {0}
    t = pq.read_table(tmp_path / "out" / "measurements.parquet")
    assert t.num_rows == 0 and t.schema.field("blocked").type == pa.bool_()


# --- CSV and JSONL ---------------------------------------------------------------------------


def test_csv_content(lab, tmp_path):
    out = tmp_path / "csv"
    files = export_database(lab.db, out, "csv")
    assert {f.path.name for f in files} == {f"{t}.csv" for t in EXPORT_TABLES}
    with (out / "measurements.csv").open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == EXPORT_TABLES["measurements"].column_names()
        rows = _by(list(reader), "measurement_id")
    assert len(rows) == 4
    judged = rows[lab.judged.measurement_id]
    assert judged["blocked"] == "true" and judged["started_at"] == lab.judged.started_at  # the stored RFC 3339 text
    assert json.loads(judged["evidence"])[1] == "«Доступ ограничен»" and json.loads(judged["tags"]) == ["partial:ipv4"]
    assert judged["port"] == "443" and judged["confidence"] == "0.95" and judged["network_changed"] == "true"
    assert rows[lab.cant_tell.measurement_id]["blocked"] == "" and rows[lab.unjudged.measurement_id]["verdict"] == ""
    assert rows[lab.fine.measurement_id]["blocked"] == "false"

    with (out / "http_requests.csv").open(encoding="utf-8", newline="") as fh:
        http = list(csv.DictReader(fh))
    assert len(http) == _count(lab.db, "http_requests")
    heads = [base64.b64decode(r["body_head"]) for r in http if r["body_head"]]
    assert heads == [BODY] * 4
    assert json.loads([r for r in http if r["kind"] == "http_fallback"][0]["headers"]) == [{"name": "Server", "value": "x"}]

    with (out / "runs.csv").open(encoding="utf-8", newline="") as fh:
        (run,) = list(csv.DictReader(fh))
    assert "probe_ip" not in run and run["targets_source"] == "news.txt"
    for f in files:
        text = f.path.read_text(encoding="utf-8")
        assert FAKE_PROBE_IP not in text and "ivan" not in text, f.table


def test_jsonl_content(lab, tmp_path):
    out = tmp_path / "jsonl"
    export_database(lab.db, out, "jsonl")
    for table, spec in EXPORT_TABLES.items():
        lines = (out / f"{table}.jsonl").read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines]
        assert len(rows) == _count(lab.db, table), table
        assert all(list(r) == spec.column_names() for r in rows), table
    m = _by([json.loads(x) for x in (out / "measurements.jsonl").read_text(encoding="utf-8").splitlines()],
            "measurement_id")
    assert [m[x.measurement_id]["blocked"] for x in (lab.judged, lab.unjudged, lab.cant_tell, lab.fine)] == \
        [True, None, None, False]
    assert m[lab.judged.measurement_id]["evidence"][1] == "«Доступ ограничен»"  # UTF-8, not \u escapes
    assert "«Доступ ограничен»" in (out / "measurements.jsonl").read_text(encoding="utf-8")
    http = [json.loads(x) for x in (out / "http_requests.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [base64.b64decode(r["body_head"]) for r in http if r["body_head"]] == [BODY] * 4
    tls = [json.loads(x) for x in (out / "tls_handshakes.jsonl").read_text(encoding="utf-8").splitlines()]
    cert = [r for r in tls if r["peer_certificates"]][0]["peer_certificates"][0]
    assert cert["not_before"] == "2024-01-01T00:00:00+00:00" and cert["serial"] == "0a"
    (run,) = [json.loads(x) for x in (out / "runs.jsonl").read_text(encoding="utf-8").splitlines()]
    assert "probe_ip" not in run and run["notes"] == []


def test_schema_json_describes_every_file(lab, tmp_path):
    export_database(lab.db, tmp_path / "out", "jsonl")
    doc = json.loads((tmp_path / "out" / "schema.json").read_text(encoding="utf-8"))
    assert doc["format"] == "jsonl" and set(doc["tables"]) == set(EXPORT_TABLES)
    m = doc["tables"]["measurements"]
    assert m["file"] == "measurements.jsonl" and m["rows"] == 4
    columns = {c["name"]: c for c in m["columns"]}
    assert columns["tags"]["type"] == "list<text>" and columns["blocked"]["type"] == "bool"
    assert all(c["description"] for t in doc["tables"].values() for c in t["columns"])
    headers = {c["name"]: c for c in doc["tables"]["http_requests"]["columns"]}["headers"]
    (spec,) = [c for c in EXPORT_TABLES["http_requests"].columns if c.name == "headers"]
    assert headers["type"] == type_name(spec.type) == "list<struct<name: text, value: text>>"


def test_a_time_that_is_not_one_is_kept_as_text_and_null_in_parquet(tmp_path):
    db = store.open_db(tmp_path / "odd.db")
    m = Measurement(url="https://odd.test/", hostname="odd.test", scheme="https", port=443, started_at="yesterday")
    store.save_measurement(db, _run(db, [m.url]), m)
    export_database(db, tmp_path / "out", "csv")
    with (tmp_path / "out" / "measurements.csv").open(encoding="utf-8", newline="") as fh:
        assert next(csv.DictReader(fh))["started_at"] == "yesterday"
    pq = pytest.importorskip("pyarrow.parquet")
    export_database(db, tmp_path / "out", "parquet")
    db.conn.close()
    assert pq.read_table(tmp_path / "out" / "measurements.parquet").to_pylist()[0]["started_at"] is None


# --- the folder ------------------------------------------------------------------------------


def test_named_files_are_replaced_and_others_kept(lab, tmp_path):
    out = tmp_path / "deep" / "out"  # parents are created
    out.mkdir(parents=True)
    (out / "README.txt").write_text("the researcher's own notes\n")
    (out / "measurements.csv").write_text("stale\n")
    export_database(lab.db, out, "csv")
    assert (out / "README.txt").read_text() == "the researcher's own notes\n"
    assert (out / "measurements.csv").read_text(encoding="utf-8").startswith("measurement_id,")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["README.txt", "schema.json", *(f"{t}.csv" for t in EXPORT_TABLES)])  # no partial files left


def test_a_file_in_the_way_is_one_line(lab, tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(ExportError, match="is a file, not a folder"):
        export_database(lab.db, tmp_path / "taken", "csv")


# --- the command -----------------------------------------------------------------------------


def test_cli_exports_every_format(lab, tmp_path):
    runner = CliRunner()
    for fmt in ("csv", "jsonl", "parquet"):
        if fmt == "parquet":
            _pyarrow()
        out = tmp_path / fmt
        result = runner.invoke(export_cmd, ["--db", str(lab.path), "--format", fmt, "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert "exported 4 measurements to" in result.stderr
        assert f"measurements.{fmt}: 4 rows" in result.stderr
        assert (out / f"dns_queries.{fmt}").is_file()


def test_cli_errors_are_one_line_and_exit_2(lab, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(export_cmd, ["--db", str(tmp_path / "none.db"), "--format", "csv", "-o", str(tmp_path / "o")])
    assert missing.exit_code == 2 and missing.stderr.count("\n") == 1 and "no such database" in missing.stderr
    assert not (tmp_path / "o").exists()
    (tmp_path / "file").write_text("x")
    in_the_way = runner.invoke(export_cmd, ["--db", str(lab.path), "--format", "csv", "-o", str(tmp_path / "file")])
    assert in_the_way.exit_code == 2 and in_the_way.stderr.count("\n") == 1
    assert "is a file, not a folder" in in_the_way.stderr
    not_ours = tmp_path / "foreign.db"
    sqlite3.connect(not_ours).execute("create table t (x)").connection.close()
    foreign = runner.invoke(export_cmd, ["--db", str(not_ours), "--format", "csv", "-o", str(tmp_path / "o")])
    assert foreign.exit_code == 2 and foreign.stderr.count("\n") == 1 and "not a probe database" in foreign.stderr


def test_parquet_without_pyarrow_is_one_line_and_exit_2(tmp_path):
    """pyarrow blocked as if not installed: the command says how to get it, and makes nothing."""
    db = make_db(tmp_path / "a.db", "BY", "AS6697", "Beltelecom", BELTELECOM)
    db.conn.close()
    out = tmp_path / "out"
    code = ("import sys; sys.modules['pyarrow'] = None; from probe.cli.export import export_cmd; "
            f"export_cmd(['--db', {str(tmp_path / 'a.db')!r}, '--format', 'parquet', '-o', {str(out)!r}])")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LANGUAGE": "en"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr == "error: Parquet needs pyarrow: pip install 'bynet-probe[parquet]'\n"
    assert result.stdout == "" and not out.exists()
