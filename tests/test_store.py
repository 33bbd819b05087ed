"""Storage: migrations, refusal of corrupt or newer databases, one transaction per URL."""

import sqlite3
from pathlib import Path

import pytest

from probe import store
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


def _run(db, urls):
    run = {"run_id": new_id(), "started_at": utcnow(), "status": "running", "probe_version": "t",
           "targets_source": "x", "target_count": len(urls), "config": "{}", "notes": "[]", "resolvers": "[]"}
    store.create_run(db, run, [store.RunTarget(u, "NEWS") for u in urls])
    return run["run_id"]


def _measurement(url="https://site.test/"):
    t = utcnow()
    q = DnsQuery("udp", "127.0.0.1:53", "site.test", "A", t, 1.0, None, "NOERROR", "127.0.0.1:53",
                 [DnsAnswer("A", "192.0.2.1", 60)], [DnsReply("127.0.0.1:53", 5.0, "NOERROR", [DnsAnswer("A", "10.0.0.1")])])
    m = Measurement(url=url, hostname="site.test", scheme="https", port=443, started_at=t)
    m.dns = [q]
    m.tcp = [TcpConnect("192.0.2.1", 443, t, 2.0, True)]
    m.tls = [TlsHandshake("192.0.2.1", 443, "site.test", t, 3.0, False, "connection_reset",
                          failure_stage="after_client_hello", bytes_sent=517)]
    m.http = [HttpRequest(url, "main", 0, t, 4.0, failure="connection_reset"),
              HttpRequest("http://192.0.2.1/", "http_fallback", 0, t, 4.0, status=302,
                          location="http://82.209.230.23/", body_head=b"<title>x</title>", body_length=15)]
    m.control = ControlResult("http://control", t, 10.0, dns=[DnsQuery("system", None, "site.test", "ANY", t, 1.0,
                              answers=[DnsAnswer("A", "192.0.2.1")])],
                              http=[HttpRequest(url, "main", 0, t, 5.0, status=200, title="Site")],
                              raw={"version": 1})
    m.addresses = ["192.0.2.1"]
    m.finished_at = utcnow()
    return m


def test_new_database_has_current_schema(tmp_path):
    db = store.open_db(tmp_path / "results" / "p.db")
    assert store.schema_version(db) == store.SCHEMA_VERSION
    assert {"runs", "measurements", "dns_queries", "tls_handshakes", "http_requests"} <= set(db.table_names())
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _as_version_1(tmp_path, fill) -> Path:
    """A database as version 1 of the schema held it: ``fill`` writes with today's code
    into a current database, and only the columns version 1 had are copied over."""
    current = store.open_db(tmp_path / "current.db")
    fill(current)
    old_path = tmp_path / "old.db"
    old = store.open_db(old_path, upto=1)
    assert store.schema_version(old) == 1
    for table in ("runs", "run_targets", "measurements", "dns_queries", "dns_answers", "tcp_connects",
                  "tls_handshakes", "http_requests", "control_results"):
        cols = [c.name for c in old[table].columns]
        rows = [dict(zip(cols, r, strict=False)) for r in current.execute(f"select {', '.join(cols)} from {table}").fetchall()]
        old.table(table).insert_all(rows)
    current.conn.close()
    old.conn.close()
    return old_path


def test_migration_from_version_1_keeps_data(tmp_path):
    m = _measurement()
    path = _as_version_1(tmp_path, lambda db: store.save_measurement(db, _run(db, ["https://site.test/"]), m))
    db = store.open_db(path)
    assert store.schema_version(db) == store.SCHEMA_VERSION
    assert db["measurements"].count == 1
    assert any(i.columns == ["measurement_id"] for i in db["tcp_connects"].indexes)
    # columns added since read back as what version 1 meant: one attempt, no reason, no
    # network change, certificates judged at the local time
    loaded = store.load_measurement(db, m.measurement_id)
    assert loaded.control.attempts == 1 and loaded.control.reason is None
    assert loaded.tls and all(t.cert_checked_at is None for t in loaded.tls)
    assert loaded.network_changed is False and loaded.network_epoch is None
    assert [t.ip for t in loaded.tls] == [t.ip for t in m.tls]


def test_replace_control_swaps_only_the_control_side(tmp_path):
    db = store.open_db(tmp_path / "p.db")
    run_id = _run(db, ["https://site.test/"])
    m = _measurement()
    m.control = ControlResult("http://control", m.started_at, 5.0, failure="control_unavailable", attempts=3,
                              reason="overloaded", raw={"error": "HTTP 503", "reason": "overloaded"})
    store.save_measurement(db, run_id, m)
    assert [r["reason"] for r in store.lost_controls(db, run_id)] == ["overloaded"]
    local_before = store.read_measurement(db, m.measurement_id)["local"]
    fresh = _measurement().control
    store.replace_control(db, m.measurement_id, fresh)
    after = store.read_measurement(db, m.measurement_id)
    assert after["local"] == local_before  # nothing measured locally is touched
    assert after["control_failure"] is None and store.lost_controls(db, run_id) == []
    assert after["control_result"]["attempts"] == 4  # 3 before, 1 now
    assert [q["hostname"] for q in after["control"]["dns"]] == [q.hostname for q in fresh.dns]


def test_newer_schema_is_refused_and_untouched(tmp_path):
    path = tmp_path / "new.db"
    db = store.open_db(path)
    db["schema_version"].insert({"version": store.SCHEMA_VERSION + 1, "description": "future", "applied_at": utcnow()})
    db.conn.close()
    before = path.read_bytes()
    with pytest.raises(store.StoreError, match="newer than this probe"):
        store.open_db(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("content", [b"this is not a database at all" * 100, b"\x00" * 4096])
def test_corrupt_file_is_refused_and_untouched(tmp_path, content):
    path = tmp_path / "bad.db"
    path.write_bytes(content)
    with pytest.raises(store.StoreError, match="left untouched"):
        store.open_db(path)
    assert path.read_bytes() == content


def test_truncated_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "trunc.db"
    db = store.open_db(path)
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.conn.close()
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\xff" * 200)  # header intact, pages garbage
    with pytest.raises(store.StoreError):
        store.open_db(path)


def test_foreign_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("create table photos (id integer)")
    conn.commit()
    conn.close()
    with pytest.raises(store.StoreError, match="not a probe database"):
        store.open_db(path)


def test_save_and_read_back_every_observation(tmp_path):
    db = store.open_db(tmp_path / "p.db")
    run_id = _run(db, ["https://site.test/", "https://other.test/"])
    m = _measurement()
    store.save_measurement(db, run_id, m)
    assert store.count_targets(db, run_id) == {"pending": 1, "done": 1, "not_measured": 0}
    back = store.read_measurement(db, store.find_measurement_id(db, "https://site.test/"))
    assert back["local"]["dns"][0]["answers"][0]["value"] == "192.0.2.1"
    assert back["local"]["dns"][0]["extra_replies"][0]["answers"][0]["value"] == "10.0.0.1"
    assert back["local"]["tls"][0]["failure_stage"] == "after_client_hello"
    fallback = [h for h in back["local"]["http"] if h["kind"] == "http_fallback"][0]
    assert fallback["location"] == "http://82.209.230.23/"
    assert store.body_head(fallback["body_head"]) == b"<title>x</title>"
    assert back["control"]["http"][0]["title"] == "Site"
    assert back["control_result"]["raw"] == '{"version": 1}'
    # a host name and a URL without its slash find the same measurement
    assert store.find_measurement_id(db, "site.test") == m.measurement_id
    assert store.find_measurement_id(db, "https://site.test") == m.measurement_id


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    db = store.open_db(tmp_path / "p.db")
    run_id = _run(db, ["https://site.test/"])
    m = _measurement()
    m.tcp = [TcpConnect("192.0.2.1", 443, utcnow(), 1.0, True)]
    m.http[0].headers = [["a"]]
    m.tls[0].peer_certificates = [object()]  # not serialisable: the write fails midway
    with pytest.raises(AttributeError):
        store.save_measurement(db, run_id, m)
    assert db["measurements"].count == 0
    assert db["dns_queries"].count == 0
    assert store.count_targets(db, run_id)["pending"] == 1


def test_pending_and_not_measured_are_left_for_resume(tmp_path):
    db = store.open_db(tmp_path / "p.db")
    urls = [f"https://s{i}.test/" for i in range(5)]
    run_id = _run(db, urls)
    store.save_measurement(db, run_id, _measurement(urls[0]))
    store.mark_not_measured(db, run_id, [urls[1]])
    assert [t.url for t in store.pending_targets(db, run_id)] == urls[1:]
    assert store.latest_unfinished_run(db)["run_id"] == run_id
    store.set_run_status(db, run_id, "finished")
    assert store.latest_unfinished_run(db) is None


def test_load_measurement_rebuilds_the_records(tmp_path):
    from probe.core.records import to_jsonable

    db = store.open_db(tmp_path / "p.db")
    run_id = _run(db, ["https://site.test/"])
    m = _measurement()
    store.save_measurement(db, run_id, m)
    back = store.load_measurement(db, m.measurement_id)
    a, b = to_jsonable(m), to_jsonable(back)
    # the control's ids are derived on save; everything observed is identical
    for side in (a, b):
        side["control"]["raw"] = None
        for q in side["control"]["dns"]:
            q["query_id"] = None
        for h in side["control"]["http"]:
            h["request_id"] = None
    assert a == b
    assert back.http[1].body_head == b"<title>x</title>"


def test_verdicts_table_arrives_with_migration_3(tmp_path):
    db = store.open_db(tmp_path / "p.db")
    assert "verdicts" in db.table_names()
    assert db["verdicts"].pks == ["measurement_id", "classifier_version"]


def test_one_version_order_for_every_reader() -> None:
    """Releases compare as numbers, a pre-release before its release, and no version
    string makes the order raise (two orders once disagreed on "1.1.0-rc1")."""
    versions = ["1.10.0", "1.1.0", "1.9.0", "1.1.0-rc1", "1.1.0-rc2", "2.0", "", "x.y"]
    ordered = sorted(versions, key=store.version_key)
    assert ordered.index("1.1.0-rc1") < ordered.index("1.1.0-rc2") < ordered.index("1.1.0")
    assert ordered.index("1.1.0") < ordered.index("1.9.0") < ordered.index("1.10.0") < ordered.index("2.0")
    assert max(["1.1.0", "1.1.0-rc1"], key=store.version_key) == "1.1.0"
