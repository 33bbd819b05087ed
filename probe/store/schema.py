"""The database file and its schema: opening (safely, or read-only), the tables, and
the migrations from every older version. Why here alone: a schema change is one diff."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import sqlite_utils

from probe.core.i18n import _
from probe.core.records import utcnow
from probe.store.views import views

SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(Exception):
    """A database we must not or cannot use: corrupt, not SQLite, from a newer probe,
    read-only, busy or on a full disk. ``str(e)`` is one line for the volunteer."""


class StoreReadOnly(StoreError):
    """The database (or its folder) cannot be written: a read-only disk or no permission."""


class StoreFull(StoreError):
    """The disk holding the database is full: what was written before is safe."""


class StoreBusy(StoreError):
    """Another program kept the database locked for longer than the busy timeout."""


# How long a write waits for another writer (another probe command, datasette) before
# it gives up: SQLite's busy handler retries within it.
BUSY_TIMEOUT_S = 30


def _m1_base(db: sqlite_utils.Database) -> None:
    db.table("runs").create(
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
    db.table("run_targets").create(
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
    db.table("measurements").create(
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
    db.table("dns_queries").create(
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
    db.table("dns_answers").create(
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
    db.table("tcp_connects").create(
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
    db.table("tls_handshakes").create(
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
    db.table("http_requests").create(
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
    db.table("control_results").create(
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
    db.table("measurements").create_index(["run_id"])
    db.table("measurements").create_index(["url", "started_at"])
    for table in ("dns_queries", "dns_answers", "tcp_connects", "tls_handshakes", "http_requests"):
        db.table(table).create_index(["measurement_id"])
    db.table("run_targets").create_index(["run_id", "status"])


def _m3_verdicts(db: sqlite_utils.Database) -> None:
    """Verdicts derived by analysis/: re-derivable, one row per measurement and
    classifier version (raw observations are never touched)."""
    db.table("verdicts").create(
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
    db.table("verdicts").create_index(["verdict"])


def _m4_control_attempts(db: sqlite_utils.Database) -> None:
    """How many requests a control answer took, and why it was lost (one word, see
    probe.measure.control.REASONS): the run summary counts lost controls by reason, and the
    end-of-run retry pass finds the ones worth asking again."""
    db.table("control_results").add_column("attempts", int)
    db.table("control_results").add_column("reason", str)


def _m5_network_and_tags(db: sqlite_utils.Database) -> None:
    """The volunteer's own network, checked: which network a measurement was taken on
    (the run's n-th, counting changes of route, address or resolver), whether it changed
    while the measurement was in flight; the qualifiers of a verdict (partial blocking,
    a slow link, ...), as JSON; and, when the local clock was off, the (control's) time
    a certificate was judged at."""
    db.table("measurements").add_column("network_epoch", int)
    db.table("measurements").add_column("network_changed", int)
    db.table("verdicts").add_column("tags", str)
    db.table("tls_handshakes").add_column("cert_checked_at", str)


def _m6_collector(db: sqlite_utils.Database) -> None:
    """Many vantage points in one place (issue 9). On a volunteer's database: what was
    sent to which collector (``uploads``), so an interrupted upload resumes. On a
    collector's: who sent each measurement (``collected``: the uploader's token name,
    never an address), the batches received, the tokens (hashed), the verdicts across
    networks (``cross_verdicts``, a second stage with its own version), the blocking
    events found in them and the webhooks told about them. One schema for both, so a
    collector's database is a volunteer's plus these rows."""
    db.table("uploads").create({"measurement_id": str, "collector": str, "batch_id": str, "uploaded_at": str},
                               pk=("measurement_id", "collector"))
    db.table("uploads").create_index(["collector", "uploaded_at"])
    db.table("collected").create({"measurement_id": str, "uploader": str, "batch_id": str, "received_at": str},
                                 pk="measurement_id")
    db.table("collected").create_index(["uploader"])
    db.table("batches").create({"batch_id": str, "uploader": str, "received_at": str, "probe_version": str,
                                "classifier_version": str, "bundles": int, "accepted": int, "duplicates": int},
                               pk="batch_id")
    db.table("tokens").create({"name": str, "token_sha256": str, "created_at": str, "revoked_at": str}, pk="name")
    db.table("tokens").create_index(["token_sha256"], unique=True)
    db.table("cross_verdicts").create(
        {"measurement_id": str, "cross_version": str, "verdict": str, "blocked": int, "confidence": float,
         "rule_id": str, "evidence": str, "networks_compared": str, "own_verdict": str, "changed": int,
         "judged_at": str},
        pk=("measurement_id", "cross_version"))
    db.table("events").create(
        {"event_id": str, "kind": str, "url": str, "domain": str, "network": str, "cc": str, "asn": str,
         "network_name": str, "before": str, "after": str, "since": str, "confirmed_at": str, "last_before": str,
         "measurement_ids": str, "evidence": str, "events_version": str, "detected_at": str},
        pk="event_id")
    db.table("events").create_index(["confirmed_at"])
    db.table("webhooks").create({"url": str, "added_at": str}, pk="url")
    db.table("webhook_deliveries").create(
        {"event_id": str, "url": str, "attempts": int, "next_attempt_at": str, "delivered_at": str,
         "last_error": str, "gave_up_at": str},
        pk=("event_id", "url"))


def _m7_deep(db: sqlite_utils.Database) -> None:
    """Deep measurements (`probe run --deep`, issue 10), linked to the measurement they
    examined: one summary row, the trigger tests, the packets of its flows and the hop
    search, each row an observation (probe.core.deep), never a conclusion."""
    db.table("deep_results").create(
        {"measurement_id": str, "url": str, "started_at": str, "duration_ms": float, "verdict": str,
         "replayed": str, "replay_target": str, "server_ttl": int, "packets_sent": int, "skipped": str},
        pk="measurement_id")
    db.table("deep_trigger_tests").create(
        {"measurement_id": str, "position": int, "name": str, "address": str, "sent": str, "started_at": str,
         "duration_ms": float, "interfered": int, "failure": str, "detail": str}, pk=("measurement_id", "position"))
    db.table("deep_packets").create(
        {"measurement_id": str, "position": int, "flow": str, "kind": str, "src": str, "ttl": int, "ip_id": int,
         "t_ms": float, "window": int, "flags": str, "seq": int, "payload_bytes": int, "answers": str},
        pk=("measurement_id", "position"))
    db.table("deep_hops").create(
        {"measurement_id": str, "ttl": int, "icmp_from": str, "response": str, "response_from": str,
         "response_ttl": int, "rtt_ms": float}, pk=("measurement_id", "ttl"))


def _m8_analysis_state(db: sqlite_utils.Database) -> None:
    """What each run's verdicts were derived with (issue 11): the classifier, the
    fingerprints and the run-wide context, as one signature; what that context was
    computed from (``inputs``: the versions, the run's row, its measurements' count and
    last rowid: observations are only ever inserted with their measurement); and the
    verdict counts. `probe analyze` skips a run whose inputs are unchanged and whose
    measurements all have a verdict, without reading it."""
    db.table("analysis_state").create(
        {"run_id": str, "classifier_version": str, "signature": str, "inputs": str, "counts": str, "analyzed_at": str},
        pk="run_id")


def _m9_fetch_attempted(db: sqlite_utils.Database) -> None:
    """Whether an HTTP request was sent at all (issue 11): a fetch to addresses whose
    connect had already timed out is recorded, not sent, and must not read as a second
    observation. Rows from before are unknown (null): read as sent, which all were
    until the probe began to skip such fetches."""
    db.table("http_requests").add_column("attempted", int)


MIGRATIONS: list[tuple[int, str, Callable[[sqlite_utils.Database], None]]] = [
    (1, "base tables", _m1_base),
    (2, "indexes for lookups by run, URL and measurement", _m2_indexes),
    (3, "verdicts table", _m3_verdicts),
    (4, "control attempts and failure reason", _m4_control_attempts),
    (5, "network epochs, verdict tags, certificates judged at the control's time", _m5_network_and_tags),
    (6, "uploads, and a collector's uploaders, tokens, cross-network verdicts and events", _m6_collector),
    (7, "deep measurements: trigger tests, packets, the hop search", _m7_deep),
    (8, "what each run's verdicts were derived with", _m8_analysis_state),
    (9, "whether each HTTP request was sent", _m9_fetch_attempted),
]


SCHEMA_VERSION = MIGRATIONS[-1][0]


def _check_file(path: Path) -> None:
    if not path.exists():
        return
    if path.is_dir():
        raise StoreError(_("{path} is a directory, not a database file").format(path=path))
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise StoreError(_("{path}: cannot read ({reason})").format(path=path, reason=exc.strerror)) from None
    if head and head != SQLITE_MAGIC:
        raise StoreError(_("{path} is not a SQLite database (corrupt or another kind of file); it was left "
                           "untouched").format(path=path))


def schema_version(db: sqlite_utils.Database) -> int:
    if "schema_version" not in db.table_names():
        return 0
    row = db.execute("select max(version) from schema_version").fetchone()
    return int(row[0] or 0)


def _writable(path: Path) -> bool:
    """Whether SQLite can write the database: the file and its folder (for the -wal and
    -shm files). access() says EROFS on a read-only file system, even to root."""
    folder = path.parent if str(path.parent) else Path(".")
    return os.access(folder, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


def _read_only_error(path: Path) -> StoreReadOnly:
    return StoreReadOnly(_(
        "{path} is read-only (a read-only disk, or no permission to write it or its folder): "
        "commands that only read it (show, report, explain, export-ooni) work; to measure or "
        "analyse, copy it somewhere writable or give another --db").format(path=path))


def _make_folder(path: Path) -> None:
    folder = path.parent
    if not str(folder) or folder.is_dir():
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            reason = _("a file of that name is in the way") if folder.exists() else _("part of the path is a file")
        raise StoreError(_("cannot create the folder {folder} for the database ({reason}); give another --db").format(
            folder=folder, reason=reason)) from None


def open_db(path: str | Path, *, create: bool = True, upto: int | None = None,
            readonly: bool = False) -> sqlite_utils.Database:
    """Open (and if needed create and migrate) the probe database at ``path``.

    Raises StoreError, with a one-line reason, for anything that is not a probe database
    we can safely write: the file is never modified in that case. ``readonly`` is for
    commands that only read: the connection cannot write, and a database on a read-only
    disk opens too (as long as it needs no upgrade).
    """
    path = Path(path)
    _check_file(path)
    if readonly:
        return _open_readonly(path)
    if not path.exists() and not create:
        raise StoreError(_("{path}: no such database (run `probe run --db {path}` first)").format(path=path))
    if create:
        _make_folder(path)
    if not _writable(path):
        raise _read_only_error(path)
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S)
        db = sqlite_utils.Database(conn)
        tables = db.table_names()  # the first real read: fails on a corrupt file
        current = schema_version(db)
        if current == 0 and not create:
            conn.close()
            raise StoreError(_("{path} is not a probe database (it is empty); it was left untouched").format(path=path))
        if current == 0 and tables and "schema_version" not in tables:
            conn.close()
            raise StoreError(_("{path} is a SQLite database but not a probe database; it was left untouched").format(path=path))
        target = SCHEMA_VERSION if upto is None else upto
        if current > SCHEMA_VERSION:
            conn.close()
            raise _newer(path, current)
        if current < target:
            db.execute("PRAGMA journal_mode=WAL")
            _migrate(db, current, target)
        if target == SCHEMA_VERSION:
            ensure_views(db)
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
        return db
    except StoreError:
        raise
    except sqlite3.Error as exc:
        raise translate(exc, path) from None


def _newer(path: Path, current: int) -> StoreError:
    return StoreError(_(
        "{path} has schema version {current}, newer than this probe understands "
        "({ours}); upgrade the probe (pip install -U) to use it").format(path=path, current=current, ours=SCHEMA_VERSION))


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """A connection that cannot write. On a read-only disk SQLite cannot create the
    -shm file a WAL database needs; nobody can write there either, so the file is
    opened as immutable."""
    uri = path.resolve().as_uri()
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        conn.execute("select count(*) from sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        if _writable(path):
            raise
    conn = sqlite3.connect(f"{uri}?immutable=1", uri=True)
    return conn


def _open_readonly(path: Path) -> sqlite_utils.Database:
    if not path.exists():
        raise StoreError(_("{path}: no such database (run `probe run --db {path}` first)").format(path=path))
    try:
        conn = _connect_readonly(path)
        db = sqlite_utils.Database(conn)
        tables = db.table_names()
        current = schema_version(db)
        if current == 0:
            conn.close()
            if tables:
                raise StoreError(_("{path} is a SQLite database but not a probe database; it was left "
                                   "untouched").format(path=path))
            raise StoreError(_("{path} is not a probe database (it is empty); it was left untouched").format(path=path))
        if current > SCHEMA_VERSION:
            conn.close()
            raise _newer(path, current)
        if current < SCHEMA_VERSION:
            conn.close()
            if not _writable(path):
                raise StoreReadOnly(_("{path} was written by an older probe and is read-only, so it cannot be "
                                      "upgraded: copy it somewhere writable first").format(path=path))
            open_db(path, create=False).conn.close()  # upgrade it once, then read
            return _open_readonly(path)
        return db
    except StoreError:
        raise
    except sqlite3.Error as exc:
        raise translate(exc, path) from None


def translate(exc: sqlite3.Error, path: str | Path) -> StoreError:
    """SQLite's error as the one line a volunteer can act on."""
    code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
    text = str(exc)
    if code == sqlite3.SQLITE_FULL or "database or disk is full" in text:
        return StoreFull(_("the disk holding {path} is full").format(path=path))
    if code == sqlite3.SQLITE_IOERR and _free_bytes(Path(path)) < 1024 * 1024:
        return StoreFull(_("the disk holding {path} is full").format(path=path))
    if code == sqlite3.SQLITE_READONLY or "readonly database" in text:
        return _read_only_error(Path(path))
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "database is locked" in text:
        return StoreBusy(_("{path} is busy: another program kept it locked for over {seconds} s; try again").format(
            path=path, seconds=BUSY_TIMEOUT_S))
    if code == sqlite3.SQLITE_CANTOPEN:
        return StoreError(_("{path}: cannot open the database file").format(path=path))
    return StoreError(_("{path} is corrupt or not a SQLite database ({error}); it was left untouched").format(
        path=path, error=exc))


def _free_bytes(path: Path) -> int:
    folder = path.parent if str(path.parent) else Path(".")
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def free_bytes(db: sqlite_utils.Database) -> int:
    """Free space on the disk holding the database."""
    return _free_bytes(Path(db_file(db)))


@contextlib.contextmanager
def writing(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """One write transaction. BEGIN IMMEDIATE takes the write lock first, so that two
    writers queue in SQLite's busy handler: a deferred BEGIN that reads, then writes,
    fails at once with "database is locked" when another writer committed in between.
    SQLite errors come out as StoreError (full, read-only, busy), with one line."""
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    try:
        db.conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise translate(exc, db_file(db)) from None
    try:
        yield db
    except BaseException as exc:
        with contextlib.suppress(sqlite3.Error):
            db.conn.rollback()
        if isinstance(exc, sqlite3.Error):
            raise translate(exc, db_file(db)) from None
        raise
    try:
        if db.conn.in_transaction:
            db.conn.execute("COMMIT")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            db.conn.rollback()
        raise translate(exc, db_file(db)) from None


def _migrate(db: sqlite_utils.Database, current: int, target: int) -> None:
    with writing(db):
        if "schema_version" not in db.table_names():
            db.table("schema_version").create({"version": int, "description": str, "applied_at": str}, pk="version")
        for version, description, step in MIGRATIONS:
            if current < version <= target:
                step(db)
                db.table("schema_version").insert(
                    {"version": version, "description": description, "applied_at": utcnow()}
                )


def ensure_views(db: sqlite_utils.Database) -> None:
    """Create the browsing views (probe.store.views) when missing or different. Not a
    numbered migration: views change no table, so older probes still read the file."""
    current = dict(db.execute("select name, sql from sqlite_master where type = 'view'").fetchall())
    wanted = views()
    if all(current.get(name) == sql for name, sql in wanted.items()):
        return
    with writing(db):
        for name in wanted:
            db.execute(f"DROP VIEW IF EXISTS [{name}]")
        for sql in wanted.values():
            db.execute(sql)


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
