"""Pacing: how fast a run may be towards any one server, and how it starts.

A faster run must never look like a burst at one server: many targets of a list share
an address (a CDN, a hosting company, one publisher's sites), and a volunteer's
probe opening dozens of connections to it at once is both rude and conspicuous, and
can itself trigger rate limits that would then read as blocking. So connections to one
IP address are capped (``HostLimiter``), and the workers of a run start spread over a
short moment rather than all in the same instant (``start_delay``).

Waiting for a slot happens before a step's stopwatch and timeout start: a step that
waited for its turn is never recorded as slow, and never times out for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Iterable

# At most this many connections (TCP connects, TLS handshakes, page fetches) to one IP
# address at once, over the whole run. Why 4: one target opens two at once (ports 80
# and 443), so two targets on one address still go side by side, while 32 workers on a
# CDN's address do not become 64 simultaneous connections (browsers allow 6 per host).
PER_HOST_CONNECTIONS = 4

# The workers of a run start at random moments within this many seconds: a short
# spread, so that a run's first connections are not one burst (and so that the pool
# settles into staggered targets). Small next to any target's own time.
START_SPREAD_S = 0.5


class HostLimiter:
    """A semaphore per IP address, created when first needed and dropped when idle, so
    that memory stays flat over a list of any length."""

    def __init__(self, per_host: int = PER_HOST_CONNECTIONS):
        self.per_host = max(1, per_host)
        self._slots: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, ip: str) -> AsyncIterator[None]:
        """One connection's slot for ``ip`` while the block runs."""
        sem, users = self._slots.setdefault(ip, (asyncio.Semaphore(self.per_host), [0]))
        users[0] += 1
        try:
            async with sem:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                self._slots.pop(ip, None)

    @contextlib.asynccontextmanager
    async def hold_all(self, ips: Iterable[str]) -> AsyncIterator[None]:
        """A slot on each address a fetch may connect to, taken in a fixed (sorted)
        order so that two fetches sharing addresses can never wait on each other."""
        async with contextlib.AsyncExitStack() as stack:
            for ip in sorted(set(ips)):
                await stack.enter_async_context(self.hold(ip))
            yield


def start_delay(spread: float = START_SPREAD_S, rng: random.Random | None = None) -> float:
    """How long one worker waits before its first target: uniform in [0, spread)."""
    return (rng or random).uniform(0.0, spread) if spread > 0 else 0.0
