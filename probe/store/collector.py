"""The rows of many vantage points in one place (issue 9): a volunteer's record of what
was uploaded where, and a collector's tokens, received batches, uploaders, verdicts
across networks, blocking events and webhook deliveries.

Why here: the store is the one SQL gateway. Everything is plain dicts in and out; the
collector's server and the upload client (``probe.collector``) decide, this module
only keeps.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

import sqlite_utils

from probe.core.bundle import Bundle
from probe.core.records import utcnow
from probe.store.bundles import save_bundle
from probe.store.schema import writing

# Ids asked about in one SQL statement (SQLite's default limit on variables is 32,766).
CHUNK = 500


def _chunks(ids: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


# --- tokens (collector) ----------------------------------------------------------------


class TokenError(ValueError):
    """A token name taken, or unknown: one line."""


def token_hash(token: str) -> str:
    """SHA-256 of the token: a random 32-byte token needs no slow hash, and the
    database then holds nothing that lets anyone upload."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add_token(db: sqlite_utils.Database, name: str) -> str:
    """A new random token for ``name`` (shown once; only its hash is kept). A revoked
    name may be given a new token; a live one may not (revoke it first)."""
    token = secrets.token_urlsafe(32)
    with writing(db):
        row = db.execute("select revoked_at from tokens where name = ?", [name]).fetchone()
        if row is not None and row[0] is None:
            raise TokenError(f"a token named {name!r} exists; revoke it first to replace it")
        db.table("tokens").upsert({"name": name, "token_sha256": token_hash(token), "created_at": utcnow(),
                                   "revoked_at": None}, pk="name")
    return token


def revoke_token(db: sqlite_utils.Database, name: str) -> bool:
    """Revoke a token; False when there is no live token of that name."""
    with writing(db):
        cur = db.execute("update tokens set revoked_at = ? where name = ? and revoked_at is null", [utcnow(), name])
        return cur.rowcount > 0


def list_tokens(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every token's name, when it was made and revoked, and what its holder sent."""
    return list(db.query(
        "select t.name, t.created_at, t.revoked_at, "
        "(select count(*) from collected c where c.uploader = t.name) as measurements, "
        "(select max(received_at) from batches b where b.uploader = t.name) as last_upload "
        "from tokens t order by t.name"))


def token_owner(db: sqlite_utils.Database, token: str) -> tuple[str, bool] | None:
    """(name, revoked) of the token's holder, or None for a token never issued."""
    row = db.execute("select name, revoked_at from tokens where token_sha256 = ?", [token_hash(token)]).fetchone()
    return None if row is None else (row[0], row[1] is not None)


# --- batches (collector) ---------------------------------------------------------------


def known_ids(db: sqlite_utils.Database, ids: Sequence[str]) -> list[str]:
    """The measurement ids among ``ids`` that this database holds already."""
    found: list[str] = []
    for chunk in _chunks(list(ids)):
        found += [r[0] for r in db.execute(
            f"select measurement_id from measurements where measurement_id in ({','.join('?' * len(chunk))})", chunk)]
    return found


def save_batch(db: sqlite_utils.Database, batch_id: str, uploader: str, probe_version: str | None,
               bundles: Sequence[Bundle], classifier_version: str | None = None) -> tuple[list[str], list[str]]:
    """Store a checked batch in ONE write transaction (WAL): a collector killed in the
    middle keeps the whole batch or none of it. Returns (accepted, duplicates): a
    measurement already held, from this batch sent again or from anywhere, is a
    duplicate and is not written twice. BundleError (nothing written) when a bundle
    reuses another measurement's record ids."""
    accepted: list[str] = []
    duplicates: list[str] = []
    now = utcnow()
    seen: set[str] = set()
    with writing(db):
        for b in bundles:
            mid = b.measurement.measurement_id
            if mid in seen:
                duplicates.append(mid)
                continue
            seen.add(mid)
            if save_bundle(db, b):
                accepted.append(mid)
                db.table("collected").insert({"measurement_id": mid, "uploader": uploader, "batch_id": batch_id,
                                              "received_at": now})
            else:
                duplicates.append(mid)
        db.table("batches").upsert({"batch_id": batch_id, "uploader": uploader, "received_at": now,
                                    "probe_version": probe_version, "classifier_version": classifier_version,
                                    "bundles": len(bundles),
                                    "accepted": len(accepted), "duplicates": len(duplicates)}, pk="batch_id")
    return accepted, duplicates


def uploaders(db: sqlite_utils.Database) -> dict[str, str]:
    """measurement id -> the token name that sent it (collector)."""
    return {r[0]: r[1] for r in db.execute("select measurement_id, uploader from collected")}


# --- uploads (volunteer) ---------------------------------------------------------------


def not_uploaded(db: sqlite_utils.Database, collector: str) -> list[str]:
    """Measurement ids not yet acknowledged by ``collector``, oldest first. Only whole
    measurements are in ``measurements`` (one transaction each), so all are ready."""
    return [r[0] for r in db.execute(
        "select m.measurement_id from measurements m where not exists (select 1 from uploads u "
        "where u.measurement_id = m.measurement_id and u.collector = ?) order by m.started_at, m.measurement_id",
        [collector])]


def record_uploads(db: sqlite_utils.Database, collector: str, batch_id: str, ids: Iterable[str]) -> int:
    """Remember that ``collector`` acknowledged these measurements (one transaction)."""
    now = utcnow()
    rows = [{"measurement_id": mid, "collector": collector, "batch_id": batch_id, "uploaded_at": now} for mid in ids]
    with writing(db):
        db.table("uploads").upsert_all(rows, pk=("measurement_id", "collector"))
    return len(rows)


def upload_history(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """What was sent, when and where: one row per batch, newest first."""
    if "uploads" not in db.table_names():
        return []
    return list(db.query(
        "select collector, batch_id, min(uploaded_at) as uploaded_at, count(*) as measurements "
        "from uploads group by collector, batch_id order by uploaded_at desc, batch_id"))


# --- verdicts across networks and events (collector) -----------------------------------


def save_cross_verdicts(db: sqlite_utils.Database, rows: list[dict[str, Any]]) -> int:
    """Upsert verdicts across networks (one per measurement and cross version)."""
    with writing(db):
        db.table("cross_verdicts").upsert_all(rows, pk=("measurement_id", "cross_version"))
    return len(rows)


def save_events(db: sqlite_utils.Database, events: Iterable[dict[str, Any]]) -> list[str]:
    """Store the events not stored yet (an event's id is stable, so detecting again
    after more data finds the same ones); returns the new ids. An event once published
    is kept: later data does not unpublish it. Each new event is queued for every
    webhook, in the same transaction."""
    new: list[str] = []
    now = utcnow()
    with writing(db):
        hooks = [r[0] for r in db.execute("select url from webhooks")]
        for e in events:
            if db.execute("select 1 from events where event_id = ?", [e["event_id"]]).fetchone():
                continue
            row = {**e, "measurement_ids": json.dumps(e.get("measurement_ids") or []),
                   "evidence": json.dumps(e.get("evidence") or [], ensure_ascii=False), "detected_at": now}
            db.table("events").insert(row)
            new.append(e["event_id"])
            for url in hooks:
                db.table("webhook_deliveries").insert({"event_id": e["event_id"], "url": url, "attempts": 0,
                                                       "next_attempt_at": now})
    return new


def _event(row: dict[str, Any]) -> dict[str, Any]:
    row["measurement_ids"] = json.loads(row["measurement_ids"] or "[]")
    row["evidence"] = json.loads(row["evidence"] or "[]")
    return row


def list_events(db: sqlite_utils.Database, limit: int | None = None) -> list[dict[str, Any]]:
    """Stored events, newest confirmed first."""
    if "events" not in db.table_names():
        return []
    sql = "select * from events order by confirmed_at desc, event_id"
    if limit:
        sql += f" limit {int(limit)}"
    return [_event(r) for r in db.query(sql)]


def get_event(db: sqlite_utils.Database, event_id: str) -> dict[str, Any] | None:
    row = next(iter(db.query("select * from events where event_id = ?", [event_id])), None)
    return None if row is None else _event(row)


# --- webhooks (collector) --------------------------------------------------------------


def add_webhook(db: sqlite_utils.Database, url: str) -> bool:
    with writing(db):
        if db.execute("select 1 from webhooks where url = ?", [url]).fetchone():
            return False
        db.table("webhooks").insert({"url": url, "added_at": utcnow()})
    return True


def remove_webhook(db: sqlite_utils.Database, url: str) -> bool:
    with writing(db):
        db.execute("delete from webhook_deliveries where url = ? and delivered_at is null", [url])
        return db.execute("delete from webhooks where url = ?", [url]).rowcount > 0


def list_webhooks(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    return list(db.query(
        "select w.url, w.added_at, "
        "(select count(*) from webhook_deliveries d where d.url = w.url and d.delivered_at is not null) as delivered, "
        "(select count(*) from webhook_deliveries d where d.url = w.url and d.delivered_at is null "
        "and d.gave_up_at is null) as pending, "
        "(select count(*) from webhook_deliveries d where d.url = w.url and d.gave_up_at is not null) as failed "
        "from webhooks w order by w.url"))


def due_deliveries(db: sqlite_utils.Database, now: str, limit: int = 50) -> list[dict[str, Any]]:
    """Deliveries whose time has come (not delivered, not given up)."""
    return list(db.query(
        "select * from webhook_deliveries where delivered_at is null and gave_up_at is null "
        "and next_attempt_at <= ? order by next_attempt_at limit ?", [now, limit]))


def mark_delivery(db: sqlite_utils.Database, event_id: str, url: str, *, delivered: bool, error: str | None = None,
                  next_attempt_at: str | None = None, give_up: bool = False) -> None:
    """One attempt's outcome: delivered, retried later, or given up."""
    now = utcnow()
    with writing(db):
        db.execute(
            "update webhook_deliveries set attempts = attempts + 1, delivered_at = ?, last_error = ?, "
            "next_attempt_at = coalesce(?, next_attempt_at), gave_up_at = ? where event_id = ? and url = ?",
            [now if delivered else None, error, next_attempt_at, now if give_up else None, event_id, url])

