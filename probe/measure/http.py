"""HTTP step: fetch a URL as a browser would, recording every redirect hop.

Redirects are followed by hand (not by aiohttp) so that each hop is its own record: a
censor's 302 to a blockpage host is the evidence, not a detail to be skipped. The host of
the URL is pinned to the addresses our DNS step saw, so HTTP talks to the same servers
that TCP and TLS measured. The body is streamed: hashed whole up to a cap, only the
first bytes kept, so a hostile 100 MB reply or a byte-a-second drip cannot hold memory
or the run hostage.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from probe.core import failures as F
from probe.core.constants import BODY_CAP, BODY_KEEP, BROWSER_HEADERS
from probe.core.pagetext import extract_title
from probe.core.records import HttpRequest, Stopwatch
from probe.core.scrub import Scrubber
from probe.measure.tls import (
    ClockCorrection,
    presented_ders,
    verification_error,
    verify_chain,
)

if TYPE_CHECKING:
    from aiohttp.abc import ResolveResult

REDIRECT_STATUSES = {301, 302, 303, 307, 308}


class RefusedAddress(OSError):
    """Raised by a guarded resolver: the address is private, loopback or special."""


AddressGuard = Callable[[str], bool]  # True when connecting to this IP is allowed


class ByteMeter:
    """What a run has downloaded (page bodies and headers, which dominate) against a
    data cap (``--max-bytes``): when the cap is reached it calls ``on_cap`` once, and the
    run cancels what is in flight, so the cap holds to within one read per fetch."""

    def __init__(self, cap: int | None = None, on_cap: Callable[[], None] | None = None):
        self.cap, self.on_cap, self.used = cap, on_cap, 0
        self.reached = False

    def add(self, n: int) -> None:
        self.used += n
        if self.cap is not None and not self.reached and self.used >= self.cap:
            self.reached = True
            if self.on_cap is not None:
                self.on_cap()


@dataclass
class FetchOptions:
    timeout: float = 15.0  # per hop, headers and body together
    connect_timeout: float = 5.0
    max_redirects: int = 10
    body_cap: int = BODY_CAP
    body_keep: int = BODY_KEEP
    headers: dict[str, str] = field(default_factory=lambda: dict(BROWSER_HEADERS))
    # the volunteer's own address, replaced in the body as it streams in (so that the kept
    # part, its title and the hash never hold it); headers are scrubbed before storing
    scrubber: Scrubber | None = None
    meter: ByteMeter | None = None  # the run's data cap


class PinnedResolver(AbstractResolver):
    """Answers with our own DNS results for pinned names, else asks getaddrinfo.

    With a guard (the control helper), every address is checked before aiohttp may
    connect to it, so a public name resolving to 127.0.0.1 cannot reach inside.
    """

    def __init__(self, pinned: dict[str, list[str]], guard: AddressGuard | None = None):
        self.pinned = {k.lower(): v for k, v in pinned.items()}
        self.guard = guard

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        ips = self.pinned.get(host.lower().rstrip("."))
        if ips is None:
            loop = asyncio.get_running_loop()
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            ips = []
            for info in infos:
                ip = str(info[4][0])
                if ip not in ips:
                    ips.append(ip)
        if not ips:
            raise OSError(f"no addresses for {host}")
        if self.guard is not None:
            allowed = [ip for ip in ips if self.guard(ip)]
            if not allowed:
                raise RefusedAddress(f"{host} resolves only to refused addresses")
            ips = allowed
        return [
            {
                "hostname": host,
                "host": ip,
                "port": port,
                "family": socket.AF_INET6 if ":" in ip else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for ip in ips
        ]

    async def close(self) -> None:
        return None


def classify_http_exception(exc: BaseException) -> str:
    """aiohttp's exceptions to the failure vocabulary, unwrapping to the OS error."""
    if isinstance(exc, RefusedAddress):
        return F.REFUSED_ADDRESS
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return F.classify_exception(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientConnectorError):
        inner = exc.os_error
        if isinstance(inner, RefusedAddress):
            return F.REFUSED_ADDRESS
        return F.classify_exception(inner)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return F.EOF
    if isinstance(exc, aiohttp.ClientPayloadError):
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError) and not isinstance(cause, ssl.SSLError):
            return F.classify_exception(cause)
        return F.EOF
    if isinstance(exc, aiohttp.ClientOSError):
        return F.classify_exception(exc)
    if isinstance(exc, aiohttp.InvalidURL):
        return F.HTTP_INVALID_REDIRECT
    if isinstance(exc, (aiohttp.ClientResponseError, aiohttp.http_exceptions.HttpProcessingError)):
        return F.HTTP_PROTOCOL_ERROR
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return F.GENERIC_TIMEOUT
    return F.classify_exception(exc)


class BodyTooLarge(Exception):
    """A reply body beyond the cap we are willing to hold."""


async def read_whole_body(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    """The whole body of a small reply (a helper's JSON, a DoH answer), refusing more
    than ``cap`` bytes. ``resp.content.read(n)`` would return whatever chunk arrived
    first: on a slow link that is a part of the body, not all of it."""
    if resp.content_length is not None and resp.content_length > cap:
        raise BodyTooLarge(f"{resp.content_length} bytes announced, more than {cap}")
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge(f"more than {cap} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _ip_literal(host: str | None) -> str | None:
    if not host:
        return None
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


class _PeerRecordingConnector(aiohttp.TCPConnector):
    """Notes on each connection's protocol which address it reached: aiohttp releases
    a connection as soon as a small body has arrived, taking the peer with it. With a
    clock correction, judges the server's chain at the control's time (the context
    verifies nothing then) and fails the connection as a bad certificate would."""

    def __init__(self, *args: Any, clock: ClockCorrection | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._clock = clock

    async def _wrap_create_connection(self, *args: Any, **kwargs: Any):
        transport, protocol = await super()._wrap_create_connection(*args, **kwargs)
        protocol._probe_peer = transport.get_extra_info("peername")  # type: ignore[attr-defined]
        obj = transport.get_extra_info("ssl_object")
        if self._clock is not None and obj is not None:
            req = kwargs.get("req")
            name = kwargs.get("server_hostname") or (req.host if req is not None else "")
            failure = verify_chain(presented_ders(obj), str(name), self._clock.now(), self._clock.roots)
            if failure is not None:
                transport.close()
                assert req is not None  # aiohttp always passes req= (a required keyword of _wrap_create_connection)
                raise aiohttp.ClientConnectorCertificateError(req.connection_key, verification_error(failure))
        return transport, protocol


def _peer_of(resp: aiohttp.ClientResponse) -> str | None:
    peer = getattr(getattr(resp, "_protocol", None), "_probe_peer", None)
    if not peer:
        return None
    host = str(peer[0])
    return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"


def new_session(
    pinned: dict[str, list[str]],
    ssl_context: ssl.SSLContext,
    opts: FetchOptions,
    guard: AddressGuard | None = None,
    clock: ClockCorrection | None = None,
) -> aiohttp.ClientSession:
    """One session per measurement: its own cookie jar (as a fresh browser profile) and
    connections that are never shared with another target."""
    connector = _PeerRecordingConnector(
        clock=clock,
        resolver=PinnedResolver(pinned, guard),
        ssl=ssl_context,
        force_close=True,
        limit=0,
        ttl_dns_cache=None,
        use_dns_cache=False,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        headers=opts.headers,
        timeout=aiohttp.ClientTimeout(total=None, connect=opts.connect_timeout),
        auto_decompress=True,
        max_line_size=16384,
        max_field_size=16384,
    )


async def _one_hop(
    session: aiohttp.ClientSession,
    url: str,
    hop: int,
    kind: str,
    opts: FetchOptions,
    extra_headers: dict[str, str] | None = None,
) -> HttpRequest:
    sw = Stopwatch()
    rec = HttpRequest(url=url, kind=kind, hop=hop, started_at=sw.started_at, duration_ms=0.0)
    hasher = hashlib.sha256()
    head = bytearray()
    length = 0
    scrub = opts.scrubber.stream() if opts.scrubber else None

    def keep(data: bytes) -> None:
        hasher.update(data)
        if len(head) < opts.body_keep:
            head.extend(data[: opts.body_keep - len(head)])

    try:
        async with asyncio.timeout(opts.timeout):
            async with session.get(
                url, allow_redirects=False, headers=extra_headers
            ) as resp:
                rec.status = resp.status
                rec.reason = resp.reason
                rec.http_version = f"{resp.version.major}.{resp.version.minor}" if resp.version else None
                rec.headers = [
                    [k.decode("latin-1"), v.decode("latin-1")] for k, v in resp.raw_headers
                ]
                rec.location = resp.headers.get("Location")
                rec.address = _peer_of(resp)
                if opts.meter is not None:
                    opts.meter.add(sum(len(k) + len(v) + 4 for k, v in resp.raw_headers) + 16)
                try:
                    while True:
                        chunk = await resp.content.read(65536)
                        if not chunk:
                            break
                        if opts.meter is not None:
                            opts.meter.add(len(chunk))
                        room = opts.body_cap - length
                        if len(chunk) > room:
                            chunk = chunk[:room]
                            rec.body_truncated = True
                        length += len(chunk)
                        keep(scrub.feed(chunk) if scrub is not None else chunk)
                        if rec.body_truncated:
                            rec.failure = F.BODY_TOO_LARGE
                            break
                finally:
                    # whatever arrived is evidence, even when the read failed midway
                    if scrub is not None:
                        keep(scrub.finish())
                    rec.body_length = length
                    rec.body_sha256 = hasher.hexdigest()
                    rec.body_head = bytes(head)
                    rec.title = extract_title(bytes(head), resp.headers.get("Content-Type"))
                if rec.body_truncated:
                    resp.close()  # do not drain the rest of a huge body
    except Exception as exc:
        rec.failure = classify_http_exception(exc)
    rec.duration_ms = sw.ms()
    return rec


async def fetch_http(
    session: aiohttp.ClientSession,
    url: str,
    opts: FetchOptions,
    *,
    guard: AddressGuard | None = None,
) -> list[HttpRequest]:
    """GET ``url`` and follow up to ``opts.max_redirects`` redirects, one record per hop."""
    hops: list[HttpRequest] = []
    current = url
    for hop in range(opts.max_redirects + 1):
        literal = _ip_literal(URL(current).host)
        if guard is not None and literal is not None and not guard(literal):
            sw = Stopwatch()
            hops.append(HttpRequest(current, "main", hop, sw.started_at, 0.0, failure=F.REFUSED_ADDRESS))
            return hops
        rec = await _one_hop(session, current, hop, "main", opts)
        hops.append(rec)
        if rec.failure is not None or rec.status not in REDIRECT_STATUSES:
            return hops
        if not rec.location:
            return hops  # a 3xx without Location is a final response
        try:
            nxt = URL(current).join(URL(rec.location))
        except (ValueError, TypeError):
            rec.failure = F.HTTP_INVALID_REDIRECT
            return hops
        if nxt.scheme not in ("http", "https") or not nxt.host:
            rec.failure = F.HTTP_INVALID_REDIRECT
            return hops
        current = str(nxt)
    hops[-1].failure = F.HTTP_TOO_MANY_REDIRECTS
    return hops


async def fetch_http_fallback(
    session: aiohttp.ClientSession,
    hostname: str,
    ip: str,
    opts: FetchOptions,
    port: int = 80,
) -> HttpRequest:
    """GET http://<ip>/ with Host: <hostname>, one hop, redirects recorded not followed.

    When an https URL fails, the address a censor's DNS handed out often serves its
    blockpage only on port 80; this request is how such an address is recognised.
    """
    rec = await _one_hop(session, fallback_url(ip, port), 0, "http_fallback", opts, extra_headers={"Host": hostname})
    return rec


def fallback_url(ip: str, port: int = 80) -> str:
    """The URL of the plain-http request to one address (``fetch_http_fallback``)."""
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}/" if port != 80 else f"http://{host}/"


async def fetch_url(url: str, timeout: float = 15.0) -> list[HttpRequest]:
    """One URL fetched as the probe fetches it, redirects followed, every hop recorded:
    for tools that look at one page (`probe fingerprints test URL`)."""
    from probe.measure.tls import make_ssl_context

    opts = FetchOptions(timeout=timeout)
    session = new_session({}, make_ssl_context(), opts)
    try:
        return await fetch_http(session, url, opts)
    finally:
        await session.close()
