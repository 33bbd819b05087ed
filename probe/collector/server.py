"""The collector's HTTP side (aiohttp): uploads in, feeds out, webhooks told.

| request | answer |
|---|---|
| GET /api/v1/health | {"ok": true, "schema": N, ...} |
| POST /api/v1/known {"ids": [...]} | {"known": [...]} |
| POST /api/v1/batches (gzip JSON) | {"batch_id", "accepted": [...], "duplicates": [...]} |
| GET /events.json, /events.atom ?cc=&asn=&site= | JSON Feed 1.1, Atom 1.0 |

Refusals are JSON {"error", "reason"} with a 4xx status and change nothing
(docs/collector.md). No access log and no client address anywhere: the clients are
volunteers in censored countries. Every database call runs on one thread that owns
the connection; parsing runs on another, so a large batch never stalls the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from probe import __version__, store
from probe.collector.service import (
    Collector,
    CollectorConfig,
    CollectorError,
    known_request,
    parse_batch,
)
from probe.report.feeds import atom_feed, json_feed

log = logging.getLogger("probe.collector")
T = TypeVar("T")

COLLECTOR_KEY = web.AppKey("collector", object)
FEED_LIMIT = 200


class RateLimiter:
    """A token bucket per uploader: ``burst`` requests at once, then ``per_minute``."""

    def __init__(self, burst: int, per_minute: int):
        self.burst, self.rate = burst, per_minute / 60.0
        self.buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float | None = None) -> float:
        """0 when allowed (one request counted), else the seconds to wait."""
        now = time.monotonic() if now is None else now
        level, last = self.buckets.get(key, (float(self.burst), now))
        level = min(float(self.burst), level + (now - last) * self.rate)
        if level >= 1:
            self.buckets[key] = (level - 1, now)
            return 0.0
        self.buckets[key] = (level, now)
        return (1 - level) / self.rate if self.rate else 60.0


class CollectorApp:
    """The state the handlers share: the database thread, the limiter, the config."""

    def __init__(self, db_path: str | Path, config: CollectorConfig):
        self.db_path, self.config = db_path, config
        self.db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collector-db")
        self.limiter = RateLimiter(config.burst, config.per_minute)
        self.collector: Collector | None = None
        self.wake_webhooks = asyncio.Event()

    async def db(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.db_thread, lambda: fn(*args, **kw))

    async def start(self) -> int:
        self.collector = await self.db(Collector, self.db_path, self.config)
        return await self.db(self.collector.catch_up)

    async def stop(self) -> None:
        if self.collector is not None:
            await self.db(self.collector.close)
        self.db_thread.shutdown(wait=True)

    @property
    def c(self) -> Collector:
        assert self.collector is not None
        return self.collector


def _refusal(exc: CollectorError) -> web.Response:
    headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after else None
    return web.json_response(exc.body(), status=exc.status, headers=headers)


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes before reading them all."""
    if request.content_length is not None and request.content_length > limit:
        raise CollectorError(413, "too_large", f"more than {limit} bytes compressed")
    chunks, size = [], 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise CollectorError(413, "too_large", f"more than {limit} bytes compressed")
        chunks.append(chunk)
    return b"".join(chunks)


async def _uploader(app: CollectorApp, request: web.Request) -> str:
    name = await app.db(app.c.authenticate, request.headers.get("Authorization"))
    wait = app.limiter.take(name)
    if wait:
        raise CollectorError(429, "rate_limited", f"too many requests for this token; retry in {wait:.0f} s",
                             retry_after=wait)
    return name


def _handler(fn: Callable[[CollectorApp, web.Request], Any]) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.StreamResponse:
        app: CollectorApp = request.app[COLLECTOR_KEY]  # type: ignore[assignment]
        try:
            return await fn(app, request)
        except CollectorError as exc:
            return _refusal(exc)
        except store.StoreError as exc:
            log.error("storage: %s", exc)
            return web.json_response({"error": "storage", "reason": "the collector cannot store right now"},
                                     status=503, headers={"Retry-After": "30"})
    return handle


async def health(app: CollectorApp, request: web.Request) -> web.Response:
    return web.json_response({**app.c.health(), "version": __version__})


async def known(app: CollectorApp, request: web.Request) -> web.Response:
    await _uploader(app, request)
    ids = known_request(await _read_body(request, 1024 * 1024))
    return web.json_response({"known": await app.db(app.c.known, ids)})


async def batches(app: CollectorApp, request: web.Request) -> web.Response:
    uploader = await _uploader(app, request)
    data = await _read_body(request, app.config.max_compressed)
    batch = await asyncio.to_thread(parse_batch, data, app.config)
    result = await app.db(app.c.receive, uploader, batch)
    if result.events:
        app.wake_webhooks.set()
    return web.json_response(result.body())


def _filters(request: web.Request) -> dict[str, str | None]:
    q = request.query
    return {k: (q.get(k) or None) for k in ("cc", "asn", "site")}


def _urls(request: web.Request, path: str) -> tuple[str, str]:
    base = f"{request.scheme}://{request.host}"
    query = f"?{request.query_string}" if request.query_string else ""
    return f"{base}{path}{query}", f"{base}/"


async def events_json(app: CollectorApp, request: web.Request) -> web.Response:
    events = await app.db(app.c.events, limit=FEED_LIMIT, **_filters(request))
    feed_url, site_url = _urls(request, "/events.json")
    return web.json_response(json_feed(events, feed_url=feed_url, site_url=site_url),
                             content_type="application/feed+json")


async def events_atom(app: CollectorApp, request: web.Request) -> web.Response:
    events = await app.db(app.c.events, limit=FEED_LIMIT, **_filters(request))
    feed_url, site_url = _urls(request, "/events.atom")
    return web.Response(body=atom_feed(events, feed_url=feed_url, site_url=site_url),
                        content_type="application/atom+xml", charset="utf-8")


def make_app(app_state: CollectorApp) -> web.Application:
    app = web.Application(client_max_size=app_state.config.max_compressed + 1)
    app[COLLECTOR_KEY] = app_state
    app.router.add_get("/api/v1/health", _handler(health))
    app.router.add_post("/api/v1/known", _handler(known))
    app.router.add_post("/api/v1/batches", _handler(batches))
    app.router.add_get("/events.json", _handler(events_json))
    app.router.add_get("/events.atom", _handler(events_atom))
    return app


# --- webhooks ----------------------------------------------------------------------------


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def deliver_webhooks(app: CollectorApp, session: aiohttp.ClientSession) -> int:
    """One pass over the deliveries due: POST each event as JSON; a 2xx is delivered,
    anything else is tried again later (doubling from ``webhook_retry_s``) until
    ``webhook_attempts``. Returns how many were attempted."""
    cfg = app.config
    due = await app.db(store.due_deliveries, app.c.db, _iso(datetime.now(UTC)))
    for d in due:
        event = await app.db(store.get_event, app.c.db, d["event_id"])
        if event is None:
            await app.db(store.mark_delivery, app.c.db, d["event_id"], d["url"], delivered=False,
                         error="event gone", give_up=True)
            continue
        error: str | None = None
        try:
            async with session.post(d["url"], json={"type": "bynet-probe.event", "event": event},
                                    headers={"X-Bynet-Probe-Event": d["event_id"]},
                                    timeout=aiohttp.ClientTimeout(total=cfg.webhook_timeout_s)) as resp:
                if not 200 <= resp.status < 300:
                    error = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = type(exc).__name__
        if error is None:
            await app.db(store.mark_delivery, app.c.db, d["event_id"], d["url"], delivered=True)
            continue
        attempts = d["attempts"] + 1
        later = datetime.now(UTC) + timedelta(seconds=cfg.webhook_retry_s * 2 ** (attempts - 1))
        await app.db(store.mark_delivery, app.c.db, d["event_id"], d["url"], delivered=False, error=error,
                     next_attempt_at=_iso(later), give_up=attempts >= cfg.webhook_attempts)
    return len(due)


async def _webhook_loop(app: CollectorApp) -> None:
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                await deliver_webhooks(app, session)
            except store.StoreError as exc:
                log.error("webhooks: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(app.wake_webhooks.wait(), 1.0)
            app.wake_webhooks.clear()


@dataclass
class RunningCollector:
    addresses: list[tuple[Any, ...]]
    state: CollectorApp
    caught_up: int

    @property
    def port(self) -> int:
        return int(self.addresses[0][1])

    @property
    def url(self) -> str:
        host = self.addresses[0][0]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{self.port}"


@contextlib.asynccontextmanager
async def serve_collector(db_path: str | Path, config: CollectorConfig | None = None, host: str = "127.0.0.1",
                          port: int = 0) -> AsyncIterator[RunningCollector]:
    """Serve a collector on host:port until the block ends. It first catches up on
    anything stored but not judged (a collector killed after a batch)."""
    state = CollectorApp(db_path, config or CollectorConfig())
    caught_up = await state.start()
    # auto_decompress off: a gzip body is inflated by parse_batch, which stops at the limit
    runner = web.AppRunner(make_app(state), access_log=None, shutdown_timeout=2.0, auto_decompress=False)
    webhooks: asyncio.Task | None = None
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        server: Any = site._server  # an asyncio.Server: its sockets say which port was given
        addresses = [s.getsockname() for s in server.sockets] if server is not None else []
        webhooks = asyncio.create_task(_webhook_loop(state))
        yield RunningCollector(addresses, state, caught_up)
    finally:
        if webhooks is not None:
            webhooks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await webhooks
        await runner.cleanup()
        await state.stop()
