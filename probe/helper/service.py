"""The control helper: measures a URL from an uncensored network, on a probe's request.

A maintainer runs it somewhere the web is not filtered. For each URL it measures, the
probe POSTs the URL and the addresses it resolved; the helper resolves the name itself,
connects to its own and the probe's addresses, tries TLS with the URL's name, fetches
the page following redirects, and answers with the very record types the probe keeps
(``probe.core.records``), so analysis compares like with like. Modelled on OONI's oohelperd
(see shared/research/ooni.md 1.3): same steps, same idea of ``ip_info``, load shedding.

It is meant to be exposed on the internet, so it is written as a server that strangers
will poke at:

* It never connects to a loopback, private, link-local or otherwise special address
  unless ``allow_private`` is set (only for the censorship lab). Addresses given by the
  client are refused up front (403); names the helper resolves itself, or that a
  redirect leads to, are checked again just before connecting (a public name that
  resolves to 127.0.0.1 cannot reach inside), and refused ones are recorded with
  ``refused_address`` rather than tried.
* Requests are small and strictly validated; every refusal is a 4xx with a one-line
  JSON ``{"error": ...}``. Each client IP (each /64 for IPv6) has a token-bucket rate
  and a concurrency limit, published in /health and in every 429/503 (with
  Retry-After) so that a probe keeps within them; beyond a global number of
  measurements in flight everyone gets 503 (oohelperd sheds load the same way). A
  body is read whole, under its own timeout, before a slot is taken; connections are
  guarded before aiohttp sees them (``probe.helper.server``). Every request has a hard
  deadline.
* It also speaks OONI's web_connectivity test-helper protocol (``POST /``), so OONI
  Probe users can use it too (``probe.ooni.th``).
* No traceback ever reaches a client; unexpected errors are logged and answered 500.
* It keeps nothing: no request log of URLs, and client IPs only in memory, in the rate
  limiter. (Volunteers in censored countries are the clients: what they test, and from
  where, is sensitive.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from yarl import URL

from probe import __version__
from probe.core import failures as F
from probe.core.addresses import is_ip, split_url, url_of
from probe.core.records import (
    ControlResult,
    HttpRequest,
    Stopwatch,
    answer_records,
    to_jsonable,
    utcnow,
)
from probe.measure import dns as dnsstep
from probe.measure.http import fetch_http, new_session
from probe.measure.url import (
    Contexts,
    ProbeConfig,
    ports_for,
    run_connects,
    run_dns,
    run_handshakes,
)
from probe.ooni.th import THRequestError, parse_th_request, th_answer

log = logging.getLogger("probe.helper.service.service")

ANSWER_VERSION = 1
# What this helper answers: our own protocol (POST /v1/measure) and OONI's
# web_connectivity test-helper request (POST /).
PROTOCOLS = ("bynet-v1", "ooni-th")
MAX_URL_LENGTH = 2048
ALLOWED_KEYS = frozenset({"url", "addresses"})
SERVER_HEADER = f"bynet-helper/{__version__}"

# Ranges Python's ipaddress does not already treat as non-global (or treats
# inconsistently across 3.11 patch releases), refused explicitly.
_EXTRA_BLOCKED = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "100.64.0.0/10",  # CGNAT (RFC 6598)
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "240.0.0.0/4",  # reserved, and 255.255.255.255
        "::/8",  # reserved: unspecified, loopback, IPv4-compatible, NAT64 64:ff9b::/96
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments (Teredo, ORCHID, ...)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 SIDs
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
]


def is_public_address(ip: str) -> bool:
    """True only for a unicast address that is routable on the public internet.

    False for anything that is not an IP address, and for loopback, private (RFC 1918,
    fc00::/7), link-local, multicast, unspecified, reserved, CGNAT, documentation and
    benchmarking ranges; IPv4-mapped and 6to4 IPv6 addresses are judged by the IPv4
    address they embed. Scoped IPv6 addresses (``fe80::1%eth0``) are never public.
    """
    try:
        addr = ipaddress.ip_address(str(ip).strip().strip("[]"))
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id:
            return False
        if addr.ipv4_mapped is not None:
            return is_public_address(str(addr.ipv4_mapped))
        if addr.sixtofour is not None and not is_public_address(str(addr.sixtofour)):
            return False
    if (
        not addr.is_global
        or addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_unspecified
        or addr.is_reserved
    ):
        return False
    return not any(addr.version == net.version and addr in net for net in _EXTRA_BLOCKED)


@dataclass
class HelperConfig:
    allow_private: bool = False  # the lab needs True; never on a public server
    max_body: int = 16 * 1024  # request size limit (bytes)
    max_addresses: int = 16  # addresses accepted from the probe; also the endpoint cap
    # Per client (IP, or /64 for IPv6): sized so that one volunteer at the probe's
    # defaults (--concurrency 8) fits; the probe reads these from /health and keeps
    # within them, so a faster probe waits instead of losing its controls.
    per_client_concurrency: int = 8
    rate_per_minute: int = 600  # token bucket refill
    burst: int = 60  # token bucket size
    global_concurrency: int = 64  # measurements in flight; beyond -> 503 (oohelperd sheds load too)
    hard_timeout: float = 45.0  # one measurement
    # Before a measurement slot is taken: headers must be complete within
    # header_timeout of connecting (or of the previous response, on keep-alive), the
    # body read within body_timeout; one address holds at most this many connections
    # that are not inside a request (see probe.helper.server).
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    max_pending_per_address: int = 16
    calibration_bytes_per_minute: int = 8 * 1024 * 1024  # GET /v1/bytes, per client
    # behind a reverse proxy on this machine (TLS in front): the client is the last
    # address of X-Forwarded-For when the peer is loopback (the proxy); the proxy's own
    # connections are not capped per address (it keeps its own header timeouts)
    behind_proxy: bool = False
    probe: ProbeConfig = field(default_factory=ProbeConfig)  # timeouts, resolvers, ca_file

    def guard(self, ip: str) -> bool:
        """The AddressGuard handed to every step that connects."""
        return self.allow_private or is_public_address(ip)

    def limits(self, measurement_slots: int | None = None) -> dict[str, Any]:
        """What the helper grants each client: published in /health and in every 429
        and 503, so that a probe can keep within it instead of learning by refusal."""
        return {
            "per_client_concurrency": self.per_client_concurrency,
            "rate_per_minute": self.rate_per_minute,
            "burst": self.burst,
            "global_concurrency": measurement_slots or self.global_concurrency,
            "max_addresses": self.max_addresses,
            "max_body": self.max_body,
            "hard_timeout": self.hard_timeout,
            "header_timeout": self.header_timeout,
            "body_timeout": self.body_timeout,
        }


# --------------------------------------------------------------------------- measuring


async def measure_for_control(
    url: str, addresses: list[str], config: HelperConfig, contexts: Contexts,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Measure ``url`` from here and return the JSON answer (a plain dict).

    ``addresses`` are those the probe resolved. Safe to call with unvalidated
    addresses: any address the guard refuses is recorded and never connected to.
    Network failures are data in the answer; this raises only for a URL that is not
    http(s) (ValueError) or on cancellation.
    """
    pc = config.probe
    guard = config.guard
    scheme, hostname, port = split_url(url)
    measured_at = utcnow()

    # 1. Our own DNS: system resolver and configured resolvers, no DoH, no late wait.
    dns_config = dataclasses.replace(pc, doh_url=None, dns_late_window=0.0)
    dns_queries = await run_dns(hostname, dns_config, None, [])

    if is_ip(hostname):
        literal = _canonical(hostname)
        assert literal is not None  # is_ip
        own = [literal]
        own_all = list(own)
    else:
        own = dnsstep.collect_addresses(dns_queries, pc.per_family)
        own_all = []
        for q in dns_queries:
            for ip in q.addresses():
                if ip not in own_all:
                    own_all.append(ip)
    given: list[str] = []
    for a in addresses:
        c = _canonical(a)
        if c is not None and c not in given:
            given.append(c)

    # 2. Endpoints: ours first, then the probe's, capped.
    union: list[str] = []
    for ip in own + given:
        if ip not in union:
            union.append(ip)
    endpoints = union[: config.max_addresses]

    tcp_ports, tls_ports = ports_for(scheme, port, pc)

    async def connects_and_handshakes():
        tcp = await run_connects(endpoints, tcp_ports, pc, guard)
        return tcp, await run_handshakes(hostname, tls_ports, tcp, pc, contexts, sni_retry=False)

    # 3. HTTP, pinned to our own addresses (the probe's only when we resolved none). It
    # runs alongside TCP/TLS: the request costs the slower of the two, not their sum.
    async def fetch():
        opts = pc.fetch_options()
        if headers:  # an OONI probe's User-Agent, Accept, Accept-Language (what oohelperd forwards)
            opts.headers = {**opts.headers, **headers}
        pinned = own if own else given
        if not pinned and not is_ip(hostname):  # as the probe records it
            return [HttpRequest(url, "main", 0, Stopwatch().started_at, 0.0, failure=F.NO_ADDRESSES)]
        # aiohttp resolves the IDNA (punycode) form of the host: pin both spellings.
        names = {hostname, (URL(url).raw_host or hostname).strip("[]").lower()}
        session = new_session({n: pinned for n in names}, contexts.verify, opts, guard)
        try:
            return await fetch_http(session, url, opts, guard=guard)
        finally:
            await session.close()

    (tcp, tls), http = await asyncio.gather(connects_and_handshakes(), fetch())

    # 4. What we know about every address either side saw.
    valid = {h.ip for h in tls if h.success and h.sni_role == "target"}
    ip_info: dict[str, dict[str, bool]] = {}
    for ip in _dedupe(own_all + own + given):
        ip_info[ip] = {
            "resolved_by_probe": ip in given,
            "resolved_by_control": ip in own_all,
            "public": is_public_address(ip),
            "valid_for_domain": ip in valid,
        }

    return to_jsonable(
        {
            "version": ANSWER_VERSION,
            "url": url,
            "measured_at": measured_at,
            "dns": dns_queries,
            "tcp": tcp,
            "tls": tls,
            "http": http,
            "ip_info": ip_info,
        }
    )


def _canonical(ip: str) -> str | None:
    try:
        return str(ipaddress.ip_address(str(ip).strip().strip("[]")))
    except ValueError:
        return None


def _dedupe(items: list[str]) -> list[str]:
    out: list[str] = []
    for x in items:
        if x not in out:
            out.append(x)
    return out


# --------------------------------------------------------------------------- validation


class RequestRefused(Exception):
    """A request we will not serve: HTTP status, a one-line reason, and for load
    refusals what the client may do instead (``extra``: retry_after, limits)."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}
        self.extra = extra or {}


_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")


_NUMERIC_LABEL_RE = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)


def _short(value: Any, n: int = 80) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def validate_request(body: bytes, config: HelperConfig) -> tuple[str, list[str]]:
    """Parse and check a /v1/measure body; raise RequestRefused with the reason."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RequestRefused(400, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise RequestRefused(400, "body must be a JSON object")
    unknown = sorted(set(data) - ALLOWED_KEYS)
    if unknown:
        raise RequestRefused(400, f"unknown key(s): {_short(', '.join(unknown))}")
    url = data.get("url")
    if not isinstance(url, str):
        raise RequestRefused(400, "url must be a string")
    addresses = data.get("addresses", [])
    if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
        raise RequestRefused(400, "addresses must be a list of strings")

    url = _check_url(url, config)

    if len(addresses) > config.max_addresses:
        raise RequestRefused(400, f"too many addresses: {len(addresses)} > {config.max_addresses}")
    clean: list[str] = []
    for a in addresses:
        c = _canonical(a) if "%" not in a else None
        if c is None:
            raise RequestRefused(400, f"not an IP address: {_short(a, 60)!r}")
        if not config.allow_private and not is_public_address(c):
            raise RequestRefused(403, f"address {c} is not a public address")
        if c not in clean:
            clean.append(c)
    return url, clean


def _check_url(url: str, config: HelperConfig) -> str:
    if len(url) > MAX_URL_LENGTH:
        raise RequestRefused(400, f"url is longer than {MAX_URL_LENGTH} characters")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        raise RequestRefused(400, "url contains whitespace or control characters")
    try:
        u = url_of(url)
        port = u.port
        raw_host = u.raw_host
    except ValueError:
        raise RequestRefused(400, "url cannot be parsed") from None
    if u.scheme not in ("http", "https"):
        raise RequestRefused(400, "url must be http or https")
    if not raw_host:
        raise RequestRefused(400, "url has no host")
    if u.raw_user is not None or u.raw_password is not None or "@" in (u.raw_authority or ""):
        raise RequestRefused(400, "url must not contain user information")
    if port is not None and not 1 <= port <= 65535:
        raise RequestRefused(400, "url port out of range")
    host = raw_host.strip("[]")
    if is_ip(host):
        if "%" in host:
            raise RequestRefused(400, "url host must not carry an IPv6 zone")
        ip = _canonical(host)
        if not config.allow_private and not is_public_address(ip or host):
            raise RequestRefused(403, f"url host {ip} is not a public address")
    elif not _HOSTNAME_RE.match(host):
        raise RequestRefused(400, "url host is not a valid hostname")
    elif _NUMERIC_LABEL_RE.match(host.rstrip(".").rsplit(".", 1)[-1]):
        # "127.1", "2130706433", "0x7f000001": IPv4 in disguise (inet_aton would take
        # them); browsers treat them as addresses, so do we: refuse the ambiguity.
        raise RequestRefused(400, "url host is a numeric address in a non-standard form")
    try:
        split_url(url)
    except (ValueError, TypeError, UnicodeError):
        raise RequestRefused(400, "url cannot be parsed") from None
    return url


# --------------------------------------------------------------------------- limits


def client_key(remote: str | None) -> str:
    """The client's IP; for IPv6 its /64 (one host usually owns a whole /64)."""
    if not remote:
        return "unknown"
    try:
        addr = ipaddress.ip_address(remote.split("%")[0])
    except ValueError:
        return remote
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


def client_of(request: web.Request, config: HelperConfig) -> str:
    """The client's key (IP, or /64) for its limits: behind our own reverse proxy, the
    address the proxy says it forwards for."""
    remote = request.remote
    if config.behind_proxy and is_loopback(remote):
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.split(",")[-1].strip() if forwarded else ""
        if _canonical(last):
            remote = last
    return client_key(remote)


def is_loopback(ip: str | None) -> bool:
    try:
        return ipaddress.ip_address((ip or "").split("%")[0]).is_loopback
    except ValueError:
        return False


class _Buckets:
    """One token bucket per client key: ``capacity`` tokens, refilled at ``per_minute``.
    Forgets clients whose bucket has refilled, so memory stays bounded."""

    def __init__(self, per_minute: float, capacity: float):
        self.rate = per_minute / 60.0
        self.capacity = float(max(capacity, 1))
        self.buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    def take(self, key: str, n: float = 1.0) -> float:
        """Take ``n`` tokens: 0.0 when taken, else the seconds until they would be."""
        now = time.monotonic()
        tokens, last = self.buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens < n:
            self.buckets[key] = (tokens, now)
            return (n - tokens) / self.rate if self.rate > 0 else 60.0
        self.buckets[key] = (tokens - n, now)
        if len(self.buckets) > 4096:
            for k, (t, seen) in list(self.buckets.items()):
                if t + (now - seen) * self.rate >= self.capacity:
                    del self.buckets[k]
        return 0.0


class _Limits:
    """Token bucket and concurrency per client, plus the global in-flight count."""

    def __init__(self, config: HelperConfig, slots: int | None = None):
        self.config = config
        self.slots = slots or config.global_concurrency
        self.rate = _Buckets(config.rate_per_minute, config.burst)
        # calibration downloads have a budget of their own, apart from measurements,
        # so that a probe's pacing of measurements stays exact
        self.bytes = _Buckets(config.calibration_bytes_per_minute, config.calibration_bytes_per_minute)
        self.active: dict[str, int] = {}
        self.in_flight = 0

    def _refused(self, status: int, reason: str, retry_after: float) -> RequestRefused:
        wait = max(1, math.ceil(retry_after))
        return RequestRefused(status, reason, {"Retry-After": str(wait)},
                              {"retry_after": wait, "limits": self.config.limits(self.slots)})

    def acquire(self, key: str) -> None:
        """Take a slot and a token or raise RequestRefused (503/429, with Retry-After)."""
        cfg = self.config
        if self.in_flight >= self.slots:
            raise self._refused(503, "helper is overloaded, try again later", 2)
        if self.active.get(key, 0) >= cfg.per_client_concurrency:
            raise self._refused(429, f"too many concurrent requests from this client "
                                     f"(at most {cfg.per_client_concurrency})", 1)
        wait = self.rate.take(key)
        if wait:
            raise self._refused(429, f"rate limit exceeded (at most {cfg.rate_per_minute} per minute)", wait)
        self.active[key] = self.active.get(key, 0) + 1
        self.in_flight += 1

    def take_bytes(self, key: str, n: int) -> None:
        """A calibration download of ``n`` bytes, or RequestRefused (429)."""
        wait = self.bytes.take(key, n)
        if wait:
            raise self._refused(429, "calibration limit exceeded", wait)

    def release(self, key: str) -> None:
        self.in_flight -= 1
        n = self.active.get(key, 0) - 1
        if n <= 0:
            self.active.pop(key, None)
        else:
            self.active[key] = n


# --------------------------------------------------------------------------- the app

CONFIG_KEY = web.AppKey("helper_config", HelperConfig)
CONTEXTS_KEY = web.AppKey("helper_contexts", Contexts)
LIMITS_KEY = web.AppKey("helper_limits", _Limits)


class RequestWatcher(Protocol):
    """What the app tells of each request: probe.helper.server.ConnectionGuard, when served guarded."""

    def request_started(self, transport: asyncio.BaseTransport | None) -> None: ...

    def request_finished(self, transport: asyncio.BaseTransport | None) -> None: ...


GUARD_KEY = web.AppKey[RequestWatcher]("helper_guard")


def _error(status: int, reason: str, headers: dict[str, str] | None = None,
           extra: dict[str, Any] | None = None) -> web.Response:
    return web.json_response({"error": reason, **(extra or {})}, status=status, headers=headers)


@web.middleware
async def _errors_middleware(request: web.Request, handler):
    """Every error as one-line JSON; never a traceback. Tells the connection guard when
    a request starts (its headers are complete) and ends."""
    guard = request.app.get(GUARD_KEY)
    if guard is not None:
        guard.request_started(request.transport)
    try:
        return await handler(request)
    except RequestRefused as exc:
        return _error(exc.status, exc.reason, exc.headers, exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return _error(exc.status, (exc.reason or "error").lower(), headers)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("internal error serving %s %s", request.method, request.path)
        return _error(500, "internal error")
    finally:
        if guard is not None:
            guard.request_finished(request.transport)


async def _health(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    limits = request.app[LIMITS_KEY]
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "answer_version": ANSWER_VERSION,
            "protocols": list(PROTOCOLS),
            "time": utcnow(),  # the probe compares its clock with ours
            "allow_private": config.allow_private,
            "in_flight": limits.in_flight,
            "limits": config.limits(limits.slots),
        }
    )


async def read_body(request: web.Request, config: HelperConfig) -> bytes:
    """The whole request body, size-capped, within body_timeout: read before any slot is
    taken, so a slow upload holds a connection, never a measurement slot."""
    if request.content_length is not None and request.content_length > config.max_body:
        raise RequestRefused(413, f"body larger than {config.max_body} bytes")
    try:
        async with asyncio.timeout(config.body_timeout):
            body = await request.read()
    except TimeoutError:
        raise RequestRefused(408, f"request body not received within {config.body_timeout:g} s",
                             {"Connection": "close"}) from None
    except web.HTTPRequestEntityTooLarge:
        raise RequestRefused(413, f"body larger than {config.max_body} bytes") from None
    if len(body) > config.max_body:
        raise RequestRefused(413, f"body larger than {config.max_body} bytes")
    return body


async def measure_within_limits(request: web.Request, url: str, addresses: list[str],
                                headers: dict[str, str] | None = None) -> dict[str, Any]:
    """One measurement under the client's and the helper's limits and the hard timeout."""
    config = request.app[CONFIG_KEY]
    limits = request.app[LIMITS_KEY]
    key = client_of(request, config)
    limits.acquire(key)
    try:
        try:
            async with asyncio.timeout(config.hard_timeout) as deadline:
                return await measure_for_control(url, addresses, config, request.app[CONTEXTS_KEY], headers)
        except TimeoutError:
            if deadline.expired():
                raise RequestRefused(
                    504, f"measurement did not finish within {config.hard_timeout:g} s"
                ) from None
            raise
    finally:
        limits.release(key)


async def _measure(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    body = await read_body(request, config)
    url, addresses = validate_request(body, config)
    return web.json_response(await measure_within_limits(request, url, addresses))


async def _ooni_measure(request: web.Request) -> web.Response:
    """OONI's web_connectivity test-helper request (what OONI Probe posts to its
    helpers): measured as ours is, answered as oohelperd answers. Non-public endpoints
    are skipped, as oohelperd skips bogons, rather than refused."""
    config = request.app[CONFIG_KEY]
    body = await read_body(request, config)
    try:
        url, addresses, headers = parse_th_request(body, config.max_addresses)
    except THRequestError as exc:
        raise RequestRefused(400, str(exc)) from None
    url = _check_url(url, config)
    addresses = [a for a in (_canonical(x) for x in addresses) if a and config.guard(a)]
    answer = await measure_within_limits(request, url, addresses, headers)
    control = ControlResult(control_url="", started_at=answer["measured_at"], duration_ms=0.0)
    control.dns, control.tcp, control.tls, control.http = answer_records(answer)
    return web.json_response(th_answer(control, url, answer.get("ip_info")))


CALIBRATION_MAX = 2 * 1024 * 1024
_CALIBRATION_CHUNK = bytes(range(256)) * 256  # 64 KiB


async def _bytes(request: web.Request) -> web.StreamResponse:
    """``GET /v1/bytes?n=N``: N bytes (at most 2 MiB), for a probe to measure its own
    link's speed against the same path its control answers take. Budgeted apart from
    measurements: bytes per minute per client."""
    try:
        n = int(request.query.get("n", "262144"))
    except ValueError:
        raise RequestRefused(400, "n must be a number of bytes") from None
    if not 0 < n <= CALIBRATION_MAX:
        raise RequestRefused(400, f"n must be between 1 and {CALIBRATION_MAX}")
    request.app[LIMITS_KEY].take_bytes(client_of(request, request.app[CONFIG_KEY]), n)
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream", "Cache-Control": "no-store"})
    resp.content_length = n
    await resp.prepare(request)
    left = n
    async with asyncio.timeout(request.app[CONFIG_KEY].hard_timeout):
        while left > 0:
            chunk = _CALIBRATION_CHUNK[:left]
            await resp.write(chunk)
            left -= len(chunk)
    await resp.write_eof()
    return resp


async def _ooni_hello(request: web.Request) -> web.Response:
    """oohelperd's health check, for OONI's tools."""
    return web.json_response({"message": "Hello OONItarian!", "service": SERVER_HEADER})


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_HEADER


def make_app(config: HelperConfig, *, guard: RequestWatcher | None = None,
             measurement_slots: int | None = None) -> web.Application:
    """The helper as an aiohttp application. Serve it with ``probe.helper.server``
    (which guards connections) on the internet; a bare AppRunner does for tests."""
    app = web.Application(client_max_size=config.max_body, middlewares=[_errors_middleware])
    app[CONFIG_KEY] = config
    app[CONTEXTS_KEY] = Contexts.for_config(config.probe)
    app[LIMITS_KEY] = _Limits(config, measurement_slots)
    if guard is not None:
        app[GUARD_KEY] = guard
    app.router.add_get("/health", _health)
    app.router.add_post("/v1/measure", _measure)
    app.router.add_get("/v1/bytes", _bytes)
    app.router.add_get("/", _ooni_hello)
    app.router.add_post("/", _ooni_measure)
    app.on_response_prepare.append(_server_header)
    return app
