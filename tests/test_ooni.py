"""OONI import and export (probe/ooni.py, probe/cli_ooni.py) against OONI's own data.

tests/data/ooni holds 64 unmodified OONI web_connectivity measurements (14 real ones
from 0.0.1 to 0.5.28, one of them test_keys only with // comments, and 50 labelled
netem simulations; see SOURCE.md). Every one must import; the labels in INDEX.csv say
what OONI saw, so they check our mapping; and a measurement must survive
OONI -> ours -> OONI -> ours, and ours -> OONI -> ours, unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import ssl
from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner

from probe import store
from probe.cli.ooni import export_ooni_cmd, import_ooni_cmd
from probe.core import failures as F
from probe.core.certs import describe_certificate
from probe.core.records import (
    ControlResult,
    DnsAnswer,
    DnsQuery,
    DnsReply,
    HttpRequest,
    Measurement,
    TcpConnect,
    TlsHandshake,
    to_jsonable,
)
from probe.ooni import database as ooni_db
from probe.ooni import decode as ooni_decode
from probe.ooni import encode as ooni_encode
from probe.ooni import files as ooni_files
from probe.ooni import names as ooni_names

DATA = Path(__file__).resolve().parent / "data" / "ooni"
FILES = sorted(p for folder in ("real", "synthetic-qa") for p in (DATA / folder).iterdir() if ".json" in p.name)
INDEX = {row["file"]: row for row in csv.DictReader((DATA / "INDEX.csv").open(encoding="utf-8"))}
ID_FILE = DATA / "real" / "backend-fastpath__20250527233111.802678_ID_webconnectivity_5a37ec909dbf14e3.json"
JSONC_FILE = next(p for p in FILES if p.name.endswith(".jsonc"))


def load(path: Path) -> dict:
    """What our importer reads, parsed the simple way: // lines dropped."""
    text = "\n".join(ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.lstrip().startswith("//"))
    return json.loads(text)


def convert(name: str) -> Measurement:
    m, _ = ooni_decode.ooni_to_measurement(load(DATA / name))
    return m


def observations(m: Measurement, *, control_raw: bool = True) -> dict:
    """Everything recorded, ids of rows aside (they are per database)."""

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("query_id", "request_id")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    out = strip(to_jsonable(m))
    if not control_raw and out.get("control"):
        out["control"].pop("raw")
    out["bodies"] = [h.body_head or None for h in m.http]
    return out


def rel(path: Path) -> str:
    return path.relative_to(DATA).as_posix()


@pytest.fixture
def db(tmp_path):
    return store.open_db(tmp_path / "probe.db")


def count(db, table: str) -> int:
    return db.execute(f"select count(*) from {table}").fetchone()[0]


# --- the data set itself ----------------------------------------------------------------------


def test_data_set_is_the_documented_one():
    assert len(FILES) == 64
    assert len([p for p in FILES if p.parent.name == "real"]) == 14
    assert {rel(p) for p in FILES} == set(INDEX)
    assert (DATA / "SOURCE.md").is_file()


# --- import: every file, and what the labels say -----------------------------------------------------


def test_every_file_imports_once_with_sensible_fields(db):
    for path in FILES:
        summary = ooni_db.import_ooni(db, path, source=rel(path))
        assert (summary.imported, summary.errors, summary.skipped) == (1, 0, 0), (path.name, summary.messages)
    assert count(db, "measurements") == 64
    assert count(db, "runs") == 64  # one report (or file, without one) each
    assert count(db, "dns_queries") > 64 and count(db, "http_requests") > 0

    for path in FILES:
        label = INDEX[rel(path)]
        rows = list(db.query("select m.measurement_id, r.* from measurements m join runs r using (run_id) "
                             "where r.targets_source = ?", [rel(path)]))
        assert len(rows) == 1
        run = rows[0]
        m = store.load_measurement(db, run["measurement_id"])
        assert run["status"] == "finished" and run["probe_version"].startswith("ooni:")
        assert "imported from OONI" in json.loads(run["notes"])[0]
        assert (run["cc"] or "", run["asn"] or "") == (label["probe_cc"], label["probe_asn"])
        if label["input"]:
            assert m.url == label["input"]
        for rec in [*m.dns, *m.tcp, *m.tls, *m.http]:
            assert F.is_known(rec.failure), (path.name, rec.failure)
        if label["dns_experiment_failure"]:
            system = [q for q in m.dns if q.engine == "system"]
            assert system[0].failure == ooni_names.failure_from_ooni(label["dns_experiment_failure"])
        if label["tcp_failures"]:
            assert ooni_names.failure_from_ooni(label["tcp_failures"]) in {c.failure for c in m.tcp}
        if label["tls_failures"]:
            assert ooni_names.failure_from_ooni(label["tls_failures"]) in {t.failure for t in m.tls}
        if label["control_failure"]:
            assert m.control.failure == F.CONTROL_UNAVAILABLE
            assert m.control.raw == {"error": label["control_failure"]}
        elif m.control is not None:
            assert m.control.failure is None and m.control.raw is not None
        main = [h for h in m.http if h.kind == "main"]
        assert [h.hop for h in main] == list(range(len(main)))
        assert m.addresses or not (m.tcp or any(q.addresses() for q in m.dns))


def test_dns_blocking_nxdomain():
    m = convert("synthetic-qa/dnsBlockingNXDOMAIN.json")
    system = [q for q in m.dns if q.engine == "system"]
    assert len(system) == 1 and system[0].failure == F.DNS_NXDOMAIN and system[0].answers == []
    assert system[0].query_type == "ANY"  # getaddrinfo
    udp = [q for q in m.dns if q.engine == "udp"]
    assert {q.query_type for q in udp} == {"A", "AAAA"}
    assert all(q.resolver == "1.1.1.1:53" and q.rcode == "NOERROR" and q.responder == "1.1.1.1:53" for q in udp)
    assert {q.engine for q in m.dns} == {"system", "udp", "doh"}
    control_dns = m.control.dns
    assert len(control_dns) == 1 and control_dns[0].engine == "system" and control_dns[0].failure is None
    assert [(a.answer_type, a.value) for a in control_dns[0].answers] == [("A", "93.184.216.34")]


def test_tls_reset_with_consistent_dns():
    m = convert("synthetic-qa/tlsBlockingConnectionResetWithConsistentDNS.json")
    assert [(t.ip, t.port, t.server_name, t.success, t.failure) for t in m.tls] == [
        ("93.184.216.34", 443, "www.example.com", False, F.CONNECTION_RESET)
    ]
    assert m.tls[0].cert_valid is None  # a reset says nothing about the certificate
    assert [(t.success, t.failure, t.cert_valid) for t in m.control.tls] == [(True, None, True)]
    # OONI v0.5 keeps no request for a fetch that failed before any response: the
    # failure (http_experiment_failure) becomes our hop 0, as the browser saw it
    assert [(h.url, h.hop, h.status, h.failure) for h in m.http] == [
        ("https://www.example.com/", 0, None, F.CONNECTION_RESET)
    ]
    assert m.control.http[0].status == 200 and m.control.http[0].title == "Default Web Page"


def test_indonesian_blockpage_redirect_is_two_hops():
    m, meta = ooni_decode.ooni_to_measurement(load(ID_FILE))
    assert [h.hop for h in m.http] == [0, 1]
    first, second = m.http
    assert (first.url, first.status) == ("http://archive.org", 302)
    assert first.location == "http://lamanlabuh.aduankonten.id/"
    assert (second.url, second.status, second.kind) == ("http://lamanlabuh.aduankonten.id/", 200, "main")
    assert second.title == "Trustpositif"
    assert second.body_length == len(second.body_head) == 7044
    assert second.body_sha256 == hashlib.sha256(second.body_head).hexdigest()
    assert ["Server", "nginx/1.24.0 (Ubuntu)"] in second.headers
    assert meta["cc"] == "ID" and meta["asn"] == "AS23693" and meta["software"] == "ooniprobe-android/5.0.6"
    assert meta["report_id"] == "20250527T233104Z_webconnectivity_ID_23693_n1_Ukv1uRt9GZcoX2jT"
    assert m.started_at == "2025-05-27T23:31:08.000000Z"
    assert m.dns[0].started_at == "2025-05-27T23:31:08.317122Z"  # measurement start + t
    assert m.control.duration_ms == pytest.approx(823.48, abs=0.01)  # x_th_runtime, ns
    assert m.addresses == ["207.241.224.2"]


def test_test_keys_only_jsonc_parses():
    m, meta = ooni_decode.ooni_to_measurement(load(JSONC_FILE))
    assert meta["test_keys_only"] and meta["cc"] is None and meta["asn"] is None and meta["measured_at"] is None
    assert m.url == "https://mask.icloud.com/"  # what was asked of the test helper
    assert m.started_at == "1970-01-01T00:00:00.000000Z"
    assert {t.failure for t in m.tls} == {F.EOF}
    assert F.NETWORK_UNREACHABLE in {c.failure for c in m.tcp}


def test_importer_strips_comment_lines_itself(db):
    summary = ooni_db.import_ooni(db, JSONC_FILE, source="pk.jsonc")
    assert (summary.imported, summary.errors) == (1, 0)
    run = store.get_run(db, summary.run_ids[0])
    assert run["cc"] is None and "test_keys only" in run["notes"]


@pytest.mark.parametrize(
    "theirs, ours",
    [
        ("dns_nxdomain_error", F.DNS_NXDOMAIN),
        ("dns_name_error", F.DNS_NXDOMAIN),  # the test helper's name
        ("android_dns_cache_no_data", F.DNS_NO_ANSWER),
        ("dns_no_answer", F.DNS_NO_ANSWER),
        ("connection_refused_error", F.CONNECTION_REFUSED),
        ("ssl_failed_handshake", F.SSL_HANDSHAKE_FAILURE),
        ("eof_error", F.EOF),
        ("unknown_failure: body_too_large", F.BODY_TOO_LARGE),
        ("unknown_failure: stopped after too many redirects", F.HTTP_TOO_MANY_REDIRECTS),
        ("connect_error", "unknown_failure: connect_error"),  # the TH's "anything else"
        ("http_request_failed", "unknown_failure: http_request_failed"),  # two of ours share it
        ("dns_server_failure", "unknown_failure: dns_server_failure"),
        ("unknown_failure 'ascii' codec", "unknown_failure: 'ascii' codec"),
        (None, None),
    ],
)
def test_failure_strings_map_back_only_when_exact(theirs, ours):
    assert ooni_names.failure_from_ooni(theirs) == ours
    assert F.is_known(ours)


def test_every_failure_of_ours_exports_to_ooni_and_back():
    for failure in F.FAILURES:
        theirs = ooni_names.failure_to_ooni(failure)
        assert theirs == F.OONI_NAMES.get(failure, failure)
        back = ooni_names.failure_from_ooni(theirs)
        if failure in (F.NO_ADDRESSES, F.HTTP_PROTOCOL_ERROR):
            assert back != failure  # shared or catch-all OONI names: carried in tags instead
        elif failure != F.UNKNOWN_FAILURE:
            assert back == failure


# --- import: idempotence and bad input ----------------------------------------------------------------


def test_importing_again_adds_nothing(db):
    first = [ooni_db.import_ooni(db, p, source=rel(p)) for p in FILES[:10]]
    tables = ["runs", "run_targets", "measurements", "dns_queries", "dns_answers", "tcp_connects",
              "tls_handshakes", "http_requests", "control_results"]
    before = {t: count(db, t) for t in tables}
    again = [ooni_db.import_ooni(db, p, source=rel(p)) for p in FILES[:10]]
    assert {t: count(db, t) for t in tables} == before
    assert all(s.imported == 1 for s in first)
    assert all((s.imported, s.duplicates, s.errors) == (0, 1, 0) for s in again)
    assert [s.run_ids for s in again] == [s.run_ids for s in first]
    assert "imported 0 measurements from" in again[0].line() and "(1 skipped, 0 errors)" in again[0].line()


def _compact(path: Path) -> str:
    return json.dumps(load(path))


def test_jsonl_with_bad_lines_counts_them(db, tmp_path):
    good = [_compact(DATA / "synthetic-qa/successWithHTTP.json"), _compact(ID_FILE)]
    other_test = json.dumps({"test_name": "dnscheck", "input": "dot://1.1.1.1", "test_keys": {}})
    no_input = json.dumps({"test_name": "web_connectivity", "test_keys": {"queries": []}})
    lines = [good[0], "{not json", "", other_test, no_input, good[1], '{"test_keys": 5}']
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = ooni_db.import_ooni(db, path, source="mixed.jsonl")
    assert (summary.imported, summary.skipped, summary.errors) == (2, 1, 3)
    text = "\n".join(summary.messages)
    assert "line 2: not valid JSON" in text
    assert "line 4: skipped: not web_connectivity but 'dnscheck'" in text
    assert "line 5: no input URL" in text
    assert "line 7: test_keys is not an object" in text
    assert count(db, "measurements") == 2
    # the synthetic measurement has no report_id: its run is the file's; the ID one has its own
    assert len(summary.run_ids) == 2
    again = ooni_db.import_ooni(db, path, source="mixed.jsonl")
    assert (again.imported, again.duplicates, again.errors) == (0, 2, 3)


def test_lines_and_gzip_are_accepted(db, tmp_path):
    import gzip

    line = _compact(DATA / "synthetic-qa/httpDiffWithConsistentDNS.json")
    assert ooni_db.import_ooni(db, [line + "\n"], source="memory").imported == 1
    path = tmp_path / "one.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(_compact(ID_FILE) + "\n")
    assert ooni_db.import_ooni(db, path, source="one.jsonl.gz").imported == 1
    listed = tmp_path / "two.json"  # a pretty-printed list of measurements
    listed.write_text(json.dumps([load(DATA / "synthetic-qa/successWithHTTPS.json"), load(JSONC_FILE)], indent=2))
    summary = ooni_db.import_ooni(db, listed, source="two.json")
    assert (summary.imported, summary.errors) == (2, 0)


def test_a_broken_document_is_one_error_not_a_crash(db, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "test_name": "web_connectivity",\n  "input": \n}\n', encoding="utf-8")
    summary = ooni_db.import_ooni(db, path, source="broken.json")
    assert (summary.imported, summary.errors) == (0, 1)
    assert summary.messages[0].startswith("line 4: not valid JSON")
    with pytest.raises(ooni_files.OoniImportError, match="no such file"):
        ooni_db.import_ooni(db, tmp_path / "absent.json", source="absent.json")


def test_malformed_values_inside_a_measurement_are_an_error(db):
    doc = load(DATA / "synthetic-qa/successWithHTTP.json")
    doc["test_keys"]["tcp_connect"][0]["port"] = "eighty"
    summary = ooni_db.import_ooni(db, [json.dumps(doc)], source="bad-port")
    assert (summary.imported, summary.errors) == (0, 1)
    assert "malformed measurement" in summary.messages[0]


# --- export and round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name[:60])
def test_ooni_to_ours_to_ooni_to_ours_is_identical(path):
    m1, meta = ooni_decode.ooni_to_measurement(load(path), fallback_key=path.name)
    run = {"run_id": "8c1f3a52-0000-4000-8000-000000000001", "cc": meta["cc"], "asn": meta["asn"],
           "started_at": m1.started_at}
    doc = json.loads(json.dumps(ooni_encode.measurement_to_ooni(m1, run)))  # through real JSON
    m2, meta2 = ooni_decode.ooni_to_measurement(doc)
    assert observations(m2) == observations(m1)
    assert m2.measurement_id == m1.measurement_id and meta2["run_id"] == run["run_id"]
    tk = doc["test_keys"]
    for key in ("blocking", "accessible", "dns_consistency", "body_length_match", "status_code_match",
                "headers_match", "title_match", "body_proportion"):
        assert tk[key] is None
    assert (doc["test_name"], doc["test_version"], doc["data_format_version"]) == ("web_connectivity", "0.4.3", "0.2.0")
    if m1.control is not None and m1.control.failure is None:
        assert tk["control"] == m1.control.raw  # OONI's THResponse goes back as it came


def test_a_fetch_never_sent_goes_to_ooni_and_back_as_such():
    """A blackholed address's fetch is recorded, not sent (measure.url.timed_out_fetch).
    OONI's format has no word for that: the request goes out as the timeout OONI would
    have seen, tagged, and comes back not sent."""
    m1, _ = ooni_decode.ooni_to_measurement(load(ID_FILE))
    m1.http = [HttpRequest(m1.url, "main", 0, m1.started_at, 5000.0, failure=F.GENERIC_TIMEOUT, attempted=False)]
    doc = json.loads(json.dumps(ooni_encode.measurement_to_ooni(m1, {"cc": "ID", "asn": "AS23693"})))
    (entry,) = doc["test_keys"]["requests"]
    assert entry["failure"] == "generic_timeout_error"
    m2, _ = ooni_decode.ooni_to_measurement(doc)
    assert m2.http[0].attempted is False and observations(m2)["http"] == observations(m1)["http"]


def test_export_lists_requests_last_hop_first():
    m, _ = ooni_decode.ooni_to_measurement(load(ID_FILE))
    doc = ooni_encode.measurement_to_ooni(m, {"cc": "ID", "asn": "AS23693"})
    urls = [r["request"]["url"] for r in doc["test_keys"]["requests"]]
    assert urls == ["http://lamanlabuh.aduankonten.id/", "http://archive.org"]
    assert doc["probe_cc"] == "ID" and doc["probe_ip"] == "127.0.0.1"
    assert doc["measurement_start_time"] == "2025-05-27 23:31:08"


def _certificate_der() -> bytes:
    ca = trustme.CA()
    leaf = ca.issue_cert("site.test")
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


def full_measurement() -> Measurement:
    """Every record type the probe writes, with the fields OONI has no place for set."""
    t = "2026-03-01T10:00:00.250000Z"
    later = "2026-03-01T10:00:01.500125Z"
    cert = describe_certificate(_certificate_der())
    url = "https://site.test/"
    m = Measurement(url=url, hostname="site.test", scheme="https", port=443, started_at=t, category="NEWS",
                    finished_at="2026-03-01T10:00:09.000001Z", duration_ms=8750.001,
                    measurement_id="11111111-2222-4333-8444-555555555555")
    m.dns = [
        DnsQuery("system", None, "site.test", "ANY", t, 12.5, answers=[DnsAnswer("A", "192.0.2.1"),
                                                                      DnsAnswer("AAAA", "2001:db8::1")]),
        DnsQuery("udp", "127.0.0.53:53", "site.test", "A", t, 3.25, None, "NOERROR", "10.9.8.7:53",
                 [DnsAnswer("CNAME", "edge.site.test", 30), DnsAnswer("A", "192.0.2.1", 60)],
                 [DnsReply("127.0.0.53:53", 41.5, "NOERROR", [DnsAnswer("A", "10.10.34.36", 0)]),
                  DnsReply("127.0.0.53:53", 55.0, "NXDOMAIN")]),
        DnsQuery("udp", "127.0.0.53:53", "site.test", "AAAA", t, 2.0, F.DNS_SERVFAIL, "SERVFAIL", "127.0.0.53:53"),
        DnsQuery("doh", "https://doh.test/dns-query", "site.test", "A", t, 80.0, F.unknown("doh http status 503")),
        DnsQuery("sink", "198.51.100.9:53", "site.test", "A", t, 2000.0, F.GENERIC_TIMEOUT),
    ]
    m.tcp = [
        TcpConnect("192.0.2.1", 443, later, 20.125, True),
        TcpConnect("192.0.2.1", 80, later, 5000.0, False, F.GENERIC_TIMEOUT),
        TcpConnect("2001:db8::1", 443, later, 0.5, False, F.NETWORK_UNREACHABLE),
    ]
    m.tls = [
        TlsHandshake("192.0.2.1", 443, "site.test", later, 31.0, False, F.CONNECTION_RESET,
                     failure_stage="after_client_hello", bytes_sent=517),
        TlsHandshake("192.0.2.1", 443, "example.com", later, 40.0, True, sni_role="control", bytes_sent=517,
                     bytes_received=4096, tls_version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", alpn="h2",
                     cert_valid=True, peer_certificates=[cert]),
        TlsHandshake("2001:db8::1", 8443, "site.test", later, 9.0, False, F.SSL_UNKNOWN_AUTHORITY,
                     failure_stage="after_server_hello", bytes_sent=300, bytes_received=2000,
                     tls_version="TLSv1.2", cipher="ECDHE-RSA-AES128-GCM-SHA256", cert_valid=False,
                     cert_failure=F.SSL_UNKNOWN_AUTHORITY, peer_certificates=[cert]),
    ]
    page = b"<html><head><title>Blocked \xd0\xb7</title></head>" + b"x" * 70_000
    m.http = [
        HttpRequest(url, "main", 0, later, 15.0, address="192.0.2.1:443", status=302, reason="Found",
                    http_version="1.1", headers=[["Location", "http://block.test/"], ["Set-Cookie", "a=1"],
                                                 ["Set-Cookie", "b=2"]],
                    location="http://block.test/", body_length=0, body_sha256=hashlib.sha256(b"").hexdigest()),
        HttpRequest("http://block.test/", "main", 1, later, 25.0, address="10.0.0.1:80", status=200, reason="OK",
                    http_version="1.1", headers=[["Content-Type", "text/html; charset=utf-8"]],
                    body_length=2_500_000, body_truncated=True, body_sha256="ab" * 32, title="Blocked з",
                    body_head=page[: 64 * 1024], failure=F.BODY_TOO_LARGE),
        HttpRequest("http://192.0.2.1/", "http_fallback", 0, later, 7.0, address="192.0.2.1:80",
                    status=200, headers=[["Content-Type", "application/octet-stream"]], body_length=4,
                    body_sha256=hashlib.sha256(b"\xff\xfe\x00\x01").hexdigest(), body_head=b"\xff\xfe\x00\x01"),
        HttpRequest("http://[2001:db8::1]/", "http_fallback", 0, later, 1.0, failure=F.NO_ADDRESSES),
        HttpRequest(url, "main", 2, later, 3.0, failure=F.HTTP_PROTOCOL_ERROR, method="GET"),
    ]
    m.http.sort(key=lambda h: (h.kind != "main", h.hop))  # as load_measurement orders them
    ct = "2026-03-01T10:00:00.300000Z"
    c = ControlResult("https://control.test", ct, 4200.5, raw={"dns": [], "tcp": [], "tls": [], "http": []})
    # What a THResponse can say: one DNS answer set, one result per endpoint, the final
    # HTTP response; no timings (records start when the control did and take 0 ms).
    c.dns = [DnsQuery("system", None, "site.test", "ANY", ct, 0.0, answers=[DnsAnswer("A", "192.0.2.1")])]
    c.tcp = [TcpConnect("192.0.2.1", 443, ct, 0.0, True), TcpConnect("2001:db8::1", 443, ct, 0.0, False,
                                                                          F.CONNECTION_REFUSED)]
    c.tls = [TlsHandshake("192.0.2.1", 443, "site.test", ct, 0.0, True, cert_valid=True)]
    c.http = [HttpRequest(url, "main", 0, ct, 0.0, status=200, headers=[["Content-Type", "text/html"]],
                          body_length=1234, title="Site")]
    m.control = c
    m.addresses = ["192.0.2.1", "2001:db8::1"]
    return m


def test_ours_to_ooni_to_ours_keeps_every_observation():
    m = full_measurement()
    run = {"run_id": "5d0c0ffe-0000-4000-8000-000000000002", "cc": "BY", "asn": "AS6697",
           "network_name": "Beltelecom", "resolvers": json.dumps(["127.0.0.53:53"]),
           "started_at": "2026-03-01T09:59:00.000000Z"}
    doc = json.loads(json.dumps(ooni_encode.measurement_to_ooni(m, run)))
    back, meta = ooni_decode.ooni_to_measurement(doc)
    assert observations(back, control_raw=False) == observations(m, control_raw=False)
    assert back.measurement_id == m.measurement_id and meta["run_id"] == run["run_id"]
    assert (meta["cc"], meta["asn"], meta["network_name"], meta["resolver_ip"]) == ("BY", "AS6697", "Beltelecom",
                                                                                     "127.0.0.53")
    # the control as OONI's THResponse, which is what comes back as raw
    th = doc["test_keys"]["control"]
    assert back.control.raw == th
    assert th["dns"] == {"failure": None, "addrs": ["192.0.2.1"]}
    assert th["tcp_connect"]["[2001:db8::1]:443"] == {"status": False, "failure": "connection_refused"}
    assert th["http_request"]["status_code"] == 200 and th["http_request"]["title"] == "Site"


def test_export_speaks_ooni():
    m = full_measurement()
    doc = ooni_encode.measurement_to_ooni(m, {})
    tk = doc["test_keys"]
    assert (doc["probe_cc"], doc["probe_asn"], doc["software_name"]) == ("ZZ", "AS0", "bynet-probe")
    assert doc["measurement_start_time"] == "2026-03-01 10:00:00"
    assert [q["engine"] for q in tk["queries"]] == ["system", "udp", "udp", "doh", "sink"]
    assert tk["queries"][2]["failure"] == "dns_servfail_error"
    assert tk["dns_experiment_failure"] is None
    assert len(tk["x_dns_duplicate_responses"]) == 2
    assert tk["x_dns_duplicate_responses"][1]["failure"] == "dns_nxdomain_error"
    assert tk["tcp_connect"][1]["status"] == {"failure": "generic_timeout_error", "success": False}
    assert tk["tls_handshakes"][0]["failure"] == "connection_reset"
    assert tk["tls_handshakes"][0]["address"] == "192.0.2.1:443"
    assert tk["tls_handshakes"][2]["address"] == "[2001:db8::1]:8443"
    assert base64_der(tk["tls_handshakes"][1]) == m.tls[1].peer_certificates[0].der_b64
    requests = tk["requests"]
    assert [r["request"]["url"] for r in requests[:3]] == ["https://site.test/", "http://block.test/",
                                                          "https://site.test/"]
    assert requests[0]["failure"] == "http_request_failed"  # hop 2, last hop first
    assert 'bynet:failure="http_protocol_error"' in requests[0]["tags"]
    assert requests[1]["response"]["body_is_truncated"] is True
    assert requests[1]["response"]["body"].startswith("<html><head><title>Blocked з</title>")
    assert requests[3]["response"]["body"] == {"format": "base64", "data": "//4AAQ=="}
    assert 'bynet:kind="http_fallback"' in requests[3]["tags"]
    assert tk["http_experiment_failure"] == "http_request_failed"
    assert tk["blocking"] is None and tk["accessible"] is None
    assert 'bynet:sni_role="control"' in tk["tls_handshakes"][1]["tags"]


def base64_der(handshake: dict) -> str:
    return handshake["peer_certificates"][0]["data"]


def test_control_failure_round_trips():
    m = full_measurement()
    m.control = ControlResult("https://control.test", m.started_at, 50000.0, F.CONTROL_UNAVAILABLE,
                              raw={"error": "timed out"})
    doc = ooni_encode.measurement_to_ooni(m, {})
    assert doc["test_keys"]["control_failure"] == "unknown_failure: timed out"
    assert doc["test_keys"]["control"] is None
    back, _ = ooni_decode.ooni_to_measurement(json.loads(json.dumps(doc)))
    assert to_jsonable(back.control) == to_jsonable(m.control)
    m.control = None
    back, _ = ooni_decode.ooni_to_measurement(ooni_encode.measurement_to_ooni(m, {}))
    assert back.control is None


def test_database_to_jsonl_to_database(tmp_path):
    src = store.open_db(tmp_path / "src.db")
    run_id = "77777777-0000-4000-8000-000000000003"
    m = full_measurement()
    store.create_run(src, {"run_id": run_id, "started_at": m.started_at, "status": "finished", "probe_version": "0.1.0",
                           "targets_source": "targets.txt", "target_count": 1, "cc": "BY", "asn": "AS6697",
                           "resolvers": "[]", "config": "{}", "notes": "[]"}, [store.RunTarget(m.url, "NEWS")])
    store.save_measurement(src, run_id, m)
    out = io.StringIO()
    assert ooni_db.export_ooni(src, out, run_id=run_id[:8]) == 1
    dst = store.open_db(tmp_path / "dst.db")
    summary = ooni_db.import_ooni(dst, out.getvalue().splitlines(keepends=True), source="export.jsonl")
    assert (summary.imported, summary.errors, summary.run_ids) == (1, 0, [run_id])
    before, after = store.load_measurement(src, m.measurement_id), store.load_measurement(dst, m.measurement_id)
    assert observations(after, control_raw=False) == observations(before, control_raw=False)
    assert store.get_run(dst, run_id)["cc"] == "BY"
    with pytest.raises(ooni_db.OoniExportError):
        ooni_db.export_ooni(src, io.StringIO(), run_id="nope")


# --- the commands ----------------------------------------------------------------------------------------


def test_import_command(tmp_path):
    runner = CliRunner()
    db_path = tmp_path / "p.db"
    files = [str(DATA / "synthetic-qa/dnsBlockingNXDOMAIN.json"), str(ID_FILE)]
    result = runner.invoke(import_ooni_cmd, [*files, "--db", str(db_path)])
    assert result.exit_code == 0, result.output
    assert f"imported 1 measurements from {files[0]} (0 skipped, 0 errors)" in result.stdout
    assert f"imported 1 measurements from {files[1]} (0 skipped, 0 errors)" in result.stdout
    again = runner.invoke(import_ooni_cmd, [files[0], "--db", str(db_path)])
    assert again.exit_code == 0
    assert f"imported 0 measurements from {files[0]} (1 skipped, 0 errors)" in again.stdout


def test_import_command_refuses_missing_and_useless_files(tmp_path):
    runner = CliRunner()
    db_path = tmp_path / "p.db"
    missing = runner.invoke(import_ooni_cmd, [str(tmp_path / "nope.jsonl"), "--db", str(db_path)])
    assert missing.exit_code == 2
    assert missing.stderr.strip() == f"error: {tmp_path / 'nope.jsonl'}: no such file"
    assert "Traceback" not in missing.output
    junk = tmp_path / "junk.jsonl"
    junk.write_text("hello\nworld\n", encoding="utf-8")
    useless = runner.invoke(import_ooni_cmd, [str(junk), "--db", str(db_path)])
    assert useless.exit_code == 2
    assert f"imported 0 measurements from {junk} (0 skipped, 1 errors)" in useless.stdout
    assert useless.stderr.strip().splitlines()[-1] == f"error: {junk}: no usable web_connectivity measurement"
    not_a_db = tmp_path / "text.db"
    not_a_db.write_text("not sqlite", encoding="utf-8")
    bad_db = runner.invoke(import_ooni_cmd, [str(ID_FILE), "--db", str(not_a_db)])
    assert bad_db.exit_code == 2 and len(bad_db.stderr.strip().splitlines()) == 1


def test_export_command(tmp_path):
    runner = CliRunner()
    db_path = tmp_path / "p.db"
    assert runner.invoke(import_ooni_cmd, [str(ID_FILE), str(JSONC_FILE), "--db", str(db_path)]).exit_code == 0
    everything = runner.invoke(export_ooni_cmd, ["--db", str(db_path)])
    assert everything.exit_code == 0, everything.output
    docs = [json.loads(line) for line in everything.stdout.splitlines()]
    assert len(docs) == 2 and all(d["test_name"] == "web_connectivity" for d in docs)
    assert "exported 2 measurements to standard output" in everything.stderr

    run_id = ooni_db.import_ooni(store.open_db(db_path), ID_FILE, source="again").run_ids[0]
    out = tmp_path / "one.jsonl"
    one = runner.invoke(export_ooni_cmd, ["--db", str(db_path), "--run", run_id[:8], "-o", str(out)])
    assert one.exit_code == 0, one.output
    assert [json.loads(line)["input"] for line in out.read_text(encoding="utf-8").splitlines()] == ["http://archive.org"]

    unknown = runner.invoke(export_ooni_cmd, ["--db", str(db_path), "--run", "zzzz", "-o", str(tmp_path / "x.jsonl")])
    assert unknown.exit_code == 2 and unknown.stderr.startswith("error: no run 'zzzz'")
    assert not (tmp_path / "x.jsonl").exists()
    no_db = runner.invoke(export_ooni_cmd, ["--db", str(tmp_path / "absent.db")])
    assert no_db.exit_code == 2 and len(no_db.stderr.strip().splitlines()) == 1



@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
async def test_null_test_keys_import_as_a_measurement_nothing_can_be_learned_from(tmp_path, suffix):
    from clirun import probe as run_cli

    doc = {"test_name": "web_connectivity", "input": "https://charter97.org/", "probe_cc": "BY",
           "probe_asn": "AS6697", "measurement_start_time": "2024-05-01 10:00:00", "report_id": "r1",
           "test_keys": None}
    path = tmp_path / f"one{suffix}"
    path.write_text(json.dumps(doc, indent=2 if suffix == ".json" else None) + "\n")
    db = tmp_path / "p.db"
    rc, out, err = await run_cli("import-ooni", str(path), "--db", str(db))
    assert rc == 0, err
    rc, out, err = await run_cli("analyze", "--db", str(db))
    assert rc == 0, err
    conn = sqlite3.connect(db)
    assert conn.execute("select m.url, v.verdict, v.blocked from verdicts v join measurements m "
                        "using (measurement_id)").fetchall() == [("https://charter97.org/", "error", 0)]


def _lab_measurement() -> dict:
    """OONI's QA style: a lab whose 'internet' is private space (10.77.2.10)."""
    ok = {"code": 200, "headers": {"Content-Type": "text/html"}, "body": "<title>Lab site</title>" + "x" * 900}
    return {
        "test_name": "web_connectivity", "test_version": "0.4.3", "input": "http://site.lab.test/",
        "probe_cc": "ZZ", "probe_asn": "AS64500", "report_id": "lab-1",
        "measurement_start_time": "2026-11-30 10:00:00",
        "test_keys": {
            "queries": [{"engine": "system", "hostname": "site.lab.test", "query_type": "ANY", "failure": None,
                         "answers": [{"answer_type": "A", "ipv4": "10.77.2.10"}]}],
            "tcp_connect": [{"ip": "10.77.2.10", "port": 80, "status": {"success": True, "failure": None}}],
            "requests": [{"request": {"url": "http://site.lab.test/", "method": "GET", "headers": {}},
                          "response": {**ok, "body": ok["body"]}, "failure": None}],
            "control_failure": None,
            "control": {"dns": {"addrs": ["10.77.2.10"], "failure": None},
                        "tcp_connect": {"10.77.2.10:80": {"status": True, "failure": None}},
                        "http_request": {"status_code": 200, "body_length": 923, "title": "Lab site",
                                         "headers": {"Content-Type": "text/html"}, "failure": None}},
        },
    }


async def test_lab_networks_on_import_and_on_analyze(tmp_path):
    from clirun import probe as run_cli

    path = tmp_path / "lab.jsonl"
    path.write_text(json.dumps(_lab_measurement()) + "\n")

    def verdict_of(db):
        conn = sqlite3.connect(db)
        try:
            return conn.execute("select verdict from verdicts").fetchone()[0]
        finally:
            conn.close()

    plain, marked = tmp_path / "plain.db", tmp_path / "marked.db"
    assert (await run_cli("import-ooni", str(path), "--db", str(plain)))[0] == 0
    assert (await run_cli("analyze", "--db", str(plain)))[0] == 0
    assert verdict_of(plain) == "down"  # 10.x for everyone: "a site misconfigured to a private address"
    # the lab's range said at analysis time ...
    assert (await run_cli("analyze", "--db", str(plain), "--lab-network", "10.77.0.0/16"))[0] == 0
    assert verdict_of(plain) == "ok"
    # ... or recorded with the run at import time
    rc, _, err = await run_cli("import-ooni", str(path), "--db", str(marked), "--lab-network", "10.77.0.0/16")
    assert rc == 0, err
    assert (await run_cli("analyze", "--db", str(marked)))[0] == 0
    assert verdict_of(marked) == "ok"
    rc, _, err = await run_cli("import-ooni", str(path), "--db", str(marked), "--lab-network", "10.77/99")
    assert rc == 2 and "invalid --lab-network" in err and err.count("\n") == 1
