"""Stored rows back into Measurement records, many measurements at a time.

Classifying a million measurements is mostly reading them: one query per table per
batch (not thirteen per measurement) keeps SQLite's per-statement cost off the hot
path. The records are exactly what the rows say, in the order the probe wrote them,
whatever wrote the rows (a run, an import, an upload)."""

from __future__ import annotations

import gzip
import json
import sqlite3
import zlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import sqlite_utils

from probe.core.records import (
    Certificate,
    ControlResult,
    DnsAnswer,
    DnsQuery,
    DnsReply,
    HttpRequest,
    Measurement,
    TcpConnect,
    TlsHandshake,
)

# the ids of one batch, as one JSON parameter: any number of them in a single statement
_IDS = "measurement_id in (select value from json_each(?))"

Side = tuple[list[DnsQuery], list[TcpConnect], list[TlsHandshake], list[HttpRequest]]


def load_measurements(db: sqlite_utils.Database, ids: Sequence[str]) -> list[Measurement]:
    """The measurements of ``ids`` that exist, in the order of ``ids``, each with its
    local observations and its control's, bodies decompressed."""
    if not ids:
        return []
    conn = db.conn
    key = json.dumps(list(ids))
    rows = {r["measurement_id"]: r for r in _rows(conn, f"select * from measurements where {_IDS}", key)}
    sides: dict[tuple[str, str], Side] = defaultdict(lambda: ([], [], [], []))
    for (mid, side), queries in _dns(conn, key).items():
        sides[mid, side][0].extend(queries)
    for r in _rows(conn, f"select * from tcp_connects where {_IDS} order by id", key):
        sides[r["measurement_id"], r["side"]][1].append(tcp_connect(r))
    for r in _rows(conn, f"select * from tls_handshakes where {_IDS} order by id", key):
        sides[r["measurement_id"], r["side"]][2].append(_tls(r))
    sql = f"select * from http_requests where {_IDS} order by measurement_id, side, kind, hop, started_at, rowid"
    for r in _rows(conn, sql, key):
        sides[r["measurement_id"], r["side"]][3].append(_http(r))
    controls = {r["measurement_id"]: r for r in _rows(conn, f"select * from control_results where {_IDS}", key)}

    out = []
    for mid in ids:
        row = rows.get(mid)
        if row is None:
            continue
        m = _measurement(row)
        m.dns, m.tcp, m.tls, m.http = _sorted(sides.get((mid, "local")))
        cr = controls.get(mid)
        if cr is not None:
            c = control_result(cr, json.loads(cr["raw"]) if cr["raw"] else None)
            c.dns, c.tcp, c.tls, c.http = _sorted(sides.get((mid, "control")))
            m.control = c
        out.append(m)
    return out


def _rows(conn: sqlite3.Connection, sql: str, key: str) -> list[sqlite3.Row]:
    """Rows addressable by column name, built in C (no dict per row)."""
    cursor = conn.cursor()
    cursor.row_factory = sqlite3.Row
    return cursor.execute(sql, [key]).fetchall()


def _json(text: str | None, empty: Any) -> Any:
    return json.loads(text) if text and text != "[]" else empty


def _gunzip(blob: bytes) -> bytes:
    """A stored body (one gzip member, as the store writes it) decompressed in C."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = d.decompress(blob)
    return out if d.eof and not d.unused_data else gzip.decompress(blob)


def _sorted(side: Side | None) -> Side:
    if side is None:
        return [], [], [], []
    dns, tcp, tls, http = side
    return dns, tcp, tls, main_hops_first(http)


def _dns(conn: Any, key: str) -> dict[tuple[str, str], list[DnsQuery]]:
    answers: dict[str, list[DnsAnswer]] = defaultdict(list)
    sql = f"select query_id, answer_type, value, ttl from dns_answers where {_IDS} order by query_id, position"
    for qid, atype, value, ttl in conn.execute(sql, [key]).fetchall():
        answers[qid].append(DnsAnswer(atype, value, ttl))
    out: dict[tuple[str, str], list[DnsQuery]] = defaultdict(list)
    for q in _rows(conn, f"select * from dns_queries where {_IDS} order by rowid", key):
        out[q["measurement_id"], q["side"]].append(
            dns_query(q, answers.get(q["query_id"], []), _json(q["extra_replies"], [])))
    return out


def _tls(t: sqlite3.Row) -> TlsHandshake:
    return tls_handshake(t, _json(t["peer_certificates"], []))


def _http(h: sqlite3.Row) -> HttpRequest:
    return http_request(h, _json(h["headers"], []), _gunzip(h["body_head"]) if h["body_head"] else None)


def _measurement(raw: sqlite3.Row) -> Measurement:
    return measurement_record(raw, raw["hostname"], _json(raw["addresses"], []))


# --- one row of a table to its record: shared with readers of exported rows (the
# pipeline), which decode the JSON and binary columns their own way and pass them in ---


def dns_query(q: Any, answers: list[DnsAnswer], extra_replies: list[dict[str, Any]]) -> DnsQuery:
    """A ``dns_queries`` row (mapping by column), with its answers and racing replies."""
    return DnsQuery(
        q["engine"], q["resolver"], q["hostname"], q["query_type"], q["started_at"], q["duration_ms"] or 0.0,
        q["failure"], q["rcode"], q["responder"], answers,
        [DnsReply(r["responder"], r["delay_ms"], r.get("rcode"),
                  [DnsAnswer(a["answer_type"], a["value"], a.get("ttl")) for a in r.get("answers") or []])
         for r in extra_replies],
        query_id=q["query_id"])


def tcp_connect(c: Any) -> TcpConnect:
    return TcpConnect(c["ip"], c["port"], c["started_at"], c["duration_ms"] or 0.0, bool(c["success"]), c["failure"])


def tls_handshake(t: Any, certificates: list[dict[str, Any]]) -> TlsHandshake:
    return TlsHandshake(
        t["ip"], t["port"], t["server_name"], t["started_at"], t["duration_ms"] or 0.0, bool(t["success"]),
        t["failure"], t["sni_role"], t["failure_stage"], t["bytes_sent"] or 0, t["bytes_received"] or 0,
        t["tls_version"], t["cipher"], t["alpn"], None if t["cert_valid"] is None else bool(t["cert_valid"]),
        t["cert_failure"], [Certificate(**c) for c in certificates], cert_checked_at=t["cert_checked_at"],
    )


def http_request(h: Any, headers: list[list[str]], body_head: bytes | None) -> HttpRequest:
    return HttpRequest(
        url=h["url"], kind=h["kind"], hop=h["hop"], started_at=h["started_at"], duration_ms=h["duration_ms"] or 0.0,
        method=h["method"] or "GET", address=h["address"], failure=h["failure"], status=h["status"],
        reason=h["reason"], http_version=h["http_version"], headers=headers, location=h["location"],
        body_length=h["body_length"], body_truncated=bool(h["body_truncated"]), body_sha256=h["body_sha256"],
        title=h["title"], body_head=body_head, request_id=h["request_id"], attempted=_sent(h),
    )


def _sent(h: Any) -> bool:
    """A row's ``attempted``: null, or no such column (rows and exports from before
    schema 9), reads as sent."""
    try:
        value = h["attempted"]
    except (KeyError, IndexError):
        return True
    return value is None or bool(value)


def control_result(cr: Any, raw: dict[str, Any] | None) -> ControlResult:
    """A ``control_results`` row; its observations are added by the caller."""
    c = ControlResult(cr["control_url"], cr["started_at"], cr["duration_ms"] or 0.0, cr["failure"],
                      attempts=cr["attempts"] or 1, reason=cr["reason"])
    c.raw = raw
    return c


def measurement_record(raw: Any, hostname: str, addresses: list[str]) -> Measurement:
    """A ``measurements`` row without its observations."""
    return Measurement(
        url=raw["url"], hostname=hostname, scheme=raw["scheme"], port=raw["port"],
        started_at=raw["started_at"], category=raw["category"], finished_at=raw["finished_at"],
        duration_ms=raw["duration_ms"], addresses=addresses, measurement_id=raw["measurement_id"],
        network_epoch=raw["network_epoch"], network_changed=bool(raw["network_changed"]))


def main_hops_first(http: list[HttpRequest]) -> list[HttpRequest]:
    """Requests in the order the classifier reads them: the main hops in order (as the
    probe fetched them), then fallbacks."""
    http.sort(key=lambda h: (h.kind != "main", h.hop, h.started_at))
    return http
