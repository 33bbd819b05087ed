"""Raw observations: every row of one measurement written in one transaction, the
moment it finishes; read back as plain rows (show) or as records (analysis, export)."""

from __future__ import annotations

import gzip
import json
from typing import Any

import sqlite_utils
from sqlite_utils.db import jsonify_if_needed

from probe.core.records import (
    ControlResult,
    DnsQuery,
    HttpRequest,
    Measurement,
    TcpConnect,
    TlsHandshake,
    to_jsonable,
)
from probe.store.loading import load_measurements
from probe.store.schema import writing


def _j(value: Any) -> str:
    return json.dumps(to_jsonable(value), ensure_ascii=False, separators=(",", ":"))


def _dns_rows(mid: str, side: str, queries: list[DnsQuery]) -> tuple[list[dict], list[dict]]:
    qrows: list[dict] = []
    arows: list[dict] = []
    for q in queries:
        qrows.append(
            {
                # the control's ids come from another machine: derive ours, so a buggy
                # helper repeating an id cannot make the whole measurement unsavable
                "query_id": q.query_id if side == "local" else f"{mid}:{side}:{len(qrows)}",
                "measurement_id": mid,
                "side": side,
                "engine": q.engine,
                "resolver": q.resolver,
                "hostname": q.hostname,
                "query_type": q.query_type,
                "started_at": q.started_at,
                "duration_ms": q.duration_ms,
                "failure": q.failure,
                "rcode": q.rcode,
                "responder": q.responder,
                "extra_replies": _j(q.extra_replies) if q.extra_replies else None,
            }
        )
        for i, a in enumerate(q.answers):
            arows.append(
                {
                    "query_id": qrows[-1]["query_id"],
                    "measurement_id": mid,
                    "side": side,
                    "position": i,
                    "answer_type": a.answer_type,
                    "value": a.value,
                    "ttl": a.ttl,
                }
            )
    return qrows, arows


def _tcp_rows(mid: str, side: str, connects: list[TcpConnect]) -> list[dict]:
    return [
        {
            "measurement_id": mid,
            "side": side,
            "ip": c.ip,
            "port": c.port,
            "started_at": c.started_at,
            "duration_ms": c.duration_ms,
            "success": int(c.success),
            "failure": c.failure,
        }
        for c in connects
    ]


def _tls_rows(mid: str, side: str, handshakes: list[TlsHandshake]) -> list[dict]:
    rows = []
    for h in handshakes:
        leaf = h.peer_certificates[0] if h.peer_certificates else None
        rows.append(
            {
                "measurement_id": mid,
                "side": side,
                "ip": h.ip,
                "port": h.port,
                "server_name": h.server_name,
                "sni_role": h.sni_role,
                "started_at": h.started_at,
                "duration_ms": h.duration_ms,
                "success": int(h.success),
                "failure": h.failure,
                "failure_stage": h.failure_stage,
                "bytes_sent": h.bytes_sent,
                "bytes_received": h.bytes_received,
                "tls_version": h.tls_version,
                "cipher": h.cipher,
                "alpn": h.alpn,
                "cert_valid": None if h.cert_valid is None else int(h.cert_valid),
                "cert_failure": h.cert_failure,
                "cert_checked_at": h.cert_checked_at,
                "leaf_subject": leaf.subject if leaf else None,
                "leaf_issuer": leaf.issuer if leaf else None,
                "leaf_sha256": leaf.sha256 if leaf else None,
                "peer_certificates": _j(h.peer_certificates) if h.peer_certificates else None,
            }
        )
    return rows


def _http_rows(mid: str, side: str, requests: list[HttpRequest]) -> list[dict]:
    return [
        {
            "request_id": r.request_id if side == "local" else f"{mid}:{side}:{i}",
            "measurement_id": mid,
            "side": side,
            "kind": r.kind,
            "hop": r.hop,
            "url": r.url,
            "method": r.method,
            "address": r.address,
            "started_at": r.started_at,
            "duration_ms": r.duration_ms,
            "failure": r.failure,
            "status": r.status,
            "reason": r.reason,
            "http_version": r.http_version,
            "headers": _j(r.headers),
            "location": r.location,
            "body_length": r.body_length,
            "body_truncated": int(r.body_truncated),
            "body_sha256": r.body_sha256,
            "title": r.title,
            "body_head": gzip.compress(r.body_head, mtime=0) if r.body_head else None,
            "attempted": int(r.attempted),
        }
        for i, r in enumerate(requests)
    ]


# The tables one measurement writes to, in the order they are filled: a table's rows
# only reference rows of tables before it (answers their query, all the measurement).
MEASUREMENT_TABLES = ("measurements", "dns_queries", "dns_answers", "tcp_connects", "tls_handshakes",
                      "http_requests", "control_results")

MeasurementRows = dict[str, Any]
"""Every row one measurement writes: for each table of ``MEASUREMENT_TABLES`` its
column names and value tuples (under "columns" and "values"), plus its run target
("run_id", "url"). Plain values only, so that another process can build them (the gzip
of bodies included) and hand them over, and a batch can be written with executemany."""

_PLAIN = (str, int, float, bytes, type(None))


def _plain(value: Any) -> Any:
    """A value as sqlite-utils' insert would bind it (a list as JSON text, ...)."""
    return value if type(value) in _PLAIN else jsonify_if_needed(value)


def measurement_rows(run_id: str, m: Measurement) -> MeasurementRows:
    """The rows ``save_measurement`` writes for ``m``, built without a database: an import
    builds them in worker processes and writes many in one transaction."""
    mid = m.measurement_id
    c = m.control
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in MEASUREMENT_TABLES}
    rows["measurements"].append({
        "measurement_id": mid,
        "run_id": run_id,
        "url": m.url,
        "hostname": m.hostname,
        "scheme": m.scheme,
        "port": m.port,
        "category": m.category,
        "started_at": m.started_at,
        "finished_at": m.finished_at,
        "duration_ms": m.duration_ms,
        "addresses": _j(m.addresses),
        "control_url": c.control_url if c else None,
        "control_failure": c.failure if c else None,
        "network_epoch": m.network_epoch,
        "network_changed": int(m.network_changed),
    })
    _side_rows(rows, mid, "local", m.dns, m.tcp, m.tls, m.http)
    if c is not None:
        _side_rows(rows, mid, "control", c.dns, c.tcp, c.tls, c.http)
        rows["control_results"].append(_control_row(mid, c))
    return {
        "columns": {name: tuple(r[0]) for name, r in rows.items() if r},
        "values": {name: [tuple(_plain(v) for v in row.values()) for row in r] for name, r in rows.items() if r},
        "measurement_id": mid,
        "run_id": run_id,
        "url": m.url,
    }


def _side_rows(rows: dict[str, Any], mid: str, side: str, dq: list[DnsQuery], tc: list[TcpConnect],
               th: list[TlsHandshake], hr: list[HttpRequest]) -> None:
    qrows, arows = _dns_rows(mid, side, dq)
    rows["dns_queries"] += qrows
    rows["dns_answers"] += arows
    rows["tcp_connects"] += _tcp_rows(mid, side, tc)
    rows["tls_handshakes"] += _tls_rows(mid, side, th)
    rows["http_requests"] += _http_rows(mid, side, hr)


def _control_row(mid: str, c: ControlResult) -> dict[str, Any]:
    return {
        "measurement_id": mid,
        "control_url": c.control_url,
        "started_at": c.started_at,
        "duration_ms": c.duration_ms,
        "failure": c.failure,
        "raw": json.dumps(c.raw, ensure_ascii=False) if c.raw is not None else None,
        "attempts": c.attempts,
        "reason": c.reason,
    }


def save_measurement_rows(db: sqlite_utils.Database, batch: list[MeasurementRows]) -> None:
    """Many measurements' rows (``measurement_rows``), and their targets' 'done' marks,
    in one transaction: an import of a million measurements commits a batch at a time,
    so a killed import loses at most the batch in flight. Rows go in table by table, in
    the batch's order, so every row gets the id it would get saved one at a time; plain
    INSERTs, as sqlite-utils' insert writes them, without its per-row cost."""
    if not batch:
        return
    with writing(db):
        for name in MEASUREMENT_TABLES:
            columns: tuple[str, ...] = ()
            values: list[tuple[Any, ...]] = []
            for rows in batch:
                if name not in rows["values"]:
                    continue
                if rows["columns"][name] != columns:  # never, as the rows are built; kept in order if so
                    _insert_many(db, name, columns, values)
                    columns, values = rows["columns"][name], []
                values.extend(rows["values"][name])
            _insert_many(db, name, columns, values)
        db.conn.executemany(
            "update run_targets set status = 'done', measurement_id = ? where run_id = ? and url = ?",
            [(rows["measurement_id"], rows["run_id"], rows["url"]) for rows in batch],
        )


def _insert_many(db: sqlite_utils.Database, table: str, columns: tuple[str, ...], values: list[tuple[Any, ...]]) -> None:
    if values:
        sql = f"INSERT INTO [{table}] ({', '.join(f'[{c}]' for c in columns)}) VALUES ({', '.join('?' * len(columns))})"
        db.conn.executemany(sql, values)


def save_measurements(db: sqlite_utils.Database, run_id: str, ms: list[Measurement]) -> None:
    """Several measurements of one run in one transaction (``save_measurement_rows``)."""
    save_measurement_rows(db, [measurement_rows(run_id, m) for m in ms])


def existing_measurement_ids(db: sqlite_utils.Database, ids: list[str]) -> set[str]:
    """Which of these measurement ids are stored already: one query for a whole batch."""
    found: set[str] = set()
    for start in range(0, len(ids), 500):  # well below SQLite's limit on bound variables
        part = ids[start:start + 500]
        sql = f"select measurement_id from measurements where measurement_id in ({','.join('?' * len(part))})"
        found.update(r[0] for r in db.execute(sql, part).fetchall())
    return found


def save_measurement(db: sqlite_utils.Database, run_id: str, m: Measurement) -> None:
    """Every row of one measurement, and the target's 'done' mark, in one transaction."""
    save_measurement_rows(db, [measurement_rows(run_id, m)])


def _insert_side(db: sqlite_utils.Database, mid: str, side: str, dq: list[DnsQuery], tc: list[TcpConnect],
                 th: list[TlsHandshake], hr: list[HttpRequest]) -> None:
    qrows, arows = _dns_rows(mid, side, dq)
    db.table("dns_queries").insert_all(qrows)
    db.table("dns_answers").insert_all(arows)
    db.table("tcp_connects").insert_all(_tcp_rows(mid, side, tc))
    db.table("tls_handshakes").insert_all(_tls_rows(mid, side, th))
    db.table("http_requests").insert_all(_http_rows(mid, side, hr))


def _insert_control(db: sqlite_utils.Database, mid: str, c: ControlResult) -> None:
    _insert_side(db, mid, "control", c.dns, c.tcp, c.tls, c.http)
    db.table("control_results").insert(_control_row(mid, c))


def replace_control(db: sqlite_utils.Database, measurement_id: str, c: ControlResult) -> None:
    """A control asked again at the end of a run (its first answer was lost to load or a
    broken connection): the new answer replaces the failed one, in one transaction.
    Nothing measured locally is touched; the attempts add up."""
    with writing(db):
        old = list(db.query("select attempts from control_results where measurement_id = ?", [measurement_id]))
        c.attempts += (old[0]["attempts"] or 1) if old else 0
        for table in ("dns_answers", "dns_queries", "tcp_connects", "tls_handshakes", "http_requests"):
            db.execute(f"delete from {table} where measurement_id = ? and side = 'control'", [measurement_id])
        db.execute("delete from control_results where measurement_id = ?", [measurement_id])
        _insert_control(db, measurement_id, c)
        db.execute("update measurements set control_url = ?, control_failure = ? where measurement_id = ?",
                   [c.control_url, c.failure, measurement_id])
        # its verdicts rested on the lost control: no longer current (analysis re-derives them)
        db.execute("delete from verdicts where measurement_id = ?", [measurement_id])


def lost_controls(db: sqlite_utils.Database, run_id: str) -> list[dict[str, Any]]:
    """Measurements of a run whose control answer was lost: id, url, addresses, reason."""
    return list(db.query(
        """select m.measurement_id, m.url, m.addresses, c.reason, c.control_url
           from measurements m join control_results c using (measurement_id)
           where m.run_id = ? and c.failure is not null order by m.started_at""",
        [run_id],
    ))


def body_head(blob: bytes | None) -> bytes:
    """The stored first bytes of a body, decompressed."""
    return gzip.decompress(blob) if blob else b""


def find_measurement_id(db: sqlite_utils.Database, ref: str, run_id: str | None = None,
                        network: str | None = None) -> str | None:
    """A measurement id (or unique prefix), or the latest measurement of a URL.

    A URL matches with or without a trailing slash, and a bare host name matches its
    http(s) URLs, since that is how people type them. ``network`` ("BY/AS6697", or a
    country or an ASN alone) keeps the measurements of that network: on a collector's
    database, many networks measured the same URL."""
    rows = list(db.query("select measurement_id from measurements where measurement_id like ? limit 2", [ref + "%"]))
    if len(rows) == 1:
        return rows[0]["measurement_id"]
    candidates = {ref, ref.rstrip("/"), ref.rstrip("/") + "/"}
    where = f"url in ({','.join('?' * len(candidates))}) or hostname = ?"
    params: list[Any] = [*candidates, ref.lower()]
    if run_id:
        where = f"({where}) and run_id = ?"
        params.append(run_id)
    if network:
        cc, _, asn = network.upper().partition("/") if "/" in network else (
            ("", "", network.upper()) if network.upper().startswith("AS") or network.isdigit() else (network.upper(), "", ""))
        asn = asn if not asn or asn.startswith("AS") else f"AS{asn}"
        conds = [c for c, v in (("upper(r.cc) = ?", cc), ("upper(r.asn) = ?", asn)) if v]
        where = f"({where}) and run_id in (select r.run_id from runs r where {' and '.join(conds)})"
        params += [v for v in (cc, asn) if v]
    rows = list(db.query(f"select measurement_id from measurements where {where} order by started_at desc limit 1", params))
    return rows[0]["measurement_id"] if rows else None


def read_measurement(db: sqlite_utils.Database, measurement_id: str) -> dict[str, Any] | None:
    """One measurement with all its rows, grouped by side: the raw evidence."""
    rows = list(db.query("select * from measurements where measurement_id = ?", [measurement_id]))
    if not rows:
        return None
    m = rows[0]
    m["addresses"] = json.loads(m["addresses"] or "[]")
    run = list(db.query("select * from runs where run_id = ?", [m["run_id"]]))
    m["run"] = run[0] if run else None
    for side in ("local", "control"):
        part: dict[str, Any] = {}
        queries = list(
            db.query("select * from dns_queries where measurement_id = ? and side = ? order by rowid", [measurement_id, side])
        )
        for q in queries:
            q["answers"] = list(
                db.query("select answer_type, value, ttl from dns_answers where query_id = ? order by position", [q["query_id"]])
            )
            q["extra_replies"] = json.loads(q["extra_replies"]) if q["extra_replies"] else []
        part["dns"] = queries
        part["tcp"] = list(
            db.query("select * from tcp_connects where measurement_id = ? and side = ? order by id", [measurement_id, side])
        )
        tls = list(
            db.query("select * from tls_handshakes where measurement_id = ? and side = ? order by id", [measurement_id, side])
        )
        for t in tls:
            t["peer_certificates"] = json.loads(t["peer_certificates"]) if t["peer_certificates"] else []
        part["tls"] = tls
        http = list(
            db.query(
                "select * from http_requests where measurement_id = ? and side = ? order by kind, hop, started_at",
                [measurement_id, side],
            )
        )
        for h in http:
            h["headers"] = json.loads(h["headers"] or "[]")
        part["http"] = http
        m[side] = part
    ctrl = list(db.query("select * from control_results where measurement_id = ?", [measurement_id]))
    m["control_result"] = ctrl[0] if ctrl else None
    return m


def load_measurement(db: sqlite_utils.Database, measurement_id: str) -> Measurement | None:
    """Rebuild the Measurement records (local and control) from stored rows, bodies
    decompressed: what analysis classifies, whatever wrote the rows (probe or import)."""
    found = load_measurements(db, [measurement_id])
    return found[0] if found else None


def has_measurement(db: sqlite_utils.Database, measurement_id: str) -> bool:
    return bool(list(db.query("select 1 from measurements where measurement_id = ?", [measurement_id])))


def measurement_row(db: sqlite_utils.Database, measurement_id: str) -> dict[str, Any] | None:
    """The measurement's own row (no observations)."""
    return next(iter(db.query("select * from measurements where measurement_id = ?", [measurement_id])), None)


def measurement_ids(db: sqlite_utils.Database, run_id: str | None = None) -> list[tuple[str, str]]:
    """(measurement_id, run_id) of a run's measurements (or all), oldest first."""
    where, params = ("where run_id = ?", [run_id]) if run_id is not None else ("", [])
    sql = f"select measurement_id, run_id from measurements {where} order by started_at, measurement_id"
    return [(r[0], r[1]) for r in db.execute(sql, params).fetchall()]


def dns_failure_counts(db: sqlite_utils.Database, run_id: str) -> tuple[int, int]:
    """(measurements, measurements whose local DNS was asked and gave no address)."""
    total, failed = db.execute(
        """
        select count(*), sum(case when not exists (
                 select 1 from dns_answers a where a.measurement_id = m.measurement_id and a.side = 'local'
                 and a.answer_type in ('A', 'AAAA'))
               and exists (select 1 from dns_queries q where q.measurement_id = m.measurement_id and q.side = 'local')
               then 1 else 0 end)
        from measurements m where m.run_id = ?
        """,
        [run_id],
    ).fetchone()
    return total or 0, failed or 0


def connects_by_family(db: sqlite_utils.Database, run_id: str) -> list[dict[str, Any]]:
    """Per measurement of a run: local connects to its port over IPv4 and IPv6, and how
    many succeeded (v4, v4ok, v6, v6ok)."""
    return list(db.query(
        """select sum(instr(c.ip, ':') = 0) as v4, sum(instr(c.ip, ':') = 0 and c.success) as v4ok,
                  sum(instr(c.ip, ':') > 0) as v6, sum(instr(c.ip, ':') > 0 and c.success) as v6ok
           from measurements m join tcp_connects c
             on c.measurement_id = m.measurement_id and c.side = 'local' and c.port = m.port
           where m.run_id = ? group by m.measurement_id""", [run_id]))


def download_samples(db: sqlite_utils.Database, run_id: str, min_bytes: int) -> list[tuple[int, float]]:
    """(body bytes, milliseconds) of a run's local main pages of at least min_bytes."""
    return [(r["body_length"], r["duration_ms"]) for r in db.query(
        """select h.body_length, h.duration_ms from http_requests h join measurements m using (measurement_id)
           where m.run_id = ? and h.side = 'local' and h.kind = 'main' and h.status is not null
           and h.body_length >= ? and h.duration_ms > 0""", [run_id, min_bytes])]


def space_needed(db: sqlite_utils.Database, targets_left: int) -> int:
    """Bytes a run needs to store ``targets_left`` more measurements: what a stored
    measurement takes on average here (the database's own size, not its write-ahead log,
    less the target lists), with room for the log, which grows by a few MB between
    checkpoints."""
    logical = db.execute("pragma page_count").fetchone()[0] * db.execute("pragma page_size").fetchone()[0]
    count = db.execute("select count(*) from measurements").fetchone()[0] or 0
    targets = db.execute("select count(*) from run_targets").fetchone()[0] or 0
    per = max(2048.0, (logical - 100 * targets - 65536) / count) if count else 65536.0
    return int(per * max(targets_left, 1) * 1.3) + 8 * 1024 * 1024
