"""Client for control helpers: the same URL, measured from an open network.

A helper says what it grants each client in ``/health`` (measurements at once, a rate
and a burst); ``ControlClient`` keeps within that, so a probe at any ``--concurrency``
waits for the helper instead of being refused by it. When a refusal comes anyway (429,
503, a connection lost because the helper restarted), the request is retried with
jittered exponential backoff, honouring ``Retry-After``, inside the target's own budget;
what still fails is retried once more at the end of the run (``probe.measure.runner``).

``measure`` never raises for a network or protocol problem: a helper that cannot be
reached, times out, refuses, or answers nonsense gives a ``ControlResult`` whose
``failure`` is ``control_unavailable``, whose ``reason`` says why in one word
(``REASONS``) and whose ``raw["error"]`` says it in one line. A measurement without its
control is still a measurement.

``ControlChain`` puts several helpers in order and falls back to the next when the one
in use becomes unreachable; each ControlResult names the helper that answered.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from probe import __version__
from probe.core import failures as F
from probe.core.i18n import N_
from probe.core.records import ControlResult, Stopwatch, answer_records
from probe.measure.http import BodyTooLarge, read_whole_body

USER_AGENT = f"bynet-probe/{__version__}"
# A helper's answer carries headers and certificate chains, never bodies: a few
# hundred KiB at most. Anything far larger is not an answer we want in memory.
MAX_ANSWER_BYTES = 8 * 1024 * 1024

# Why a control answer was lost, in one word: what the run summary counts.
REASONS = {
    "rate_limited": N_("the helper's per-client limit (429)"),
    "overloaded": N_("the helper was overloaded (503)"),
    "unreachable": N_("the helper could not be reached"),
    "timeout": N_("the helper did not answer in time"),
    "measurement_timeout": N_("the helper's own measurement overran (504)"),
    "body_timeout": N_("the helper did not receive our request in time (408)"),
    "server_error": N_("the helper failed (5xx)"),
    "refused": N_("the helper refused the request (4xx)"),
    "bad_answer": N_("the helper's answer was not usable"),
    "request_lost": N_("the helper answers, but this request got no answer (lost on the way, or dropped by a filter)"),
}
# Retried at once, within the target's budget: the helper asked us to come back, or the
# connection broke before it could answer (a restart, a keep-alive race).
RETRY_NOW = {"rate_limited", "overloaded", "unreachable"}
# A request whose connection broke is retried at once only when it broke fast (a
# keep-alive race, a restart): a connection held open and then closed means the request
# never arrived, and the same request will not arrive the next time either.
FAST_FAILURE_S = 2.0
# When /health does not answer either, the helper is down: it is not asked for this
# long, so that the targets in flight do not all wait for a dead helper.
CIRCUIT_OPEN_S = 10.0
# Worth one more try at the end of the run: nothing about the request was wrong.
TRANSIENT = RETRY_NOW | {"timeout", "measurement_timeout", "body_timeout", "server_error", "request_lost"}


class ControlUnavailable(Exception):
    """The helper cannot be used; the message is a one-line reason."""


def _one_line(text: object, limit: int = 300) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timed out"
    text = str(exc)
    return _one_line(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


class _Failed(Exception):
    """One attempt failed: a reason (REASONS), a one-line detail, maybe a wait."""

    def __init__(self, reason: str, detail: str, retry_after: float | None = None,
                 limits: dict | None = None):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after
        self.limits = limits


def _reason_for_status(status: int) -> str:
    if status == 429:
        return "rate_limited"
    if status == 503:
        return "overloaded"
    if status == 504:
        return "measurement_timeout"
    if status == 408:
        return "body_timeout"
    if status >= 500:
        return "server_error"
    return "refused"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass
class Grant:
    """What a helper allows one client. A helper that does not say (an older one, or
    OONI's) gets what older helpers enforced: 4 at once, 120 a minute."""

    concurrency: int = 4
    rate_per_minute: float = 120.0
    burst: int = 4

    @classmethod
    def from_limits(cls, limits: Any) -> Grant:
        g = cls()
        if isinstance(limits, dict):
            try:
                g.concurrency = max(1, int(limits.get("per_client_concurrency", g.concurrency)))
                g.rate_per_minute = max(1.0, float(limits.get("rate_per_minute", g.rate_per_minute)))
                g.burst = max(1, int(limits.get("burst", g.burst)))
            except (TypeError, ValueError):
                return cls()
        return g

    def describe(self) -> str:
        return f"{self.concurrency} at once, {self.rate_per_minute:g} a minute"


@dataclass
class HelperInfo:
    """What ``/health`` (or a probe of OONI's helper) told about one helper."""

    url: str
    protocol: str  # "bynet" (ours) or "ooni" (OONI's web_connectivity test helper)
    grant: Grant
    version: str | None = None
    rtt_ms: float = 0.0
    # local clock minus the helper's, in seconds (half the round trip allowed for),
    # or None when the helper did not say its time
    clock_skew_s: float | None = None
    raw: dict[str, Any] = field(default_factory=dict)


def split_control_url(url: str) -> tuple[str, str]:
    """(protocol, base URL): ``ooni+https://th.example/`` speaks OONI's test-helper
    protocol, anything else ours."""
    if url.startswith("ooni+"):
        return "ooni", url[len("ooni+"):].rstrip("/")
    return "bynet", url.rstrip("/")


class _Pacer:
    """A token bucket on our side, mirroring the helper's, so that we never ask faster
    than the grant; it is shared by every request to one helper. It starts at the first
    request (as the helper's does) and keeps a margin below the grant: our clock and
    the helper's see each request a little apart."""

    MARGIN = 0.9

    def __init__(self, rate_per_minute: float, burst: int):
        self.rate = rate_per_minute / 60.0 * self.MARGIN
        self.capacity = float(max(1, int(burst * self.MARGIN)))
        self.tokens = self.capacity
        self.last: float | None = None
        self.lock = asyncio.Lock()

    async def take(self) -> None:
        async with self.lock:
            if self.last is None:
                self.last = time.monotonic()
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
                self.last = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self.tokens) / self.rate)

    def drain(self) -> None:
        """The helper said "too fast": start from an empty bucket."""
        self.tokens = 0.0
        self.last = time.monotonic()


class ControlClient:
    """Talks to one helper over one aiohttp session; use as ``async with``."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        retry_budget: float = 60.0,
        concurrency: int | None = None,
    ):
        self.url = base_url.rstrip("/")
        self.protocol, self.base_url = split_control_url(self.url)
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.retry_budget = retry_budget
        self._session: aiohttp.ClientSession | None = None
        self.grant = Grant()
        self.local_concurrency = concurrency
        self._slots = asyncio.Semaphore(self._in_flight_limit())
        self._pacer = _Pacer(self.grant.rate_per_minute, self.grant.burst)
        self._circuit_open_until = 0.0
        self._alive_checked: tuple[float, bool] | None = None  # (when, answer) of the last /health
        self._alive_lock = asyncio.Lock()

    def _in_flight_limit(self) -> int:
        limit = self.grant.concurrency
        return min(limit, self.local_concurrency) if self.local_concurrency else limit

    def use_grant(self, grant: Grant) -> None:
        """Keep within ``grant`` from now on (called with what /health said)."""
        self.grant = grant
        self._slots = asyncio.Semaphore(self._in_flight_limit())
        self._pacer = _Pacer(grant.rate_per_minute, grant.burst)

    async def __aenter__(self) -> ControlClient:
        self._ensure_session()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self.ssl_context if self.ssl_context is not None else True,
                limit=32,
                # below the helper's own idle limit (10 s), so that we never send a
                # request on a connection the helper is closing
                keepalive_timeout=4.0,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                trust_env=False,
            )
        return self._session

    # --- one request -----------------------------------------------------------------

    async def _request(self, method: str, path: str, payload: Any = None,
                       timeout: float | None = None) -> tuple[Any, Any]:
        """One request: the decoded JSON of a 2xx answer and its headers; else _Failed."""
        session = self._ensure_session()
        try:
            async with asyncio.timeout(timeout or self.timeout):
                async with session.request(
                    method, self.base_url + path, json=payload, allow_redirects=False
                ) as resp:
                    try:
                        body = await read_whole_body(resp, MAX_ANSWER_BYTES)
                    except BodyTooLarge as exc:
                        raise _Failed("bad_answer", f"answer too large: {exc}") from None
                    try:
                        data = json.loads(body.decode("utf-8")) if body else None
                    except (UnicodeDecodeError, ValueError, RecursionError):
                        data = None
                        if 200 <= resp.status < 300:
                            raise _Failed("bad_answer", f"HTTP {resp.status} with a body that is not JSON") from None
                    if not 200 <= resp.status < 300:
                        detail = data.get("error") if isinstance(data, dict) else None
                        msg = f"HTTP {resp.status} {resp.reason or ''}".strip()
                        wait = _retry_after(resp.headers.get("Retry-After"))
                        if wait is None and isinstance(data, dict) and isinstance(data.get("retry_after"), (int, float)):
                            wait = float(data["retry_after"])
                        raise _Failed(_reason_for_status(resp.status), f"{msg}: {detail}" if detail else msg, wait,
                                      data.get("limits") if isinstance(data, dict) else None)
                    return data, resp.headers
        except _Failed:
            raise
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            raise _Failed("timeout", f"timed out: no answer within {timeout or self.timeout:g} s") from None
        except (aiohttp.ClientConnectionError, OSError) as exc:
            # refused, reset, closed before an answer, no route: nothing was measured
            raise _Failed("unreachable", _describe(exc)) from None
        except aiohttp.ClientError as exc:
            raise _Failed("bad_answer", _describe(exc)) from None

    async def health(self) -> HelperInfo:
        """Ask the helper what it is and grants; raises ControlUnavailable with a
        one-line reason. Also keeps within its grant from now on."""
        t0 = time.monotonic()
        try:
            if self.protocol == "ooni":
                data, headers = await self._request("GET", "/", timeout=min(self.timeout, 15))
            else:
                data, headers = await self._request("GET", "/health", timeout=min(self.timeout, 15))
        except _Failed as exc:
            raise ControlUnavailable(_one_line(f"{self.url}: {exc.detail}")) from None
        rtt = time.monotonic() - t0
        if self.protocol == "bynet":
            if not isinstance(data, dict) or data.get("status") != "ok":
                raise ControlUnavailable(_one_line(f"{self.url}: unexpected health answer {data!r}"))
            grant = Grant.from_limits(data.get("limits"))
            helper_time = data.get("time")
        else:
            data = data if isinstance(data, dict) else {}
            grant = Grant()  # OONI's helpers publish no limits: stay modest
            helper_time = None
        skew = _clock_skew(helper_time, headers.get("Date") if headers else None, rtt)
        self.use_grant(grant)
        return HelperInfo(self.url, self.protocol, grant, data.get("version") if isinstance(data, dict) else None,
                          round(rtt * 1000, 1), skew, data if isinstance(data, dict) else {})

    async def link_speed(self, budget: float = 4.0) -> float | None:
        """This computer's download speed (bytes/s) from the helper: what a page from the
        open internet can arrive at. Downloads grow (64 KiB, then 512 KiB and 2 MiB while
        they come fast) and each is read whole, so that a slow link is not left full of
        our own bytes when the measurements start (its DNS answers would queue behind
        them). Counted from the first byte: the round trip is not slowness. None when
        the helper does not offer it (OONI's, an older one) or it failed."""
        if self.protocol != "bynet":
            return None
        session = self._ensure_session()
        deadline = time.monotonic() + budget
        speed = None
        for size in (64 * 1024, 512 * 1024, 2 * 1024 * 1024):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            received, first, last = 0, None, None
            try:
                async with asyncio.timeout(left):
                    async with session.get(f"{self.base_url}/v1/bytes", params={"n": str(size)},
                                           allow_redirects=False) as resp:
                        if resp.status != 200:
                            return speed
                        async for chunk in resp.content.iter_chunked(16384):
                            last = time.monotonic()
                            if first is None:
                                first = last
                            else:
                                received += len(chunk)
            except TimeoutError:
                pass
            except (aiohttp.ClientError, OSError):
                return speed
            if first is None or last is None or received < 16384:
                break  # too little to tell a speed from a round trip
            speed = received / max(last - first, 0.01)
            if last - first > 0.5:
                break  # enough to know: a larger download would only fill a slow link
        return speed

    # --- a measurement ---------------------------------------------------------------

    async def _ask(self, url: str, addresses: list[str], timeout: float) -> ControlResult:
        result = ControlResult(control_url=self.url, started_at="", duration_ms=0.0)
        if self.protocol == "ooni":
            from probe.ooni.th import th_request, th_response_to_control

            data, _ = await self._request("POST", "/", th_request(url, addresses), timeout=timeout)
            try:
                return th_response_to_control(data, url, self.url)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise _Failed("bad_answer", f"malformed test-helper answer: {_describe(exc)}") from None
        data, _ = await self._request("POST", "/v1/measure", {"url": url, "addresses": list(addresses)},
                                      timeout=timeout)
        if not isinstance(data, dict):
            raise _Failed("bad_answer", "answer is not a JSON object")
        try:
            result.dns, result.tcp, result.tls, result.http = answer_records(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _Failed("bad_answer", f"malformed records: {_describe(exc)}") from None
        result.raw = data
        return result

    async def measure(self, url: str, addresses: list[str]) -> ControlResult:
        """Ask the helper to measure ``url``; never raises for network/protocol errors.

        Waiting for one of the grant's slots does not count against the target; from
        the first attempt on, retries (after 429, 503 or a lost connection) fit in
        ``retry_budget`` seconds."""
        sw = Stopwatch()
        attempts = 0
        deadline: float | None = None
        backoff = 1.0
        while True:
            if time.monotonic() < self._circuit_open_until:
                return self._failed(sw, attempts, _Failed(
                    "unreachable", "not asked: the helper stopped answering, even /health"))
            async with self._slots:
                await self._pacer.take()
                if deadline is None:
                    deadline = time.monotonic() + self.retry_budget
                attempts += 1
                t_attempt = time.monotonic()
                try:
                    result = await self._ask(url, addresses, self.timeout)
                except _Failed as exc:
                    failure = exc
                else:
                    result.started_at, result.duration_ms, result.attempts = sw.started_at, sw.ms(), attempts
                    return result
            if failure.reason == "unreachable":
                if not await self.alive():
                    self._circuit_open_until = time.monotonic() + CIRCUIT_OPEN_S
                    return self._failed(sw, attempts, failure)
                if time.monotonic() - t_attempt > FAST_FAILURE_S or attempts >= 3:
                    return self._failed(sw, attempts, _Failed("request_lost", f"{REASONS['request_lost']}: "
                                                                             f"{failure.detail}"))
            if failure.reason == "rate_limited":
                self._pacer.drain()
            if failure.limits:
                self._adopt_limits(failure.limits)
            wait = max(backoff, failure.retry_after or 0.0) * random.uniform(1.0, 1.5)
            if failure.reason not in RETRY_NOW or time.monotonic() + wait > deadline:
                return self._failed(sw, attempts, failure)
            await asyncio.sleep(wait)
            backoff = min(backoff * 2, 15.0)

    async def alive(self) -> bool:
        """Does the helper answer /health (or, for OONI's, GET /) right now? Asked at
        most every few seconds, however many requests fail at once; a helper found
        alive closes the circuit."""
        async with self._alive_lock:
            now = time.monotonic()
            if self._alive_checked is not None and now - self._alive_checked[0] < 3.0:
                return self._alive_checked[1]
            try:
                await self._request("GET", "/" if self.protocol == "ooni" else "/health", timeout=5.0)
                ok = True
            except _Failed:
                ok = False
            self._alive_checked = (time.monotonic(), ok)
            if ok:
                self._circuit_open_until = 0.0
            return ok

    def _adopt_limits(self, limits: dict) -> None:
        grant = Grant.from_limits(limits)
        if (grant.concurrency, grant.rate_per_minute) != (self.grant.concurrency, self.grant.rate_per_minute):
            self.use_grant(grant)

    def _failed(self, sw: Stopwatch, attempts: int, failure: _Failed) -> ControlResult:
        result = ControlResult(control_url=self.url, started_at=sw.started_at, duration_ms=sw.ms(),
                               failure=F.CONTROL_UNAVAILABLE, attempts=attempts, reason=failure.reason)
        result.raw = {"error": _one_line(failure.detail), "reason": failure.reason, "attempts": attempts}
        return result


def _parse_utc(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _clock_skew(helper_time: Any, date_header: str | None, rtt: float) -> float | None:
    """Local clock minus the helper's, in seconds: its ``time`` (else its HTTP Date
    header, to the second) was taken about half a round trip before we read it."""
    theirs = _parse_utc(helper_time)
    if theirs is None and date_header:
        try:
            theirs = parsedate_to_datetime(date_header)
        except (TypeError, ValueError):
            theirs = None
    if theirs is None:
        return None
    ours = datetime.now(UTC)
    return round((ours - theirs).total_seconds() - rtt / 2, 3)


class ControlChain:
    """Several helpers in order: the first that works is used; when it becomes
    unreachable during a run, the next ones are tried (a helper found down is asked
    again at most every ``recheck`` seconds)."""

    def __init__(self, clients: list[ControlClient], *, recheck: float = 30.0,
                 on_switch: Callable[[str, str], None] | None = None):
        if not clients:
            raise ValueError("no control helper")
        self.clients = clients
        self.active = 0
        self.recheck = recheck
        self.down_until: dict[int, float] = {}
        self.on_switch = on_switch

    @property
    def url(self) -> str:
        return self.clients[self.active].url

    async def __aenter__(self) -> ControlChain:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        for c in self.clients:
            await c.close()

    async def revive(self) -> None:
        """Ask every helper found down whether it is back (before a retry pass)."""
        for client in self.clients:
            await client.alive()

    async def measure(self, url: str, addresses: list[str]) -> ControlResult:
        first = self.active
        result = await self.clients[first].measure(url, addresses)
        if result.failure is None or result.reason != "unreachable" or len(self.clients) == 1:
            return result
        self.down_until[first] = time.monotonic() + self.recheck
        for i, client in enumerate(self.clients):
            if i == first or self.down_until.get(i, 0) > time.monotonic():
                continue
            try:
                await client.health()
            except ControlUnavailable:
                self.down_until[i] = time.monotonic() + self.recheck
                continue
            if self.active == first:
                self.active = i
                if self.on_switch is not None:
                    self.on_switch(self.clients[first].url, client.url)
            other = await client.measure(url, addresses)
            if other.failure is None:
                other.attempts += result.attempts
                return other
        return result
