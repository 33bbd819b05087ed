"""Deep measurement of one blocked target (`probe run --deep`, `probe trace URL`):
what triggers the block, whether the interfering packets were injected, and on which
hop the censor sits. Records only (``probe.core.deep``); ``probe.analysis.deep`` decides.

1. Trigger isolation, with ordinary sockets: the blocked step again as measured, then
   one thing changed at a time (a harmless SNI or Host to the site's address, no SNI,
   the site's name to a harmless address, a harmless DNS name to the same resolver).
2. Packets (scapy's AsyncSniffer, root or CAP_NET_RAW): every packet the site's
   address or the resolver sends us while those tests run, with its IP TTL, IP ID and
   TCP window: a reset whose TTL is not the server's was sent by something else.
3. The hop search (CenTrace): inside a fresh kernel connection per TTL, the triggering
   packet (the ClientHello, the HTTP request, the DNS query) is sent once more by scapy
   with IP TTL 1, 2, ...; each router where it expires answers ICMP time-exceeded; the
   first TTL that brings the censor's answer back says where the censor is.

Bounded: at most MAX_TTL packets per target, DEEP_BUDGET_S per target, only to the
addresses of the measurement itself. Nothing is left behind: every sniffer is stopped
and every socket closed in ``finally``, also when the run is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from probe.core import failures as F
from probe.core.addresses import split_hostport
from probe.core.deep import DeepResult, HopProbe, PacketSeen, TriggerTest
from probe.core.records import Measurement, Stopwatch, utcnow
from probe.measure.dns import resolve_udp
from probe.measure.tls import tls_handshake

# Harmless names: a benign SNI or Host no censor lists, and a DNS name to ask instead.
BENIGN_NAME = "example.com"
MAX_TTL = 24
DEEP_BUDGET_S = 40.0  # per target: the trigger tests and the hop search
HOP_WAIT_S = 1.0  # how long one TTL's answers are waited for
OUTGOING = 4  # Linux's PACKET_OUTGOING: our own packets, as the capture also sees them
RAW_REASON = "packet capture and the hop search need root or CAP_NET_RAW; trigger isolation ran without them"


def raw_sockets_allowed() -> bool:
    """Whether this process may capture and forge packets (root or CAP_NET_RAW)."""
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    except (PermissionError, OSError, AttributeError):
        return False
    s.close()
    return True


@dataclass
class Flow:
    """What was blocked, as the verdict's layer says: the step to repeat."""

    layer: str  # "tls", "http", "dns", "tcp"
    ip: str | None = None
    port: int | None = None
    name: str = ""
    path: str = "/"
    resolver: str | None = None  # ip:port of the resolver, for a DNS verdict


def blocked_flow(m: Measurement, layer: str | None) -> Flow | None:
    """The step a verdict of ``layer`` blames, from the measurement's own records. An
    https:// URL's step is its TLS handshake on the URL's port; an http:// URL's its
    request; a DNS verdict's the direct query to the system's resolver."""
    if layer == "dns":
        udp = [q for q in m.dns if q.engine == "udp" and q.resolver]
        return Flow("dns", name=m.hostname, resolver=udp[0].resolver) if udp else None
    if layer not in ("tcp", "tls", "http", None):  # None: down, where the connection step failed too
        return None
    if m.scheme == "https":
        tried = [t for t in m.tls if t.sni_role == "target" and t.port == m.port]
        failed = [t for t in tried if not t.success] or tried
        if failed:
            return Flow("tls", failed[0].ip, failed[0].port, m.hostname)
        connects = [c for c in m.tcp if c.port == m.port]
        bad = [c for c in connects if not c.success] or connects
        return Flow("tls", bad[0].ip, m.port, m.hostname) if bad else None
    for h in m.http:
        if h.kind == "main" and h.address and h.hop == 0:
            ip, port = split_hostport(h.address)
            path = "/" + h.url.split("/", 3)[3] if h.url.count("/") >= 3 else "/"
            return Flow("http", ip, int(port or m.port), m.hostname, path)
    connects = [c for c in m.tcp if c.port == m.port]
    bad = [c for c in connects if not c.success] or connects
    return Flow("http", bad[0].ip, m.port, m.hostname) if bad else None


# --- 1. trigger isolation -----------------------------------------------------------------


def _interfered_tls(failure: str | None, stage: str | None) -> bool:
    """Cut after our ClientHello (reset, closed, stalled) before any answer: what SNI
    filtering does. A bad certificate or a protocol error is the server's answer."""
    return failure is not None and stage == "after_client_hello"


async def _tls_test(name: str, ip: str, port: int, sni: str, timeout: float, *,
                    at_site: bool = True) -> TriggerTest | None:
    """One handshake. To the site's address, a connection that cannot even be made
    (timed out, reset, refused) is interference with the address itself, whatever the
    name; elsewhere it says nothing about the name (None: not a test)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    rec = await tls_handshake(ip, port, sni, timeout=timeout, context=ctx, sni_role="benign")
    if rec.failure is not None and rec.failure_stage in ("tcp_connect", "before_client_hello"):
        if not at_site:
            return None  # the hello never left: says nothing about the name
        return TriggerTest(name, f"{ip}:{port}", sni, rec.started_at, rec.duration_ms, True, rec.failure, "tcp_connect")
    return TriggerTest(name, f"{ip}:{port}", sni, rec.started_at, rec.duration_ms,
                       _interfered_tls(rec.failure, rec.failure_stage), rec.failure,
                       rec.tls_version or rec.failure_stage)


def http_request(host: str, path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n"
            "Connection: close\r\n\r\n").encode("ascii", "replace")


async def _http_exchange(ip: str, port: int, payload: bytes, timeout: float) -> tuple[str | None, bytes, bool]:
    """(failure, the first bytes of the answer, whether the connection was made)."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
    except Exception as exc:
        return F.classify_exception(exc), b"", False
    try:
        writer.write(payload)
        await writer.drain()
        head = await asyncio.wait_for(reader.read(4096), timeout)
        return (None if head else F.EOF), head, True
    except Exception as exc:
        return F.classify_exception(exc), b"", True
    finally:
        if writer is not None:
            writer.close()


def _status_line(head: bytes) -> str:
    return head.split(b"\r\n", 1)[0].decode("latin-1")[:80]


async def _http_test(name: str, ip: str, port: int, host: str, path: str, timeout: float,
                     blocked_head: bytes | None, *, at_site: bool = True) -> TriggerTest | None:
    """One request; a connection that cannot be made counts as in ``_tls_test``."""
    sw = Stopwatch()
    failure, head, connected = await _http_exchange(ip, port, http_request(host, path), timeout)
    if not connected:
        if not at_site:
            return None
        return TriggerTest(name, f"{ip}:{port}", host, sw.started_at, sw.ms(), True, failure, "tcp_connect")
    interfered = failure is not None or (blocked_head is not None and head[:200] == blocked_head[:200])
    return TriggerTest(name, f"{ip}:{port}", host, sw.started_at, sw.ms(), interfered, failure,
                       _status_line(head) if head else None)


async def _dns_test(name: str, resolver: str, qname: str, timeout: float, wait: float,
                    forged: Any) -> TriggerTest:
    late: list[asyncio.Task] = []
    q = await resolve_udp(qname, "A", resolver, timeout=timeout, late_window=wait, late_tasks=late)
    if late:
        await asyncio.gather(*late, return_exceptions=True)
    answers = sorted(a.value for a in q.answers)
    interfered = bool(q.extra_replies) or forged(q)
    return TriggerTest(name, resolver, qname, q.started_at, q.duration_ms, interfered, q.failure,
                       ",".join(answers) or q.rcode)


async def isolate(flow: Flow, m: Measurement, verdict: str | None, harmless: str | None,
                  timeout: float, dns_wait: float) -> list[TriggerTest]:
    """The blocked step as measured, then one thing changed at a time. ``harmless`` is
    "ip" or "ip:port": the site's name goes there on the site's port; when even the
    connection to the site's address fails (nothing of the name was sent there), and
    nothing listens on that port at the harmless address, its own port is used: what
    matters then is that the name reaches a server elsewhere."""
    tests: list[TriggerTest | None] = []
    h_ip, h_port = split_hostport(harmless, 0) if harmless else ("", 0)

    def ports(at_site: list[TriggerTest | None]) -> list[int]:
        assert flow.port is not None
        cut = all(t is not None and t.detail == "tcp_connect" for t in at_site)
        return [flow.port, *([h_port] if cut and h_port and h_port != flow.port else [])]

    if flow.layer == "tls" and flow.ip and flow.port:
        tests.append(await _tls_test("tls_sni", flow.ip, flow.port, flow.name, timeout))
        tests.append(await _tls_test("tls_benign_sni", flow.ip, flow.port, BENIGN_NAME, timeout))
        tests.append(await _tls_test("tls_no_sni", flow.ip, flow.port, "", timeout))
        for port in ports(tests) if h_ip else []:
            found = await _tls_test("tls_sni_elsewhere", h_ip, port, flow.name, timeout, at_site=False)
            if found is not None:
                tests.append(found)
                break
    elif flow.layer == "http" and flow.ip and flow.port:
        blocked_head = next((h.body_head for h in m.http if h.kind == "main" and h.body_head), None) \
            if verdict in ("http.blockpage", "http.diff") else None
        first = await _http_test("http_host", flow.ip, flow.port, flow.name, flow.path, timeout, None)
        if first is not None and blocked_head is not None and first.failure is None:
            first.interfered = True  # the page measured as a blockpage came again
        tests.append(first)
        tests.append(await _http_test("http_benign_host", flow.ip, flow.port, BENIGN_NAME, "/", timeout, None))
        for port in ports(tests) if h_ip else []:
            found = await _http_test("http_host_elsewhere", h_ip, port, flow.name, flow.path, timeout, None,
                                     at_site=False)
            if found is not None:
                tests.append(found)
                break
    elif flow.layer == "dns" and flow.resolver:
        measured = {a.value for q in m.dns if q.engine == "udp" for a in q.answers}
        expect_nx = verdict == "dns.nxdomain"

        def forged(q: Any) -> bool:
            got = {a.value for a in q.answers}
            if expect_nx:
                return q.rcode in ("NXDOMAIN", "SERVFAIL") or (q.rcode == "NOERROR" and not got)
            return bool(got) and bool(got & measured) and verdict in ("dns.bogon", "dns.blockpage",
                                                                      "dns.inconsistent")

        tests.append(await _dns_test("dns_name", flow.resolver, flow.name, timeout, dns_wait, forged))
        tests.append(await _dns_test("dns_benign_name", flow.resolver, BENIGN_NAME, timeout, dns_wait,
                                     lambda q: False))
    return [t for t in tests if t is not None]


# --- 2. packets ---------------------------------------------------------------------------


def _scapy() -> Any:
    """scapy, imported when first needed (it takes a second and prints warnings)."""
    import logging

    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    import scapy.all as scapy_all

    return scapy_all


def involving(sc: Any, addresses: set[str], port: int | None = None) -> Callable[[Any], bool]:
    """A packet to or from one of ``addresses`` (on ``port`` when given), or any ICMP
    error (it quotes our packet). A Python filter, not BPF: compiling BPF needs
    libpcap, which a volunteer's machine may not have; our flows are a few packets."""
    def keep(p: Any) -> bool:
        if sc.IP not in p:
            return False
        if sc.ICMP in p:
            return int(p[sc.ICMP].type) in (3, 11)
        ip = p[sc.IP]
        if ip.src not in addresses and ip.dst not in addresses:
            return False
        if port is None:
            return True
        layer = p[sc.TCP] if sc.TCP in p else p[sc.UDP] if sc.UDP in p else None
        return layer is not None and port in (layer.sport, layer.dport)
    return keep


@contextlib.asynccontextmanager
async def sniffing(addresses: set[str], dst_ip: str, port: int | None = None) -> AsyncIterator[list[Any]]:
    """Capture the packets of ``involving(addresses, port)`` on the interface towards
    ``dst_ip`` while the block runs; the list fills as they arrive. The sniffer is
    always stopped, also when the block is cancelled."""
    sc = _scapy()
    iface = sc.conf.route.route(dst_ip)[0]
    found: list[Any] = []  # filled as packets arrive (the sniffer's thread appends)
    sniffer = sc.AsyncSniffer(iface=iface, lfilter=involving(sc, addresses, port), store=False, prn=found.append)
    sniffer.start()
    try:
        for _ in range(50):  # the capture socket is open before the first packet
            if getattr(sniffer, "running", False) and getattr(sniffer, "stop_cb", None):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        yield found
    finally:
        await asyncio.sleep(0.1)  # the last answers arrive
        with contextlib.suppress(Exception):
            await asyncio.to_thread(sniffer.stop)


def packets_seen(raw: Iterable[Any], sources: set[str]) -> list[PacketSeen]:
    """The captured packets that came from ``sources`` (and ICMP from anywhere), as
    records; times from each flow's first packet."""
    sc = _scapy()
    out: list[PacketSeen] = []
    first: dict[str, float] = {}
    for p in raw:
        if sc.IP not in p or getattr(p, "direction", None) == OUTGOING:
            continue
        ip = p[sc.IP]
        if sc.ICMP in p:
            kind = {11: "icmp-time-exceeded", 3: "icmp-unreachable"}.get(int(p[sc.ICMP].type))
            if kind is None:
                continue
            flow = f"icmp {ip.src}"
            rec = PacketSeen(flow, kind, ip.src, int(ip.ttl), int(ip.id), 0.0)
        elif ip.src not in sources:
            continue
        elif sc.TCP in p:
            t = p[sc.TCP]
            flags = str(t.flags)
            kind = "syn-ack" if "S" in flags and "A" in flags else "rst" if "R" in flags else \
                "fin" if "F" in flags else "data" if len(t.payload) else "ack"
            if kind == "ack":
                continue
            flow = f"tcp {ip.src}:{t.sport} <- {t.dport}"
            rec = PacketSeen(flow, kind, ip.src, int(ip.ttl), int(ip.id), 0.0, window=int(t.window), flags=flags,
                             seq=int(t.seq), payload_bytes=len(t.payload))
        elif sc.UDP in p and sc.DNS in p:
            u, d = p[sc.UDP], p[sc.DNS]
            answers = [str(d.an[i].rdata) for i in range(int(d.ancount or 0))] if d.an is not None else []
            flow = f"udp {ip.src}:{u.sport} <- {u.dport}"
            rec = PacketSeen(flow, "dns", ip.src, int(ip.ttl), int(ip.id), 0.0, payload_bytes=len(u.payload),
                             answers=answers)
        else:
            continue
        t0 = first.setdefault(rec.flow, float(p.time))
        rec.t_ms = round((float(p.time) - t0) * 1000, 3)
        if out and (out[-1].flow, out[-1].kind, out[-1].ip_id, out[-1].seq) == (rec.flow, rec.kind, rec.ip_id, rec.seq):
            continue  # the loopback device shows each packet twice
        out.append(rec)
    return out


# --- 3. the hop search --------------------------------------------------------------------


def client_hello(sni: str) -> bytes:
    """The ClientHello our TLS would send for ``sni`` (its first flight, never sent here)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=sni or None)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def _initial_ttl(observed: int) -> int:
    return next(t for t in (32, 64, 128, 255) if observed <= t)


def _response_kind(kind: str, ttl: int, server_ttl: int | None) -> str:
    """A packet in answer to a replay: the server's own (its TTL) or another's."""
    if server_ttl is not None and ttl == server_ttl:
        return "server"
    return {"data": "blockpage", "dns": "dns_answer"}.get(kind, kind)


class NoConnection(Exception):
    """The hop search could not open a connection to replay inside (the failure)."""


async def _replay_tcp(ip: str, port: int, payload: bytes, ttl: int, wait: float,
                     timeout: float) -> tuple[HopProbe, int | None]:
    """One TTL: a kernel connection (for real sequence numbers, read from its handshake
    as captured), the payload sent once more by scapy with IP TTL ``ttl``, and what came
    back. Returns (the probe, the server's SYN-ACK TTL)."""
    sc = _scapy()
    hop = HopProbe(ttl)
    writer = None
    server_ttl = None
    async with sniffing({ip}, ip, port) as raw:
        try:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
            except (OSError, TimeoutError) as exc:
                raise NoConnection(F.classify_exception(exc)) from None
            sport = writer.get_extra_info("sockname")[1]
            syn = synack = None
            for _ in range(40):
                syn = next((p for p in raw if sc.TCP in p and p[sc.TCP].sport == sport
                            and str(p[sc.TCP].flags) == "S"), None)
                synack = next((p for p in raw if sc.TCP in p and p[sc.TCP].dport == sport
                               and {"S", "A"} <= set(str(p[sc.TCP].flags))), None)
                if syn is not None and synack is not None:
                    break
                await asyncio.sleep(0.025)
            if syn is None or synack is None:
                return hop, None
            server_ttl = int(synack[sc.IP].ttl)
            mark = len(raw)
            t0 = time.monotonic()
            pkt = sc.IP(dst=ip, ttl=ttl) / sc.TCP(sport=sport, dport=port, flags="PA", seq=int(syn[sc.TCP].seq) + 1,
                                                 ack=int(synack[sc.TCP].seq) + 1) / payload
            await asyncio.to_thread(sc.send, pkt, verbose=False)
            await asyncio.sleep(wait)
            hop.rtt_ms = round((time.monotonic() - t0) * 1000, 3)
            _read_answers(hop, raw[mark:], ip, server_ttl, sport)
        except (OSError, TimeoutError):
            return hop, server_ttl
        finally:
            if writer is not None:
                writer.transport.abort()
    return hop, server_ttl


def _read_answers(hop: HopProbe, raw: list[Any], ip: str, server_ttl: int | None, sport: int) -> None:
    """The ICMP time-exceeded quoting our replay (its source: the router where it
    expired) and the first answer from the replay's destination address to our port."""
    sc = _scapy()
    for p in raw:
        if sc.IP not in p or getattr(p, "direction", None) == OUTGOING:
            continue
        if sc.ICMP in p:
            quoted = p[sc.ICMP].payload
            qport = getattr(getattr(quoted, "payload", None), "sport", None)
            if int(p[sc.ICMP].type) == 11 and qport == sport and hop.icmp_from is None:
                hop.icmp_from = str(p[sc.IP].src)
            continue
        if str(p[sc.IP].src) != ip or hop.response is not None:
            continue
        if sc.TCP in p and p[sc.TCP].dport == sport:
            flags = str(p[sc.TCP].flags)
            kind = "rst" if "R" in flags else "fin" if "F" in flags else "data" if len(p[sc.TCP].payload) else None
        elif sc.UDP in p and p[sc.UDP].dport == sport and sc.DNS in p:
            kind = "dns"
        else:
            kind = None
        if kind is not None:
            hop.response = _response_kind(kind, int(p[sc.IP].ttl), server_ttl)
            hop.response_from, hop.response_ttl = str(p[sc.IP].src), int(p[sc.IP].ttl)


async def _replay_dns(resolver: str, qname: str, ttl: int, wait: float, baseline_ttl: int | None) -> HopProbe:
    sc = _scapy()
    host, port = split_hostport(resolver)
    port_n = int(port or 53)
    sport = random.randint(20000, 60000)
    hop = HopProbe(ttl)
    async with sniffing({host}, host, sport) as raw:
        t0 = time.monotonic()
        pkt = sc.IP(dst=host, ttl=ttl) / sc.UDP(sport=sport, dport=port_n) / sc.DNS(
            id=random.randint(1, 65535), rd=1, qd=sc.DNSQR(qname=qname))
        await asyncio.to_thread(sc.send, pkt, verbose=False)
        await asyncio.sleep(wait)
        hop.rtt_ms = round((time.monotonic() - t0) * 1000, 3)
        _read_answers(hop, list(raw), host, baseline_ttl, sport)
    return hop


# --- the whole deep measurement ------------------------------------------------------------


async def deep_measure(m: Measurement, verdict: str | None, layer: str | None, *, harmless: str | None = None,
                       timeout: float = 8.0, dns_wait: float = 1.0, raw_allowed: bool | None = None) -> DeepResult:
    """Everything above for one measurement, within DEEP_BUDGET_S."""
    sw = Stopwatch()
    result = DeepResult(m.measurement_id, m.url, utcnow(), verdict=verdict)
    flow = blocked_flow(m, layer)
    if flow is None:
        result.skipped.append(f"nothing to repeat for a {layer or 'no'}-layer verdict")
        return result
    raw_allowed = raw_sockets_allowed() if raw_allowed is None else raw_allowed
    try:
        await asyncio.wait_for(_deep(result, flow, m, verdict, harmless, timeout, dns_wait, raw_allowed),
                               DEEP_BUDGET_S)
    except TimeoutError:
        result.skipped.append(f"stopped at the {DEEP_BUDGET_S:g} s budget per target")
    result.duration_ms = sw.ms()
    return result


async def _deep(result: DeepResult, flow: Flow, m: Measurement, verdict: str | None, harmless: str | None,
                timeout: float, dns_wait: float, raw_allowed: bool) -> None:
    target_ip = flow.ip or (split_hostport(flow.resolver)[0] if flow.resolver else None)
    assert target_ip is not None
    if not raw_allowed:
        result.trigger_tests = await isolate(flow, m, verdict, harmless, timeout, dns_wait)
        result.skipped.append(RAW_REASON)
        return
    sources = {target_ip}
    async with sniffing(sources, target_ip) as raw:
        result.trigger_tests = await isolate(flow, m, verdict, harmless, timeout, dns_wait)
    result.packets = packets_seen(raw, sources)
    await _hop_search(result, flow)


async def _hop_search(result: DeepResult, flow: Flow) -> None:
    if flow.layer == "dns" and flow.resolver:
        replies = [p for p in result.packets if p.kind == "dns"]
        # the resolver's own TTL: its most common reply TTL (an injector adds a different one)
        ttls = [p.ttl for p in replies]
        baseline = max(set(ttls), key=ttls.count) if ttls else None
        result.replayed, result.replay_target, result.server_ttl = "dns_query", flow.resolver, baseline
        limit = MAX_TTL if baseline is None else min(MAX_TTL, _initial_ttl(baseline) - baseline + 1)
        for ttl in range(1, limit + 1):
            hop = await _replay_dns(flow.resolver, flow.name, ttl, HOP_WAIT_S, baseline)
            result.hops.append(hop)
            result.packets_sent += 1
            if hop.response is not None:
                break
        return
    if flow.ip is None or flow.port is None:
        return
    synacks = [p for p in result.packets if p.kind == "syn-ack"]
    server_ttl = synacks[0].ttl if synacks else None
    payload = client_hello(flow.name) if flow.layer == "tls" else http_request(flow.name, flow.path)
    result.replayed = "tls_client_hello" if flow.layer == "tls" else "http_request"
    result.replay_target, result.server_ttl = f"{flow.ip}:{flow.port}", server_ttl
    limit = MAX_TTL if server_ttl is None else min(MAX_TTL, _initial_ttl(server_ttl) - server_ttl + 1)
    for ttl in range(1, limit + 1):
        try:
            hop, seen_ttl = await _replay_tcp(flow.ip, flow.port, payload, ttl, HOP_WAIT_S, 5.0)
        except NoConnection as exc:
            result.skipped.append(f"the hop search needs a connection to {flow.ip}:{flow.port}, and it failed ({exc})")
            break
        result.server_ttl = result.server_ttl or seen_ttl
        result.hops.append(hop)
        result.packets_sent += 1
        if hop.response is not None:
            break

