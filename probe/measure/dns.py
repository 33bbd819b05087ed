"""DNS step: the system resolver, raw UDP queries to each resolver, and optional DoH.

Why three engines: getaddrinfo is what a browser sees (and what an ISP's resolver lies
to); a raw UDP query shows the rcode, TTLs and *who* answered, and, by listening a little
longer on the same socket, whether a second reply races the first (on-path injection);
DoH goes around the ISP's port-53 path entirely and so serves as a local control.
"""

from __future__ import annotations

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from probe.core import failures as F
from probe.core.addresses import format_hostport, is_ip, split_hostport
from probe.core.records import DnsAnswer, DnsQuery, DnsReply, Stopwatch

# getaddrinfo blocks a thread until the C library gives up; a pool of our own keeps a
# hostile network from starving the loop's default executor (used by everything else).
_GAI_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="getaddrinfo")

_RCODE_FAILURES = {
    dns.rcode.NXDOMAIN: F.DNS_NXDOMAIN,
    dns.rcode.SERVFAIL: F.DNS_SERVFAIL,
    dns.rcode.REFUSED: F.DNS_REFUSED,
}


def system_resolvers(path: str | Path = "/etc/resolv.conf") -> list[str]:
    """The nameserver lines of resolv.conf, as 'ip:53'. Missing file gives []."""
    out: list[str] = []
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver" and is_ip(parts[1].split("%")[0]):
            out.append(format_hostport(parts[1].split("%")[0], 53))
    return out


def _answers(msg: dns.message.Message) -> list[DnsAnswer]:
    out: list[DnsAnswer] = []
    for rrset in msg.answer:
        rtype = dns.rdatatype.to_text(rrset.rdtype)
        for rdata in rrset:
            if rtype in ("A", "AAAA"):
                out.append(DnsAnswer(rtype, rdata.address, rrset.ttl))
            elif rtype == "CNAME":
                out.append(DnsAnswer(rtype, str(rdata.target).rstrip("."), rrset.ttl))
    return out


def _fill_from_message(q: DnsQuery, msg: dns.message.Message) -> None:
    rcode = msg.rcode()
    q.rcode = dns.rcode.to_text(rcode)
    q.answers = _answers(msg)
    if rcode in _RCODE_FAILURES:
        q.failure = _RCODE_FAILURES[rcode]
    elif rcode != dns.rcode.NOERROR:
        q.failure = F.unknown(f"rcode {q.rcode}")
    elif not any(a.answer_type == q.query_type for a in q.answers):
        q.failure = F.DNS_NO_ANSWER


async def resolve_system(hostname: str, *, timeout: float) -> DnsQuery:
    """getaddrinfo, as a browser on this machine would resolve the name."""
    sw = Stopwatch()
    q = DnsQuery("system", None, hostname, "ANY", sw.started_at, 0.0)
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.run_in_executor(
                _GAI_POOL, socket.getaddrinfo, hostname, None, 0, socket.SOCK_STREAM
            ),
            timeout,
        )
        seen: list[str] = []
        for family, _, _, _, sockaddr in infos:
            ip = str(sockaddr[0]).split("%")[0]
            if ip not in seen:
                seen.append(ip)
                q.answers.append(DnsAnswer("AAAA" if family == socket.AF_INET6 else "A", ip))
        if not seen:
            q.failure = F.DNS_NO_ANSWER
    except Exception as exc:  # a failure is data
        q.failure = F.classify_exception(exc)
    q.duration_ms = sw.ms()
    return q


class _UdpCollector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[tuple[bytes, str, float]] = asyncio.Queue()
        self.error: Exception | None = None
        self.loop = asyncio.get_running_loop()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.replies.put_nowait((data, format_hostport(addr[0], addr[1]), self.loop.time()))

    def error_received(self, exc: Exception) -> None:
        self.error = exc  # e.g. ICMP port unreachable -> ConnectionRefusedError
        self.replies.put_nowait((b"", "", self.loop.time()))


async def resolve_udp(
    hostname: str,
    qtype: str,
    resolver: str,
    *,
    timeout: float,
    late_window: float = 0.0,
    late_tasks: list[asyncio.Task] | None = None,
) -> DnsQuery:
    """One query over UDP to ``resolver`` ('ip:port'), recording who answered.

    The socket is not connected, so a reply from an unexpected address is seen (and
    recorded as the responder) instead of being filtered by the kernel. When
    ``late_tasks`` is given, the socket stays open for ``late_window`` seconds after the
    first reply, in a task appended there; any further reply to the same query is
    appended to ``extra_replies``. The caller awaits those tasks before storing, so the
    wait overlaps the TCP/TLS/HTTP steps instead of adding to them.
    """
    sw = Stopwatch()
    q = DnsQuery("udp", resolver, hostname, qtype, sw.started_at, 0.0)
    host, port = split_hostport(resolver)
    loop = asyncio.get_running_loop()
    try:
        query = dns.message.make_query(hostname, qtype)
        query.flags |= dns.flags.RD
        wire = query.to_wire()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        transport, proto = await loop.create_datagram_endpoint(_UdpCollector, family=family)
    except Exception as exc:
        q.failure = F.classify_exception(exc)
        q.duration_ms = sw.ms()
        return q

    t_sent = loop.time()
    bad_reply = False

    def parse(data: bytes) -> dns.message.Message | None:
        nonlocal bad_reply
        try:
            msg = dns.message.from_wire(data)
        except dns.exception.DNSException:
            bad_reply = True
            return None
        if msg.id != query.id or not query.is_response(msg):
            bad_reply = True
            return None
        return msg

    try:
        transport.sendto(wire, (host, port))
        deadline = t_sent + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            data, src, _ = await asyncio.wait_for(proto.replies.get(), remaining)
            if proto.error is not None:
                raise proto.error
            msg = parse(data)
            if msg is not None:
                q.responder = src
                _fill_from_message(q, msg)
                break
    except Exception as exc:
        q.failure = F.DNS_BAD_RESPONSE if bad_reply and isinstance(
            exc, asyncio.TimeoutError
        ) else F.classify_exception(exc)
        q.duration_ms = sw.ms()
        transport.close()
        return q
    q.duration_ms = sw.ms()

    async def listen_late() -> None:
        try:
            end = loop.time() + late_window
            while (remaining := end - loop.time()) > 0:
                try:
                    data, src, t = await asyncio.wait_for(proto.replies.get(), remaining)
                except TimeoutError:
                    break
                msg = parse(data) if data else None
                if msg is not None:
                    q.extra_replies.append(
                        DnsReply(
                            responder=src,
                            delay_ms=round((t - t_sent) * 1000, 3),
                            rcode=dns.rcode.to_text(msg.rcode()),
                            answers=_answers(msg),
                        )
                    )
        finally:
            transport.close()

    if late_tasks is not None and late_window > 0:
        late_tasks.append(asyncio.ensure_future(listen_late()))
    else:
        transport.close()
    return q


async def resolve_doh(hostname: str, qtype: str, url: str, session, *, timeout: float) -> DnsQuery:
    """RFC 8484 POST with aiohttp: the name resolved around the ISP's port-53 path."""
    sw = Stopwatch()
    q = DnsQuery("doh", url, hostname, qtype, sw.started_at, 0.0)
    try:
        query = dns.message.make_query(hostname, qtype)
        query.id = 0  # RFC 8484 4.1: id 0 for cache friendliness
        async with asyncio.timeout(timeout):
            async with session.post(
                url,
                data=query.to_wire(),
                headers={
                    "Content-Type": "application/dns-message",
                    "Accept": "application/dns-message",
                },
            ) as resp:
                if resp.status != 200:
                    q.failure = F.unknown(f"doh http status {resp.status}")
                else:
                    from probe.measure.http import read_whole_body

                    body = await read_whole_body(resp, 65535)  # a DNS message is at most 64 KiB
                    try:
                        msg = dns.message.from_wire(body)
                    except dns.exception.DNSException:
                        q.failure = F.DNS_BAD_RESPONSE
                    else:
                        _fill_from_message(q, msg)
    except Exception as exc:
        from probe.measure.http import (  # aiohttp errors unwrap there
            BodyTooLarge,
            classify_http_exception,
        )

        q.failure = F.DNS_BAD_RESPONSE if isinstance(exc, BodyTooLarge) else classify_http_exception(exc)
    q.duration_ms = sw.ms()
    return q


def collect_addresses(queries: list[DnsQuery], per_family: int) -> list[str]:
    """Addresses to measure: system resolver first (what a browser uses), then raw UDP,
    then DoH, de-duplicated, at most ``per_family`` IPv4 and ``per_family`` IPv6.

    DoH answers are connected to as well: when the ISP's resolver lies, they are the
    site's real addresses, and reaching them or not separates DNS-only blocking from
    IP blocking (OONI's LTE does the same with addresses only its helper saw)."""
    # A sink's answer is injected by definition: evidence, never an address to use.
    ordered = sorted(
        (q for q in queries if q.engine != "sink"),
        key=lambda q: {"system": 0, "udp": 1, "doh": 2}.get(q.engine, 3),
    )
    v4: list[str] = []
    v6: list[str] = []
    for q in ordered:
        for ip in q.addresses():
            bucket = v6 if ":" in ip else v4
            if ip not in bucket and len(bucket) < per_family:
                bucket.append(ip)
    return v4 + v6


