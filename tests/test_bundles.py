"""Bundles: one whole measurement (every observation, the control's answer, its run and
target) as JSON, and into another database, row for row, as a collector will receive it.

The round trip is made with a real run: the `probe` CLI against local DNS, HTTPS and
HTTP servers and a real control helper, then every measurement bundled, sent through
gzip JSON and saved into a fresh database; analysis there must say the same."""

from __future__ import annotations

import asyncio
import copy
import gzip
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from clirun import QUIET, ROOT, probe, rows
from hypothesis import given, settings
from servers import NXDOMAIN, Answer, Behaviour, DnsServer, LabPKI, RawTcpServer, WebServer, site_app, unused_port
from test_properties import PROPERTIES, measurements

from probe import store
from probe.core.bundle import (
    BUNDLE_VERSION,
    MAX_BUNDLE_BYTES,
    MAX_DEPTH,
    MAX_LIST_ITEMS,
    RUN_FIELDS,
    BundleError,
    bundle_from_gzip,
    bundle_to_gzip,
    measurement_from_json,
    measurement_to_json,
)
from probe.core.records import (
    ControlResult,
    DnsAnswer,
    DnsQuery,
    DnsReply,
    HttpRequest,
    Measurement,
    TcpConnect,
    TlsHandshake,
    new_id,
    utcnow,
)

# every table holding a measurement's observations, with the columns that order its rows
OBSERVATION_TABLES = {
    "measurements": "measurement_id",
    "dns_queries": "query_id",
    "dns_answers": "query_id, position",
    "tcp_connects": "id",
    "tls_handshakes": "id",
    "http_requests": "request_id",
    "control_results": "measurement_id",
}
FAKE_PROBE_IP = "203.0.113.77"  # stored as with --store-ip: it must not travel


def table_rows(db: Path, table: str, mid: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        sql = f"select * from {table} where measurement_id = ? order by {OBSERVATION_TABLES[table]}"
        return [dict(r) for r in conn.execute(sql, [mid]).fetchall()]
    finally:
        conn.close()


def wire(bundle: dict[str, Any]) -> Any:
    """Through what an upload will be: gzip JSON bytes, then read back."""
    return bundle_from_gzip(bundle_to_gzip(bundle))


@pytest.fixture
async def lab(pki: LabPKI) -> AsyncIterator[dict[str, Any]]:
    """Sites that leave every kind of observation: a fine HTTPS site, a name that does not
    exist, an SNI reset, plain-HTTP pages (a redirect chain, a blockpage, a windows-1251
    page: body heads that are not UTF-8), and a control helper answering for each."""
    zone: dict[str, Behaviour] = {
        "ok.lab.test": Answer(a=["127.0.0.1"]),
        "plain.lab.test": Answer(a=["127.0.0.1"]),
        "gone.lab.test": NXDOMAIN,
        "reset.lab.test": Answer(a=["127.0.0.1"]),
    }
    async with DnsServer(zone) as dns, \
            WebServer(site_app(title="OK site"), ssl_context=pki.server_context("ok.lab.test")) as web, \
            WebServer(site_app(title="Plain site")) as plain, RawTcpServer("reset_after_data") as reset:
        yield {"dns": dns, "web": web, "plain": plain, "reset": reset}


async def start_helper(dns: DnsServer, ca_file: str) -> tuple[asyncio.subprocess.Process, str]:
    port = unused_port()
    helper = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "probe", "control", "serve", "--port", str(port), "--allow-private",
        "--ca-file", ca_file, "--resolver", dns.address, "--no-system-resolver",
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    for _ in range(100):  # until it listens
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        except OSError:
            await asyncio.sleep(0.1)
    return helper, f"http://127.0.0.1:{port}"


async def measure_lab(tmp_path: Path, lab: dict[str, Any], ca_file: str) -> Path:
    """Database A: one real run over the lab, with the control helper and --store-ip."""
    plain = lab["plain"]
    targets = tmp_path / "lists" / "targets.txt"
    targets.parent.mkdir()
    targets.write_text(
        f"{lab['web'].url('/', hostname='ok.lab.test')} NEWS fine site\n"
        "https://gone.lab.test/ NEWS name removed\n"
        f"https://reset.lab.test:{lab['reset'].port}/ HUMR SNI filtered\n"
        f"{plain.url('/redirect/2', hostname='plain.lab.test')} NEWS three hops\n"
        f"{plain.url('/blockpage', hostname='plain.lab.test')} POLR the ministry's page\n"
        f"{plain.url('/cp1251', hostname='plain.lab.test')} NEWS an old page\n")
    db = tmp_path / "a.db"
    helper, control = await start_helper(lab["dns"], ca_file)
    try:
        rc, _, err = await probe("run", "--targets", str(targets), "--control", control, "--store-ip",
                                 "--cc", "BY", "--asn", "AS6697", "--lab-network", "127.0.0.0/8",
                                 "--db", str(db), "--resolver", lab["dns"].address, "--ca-file", ca_file,
                                 "--timeout-scale", "0.3", *QUIET)
        assert rc == 0, err
    finally:
        helper.send_signal(signal.SIGTERM)
        await asyncio.wait_for(helper.wait(), 10)
    conn = sqlite3.connect(db)
    conn.execute("update runs set probe_ip = ?", [FAKE_PROBE_IP])  # what --store-ip keeps when the lookup ran
    conn.commit()
    conn.close()
    return db


def verdicts(db: Path) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in rows(db, "select measurement_id, classifier_version, verdict, blocked, confidence, "
                                          "layer, rule_id, evidence, layers, tags from verdicts")}


async def test_every_measurement_of_a_real_run_arrives_row_for_row(tmp_path, lab, ca_file):
    a = await measure_lab(tmp_path, lab, ca_file)
    b = tmp_path / "b.db"
    src, dst = store.open_db(a), store.open_db(b)
    ids = [r[0] for r in rows(a, "select measurement_id from measurements order by rowid")]  # A's order: same row ids
    assert len(ids) == 6
    sent = [bundle_to_gzip(store.bundle(src, mid)) for mid in ids]
    for data in sent:
        text = gzip.decompress(data).decode()
        assert FAKE_PROBE_IP not in text and "probe_ip" not in text and str(tmp_path) not in text
        assert store.save_bundle(dst, bundle_from_gzip(data)) is True
    for mid in ids:
        for table in OBSERVATION_TABLES:
            assert table_rows(b, table, mid) == table_rows(a, table, mid), (table, mid)
    # the evidence is there: both sides, body heads byte for byte, both sides' TLS
    assert rows(b, "select count(*) from control_results where failure is null") == [(6,)]
    heads = rows(a, "select body_head from http_requests where body_head is not null order by request_id")
    assert len(heads) >= 6 and heads == rows(b, "select body_head from http_requests where body_head is not null "
                                                 "order by request_id")
    assert rows(b, "select count(*) from http_requests where side = 'local' and kind = 'main' and hop = 2") == [(1,)]
    # the run, as sent: everything but the volunteer's address and the paths of their machine
    (run_a,), (run_b,) = store.runs(src), store.runs(dst)
    assert run_a["probe_ip"] == FAKE_PROBE_IP and run_b["probe_ip"] is None
    assert run_b["targets_source"] == "targets.txt" and run_a["targets_source"].endswith("/lists/targets.txt")
    config_a, config_b = json.loads(run_a["config"]), json.loads(run_b["config"])
    assert config_b["ca_file"] == Path(ca_file).name and config_b["lab_networks"] == ["127.0.0.0/8"]
    assert {k: v for k, v in config_a.items() if k != "ca_file"} == {k: v for k, v in config_b.items() if k != "ca_file"}
    same = set(run_a) - {"probe_ip", "targets_source", "config"}
    assert {k: run_a[k] for k in same} == {k: run_b[k] for k in same}
    assert run_b["status"] == "finished" and run_b["cc"] == "BY" and run_b["asn"] == "AS6697"
    targets = "select run_id, position, url, category, note, status, measurement_id from run_targets order by position"
    assert rows(b, targets) == rows(a, targets)
    # saved again (a retried upload): nothing written
    counts = {t: rows(b, f"select count(*) from {t}") for t in [*OBSERVATION_TABLES, "runs", "run_targets"]}
    for data in sent:
        assert store.save_bundle(dst, bundle_from_gzip(data)) is False
    assert counts == {t: rows(b, f"select count(*) from {t}") for t in counts}
    src.conn.close()
    dst.conn.close()
    # the same verdicts, derived again on both sides
    for db in (a, b):
        rc, _, err = await probe("analyze", "--db", str(db))
        assert rc == 0, err
    assert verdicts(b) == verdicts(a) and len(verdicts(a)) == 6
    assert {v[1] for v in verdicts(b).values()} == {"ok", "down"}  # the control fails alike: down


# --- measurements built in code -----------------------------------------------------------


def _run(db: Any, urls: list[str], **extra: Any) -> str:
    run = {"run_id": new_id(), "started_at": utcnow(), "status": "finished", "probe_version": "t",
           "targets_source": "C:\\Users\\ivan\\lists\\news.txt", "target_count": len(urls),
           "config": json.dumps({"ca_file": "/home/ivan/ca.pem", "own_addresses": [FAKE_PROBE_IP], "dns_timeout": 4.0}),
           "notes": "[]", "resolvers": '["192.168.1.1:53"]', "probe_ip": FAKE_PROBE_IP, **extra}
    store.create_run(db, run, [store.RunTarget(u, "NEWS", "a note") for u in urls])
    return run["run_id"]


def _measurement(url: str = "https://site.test/") -> Measurement:
    t = utcnow()
    m = Measurement(url=url, hostname="site.test", scheme="https", port=443, started_at=t, category="NEWS",
                    network_epoch=1, network_changed=True)
    m.dns = [DnsQuery("udp", "127.0.0.1:53", "site.test", "A", t, 1.0, None, "NOERROR", "127.0.0.1:53",
                      [DnsAnswer("A", "192.0.2.1", 60)],
                      [DnsReply("127.0.0.1:53", 5.0, "NOERROR", [DnsAnswer("A", "10.0.0.1")])])]
    m.tcp = [TcpConnect("192.0.2.1", 443, t, 2.0, True)]
    m.tls = [TlsHandshake("192.0.2.1", 443, "site.test", t, 3.0, False, "connection_reset",
                          failure_stage="after_client_hello", bytes_sent=517)]
    m.http = [HttpRequest(url, "main", 0, t, 4.0, failure="connection_reset"),
              HttpRequest("http://192.0.2.1/", "http_fallback", 0, t, 4.0, status=302, headers=[["Server", "x"]],
                          location="http://82.209.230.23/", body_head=b"\xff\xfe<title>\x00x</title>", body_length=17)]
    m.control = ControlResult("http://control", t, 10.0, dns=[DnsQuery("system", None, "site.test", "ANY", t, 1.0,
                              answers=[DnsAnswer("A", "192.0.2.1")])],
                              http=[HttpRequest(url, "main", 0, t, 5.0, status=200, title="Site")],
                              raw={"version": 1, "nested": [{"a": None}]}, attempts=2, reason=None)
    m.addresses = ["192.0.2.1"]
    m.finished_at = utcnow()
    m.duration_ms = 12.5
    return m


@pytest.fixture
def stored(tmp_path) -> Iterator[tuple[Any, Measurement, dict[str, Any]]]:
    """A database holding one measurement, and that measurement's bundle."""
    db = store.open_db(tmp_path / "a.db")
    m = _measurement()
    store.save_measurement(db, _run(db, [m.url]), m)
    yield db, m, store.bundle(db, m.measurement_id)
    db.conn.close()


def test_a_bundle_is_json_and_gives_back_the_same_measurement(stored):
    db, m, b = stored
    assert b["bundle_version"] == BUNDLE_VERSION and set(b) == {"bundle_version", "run", "measurement", "target"}
    back = json.loads(json.dumps(b, allow_nan=False))
    got = measurement_from_json(back["measurement"])
    assert got == store.load_measurement(db, m.measurement_id)
    # as measured, but for the control's record ids, which the store derives (observations.py)
    assert (got.dns, got.tcp, got.tls, got.http, got.addresses) == (m.dns, m.tcp, m.tls, m.http, m.addresses)
    assert got.control is not None and got.control.raw == m.control.raw and got.control.attempts == 2
    assert b["target"] == {"url": m.url, "category": "NEWS", "note": "a note", "position": 0}


def test_nothing_of_the_volunteers_machine_travels(stored):
    db, m, b = stored
    text = json.dumps(b)
    assert FAKE_PROBE_IP not in text and "ivan" not in text and "probe_ip" not in text
    assert b["run"]["targets_source"] == "news.txt"
    assert json.loads(b["run"]["config"]) == {"ca_file": "ca.pem", "dns_timeout": 4.0}
    assert b["run"]["resolvers"] == '["192.168.1.1:53"]'  # analysis and OONI export need them


def test_the_run_columns_that_travel_are_all_but_the_address(tmp_path):
    """A column added to runs must be named in RUN_FIELDS (or consciously left out here)."""
    db = store.open_db(tmp_path / "a.db")
    assert {c.name for c in db["runs"].columns} == set(RUN_FIELDS) | {"probe_ip"}
    db.conn.close()


def test_a_run_already_there_is_kept_and_a_second_measurement_joins_it(tmp_path, stored):
    db, m, b = stored
    other = _measurement("https://other.test/")
    store.add_run_targets(db, b["run"]["run_id"], [other.url])
    store.save_measurement(db, b["run"]["run_id"], other)
    dst = store.open_db(tmp_path / "b.db")
    assert store.save_bundle(dst, wire(b)) is True
    dst.table("runs").update(b["run"]["run_id"], {"status": "interrupted"})
    assert store.save_bundle(dst, wire(store.bundle(db, other.measurement_id))) is True
    assert [r["status"] for r in store.runs(dst)] == ["interrupted"]
    assert store.count_targets(dst, b["run"]["run_id"])["done"] == 2
    dst.conn.close()


def _corruptions(b: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(what, a broken copy of b, what the message names)."""

    def broken(change) -> dict[str, Any]:
        c = copy.deepcopy(b)
        change(c)
        return c

    m = "measurement"
    return [
        ("newer version", broken(lambda c: c.update(bundle_version=BUNDLE_VERSION + 1)), "newer"),
        ("no version", broken(lambda c: c.pop("bundle_version")), "bundle_version"),
        ("version as text", broken(lambda c: c.update(bundle_version="1")), "bundle_version"),
        ("no run id", broken(lambda c: c["run"].pop("run_id")), "bundle.run.run_id: missing"),
        ("run id a number", broken(lambda c: c["run"].update(run_id=7)), "bundle.run.run_id: expected a string"),
        ("config not JSON", broken(lambda c: c["run"].update(config="{")), "bundle.run.config: not JSON"),
        ("config a list", broken(lambda c: c["run"].update(config="[]")), "bundle.run.config: expected JSON"),
        ("no measurement", broken(lambda c: c.pop(m)), "bundle.measurement: missing"),
        ("measurement a list", broken(lambda c: c.update(measurement=[])), "expected an object"),
        ("no url", broken(lambda c: c[m].pop("url")), "bundle.measurement.url: missing"),
        ("port as text", broken(lambda c: c[m].update(port="443")), "bundle.measurement.port: expected an integer"),
        ("port a boolean", broken(lambda c: c[m].update(port=True)), "expected an integer, got a boolean"),
        ("success as 1", broken(lambda c: c[m]["tcp"][0].update(success=1)), "bundle.measurement.tcp[0].success"),
        ("duration NaN", broken(lambda c: c[m]["tcp"][0].update(duration_ms=float("nan"))), "not a finite number"),
        ("answers not a list", broken(lambda c: c[m]["dns"][0].update(answers={})), "dns[0].answers: expected a list"),
        ("reply without rcode", broken(lambda c: c[m]["dns"][0]["extra_replies"][0].pop("rcode")),
         "extra_replies[0].rcode: missing"),
        ("null required", broken(lambda c: c[m].update(hostname=None)), "hostname: null"),
        ("body not base64", broken(lambda c: c[m]["http"][1].update(body_head="@@@")), "http[1].body_head: not base64"),
        ("huge body", broken(lambda c: c[m]["http"][1].update(body_head="QUFB" * 50_000)), "body_head: more than"),
        ("header not a pair", broken(lambda c: c[m]["http"][1]["headers"].append(["a"])), "headers[1]: expected"),
        ("header not text", broken(lambda c: c[m]["http"][1]["headers"].append(["a", 1])), "expected a string"),
        ("huge list", broken(lambda c: c[m].update(addresses=["192.0.2.1"] * (MAX_LIST_ITEMS + 1))),
         "bundle.measurement.addresses: 1001 items"),
        ("huge string", broken(lambda c: c[m].update(hostname="a" * 10**6)), "characters, more than"),
        ("deep raw", broken(lambda c: c[m]["control"].update(raw=_deep(MAX_DEPTH + 5))), "nested deeper"),
        ("raw a list", broken(lambda c: c[m]["control"].update(raw=[])), "control.raw: expected an object"),
        ("many values", broken(lambda c: c[m].update(dns=[{**c[m]["dns"][0], "answers": c[m]["dns"][0]["answers"] * 300}]
                                                     * MAX_LIST_ITEMS)), "values in one bundle"),
        ("same query id twice", broken(lambda c: c[m]["dns"].append(c[m]["dns"][0])), "same query_id"),
        ("target of another url", broken(lambda c: c["target"].update(url="https://x.test/")), "target.url"),
        ("no target", broken(lambda c: c.pop("target")), "bundle.target: expected an object"),
    ]


def _deep(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(n):
        out = {"a": out}
    return out


def test_corrupt_bundles_are_refused_in_one_line_and_write_nothing(tmp_path, stored):
    _, _, b = stored
    dst = store.open_db(tmp_path / "b.db")
    tables = [*OBSERVATION_TABLES, "runs", "run_targets"]
    for what, bad, words in _corruptions(b):
        with pytest.raises(BundleError) as info:
            store.save_bundle(dst, bad)
        message = str(info.value)
        assert words in message and "\n" not in message and len(message) < 200, (what, message)
        assert all(dst.execute(f"select count(*) from {t}").fetchone()[0] == 0 for t in tables), what
    for data in (b"not gzip", gzip.compress(b"{"), gzip.compress(b"\xff"), gzip.compress(b"[" * 100_000),
                 bundle_to_gzip(b)[:-9], gzip.compress(b" " * (MAX_BUNDLE_BYTES + 1))):
        with pytest.raises(BundleError) as info:
            bundle_from_gzip(data)
        assert "\n" not in str(info.value)
    with pytest.raises(BundleError, match="more than"):
        bundle_from_gzip(bundle_to_gzip(b), max_bytes=100)
    assert store.save_bundle(dst, wire(b)) is True  # the good one still goes in
    dst.conn.close()


def test_record_ids_of_another_measurement_are_refused_not_half_written(tmp_path, stored):
    _, _, b = stored
    dst = store.open_db(tmp_path / "b.db")
    assert store.save_bundle(dst, wire(b)) is True
    thief = copy.deepcopy(b)
    thief["measurement"]["measurement_id"] = new_id()
    thief["run"]["run_id"] = new_id()
    with pytest.raises(BundleError, match="record ids"):
        store.save_bundle(dst, thief)
    assert dst.execute("select count(*) from runs").fetchone()[0] == 1
    assert dst.execute("select count(*) from measurements").fetchone()[0] == 1
    dst.conn.close()


def test_unknown_keys_are_ignored_and_missing_optional_fields_take_their_defaults(stored):
    _, m, b = stored
    d = copy.deepcopy(b["measurement"])
    d["from_the_future"] = {"x": 1}
    d["tcp"][0]["ttl"] = 3
    del d["tcp"][0]["failure"], d["network_epoch"]
    back = measurement_from_json(d)
    assert back.tcp == m.tcp and back.network_epoch is None


@settings(PROPERTIES, max_examples=60)
@given(measurements())
def test_measurement_json_round_trips(m: Measurement) -> None:
    d = json.loads(json.dumps(measurement_to_json(m), allow_nan=False))
    assert measurement_from_json(d) == m


def test_figures(tmp_path, capsys):
    """Sizes and speed (printed with -s): a typical measurement's bundle, 1,000 bundled and saved."""
    src = store.open_db(tmp_path / "a.db")
    ms = [_measurement(f"https://site{i}.test/") for i in range(1000)]
    run_id = _run(src, [m.url for m in ms])
    with store.writing(src):
        for m in ms:
            store.save_measurement(src, run_id, m)
    dst = store.open_db(tmp_path / "b.db")
    t0 = time.monotonic()
    for m in ms:
        assert store.save_bundle(dst, wire(store.bundle(src, m.measurement_id)))
    elapsed = time.monotonic() - t0
    b = store.bundle(src, ms[0].measurement_id)
    plain = len(json.dumps(b, ensure_ascii=False, separators=(",", ":")).encode())
    with capsys.disabled():
        print(f"\nbundle: {plain} B plain, {len(bundle_to_gzip(b))} B gzip; 1000 bundled+gzip+saved in {elapsed:.2f} s")
    assert elapsed < 30
    src.conn.close()
    dst.conn.close()
