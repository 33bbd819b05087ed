"""SQLite storage of raw observations, written with sqlite-utils.

One database per volunteer (``results/probe.db``). Every row of one URL's measurement is
written in one transaction, the moment that URL finishes, so a run killed at any instant
loses at most the URLs in flight, and ``--resume`` measures exactly those again. Rows
are only ever inserted: a newer classifier re-reads the same observations.

Local and control observations share tables, told apart by ``side`` ('local' or
'control'), so analysis compares like with like.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from probe.core.records import (
    ControlResult,
    DnsQuery,
    HttpRequest,
    Measurement,
    TcpConnect,
    TlsHandshake,
    to_jsonable,
    utcnow,
)

SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(Exception):
    """A database we must not touch: corrupt, not SQLite, or from a newer probe."""


# --- schema and migrations -------------------------------------------------------------


def _m1_base(db: sqlite_utils.Database) -> None:
    db["runs"].create(
        {
            "run_id": str,
            "started_at": str,
            "finished_at": str,
            "status": str,  # running | finished | interrupted | timed_out
            "probe_version": str,
            "targets_source": str,
            "targets_sha256": str,
            "target_count": int,
            "cc": str,
            "asn": str,
            "network_name": str,
            "resolvers": str,  # JSON list
            "probe_ip": str,  # only with --store-ip
            "control_url": str,
            "doh_url": str,
            "config": str,  # JSON
            "notes": str,  # JSON list of what the volunteer should know about this run
        },
        pk="run_id",
    )
    db["run_targets"].create(
        {
            "run_id": str,
            "position": int,
            "url": str,
            "category": str,
            "note": str,
            "status": str,  # pending | done | not_measured | moved (to the run after a network change)
            "measurement_id": str,
        },
        pk=("run_id", "url"),
        foreign_keys=[("run_id", "runs", "run_id")],
    )
    db["measurements"].create(
        {
            "measurement_id": str,
            "run_id": str,
            "url": str,
            "hostname": str,
            "scheme": str,
            "port": int,
            "category": str,
            "started_at": str,
            "finished_at": str,
            "duration_ms": float,
            "addresses": str,  # JSON list: what TCP/TLS/HTTP were tried on
            "control_url": str,
            "control_failure": str,
        },
        pk="measurement_id",
        foreign_keys=[("run_id", "runs", "run_id")],
    )
    db["dns_queries"].create(
        {
            "query_id": str,
            "measurement_id": str,
            "side": str,
            "engine": str,
            "resolver": str,
            "hostname": str,
            "query_type": str,
            "started_at": str,
            "duration_ms": float,
            "failure": str,
            "rcode": str,
            "responder": str,
            "extra_replies": str,  # JSON: further replies to the same query (injection)
        },
        pk="query_id",
        foreign_keys=[("measurement_id", "measurements", "measurement_id")],
    )
    db["dns_answers"].create(
        {
            "query_id": str,
            "measurement_id": str,
            "side": str,
            "position": int,
            "answer_type": str,
            "value": str,
            "ttl": int,
        },
        pk=("query_id", "position"),
        foreign_keys=[("query_id", "dns_queries", "query_id")],
    )
    db["tcp_connects"].create(
        {
            "id": int,
            "measurement_id": str,
            "side": str,
            "ip": str,
            "port": int,
            "started_at": str,
            "duration_ms": float,
            "success": int,
            "failure": str,
        },
        pk="id",
        foreign_keys=[("measurement_id", "measurements", "measurement_id")],
    )
    db["tls_handshakes"].create(
        {
            "id": int,
            "measurement_id": str,
            "side": str,
            "ip": str,
            "port": int,
            "server_name": str,
            "sni_role": str,
            "started_at": str,
            "duration_ms": float,
            "success": int,
            "failure": str,
            "failure_stage": str,
            "bytes_sent": int,
            "bytes_received": int,
            "tls_version": str,
            "cipher": str,
            "alpn": str,
            "cert_valid": int,
            "cert_failure": str,
            "leaf_subject": str,
            "leaf_issuer": str,
            "leaf_sha256": str,
            "peer_certificates": str,  # JSON: the whole presented chain
        },
        pk="id",
        foreign_keys=[("measurement_id", "measurements", "measurement_id")],
    )
    db["http_requests"].create(
        {
            "request_id": str,
            "measurement_id": str,
            "side": str,
            "kind": str,
            "hop": int,
            "url": str,
            "method": str,
            "address": str,
            "started_at": str,
            "duration_ms": float,
            "failure": str,
            "status": int,
            "reason": str,
            "http_version": str,
            "headers": str,  # JSON [[name, value], ...]
            "location": str,
            "body_length": int,
            "body_truncated": int,
            "body_sha256": str,
            "title": str,
            "body_head": bytes,  # gzip of the first bytes of the body
        },
        pk="request_id",
        foreign_keys=[("measurement_id", "measurements", "measurement_id")],
    )
    db["control_results"].create(
        {
            "measurement_id": str,
            "control_url": str,
            "started_at": str,
            "duration_ms": float,
            "failure": str,
            "raw": str,  # the helper's JSON answer, verbatim
        },
        pk="measurement_id",
        foreign_keys=[("measurement_id", "measurements", "measurement_id")],
    )


def _m2_indexes(db: sqlite_utils.Database) -> None:
    """Indexes for what analysis and `probe show` look up: one URL, one measurement."""
    db["measurements"].create_index(["run_id"])
    db["measurements"].create_index(["url", "started_at"])
    for table in ("dns_queries", "dns_answers", "tcp_connects", "tls_handshakes", "http_requests"):
        db[table].create_index(["measurement_id"])
    db["run_targets"].create_index(["run_id", "status"])


def _m3_verdicts(db: sqlite_utils.Database) -> None:
    """Verdicts derived by analysis/: re-derivable, one row per measurement and
    classifier version (raw observations are never touched)."""
    db["verdicts"].create(
        {
            "measurement_id": str,
            "classifier_version": str,
            "verdict": str,
            "blocked": int,
            "confidence": float,
            "layer": str,
            "rule_id": str,
            "evidence": str,  # JSON [{"text": ..., "fields": {...}}, ...]
            "layers": str,  # JSON {layer: {blocked, down, ok, rule_id, verdict, evidence}}
            "analyzed_at": str,
        },
        pk=("measurement_id", "classifier_version"),
        foreign_keys=[("measurement_id", "measurements", "measurement_id")],
    )
    db["verdicts"].create_index(["verdict"])


def _m4_control_attempts(db: sqlite_utils.Database) -> None:
    """How many requests a control answer took, and why it was lost (one word, see
    probe.measure.control.REASONS): the run summary counts lost controls by reason, and the
    end-of-run retry pass finds the ones worth asking again."""
    db["control_results"].add_column("attempts", int)
    db["control_results"].add_column("reason", str)


def _m5_network_and_tags(db: sqlite_utils.Database) -> None:
    """The volunteer's own network, checked: which network a measurement was taken on
    (the run's n-th, counting changes of route, address or resolver), whether it changed
    while the measurement was in flight; the qualifiers of a verdict (partial blocking,
    a slow link, ...), as JSON; and, when the local clock was off, the (control's) time
    a certificate was judged at."""
    db["measurements"].add_column("network_epoch", int)
    db["measurements"].add_column("network_changed", int)
    db["verdicts"].add_column("tags", str)
    db["tls_handshakes"].add_column("cert_checked_at", str)


MIGRATIONS: list[tuple[int, str, Callable[[sqlite_utils.Database], None]]] = [
    (1, "base tables", _m1_base),
    (2, "indexes for lookups by run, URL and measurement", _m2_indexes),
    (3, "verdicts table", _m3_verdicts),
    (4, "control attempts and failure reason", _m4_control_attempts),
    (5, "network epochs, verdict tags, certificates judged at the control's time", _m5_network_and_tags),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


# --- opening ---------------------------------------------------------------------------


def _check_file(path: Path) -> None:
    if not path.exists():
        return
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a database file")
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise StoreError(f"{path}: cannot read ({exc.strerror})") from None
    if head and head != SQLITE_MAGIC:
        raise StoreError(f"{path} is not a SQLite database (corrupt or another kind of file); it was left untouched")


def schema_version(db: sqlite_utils.Database) -> int:
    if "schema_version" not in db.table_names():
        return 0
    row = db.execute("select max(version) from schema_version").fetchone()
    return int(row[0] or 0)


def open_db(path: str | Path, *, create: bool = True, upto: int | None = None) -> sqlite_utils.Database:
    """Open (and if needed create and migrate) the probe database at ``path``.

    Raises StoreError, with a one-line reason, for anything that is not a probe database
    we can safely write: the file is never modified in that case.
    """
    path = Path(path)
    _check_file(path)
    if not path.exists() and not create:
        raise StoreError(f"{path}: no such database (run `probe run --db {path}` first)")
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(str(path), timeout=30)
        db = sqlite_utils.Database(conn)
        tables = db.table_names()  # the first real read: fails on a corrupt file
        current = schema_version(db)
        if current == 0 and not create:
            conn.close()
            raise StoreError(f"{path} is not a probe database (it is empty); it was left untouched")
        if current == 0 and tables and "schema_version" not in tables:
            conn.close()
            raise StoreError(f"{path} is a SQLite database but not a probe database; it was left untouched")
        target = SCHEMA_VERSION if upto is None else upto
        if current > SCHEMA_VERSION:
            conn.close()
            raise StoreError(
                f"{path} has schema version {current}, newer than this probe understands "
                f"({SCHEMA_VERSION}); upgrade the probe (pip install -U) to use it"
            )
        if current < target:
            db.execute("PRAGMA journal_mode=WAL")
            _migrate(db, current, target)
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
        return db
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is corrupt or not a SQLite database ({exc}); it was left untouched") from None


def _migrate(db: sqlite_utils.Database, current: int, target: int) -> None:
    with db.atomic():
        if "schema_version" not in db.table_names():
            db["schema_version"].create({"version": int, "description": str, "applied_at": str}, pk="version")
        for version, description, step in MIGRATIONS:
            if current < version <= target:
                step(db)
                db["schema_version"].insert(
                    {"version": version, "description": description, "applied_at": utcnow()}
                )


# --- runs ------------------------------------------------------------------------------


@dataclass
class RunTarget:
    url: str
    category: str | None = None
    note: str | None = None


def create_run(db: sqlite_utils.Database, run: dict[str, Any], targets: Iterable[RunTarget]) -> None:
    """Record a new run and the list it will measure, so --resume needs no target file."""
    with db.atomic():
        db["runs"].insert(run)
        db["run_targets"].insert_all(
            (
                {
                    "run_id": run["run_id"],
                    "position": i,
                    "url": t.url,
                    "category": t.category,
                    "note": t.note,
                    "status": "pending",
                    "measurement_id": None,
                }
                for i, t in enumerate(targets)
            ),
            batch_size=500,
        )


def latest_unfinished_run(db: sqlite_utils.Database) -> dict[str, Any] | None:
    rows = list(
        db.query(
            "select * from runs where status != 'finished' order by started_at desc limit 1"
        )
    )
    return rows[0] if rows else None


def get_run(db: sqlite_utils.Database, run_id: str) -> dict[str, Any] | None:
    rows = list(db.query("select * from runs where run_id = ? or run_id like ?", [run_id, run_id + "%"]))
    return rows[0] if len(rows) == 1 else None


def pending_targets(db: sqlite_utils.Database, run_id: str) -> Iterator[RunTarget]:
    """Targets of the run without a stored measurement, in list order, streamed."""
    for row in db.query(
        "select url, category, note from run_targets where run_id = ? and status != 'done' order by position",
        [run_id],
    ):
        yield RunTarget(row["url"], row["category"], row["note"])


def count_targets(db: sqlite_utils.Database, run_id: str) -> dict[str, int]:
    out = {"pending": 0, "done": 0, "not_measured": 0}
    for row in db.query(
        "select status, count(*) as n from run_targets where run_id = ? group by status", [run_id]
    ):
        out[row["status"]] = row["n"]
    return out


def set_run_status(db: sqlite_utils.Database, run_id: str, status: str, *, finished: bool = True) -> None:
    with db.atomic():
        db["runs"].update(run_id, {"status": status, "finished_at": utcnow() if finished else None})


def split_run(db: sqlite_utils.Database, old_run_id: str, new_run: dict[str, Any]) -> int:
    """The network changed during a run: a new run (``new_run``, for the new network)
    takes over what the old one had not measured, and the targets measured while the
    network was changing, to be measured again; the old run ends. Returns how many
    targets moved."""
    with db.atomic():
        rows = list(db.query(
            """select t.url, t.category, t.note from run_targets t
               left join measurements m on m.measurement_id = t.measurement_id
               where t.run_id = ? and (t.status != 'done' or m.network_changed = 1) order by t.position""",
            [old_run_id]))
        db["runs"].insert(new_run)
        db["run_targets"].insert_all(
            ({"run_id": new_run["run_id"], "position": i, "url": r["url"], "category": r["category"],
              "note": r["note"], "status": "pending", "measurement_id": None} for i, r in enumerate(rows)),
            batch_size=500)
        db.execute("update run_targets set status = 'moved' where run_id = ? and status != 'done'", [old_run_id])
        db["runs"].update(old_run_id, {"status": "finished", "finished_at": utcnow()})
    return len(rows)


def mark_not_measured(db: sqlite_utils.Database, run_id: str, urls: Iterable[str]) -> None:
    """Targets cancelled in flight (max runtime, Ctrl-C): left for --resume."""
    with db.atomic():
        for url in urls:
            db.execute(
                "update run_targets set status = 'not_measured' where run_id = ? and url = ? and status != 'done'",
                [run_id, url],
            )


# --- measurements ----------------------------------------------------------------------


def _j(value: Any) -> str:
    return json.dumps(to_jsonable(value), ensure_ascii=False, separators=(",", ":"))


def _dns_rows(mid: str, side: str, queries: list[DnsQuery]) -> tuple[list[dict], list[dict]]:
    qrows, arows = [], []
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
        }
        for i, r in enumerate(requests)
    ]


def save_measurement(db: sqlite_utils.Database, run_id: str, m: Measurement) -> None:
    """Every row of one measurement, and the target's 'done' mark, in one transaction."""
    mid = m.measurement_id
    c = m.control
    with db.atomic():
        db["measurements"].insert(
            {
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
            }
        )
        _insert_side(db, mid, "local", m.dns, m.tcp, m.tls, m.http)
        if c is not None:
            _insert_control(db, mid, c)
        db.execute(
            "update run_targets set status = 'done', measurement_id = ? where run_id = ? and url = ?",
            [mid, run_id, m.url],
        )


def _insert_side(db: sqlite_utils.Database, mid: str, side: str, dq: list[DnsQuery], tc: list[TcpConnect],
                 th: list[TlsHandshake], hr: list[HttpRequest]) -> None:
    qrows, arows = _dns_rows(mid, side, dq)
    db["dns_queries"].insert_all(qrows)
    db["dns_answers"].insert_all(arows)
    db["tcp_connects"].insert_all(_tcp_rows(mid, side, tc))
    db["tls_handshakes"].insert_all(_tls_rows(mid, side, th))
    db["http_requests"].insert_all(_http_rows(mid, side, hr))


def _insert_control(db: sqlite_utils.Database, mid: str, c: ControlResult) -> None:
    _insert_side(db, mid, "control", c.dns, c.tcp, c.tls, c.http)
    db["control_results"].insert(
        {
            "measurement_id": mid,
            "control_url": c.control_url,
            "started_at": c.started_at,
            "duration_ms": c.duration_ms,
            "failure": c.failure,
            "raw": json.dumps(c.raw, ensure_ascii=False) if c.raw is not None else None,
            "attempts": c.attempts,
            "reason": c.reason,
        }
    )


def replace_control(db: sqlite_utils.Database, measurement_id: str, c: ControlResult) -> None:
    """A control asked again at the end of a run (its first answer was lost to load or a
    broken connection): the new answer replaces the failed one, in one transaction.
    Nothing measured locally is touched; the attempts add up."""
    with db.atomic():
        old = list(db.query("select attempts from control_results where measurement_id = ?", [measurement_id]))
        c.attempts += (old[0]["attempts"] or 1) if old else 0
        for table in ("dns_answers", "dns_queries", "tcp_connects", "tls_handshakes", "http_requests"):
            db.execute(f"delete from {table} where measurement_id = ? and side = 'control'", [measurement_id])
        db.execute("delete from control_results where measurement_id = ?", [measurement_id])
        _insert_control(db, measurement_id, c)
        db.execute("update measurements set control_url = ?, control_failure = ? where measurement_id = ?",
                   [c.control_url, c.failure, measurement_id])


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


# --- reading ---------------------------------------------------------------------------


def list_runs(db: sqlite_utils.Database, limit: int = 50) -> list[dict[str, Any]]:
    return list(
        db.query(
            """select r.*, (select count(*) from measurements m where m.run_id = r.run_id) as measured
               from runs r order by started_at desc limit ?""",
            [limit],
        )
    )


def find_measurement_id(db: sqlite_utils.Database, ref: str, run_id: str | None = None) -> str | None:
    """A measurement id (or unique prefix), or the latest measurement of a URL.

    A URL matches with or without a trailing slash, and a bare host name matches its
    http(s) URLs, since that is how people type them."""
    rows = list(db.query("select measurement_id from measurements where measurement_id like ? limit 2", [ref + "%"]))
    if len(rows) == 1:
        return rows[0]["measurement_id"]
    candidates = {ref, ref.rstrip("/"), ref.rstrip("/") + "/"}
    where = f"url in ({','.join('?' * len(candidates))}) or hostname = ?"
    params: list[Any] = [*candidates, ref.lower()]
    if run_id:
        where = f"({where}) and run_id = ?"
        params.append(run_id)
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
    from probe.core.records import (
        Certificate,
        DnsAnswer,
        DnsReply,
    )

    raw = read_measurement(db, measurement_id)
    if raw is None:
        return None

    def side(part: dict[str, Any]):
        dns = []
        for q in part["dns"]:
            dq = DnsQuery(q["engine"], q["resolver"], q["hostname"], q["query_type"], q["started_at"],
                          q["duration_ms"] or 0.0, q["failure"], q["rcode"], q["responder"],
                          [DnsAnswer(a["answer_type"], a["value"], a["ttl"]) for a in q["answers"]],
                          [DnsReply(r["responder"], r["delay_ms"], r.get("rcode"),
                                    [DnsAnswer(a["answer_type"], a["value"], a.get("ttl")) for a in r.get("answers", [])])
                           for r in q["extra_replies"]],
                          query_id=q["query_id"])
            dns.append(dq)
        tcp = [TcpConnect(c["ip"], c["port"], c["started_at"], c["duration_ms"] or 0.0, bool(c["success"]), c["failure"])
               for c in part["tcp"]]
        tls = []
        for t in part["tls"]:
            tls.append(TlsHandshake(
                t["ip"], t["port"], t["server_name"], t["started_at"], t["duration_ms"] or 0.0, bool(t["success"]),
                t["failure"], t["sni_role"], t["failure_stage"], t["bytes_sent"] or 0, t["bytes_received"] or 0,
                t["tls_version"], t["cipher"], t["alpn"], None if t["cert_valid"] is None else bool(t["cert_valid"]),
                t["cert_failure"], [Certificate(**c) for c in t["peer_certificates"]],
                cert_checked_at=t.get("cert_checked_at"),
            ))
        http = [HttpRequest(
            url=h["url"], kind=h["kind"], hop=h["hop"], started_at=h["started_at"], duration_ms=h["duration_ms"] or 0.0,
            method=h["method"] or "GET", address=h["address"], failure=h["failure"], status=h["status"],
            reason=h["reason"], http_version=h["http_version"], headers=h["headers"], location=h["location"],
            body_length=h["body_length"], body_truncated=bool(h["body_truncated"]), body_sha256=h["body_sha256"],
            title=h["title"], body_head=body_head(h["body_head"]) if h["body_head"] else None, request_id=h["request_id"],
        ) for h in part["http"]]
        http.sort(key=lambda h: (h.kind != "main", h.hop, h.started_at))
        return dns, tcp, tls, http

    m = Measurement(url=raw["url"], hostname=raw["hostname"], scheme=raw["scheme"], port=raw["port"],
                    started_at=raw["started_at"], category=raw["category"], finished_at=raw["finished_at"],
                    duration_ms=raw["duration_ms"], addresses=raw["addresses"], measurement_id=raw["measurement_id"],
                    network_epoch=raw.get("network_epoch"), network_changed=bool(raw.get("network_changed")))
    m.dns, m.tcp, m.tls, m.http = side(raw["local"])
    cr = raw["control_result"]
    if cr is not None:
        c = ControlResult(cr["control_url"], cr["started_at"], cr["duration_ms"] or 0.0, cr["failure"],
                          attempts=cr.get("attempts") or 1, reason=cr.get("reason"))
        c.dns, c.tcp, c.tls, c.http = side(raw["control"])
        c.raw = json.loads(cr["raw"]) if cr["raw"] else None
        m.control = c
    return m
