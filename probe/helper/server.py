"""Serving the control helper to strangers: connections are guarded before aiohttp sees
a request, so that cheap attacks cannot starve the volunteers it is there for.

aiohttp parses requests well, but it bounds nothing that happens before a request
exists. Measured on an unguarded helper: a request whose headers never finish stayed
open for over 200 s, and about 1,020 half-open connections from one address used up a
1,024 file-descriptor limit so that ``/health`` stopped answering. So every connection
passes through ``ConnectionGuard``:

* it is "pending" until its request headers are complete (and again while idle between
  keep-alive requests); a pending connection is closed after ``header_timeout``;
* one address may hold at most ``max_pending_per_address`` pending connections; more
  are closed at once (they never reach aiohttp);
* the helper raises its soft file limit to the hard one and keeps half of it for
  measurements: beyond ``max_connections`` the oldest pending connection is evicted,
  so a new client (and a monitor asking ``/health``) always gets in.

Request bodies are read under their own timeout, before a measurement slot is taken
(``probe.helper.service``): a slow upload holds a connection, never a slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from probe.helper.service import HelperConfig, client_key, is_loopback, make_app

# File descriptors one measurement may hold at once: DNS sockets, a connect per address
# and port, TLS handshakes, the fetch. Measurement slots are sized from this, so that
# a full helper never runs out of descriptors for its own work.
FDS_PER_MEASUREMENT = 24
FD_RESERVE = 64  # the listening socket, logs, the trust store, DNS of the system resolver


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 65536)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


@dataclass
class Budget:
    """How the helper splits its file descriptors: client connections, measurements."""

    fd_limit: int
    max_connections: int
    measurement_slots: int

    @classmethod
    def for_limit(cls, fd_limit: int, config: HelperConfig) -> Budget:
        usable = max(fd_limit - FD_RESERVE, 64)
        connections = max(32, usable // 2)
        slots = max(2, min(config.global_concurrency, (usable - connections) // FDS_PER_MEASUREMENT))
        return cls(fd_limit, connections, slots)


@dataclass(eq=False)
class _Conn:
    key: str
    transport: asyncio.Transport
    opened_at: float
    in_request: int = 0
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def pending(self) -> bool:
        return self.in_request == 0


class ConnectionGuard:
    """Admits, times out and evicts connections; told by the app's middleware when a
    request starts and ends on a connection."""

    def __init__(self, config: HelperConfig, max_connections: int):
        self.config = config
        self.max_connections = max_connections
        self.conns: dict[asyncio.BaseTransport, _Conn] = {}
        self.pending: dict[str, int] = {}
        self.refused = 0  # connections closed on arrival (per-address cap, no room)
        self.evicted = 0  # pending connections closed to make room
        self.timed_out = 0  # pending connections closed by the header timeout

    # --- the connection's life -----------------------------------------------------

    def admit(self, transport: asyncio.Transport) -> bool:
        peer = transport.get_extra_info("peername")
        key = client_key(str(peer[0]) if peer else None)
        proxy = self.config.behind_proxy and is_loopback(str(peer[0]) if peer else None)
        if not proxy and self.pending.get(key, 0) >= self.config.max_pending_per_address:
            return self._refuse(transport)
        if len(self.conns) >= self.max_connections and not self._evict_oldest_pending():
            return self._refuse(transport)
        conn = _Conn(key, transport, asyncio.get_running_loop().time())
        self.conns[transport] = conn
        self.pending[key] = self.pending.get(key, 0) + 1
        self._arm(conn)
        return True

    def lost(self, transport: asyncio.BaseTransport) -> None:
        conn = self.conns.pop(transport, None)
        if conn is None:
            return
        if conn.timer is not None:
            conn.timer.cancel()
        if conn.pending:
            self._unpend(conn.key)

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        conn = self.conns.get(transport) if transport is not None else None
        if conn is None:
            return
        if conn.pending:
            self._unpend(conn.key)
            if conn.timer is not None:
                conn.timer.cancel()
                conn.timer = None
        conn.in_request += 1

    def request_finished(self, transport: asyncio.BaseTransport | None) -> None:
        conn = self.conns.get(transport) if transport is not None else None
        if conn is None or conn.in_request == 0:
            return
        conn.in_request -= 1
        if conn.pending:  # idle on keep-alive: waiting for headers again
            self.pending[conn.key] = self.pending.get(conn.key, 0) + 1
            self._arm(conn)

    # --- helpers ---------------------------------------------------------------------

    def _arm(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        conn.timer = loop.call_later(self.config.header_timeout, self._header_timeout, conn)

    def _header_timeout(self, conn: _Conn) -> None:
        conn.timer = None
        if conn.pending and conn.transport in self.conns:
            self.timed_out += 1
            conn.transport.abort()

    def _unpend(self, key: str) -> None:
        n = self.pending.get(key, 0) - 1
        if n <= 0:
            self.pending.pop(key, None)
        else:
            self.pending[key] = n

    def _evict_oldest_pending(self) -> bool:
        oldest = min((c for c in self.conns.values() if c.pending), key=lambda c: c.opened_at, default=None)
        if oldest is None:
            return False
        self.evicted += 1
        self.lost(oldest.transport)
        oldest.transport.abort()
        return True

    def _refuse(self, transport: asyncio.Transport) -> bool:
        self.refused += 1
        transport.abort()
        return False

    def stats(self) -> dict[str, int]:
        return {"connections": len(self.conns), "pending": sum(self.pending.values()),
                "refused": self.refused, "evicted": self.evicted, "timed_out": self.timed_out}


class _GuardedProtocol(asyncio.Protocol):
    """Stands in front of aiohttp's request handler: asks the guard before anything
    reaches aiohttp, tells it when the connection goes, forwards the rest."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard):
        self.inner = inner
        self.guard = guard
        self.admitted = False
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # a stream server's connection (TCP or TLS)
        self.transport = transport
        self.admitted = self.guard.admit(transport)
        if self.admitted:
            self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.admitted:
            if self.transport is not None:
                self.guard.lost(self.transport)
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()


@dataclass
class RunningHelper:
    """A helper being served: where it listens, and its guard (for tests and logs)."""

    addresses: list[tuple[Any, ...]]
    guard: ConnectionGuard
    budget: Budget
    app: web.Application

    @property
    def port(self) -> int:
        return int(self.addresses[0][1])


@contextlib.asynccontextmanager
async def serve_helper(config: HelperConfig, host: str = "127.0.0.1", port: int = 0, *,
                       ssl_context: Any = None) -> AsyncIterator[RunningHelper]:
    """Serve the helper on host:port until the block ends. No access log: the clients
    are volunteers in censored countries; where they are and what they test is not ours
    to keep."""
    budget = Budget.for_limit(raise_fd_limit(), config)
    guard = ConnectionGuard(config, budget.max_connections)
    app = make_app(config, guard=guard, measurement_slots=budget.measurement_slots)
    # keepalive_timeout: aiohttp's own idle limit, kept in line with the guard's.
    # lingering_time: after refusing a body (408, 413) aiohttp would go on reading it for
    # 10 s before closing; a second is enough for the client to read the refusal.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, keepalive_timeout=config.header_timeout,
                           lingering_time=1.0)
    await runner.setup()
    server = runner.server
    assert server is not None
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: _GuardedProtocol(server(), guard), host, port,
                                        ssl=ssl_context, backlog=1024, reuse_address=True)
    try:
        yield RunningHelper([s.getsockname() for s in listener.sockets], guard, budget, app)
    finally:
        listener.close()
        for conn in list(guard.conns.values()):
            conn.transport.abort()
        await runner.cleanup()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(listener.wait_closed(), 2)

