"""What a collector does with an upload, without the network: check the token, read a
batch (gzip JSON, bounded), store it in one transaction, then judge what it touched:
each new measurement by the classifier, every measurement of the same URLs across
networks, and the blocking events those verdicts show.

Why apart from the server: every step is a plain call on a database, so it is tested
without sockets, and the server runs all of them on one thread that owns the
connection (SQLite writes are serial anyway; the event loop never waits on disk).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from probe import store
from probe.analysis.analyze import analyze_db
from probe.analysis.crossnet import CROSSNET_VERSION, apply_crossnet, judge_across
from probe.analysis.events import detect_events, event_to_json, filter_events
from probe.analysis.fingerprints import FingerprintDB, default_fingerprints
from probe.core.bundle import BUNDLE_VERSION, Bundle, BundleError, read_bundle
from probe.core.records import utcnow
from probe.core.verdicts import CLASSIFIER_VERSION

# The batch format (docs/collector.md); a newer one is refused with 422, not misread.
BATCH_VERSION = 1
MAX_BATCH_COMPRESSED = 8 * 1024 * 1024
MAX_BATCH_BYTES = 64 * 1024 * 1024
MAX_BATCH_BUNDLES = 500
MAX_KNOWN_IDS = 5000
MAX_TOKEN_CHARS = 200


class CollectorError(Exception):
    """A refused request: HTTP status, a code word and one line, changing nothing."""

    def __init__(self, status: int, code: str, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.status, self.code, self.reason, self.retry_after = status, code, reason, retry_after

    def body(self) -> dict[str, str]:
        return {"error": self.code, "reason": self.reason}


def unauthenticated(reason: str) -> CollectorError:
    return CollectorError(401, "unauthenticated", reason)


@dataclass
class CollectorConfig:
    """A collector's limits (docs/collector.md); the defaults are what `probe collector
    serve` runs with."""

    max_compressed: int = MAX_BATCH_COMPRESSED
    max_uncompressed: int = MAX_BATCH_BYTES
    max_bundles: int = MAX_BATCH_BUNDLES
    # per token: a burst of this many requests, then this many a minute
    burst: int = 30
    per_minute: int = 120
    lab_networks: tuple[str, ...] = ()
    # webhooks: first retry after this many seconds, doubling, this many attempts in all
    webhook_retry_s: float = 5.0
    webhook_attempts: int = 8
    webhook_timeout_s: float = 10.0


@dataclass
class BatchResult:
    batch_id: str
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "accepted": self.accepted, "duplicates": self.duplicates}


def decompress(data: bytes, max_bytes: int) -> bytes:
    """gzip -> bytes, stopping at ``max_bytes`` (a gzip bomb is refused at the limit,
    not inflated to the end)."""
    try:
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        text = inflate.decompress(data, max_bytes)
        if inflate.unconsumed_tail:
            raise CollectorError(413, "too_large", f"more than {max_bytes} bytes uncompressed")
        if not inflate.eof:
            raise CollectorError(400, "malformed", "truncated gzip")
        return text
    except zlib.error:
        raise CollectorError(400, "malformed", "not gzip") from None


def _int(value: Any) -> int | None:
    """An integer version field, or None (JSON true is not 1 here)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class Batch:
    """A checked batch: its id, the sender's probe and classifier versions, its bundles."""

    batch_id: str
    probe_version: str | None
    classifier_version: str | None
    bundles: list[Bundle]


def _short_text(batch: dict[str, Any], key: str) -> str | None:
    value = batch.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > 64):
        raise CollectorError(400, "malformed", f"{key}: not a short string")
    return value


def parse_batch(data: bytes, config: CollectorConfig) -> Batch:
    """A gzip JSON batch, checked, or CollectorError with the first thing wrong.
    Pure: nothing is written."""
    if len(data) > config.max_compressed:
        raise CollectorError(413, "too_large", f"more than {config.max_compressed} bytes compressed")
    text = decompress(data, config.max_uncompressed)
    try:
        batch = json.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise CollectorError(400, "malformed", "not UTF-8") from None
    except RecursionError:
        raise CollectorError(400, "malformed", "nested too deep") from None
    except ValueError:
        raise CollectorError(400, "malformed", "not JSON") from None
    if not isinstance(batch, dict):
        raise CollectorError(400, "malformed", "a batch is a JSON object")
    version = _int(batch.get("batch_version"))
    if version is None or version < 1:
        raise CollectorError(400, "malformed", "batch_version: missing or not a positive integer")
    if version > BATCH_VERSION:
        raise CollectorError(422, "newer_schema", f"batch version {version} is newer than this collector reads "
                                                  f"({BATCH_VERSION}); the collector needs an upgrade")
    batch_id = batch.get("batch_id")
    if not isinstance(batch_id, str) or not 1 <= len(batch_id) <= 64:
        raise CollectorError(400, "malformed", "batch_id: missing or not a short string")
    probe_version = _short_text(batch, "probe_version")
    classifier_version = _short_text(batch, "classifier_version")
    items = batch.get("bundles")
    if not isinstance(items, list):
        raise CollectorError(400, "malformed", "bundles: missing or not a list")
    if len(items) > config.max_bundles:
        raise CollectorError(413, "too_large", f"more than {config.max_bundles} bundles in one batch")
    bundles: list[Bundle] = []
    for i, item in enumerate(items):
        v = _int(item.get("bundle_version")) if isinstance(item, dict) else None
        if v is not None and v > BUNDLE_VERSION:
            raise CollectorError(422, "newer_schema", f"bundles[{i}]: bundle version {v} is newer than this "
                                                      f"collector reads ({BUNDLE_VERSION})")
        try:
            bundles.append(read_bundle(item))
        except BundleError as exc:
            raise CollectorError(400, "malformed", f"bundles[{i}]: {exc}") from None
    return Batch(batch_id, probe_version, classifier_version, bundles)


def known_request(data: bytes) -> list[str]:
    """The ids of a ``known`` request ({"ids": [...]}, at most MAX_KNOWN_IDS)."""
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CollectorError(400, "malformed", "not JSON") from None
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) and len(i) <= 64 for i in ids):
        raise CollectorError(400, "malformed", "ids: expected a list of measurement ids")
    if len(ids) > MAX_KNOWN_IDS:
        raise CollectorError(413, "too_large", f"more than {MAX_KNOWN_IDS} ids in one request")
    return ids


class Collector:
    """One collector database and what is done to it. Not thread-safe: the server
    calls it from a single thread."""

    def __init__(self, db_path: str | Path, config: CollectorConfig | None = None,
                 fingerprints: FingerprintDB | None = None):
        self.config = config or CollectorConfig()
        self.db: sqlite_utils.Database = store.open_db(db_path)
        self.fingerprints = fingerprints or default_fingerprints()

    def close(self) -> None:
        store.close(self.db)

    def authenticate(self, header: str | None) -> str:
        """The uploader's name for an ``Authorization: Bearer TOKEN`` header."""
        if not header or not header.startswith("Bearer "):
            raise unauthenticated("no token: send Authorization: Bearer TOKEN (probe collector token add)")
        token = header.removeprefix("Bearer ").strip()
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise unauthenticated("an unknown token")
        owner = store.token_owner(self.db, token)
        if owner is None:
            raise unauthenticated("an unknown token")
        name, revoked = owner
        if revoked:
            raise CollectorError(403, "revoked", "this token was revoked; ask the collector's operator for a new one")
        return name

    def known(self, ids: list[str]) -> list[str]:
        return store.known_ids(self.db, ids)

    def receive(self, uploader: str, batch: Batch) -> BatchResult:
        """Store a checked batch (one transaction), then judge what it brought."""
        try:
            accepted, duplicates = store.save_batch(self.db, batch.batch_id, uploader, batch.probe_version,
                                                    batch.bundles, batch.classifier_version)
        except BundleError as exc:
            raise CollectorError(400, "malformed", str(exc)) from None
        result = BatchResult(batch.batch_id, accepted, duplicates)
        if accepted:
            result.events = self.judge(accepted)
        return result

    def judge(self, ids: Iterable[str]) -> list[str]:
        """Classify these measurements, judge their URLs across networks again, and
        store the events found; returns the ids of new events. Derived rows only: a
        collector killed here re-derives them at start (``catch_up``)."""
        ids = set(ids)
        if not ids:
            return []
        by_run: dict[str, set[str]] = {}
        urls: set[str] = set()
        for mid in ids:
            row = store.measurement_row(self.db, mid)
            if row is None:
                continue
            by_run.setdefault(row["run_id"], set()).add(mid)
            urls.add(row["url"])
        for run_id, mids in by_run.items():
            analyze_db(self.db, fingerprints=self.fingerprints, run_id=run_id, only=mids,
                       lab_networks=self.config.lab_networks)
        return self.judge_urls(sorted(urls))

    def judge_urls(self, urls: list[str] | None) -> list[str]:
        """Verdicts across networks and events for these URLs (None: every URL)."""
        rows = list(store.report_rows(self.db, urls=urls))
        if not rows:
            return []
        crossed = judge_across(rows)
        now = utcnow()
        store.save_cross_verdicts(self.db, [{
            "measurement_id": c.measurement_id, "cross_version": c.cross_version, "verdict": c.verdict,
            "blocked": None if c.blocked is None else int(c.blocked), "confidence": c.confidence,
            "rule_id": c.rule_id, "evidence": json.dumps(c.evidence, ensure_ascii=False, default=str),
            "networks_compared": json.dumps(c.networks_compared), "own_verdict": c.own_verdict,
            "changed": int(c.changed), "judged_at": now} for c in crossed.values()])
        events = detect_events(apply_crossnet(rows, crossed))
        return store.save_events(self.db, [event_to_json(e) for e in events])

    def catch_up(self) -> int:
        """At start: classify what was stored but not judged (a collector killed
        between storing a batch and judging it), and judge every URL across networks
        again. Returns how many measurements were classified."""
        pending: set[str] = set()
        for run_id in store.runs_without_verdicts(self.db, CLASSIFIER_VERSION):
            pending |= {mid for mid, _ in store.measurement_ids(self.db, run_id)
                        if store.latest_verdict(self.db, mid, CLASSIFIER_VERSION) is None}
        runs_of = {mid: (store.measurement_row(self.db, mid) or {}).get("run_id") for mid in pending}
        for run_id in {r for r in runs_of.values() if r}:
            analyze_db(self.db, fingerprints=self.fingerprints, run_id=run_id, only=pending,
                       lab_networks=self.config.lab_networks)
        stale = self.db.execute("select count(*) from measurements m where not exists (select 1 from cross_verdicts c "
                                "where c.measurement_id = m.measurement_id and c.cross_version = ?)",
                                [CROSSNET_VERSION]).fetchone()[0]
        if pending or stale:
            self.judge_urls(None)
        return len(pending)

    def events(self, cc: str | None = None, asn: str | None = None, site: str | None = None,
               limit: int = 200) -> list[dict[str, Any]]:
        found = filter_events(store.list_events(self.db), cc=cc, asn=asn, site=site)[:limit]
        return [e if isinstance(e, dict) else event_to_json(e) for e in found]

    def health(self) -> dict[str, Any]:
        return {"ok": True, "schema": store.SCHEMA_VERSION, "batch_version": BATCH_VERSION,
                "bundle_version": BUNDLE_VERSION}


def config_dict(config: CollectorConfig) -> dict[str, Any]:
    return asdict(config)
