"""Measurements built in code for the collector's tests: whole, valid records of a
working site and of an SNI reset, at chosen times, on chosen networks; saved into a
volunteer's database through the store, as a run would."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from probe import store
from probe.core.records import DnsAnswer, DnsQuery, HttpRequest, Measurement, TcpConnect, TlsHandshake, new_id

BODY = b"<html><head><title>News</title></head><body>" + b"news " * 400 + b"</body></html>"


def at(hours_ago: float) -> str:
    t = datetime.now(UTC) - timedelta(hours=hours_ago)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def measurement(url: str, kind: str = "ok", started_at: str | None = None) -> Measurement:
    """``ok``: DNS, TCP, TLS and the page all fine; ``reset``: the TLS handshake reset
    right after our ClientHello (SNI filtering, or an outage: without a control, can't
    tell); ``refused``: every connection refused."""
    t = started_at or at(0)
    host = url.split("/")[2]
    ip = "93.184.216.34"
    m = Measurement(url=url, hostname=host, scheme="https", port=443, started_at=t, category="NEWS", network_epoch=1)
    m.dns = [DnsQuery("system", None, host, "ANY", t, 12.0, answers=[DnsAnswer("A", ip, 300)])]
    m.addresses = [ip]
    if kind == "refused":
        m.tcp = [TcpConnect(ip, p, t, 3.0, False, "connection_refused") for p in (443, 80)]
        m.http = [HttpRequest(url, "main", 0, t, 3.0, failure="connection_refused")]
    else:
        m.tcp = [TcpConnect(ip, p, t, 20.0, True) for p in (443, 80)]
    if kind == "ok":
        m.tls = [TlsHandshake(ip, 443, host, t, 40.0, True, tls_version="TLSv1.3", cert_valid=True,
                              bytes_sent=517, bytes_received=3000)]
        m.http = [HttpRequest(url, "main", 0, t, 120.0, address=f"{ip}:443", status=200, reason="OK",
                              http_version="HTTP/1.1", headers=[["Content-Type", "text/html"]],
                              body_length=len(BODY), title="News", body_head=BODY)]
    elif kind == "reset":
        m.tls = [TlsHandshake(ip, 443, host, t, 25.0, False, "connection_reset", failure_stage="after_client_hello",
                              bytes_sent=517)]
        m.http = [HttpRequest(url, "main", 0, t, 25.0, failure="connection_reset")]
    m.finished_at = t
    m.duration_ms = 200.0
    return m


def new_run(db: Any, cc: str, asn: str, started_at: str | None = None) -> str:
    run = {"run_id": new_id(), "started_at": started_at or at(0), "status": "finished", "probe_version": "test",
           "targets_source": "targets.txt", "target_count": 0, "cc": cc, "asn": asn, "network_name": f"ISP {asn}",
           "config": json.dumps({"dns_timeout": 4.0}), "notes": "[]", "resolvers": '["192.0.2.53:53"]'}
    store.create_run(db, run, [])
    return str(run["run_id"])


def add(db: Any, run_id: str, ms: list[Measurement]) -> list[str]:
    store.add_run_targets(db, run_id, [m.url for m in ms])
    for m in ms:
        store.save_measurement(db, run_id, m)
    return [m.measurement_id for m in ms]


def volunteer_db(path: Any, n: int, cc: str = "BY", asn: str = "AS6697", sites: int = 50) -> list[str]:
    """A volunteer's database with ``n`` measurements of ``sites`` sites, in runs of
    ``sites`` (each run measures each site once)."""
    db = store.open_db(path)
    ids: list[str] = []
    try:
        for start in range(0, n, sites):
            run_id = new_run(db, cc, asn)
            count = min(sites, n - start)
            ids += add(db, run_id, [measurement(f"https://site{i}.example/") for i in range(count)])
    finally:
        store.close(db)
    return ids
