"""Researchers' exports, the read side: every table of a probe database as flat,
typed, self-describing rows, streamed in chunks (``probe export``; the files are
written by ``probe.report.export``).

Why here: the store is the only code that knows the schema and writes SQL, so the
output schema (``EXPORT_TABLES``) sits next to the SELECTs that fill it. Each column
has a neutral type (``text``, ``int``, ``float``, ``bool``, ``timestamp``, ``bytes``,
``json``, ``ListOf``, ``StructOf``) that a writer maps to Parquet, CSV or JSONL, and
every row is conformed to it here, so a file never disagrees with its schema.

What the rows hold, and why:
- ``measurements``: one row per measurement with its run's network and the verdict of
  the newest classifier version that judged it (``verdicts.version_key`` order, as
  everywhere); a measurement nobody judged yet is there too, with null verdict columns.
- one table per kind of observation (``dns_queries``, ``dns_answers``, ``tcp_connects``,
  ``tls_handshakes``, ``http_requests``, ``control_results``): every stored column, plus
  the run's ``run_id``, ``cc`` and ``asn``, so a file can be read on its own. JSON text
  of a stable shape (written from ``probe.core.records`` dataclasses) is decoded into
  lists and structs; the helper's raw answer, whose shape is the helper's, stays JSON
  text. Body heads are decompressed: the bytes that came, not our gzip of them.
- ``runs``: as ``bundles.public_run`` lets a run leave the volunteer's machine: never
  ``probe_ip``, the target list's file name only (not the path naming their account).
Not scrubbed: the observations themselves (as in bundles: a run with --store-ip kept
pages as they came).

Timestamps are the stored UTC ISO-8601 text (``2024-05-01T10:00:00.000000Z``); a
writer may turn them into real timestamps.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from probe.store.browse import TABLES as BROWSE_TABLES
from probe.store.bundles import public_run
from probe.store.verdicts import classifier_versions

# Bumped when a column changes meaning or type (adding one does not bump it): readers
# of older exports can tell. Written into each file's metadata and schema.json.
EXPORT_VERSION = "1.0.0"

# Rows per chunk, and a bound on a chunk's bytes: an http_requests row carries up to
# 64 KiB of body head and a tls_handshakes row a certificate chain, so a row count
# alone would not keep memory flat.
CHUNK_ROWS = 5000
CHUNK_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ListOf:
    """A list of values of one type (a Parquet LIST, a JSON array)."""

    item: FieldType


@dataclass(frozen=True)
class StructOf:
    """An object with fixed, typed keys (a Parquet STRUCT, a JSON object)."""

    fields: tuple[tuple[str, FieldType], ...]


# "text" | "int" | "float" | "bool" | "timestamp" | "bytes" | "json" (JSON text whose
# shape is not ours to promise) | ListOf | StructOf
FieldType = str | ListOf | StructOf
SCALARS = ("text", "int", "float", "bool", "timestamp", "bytes", "json")


@dataclass(frozen=True)
class Column:
    name: str
    type: FieldType
    doc: str = ""


@dataclass(frozen=True)
class ExportTable:
    """One exported file: its rows' columns, in order, and what a row is."""

    name: str
    description: str
    columns: tuple[Column, ...]

    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def type_name(t: FieldType) -> str:
    """The type as one readable word or expression (``list<struct<name: text, ...>>``)."""
    if isinstance(t, ListOf):
        return f"list<{type_name(t.item)}>"
    if isinstance(t, StructOf):
        return "struct<" + ", ".join(f"{n}: {type_name(ft)}" for n, ft in t.fields) + ">"
    return t


_TEXT_LIST = ListOf("text")
_ANSWER = StructOf((("answer_type", "text"), ("value", "text"), ("ttl", "int")))
_REPLY = StructOf((("responder", "text"), ("delay_ms", "float"), ("rcode", "text"), ("answers", ListOf(_ANSWER))))
_CERTIFICATE = StructOf((("subject", "text"), ("issuer", "text"), ("sans", _TEXT_LIST), ("not_before", "timestamp"),
                         ("not_after", "timestamp"), ("serial", "text"), ("sha256", "text"), ("der_b64", "text")))
_HEADER = StructOf((("name", "text"), ("value", "text")))

_RUN_COLUMNS = (Column("run_id", "text", "the run this row belongs to (runs)"),
                Column("cc", "text", "country code of the volunteer's network (of the run)"),
                Column("asn", "text", "autonomous system number of the volunteer's network (of the run)"))
_MID = Column("measurement_id", "text", "the measurement this observation belongs to (measurements)")
_SIDE = Column("side", "text")
_STARTED = Column("started_at", "timestamp", "when it started (UTC)")
_DURATION = Column("duration_ms", "float", "how long it took, in milliseconds")
_FAILURE = Column("failure", "text")
_ID = Column("id", "int", "the row's number in the probe's database")
_IP = Column("ip", "text", "the address tried")
_PORT = Column("port", "int", "the port tried")

EXPORT_TABLES: dict[str, ExportTable] = {t.name: t for t in (
    ExportTable("runs", "One row per run of `probe run` (or imported file): where and when it measured. "
                "The volunteer's address is never exported, the target list by file name only.", (
        Column("run_id", "text"), Column("started_at", "timestamp"), Column("finished_at", "timestamp"),
        Column("status", "text"), Column("probe_version", "text"),
        Column("targets_source", "text", "the target list's file name (never its path)"),
        Column("targets_sha256", "text", "SHA-256 of the target list"), Column("target_count", "int"),
        Column("cc", "text"), Column("asn", "text"), Column("network_name", "text"),
        Column("resolvers", _TEXT_LIST, "the resolvers asked"), Column("control_url", "text"), Column("doh_url", "text"),
        Column("config", "json", "JSON text: the run's options"),
        Column("notes", _TEXT_LIST, "what the volunteer was told about this run"),
    )),
    ExportTable("measurements", "One row per URL measured, with its network and the verdict of the newest classifier "
                "version that judged it (null when none did yet). Observations are in the other files, by "
                "measurement_id.", (
        Column("measurement_id", "text", "the measurement"), _RUN_COLUMNS[0],
        Column("url", "text", "the target URL"), Column("domain", "text", "the URL's host name"),
        Column("scheme", "text", "http or https"), Column("port", "int", "the URL's port"),
        Column("category", "text", "Citizen Lab category code of the target (NEWS, HUMR, ...)"),
        _STARTED, Column("finished_at", "timestamp", "when it finished (UTC), if it did"), _DURATION,
        *_RUN_COLUMNS[1:], Column("network_name", "text", "the ISP's name, as looked up at the time"),
        Column("probe_version", "text", "the probe's version that measured it"),
        Column("classifier_version", "text", "the newest classifier version that judged this measurement"),
        Column("verdict", "text", "the verdict code: ok, down, error, or how the site is blocked (dns.nxdomain, "
                                  "tls.reset, ...)"),
        Column("blocked", "bool", "true, false, or null: can't tell (or not judged yet)"),
        Column("confidence", "float", "0..1: how sure the classifier is of the verdict"),
        Column("layer", "text", "where blocking was first seen: dns, tcp, tls or http"),
        Column("rule_id", "text", "the classifier rule that gave the verdict"),
        Column("tags", _TEXT_LIST, "qualifiers of the verdict (partial:ipv4, slow, ...)"),
        Column("evidence", _TEXT_LIST, "why, in words: one line per piece of evidence"),
        Column("evidence_json", "json", 'JSON text: the evidence with its fields, [{"text": ..., "fields": {...}}, ...]'),
        Column("control_failure", "text", "why the control could not answer, if so"),
        Column("network_epoch", "int"),
        Column("network_changed", "bool", "true when the network changed while this measurement was in flight"),
        Column("addresses", _TEXT_LIST, "the addresses TCP, TLS and HTTP were tried on, in order"),
    )),
    ExportTable("dns_queries", "Every DNS query, local and control.", (
        Column("query_id", "text", "the query"), _MID, *_RUN_COLUMNS, _SIDE, Column("engine", "text"),
        Column("resolver", "text"), Column("hostname", "text", "the name asked for"),
        Column("query_type", "text"), _STARTED, _DURATION, _FAILURE,
        Column("rcode", "text"), Column("responder", "text"),
        Column("extra_replies", ListOf(_REPLY), "further replies to the same query (a sign of injection)"),
    )),
    ExportTable("dns_answers", "The answers of each DNS query, in order.", (
        Column("query_id", "text", "the query (dns_queries)"), Column("position", "int", "0 for the first answer"),
        _MID, *_RUN_COLUMNS, _SIDE, Column("answer_type", "text"), Column("value", "text"), Column("ttl", "int"),
    )),
    ExportTable("tcp_connects", "Every TCP connect, local and control.", (
        _ID, _MID, *_RUN_COLUMNS, _SIDE, _IP, _PORT, _STARTED, _DURATION,
        Column("success", "bool", "true when it connected"), _FAILURE,
    )),
    ExportTable("tls_handshakes", "Every TLS handshake, local and control, with the certificates shown.", (
        _ID, _MID, *_RUN_COLUMNS, _SIDE, _IP, _PORT, Column("server_name", "text"), Column("sni_role", "text"),
        _STARTED, _DURATION, Column("success", "bool", "true when the handshake completed"), _FAILURE,
        Column("failure_stage", "text"), Column("bytes_sent", "int", "bytes we sent before it ended"),
        Column("bytes_received", "int", "bytes the server sent before it ended"),
        Column("tls_version", "text", "the version agreed (TLSv1.3, ...)"), Column("cipher", "text", "the cipher agreed"),
        Column("alpn", "text", "the application protocol agreed (h2, http/1.1)"),
        Column("cert_valid", "bool", "true when the certificate validates for server_name"), Column("cert_failure", "text"),
        Column("cert_checked_at", "timestamp"), Column("leaf_subject", "text", "the server certificate's subject"),
        Column("leaf_issuer", "text", "its issuer"), Column("leaf_sha256", "text", "SHA-256 of its DER"),
        Column("peer_certificates", ListOf(_CERTIFICATE), "the whole chain presented"),
    )),
    ExportTable("http_requests", "Every HTTP request, redirects and the plain-HTTP fallback included.", (
        Column("request_id", "text", "the request"), _MID, *_RUN_COLUMNS, _SIDE, Column("kind", "text"),
        Column("hop", "int"), Column("url", "text", "the URL asked for"), Column("method", "text", "GET, ..."),
        Column("address", "text", "ip:port connected to"), _STARTED, _DURATION, _FAILURE,
        Column("status", "int", "the HTTP status code"), Column("reason", "text", "the reason phrase"),
        Column("http_version", "text", "HTTP/1.1, ..."), Column("headers", ListOf(_HEADER), "the response headers, in order"),
        Column("location", "text", "the Location header of a redirect"),
        Column("body_length", "int", "bytes of body that came"),
        Column("body_truncated", "bool", "true when the body was cut at the size limit"),
        Column("body_sha256", "text"), Column("title", "text"),
        Column("attempted", "bool", "false when the request was never sent: every address it would connect to "
                                    "had already timed out in the TCP step, and the row stands for that timeout"),
        Column("body_head", "bytes", "the first 64 KiB of the body, not compressed (the volunteer's address "
                                     "replaced unless the run had --store-ip)"),
    )),
    ExportTable("control_results", "What the control helper answered for each measurement.", (
        _MID, *_RUN_COLUMNS, Column("control_url", "text", "the control helper asked"), _STARTED, _DURATION, _FAILURE,
        Column("attempts", "int"),
        Column("reason", "text"), Column("raw", "json", "JSON text: the helper's answer, verbatim"),
    )),
)}


def column_doc(table: str, column: Column) -> str:
    """What a column holds: its own words, else those `probe browse` shows for it."""
    if column.doc:
        return column.doc
    return BROWSE_TABLES.get(table, ("", {}))[1].get(column.name, "")


# --- conforming values to their types -------------------------------------------------


def _scalar(value: Any, t: str) -> Any:
    if value is None:
        return None
    if t in ("text", "timestamp"):
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if t == "int":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        return None
    if t == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) if math.isfinite(value) else None
        return None
    if t == "bool":
        return bool(value) if isinstance(value, (int, float)) else None
    if t == "bytes":
        return value if isinstance(value, bytes) else None
    if t == "json":
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    raise ValueError(f"unknown column type {t!r}")


def conform(value: Any, t: FieldType) -> Any:
    """``value`` shaped exactly as ``t`` says: a struct has its keys and no others, a
    list its items' type; what cannot be that type is null. Why: the writers take
    the schema at its word (Parquet refuses a stray key or a string in an int), and
    a database may hold rows written by an older probe or an import."""
    if value is None:
        return None
    if isinstance(t, ListOf):
        return [conform(v, t.item) for v in value] if isinstance(value, list) else None
    if isinstance(t, StructOf):
        if not isinstance(value, dict):
            return None
        return {name: conform(value.get(name), ft) for name, ft in t.fields}
    return _scalar(value, t)


def _json(text: Any) -> Any:
    """Stored JSON text, decoded; None for none, or for text that is not JSON (which
    no typed column could hold)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _headers(text: Any) -> Any:
    pairs = _json(text)
    if not isinstance(pairs, list):
        return None
    return [{"name": p[0], "value": p[1]} for p in pairs if isinstance(p, (list, tuple)) and len(p) == 2]


def _evidence_lines(text: Any) -> Any:
    items = _json(text)
    if not isinstance(items, list):
        return None
    lines = []
    for e in items:
        line = e.get("text") if isinstance(e, dict) else e
        if line:
            lines.append(str(line))
    return lines


def _body_head(blob: Any) -> bytes | None:
    """The stored gzip of a body's first bytes, decompressed (what came, what a
    researcher fingerprints); a blob that is not gzip is exported as it is."""
    if not blob:
        return None
    try:
        return gzip.decompress(blob)
    except (OSError, EOFError, zlib.error):
        return bytes(blob)


# Columns whose stored form is not their exported form; the rest are conformed from
# their stored value (JSON text decoded first for lists and structs).
_DECODERS: dict[tuple[str, str], Callable[[Any], Any]] = {
    ("measurements", "evidence"): _evidence_lines,
    ("http_requests", "headers"): _headers,
    ("http_requests", "body_head"): _body_head,
}


def _decoder(table: str, column: Column) -> Callable[[Any], Any]:
    custom = _DECODERS.get((table, column.name))
    t = column.type
    if custom is not None:
        return lambda raw: conform(custom(raw), t)
    if isinstance(t, (ListOf, StructOf)):
        return lambda raw: conform(_json(raw), t)
    return lambda raw: conform(raw, t)


# --- the SELECTs -----------------------------------------------------------------------


def _observations_sql(table: str) -> str:
    spec = EXPORT_TABLES[table]
    joined = {"run_id": "m.run_id", "cc": "r.cc", "asn": "r.asn"}
    cols = ", ".join(joined.get(c, f"t.[{c}]") + f" as [{c}]" for c in spec.column_names())
    return (f"select {cols} from [{table}] t join measurements m on m.measurement_id = t.measurement_id "
            "left join runs r on r.run_id = m.run_id order by t.rowid")


def _judged(column: str) -> str:
    """A verdict's JSON list column: empty when the verdict has none, null when there
    is no verdict (not judged yet is not "no evidence")."""
    return f"case when v.measurement_id is null then null else coalesce({column}, '[]') end"


def _measurements_sql(versions: list[str]) -> tuple[str, list[Any]]:
    """Every measurement, with the verdict of the newest classifier version that judged
    it: versions ranked in Python's order (``version_key``), the newest picked per
    measurement through the verdicts' primary key."""
    params: list[Any] = [x for i, v in enumerate(versions) for x in (v, i)]
    rank = "case w.classifier_version " + " ".join("when ? then ?" for _ in versions) + " else -1 end"
    newest = (f"(select w.classifier_version from verdicts w where w.measurement_id = m.measurement_id "
              f"order by {rank} desc limit 1)") if versions else "null"  # no verdicts at all: nothing to join
    sql = f"""
        select m.measurement_id, m.run_id, m.url, m.hostname as domain, m.scheme, m.port, m.category,
               m.started_at, m.finished_at, m.duration_ms, r.cc, r.asn, r.network_name, r.probe_version,
               v.classifier_version, v.verdict, v.blocked, v.confidence, v.layer, v.rule_id,
               {_judged("v.tags")} as tags, {_judged("v.evidence")} as evidence,
               {_judged("v.evidence")} as evidence_json, m.control_failure, m.network_epoch, m.network_changed,
               m.addresses
        from measurements m
        left join runs r on r.run_id = m.run_id
        left join verdicts v on v.measurement_id = m.measurement_id and v.classifier_version = {newest}
        order by m.rowid
    """
    return sql, params


def _raw_rows(db: sqlite_utils.Database, table: str) -> Iterator[dict[str, Any]]:
    """The rows as stored (joined, not yet decoded), streamed from one cursor."""
    if table == "runs":
        cursor = db.conn.execute("select * from runs order by rowid")
        names = [d[0] for d in cursor.description]
        for values in cursor:
            yield public_run(dict(zip(names, values, strict=True)))
        return
    if table == "measurements":
        sql, params = _measurements_sql(classifier_versions(db))
    else:
        sql, params = _observations_sql(table), []
    cursor = db.conn.execute(sql, params)
    names = [d[0] for d in cursor.description]
    for values in cursor:
        yield dict(zip(names, values, strict=True))


def _size(row: dict[str, Any]) -> int:
    return sum(len(v) for v in row.values() if isinstance(v, (str, bytes))) + 8 * len(row)


def export_chunks(db: sqlite_utils.Database, table: str, *, chunk_rows: int = CHUNK_ROWS,
                  chunk_bytes: int = CHUNK_BYTES) -> Iterator[list[dict[str, Any]]]:
    """The rows of one exported table (a key of ``EXPORT_TABLES``), in chunks of at most
    ``chunk_rows`` rows and about ``chunk_bytes`` bytes, each row a dict of exactly the
    table's columns, conformed to their types. Memory stays flat however large the
    database: one cursor, one chunk at a time."""
    spec = EXPORT_TABLES[table]
    decoders = [(c.name, _decoder(table, c)) for c in spec.columns]
    chunk: list[dict[str, Any]] = []
    size = 0
    for raw in _raw_rows(db, table):
        size += _size(raw)
        chunk.append({name: decode(raw.get(name)) for name, decode in decoders})
        if len(chunk) >= chunk_rows or size >= chunk_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


@contextlib.contextmanager
def snapshot(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """One read transaction around a whole export: every file shows the database at the
    same instant, even while a collector keeps writing to it (WAL readers see the
    snapshot their transaction started with). Nothing is written."""
    if db.conn.in_transaction:
        yield db
        return
    db.conn.execute("BEGIN")
    try:
        yield db
    finally:
        with contextlib.suppress(Exception):
            db.conn.rollback()
