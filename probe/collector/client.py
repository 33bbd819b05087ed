"""`probe upload`: send the measurements a collector does not have yet, in gzip JSON
batches, and remember each acknowledgement in the volunteer's database.

Resumable by construction: before sending, the client asks the collector which ids it
holds (an earlier upload whose acknowledgement was lost) and records them; then each
batch is recorded the moment the collector acknowledges it. A dropped connection, a
killed process or a full collector cost at most the batch in flight, and a batch sent
twice is harmless (the collector counts it as duplicates).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import sqlite_utils

from probe import __version__, store
from probe.collector.service import BATCH_VERSION, MAX_KNOWN_IDS
from probe.core.i18n import _
from probe.core.verdicts import CLASSIFIER_VERSION

# A batch is cut at this many bundles or this much JSON, whichever comes first: at most
# 8 MiB JSON compresses below the collector's 8 MiB limit even for incompressible pages.
BATCH_BUNDLES = 200
BATCH_JSON_BYTES = 6 * 1024 * 1024
# Each request: connecting, and the whole exchange (a slow uplink sends 6 MiB in 60 s at
# 800 kbit/s).
CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 120.0
# A request that fails for a passing reason (connection lost, 5xx, 429) is tried again
# after 1, 2, 4 s; then the upload stops and `probe upload` resumes later.
RETRIES = 3
MAX_RETRY_AFTER_S = 60.0


class UploadError(Exception):
    """Why an upload stopped: one line (what is already sent stays recorded)."""


@dataclass
class UploadResult:
    collector: str
    sent: int = 0
    duplicates: int = 0
    already: int = 0
    batches: int = 0
    pending: int = 0


def batches_of(db: sqlite_utils.Database, ids: list[str]) -> Iterator[tuple[list[str], bytes]]:
    """(ids, gzip body) per batch, built one at a time: memory holds one batch."""
    chunk: list[str] = []
    parts: list[str] = []
    size = 0
    for mid in ids:
        text = json.dumps(store.bundle(db, mid), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        if chunk and (len(chunk) >= BATCH_BUNDLES or size + len(text) > BATCH_JSON_BYTES):
            yield chunk, _body(parts)
            chunk, parts, size = [], [], 0
        chunk.append(mid)
        parts.append(text)
        size += len(text)
    if chunk:
        yield chunk, _body(parts)


def _body(parts: list[str]) -> bytes:
    head = json.dumps({"batch_version": BATCH_VERSION, "batch_id": str(uuid.uuid4()), "probe_version": __version__,
                       "classifier_version": CLASSIFIER_VERSION})
    text = head[:-1] + ',"bundles":[' + ",".join(parts) + "]}"
    return gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)


def _reason(status: int, body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("reason"), str):
        return str(body["reason"])[:300]
    return f"HTTP {status}"


async def _post(session: aiohttp.ClientSession, url: str, data: bytes, headers: dict[str, str]) -> Any:
    """POST, retrying passing failures; the JSON answer, or UploadError."""
    last = ""
    for attempt in range(RETRIES + 1):
        if attempt:
            await asyncio.sleep(min(2 ** (attempt - 1), MAX_RETRY_AFTER_S))
        try:
            async with session.post(url, data=data, headers=headers) as resp:
                try:
                    body = await resp.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    body = None
                if resp.status == 200 and isinstance(body, dict):
                    return body
                reason = _reason(resp.status, body)
                if resp.status == 429:
                    wait = float(resp.headers.get("Retry-After", "5") or 5)
                    last = reason
                    await asyncio.sleep(min(wait, MAX_RETRY_AFTER_S))
                    continue
                if resp.status >= 500:
                    last = reason
                    continue
                raise UploadError(_("the collector refused the upload: {reason} (HTTP {status})").format(
                    reason=reason, status=resp.status))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            last = str(exc) or type(exc).__name__
    raise UploadError(_("the collector could not be reached ({reason}); what was sent is recorded, "
                        "`probe upload` goes on from there").format(reason=last))


async def upload(db: sqlite_utils.Database, collector: str, token: str,
                 progress: Callable[[UploadResult], None] | None = None) -> UploadResult:
    """Send every measurement of ``db`` that ``collector`` has not acknowledged."""
    base = collector.rstrip("/")
    result = UploadResult(collector=base)
    ids = store.not_uploaded(db, base)
    if not ids:
        return result
    headers = {"Authorization": f"Bearer {token}", "User-Agent": f"bynet-probe/{__version__}"}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        held: set[str] = set()
        for start in range(0, len(ids), MAX_KNOWN_IDS):
            chunk = ids[start:start + MAX_KNOWN_IDS]
            body = await _post(session, f"{base}/api/v1/known", json.dumps({"ids": chunk}).encode(),
                               {**headers, "Content-Type": "application/json"})
            held |= set(body.get("known") or []) & set(chunk)
        if held:
            store.record_uploads(db, base, "known", sorted(held))
            result.already = len(held)
        todo = [mid for mid in ids if mid not in held]
        result.pending = len(todo)
        for chunk, data in batches_of(db, todo):
            body = await _post(session, f"{base}/api/v1/batches", data,
                               {**headers, "Content-Type": "application/json", "Content-Encoding": "gzip"})
            acked = (set(body.get("accepted") or []) | set(body.get("duplicates") or [])) & set(chunk)
            store.record_uploads(db, base, str(body.get("batch_id") or "?"), sorted(acked))
            result.sent += len(set(body.get("accepted") or []) & set(chunk))
            result.duplicates += len(set(body.get("duplicates") or []) & set(chunk))
            result.batches += 1
            result.pending -= len(acked)
            if progress is not None:
                progress(result)
    return result
