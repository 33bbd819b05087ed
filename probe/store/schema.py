"""The database file and its schema: opening (safely, or read-only), the tables, and
the migrations from every older version. Why here alone: a schema change is one diff."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from probe.core.records import (
    utcnow,
)

SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(Exception):
    """A database we must not touch: corrupt, not SQLite, or from a newer probe."""


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


def db_file(db: sqlite_utils.Database) -> str:
    """The file behind a connection, so merged rows can say where they came from."""
    try:
        for _, name, file in db.conn.execute("PRAGMA database_list").fetchall():
            if name == "main":
                return file or ":memory:"
    except sqlite3.Error:
        pass
    return "?"


def close(db: sqlite_utils.Database) -> None:
    db.conn.close()
