"""The deep lab's on-path injector (in r2), and the check of the path it sits on (in far).

``python -m tests.lab.injector run --iface r2d1a2b --far-net 10.77.11.0/24 --dns-match deep-dns
--dns-answer 10.77.4.66 --http-match "Host: deep-page.lab.test" --page-file PAGE --ready-file F``

``Lab.up`` starts it in r2, the censor two hops from far (``Lab(deep=True)``): a sniffer
on r2's interface towards far, as a censor's tap sits beside a router. It sees far's
packets before r2's IP stack does, so before the TTL check: a packet that expires at r2
(sent by far with IP TTL 2) still triggers it while r2 answers ICMP time-exceeded, which
is how a hop search finds an on-path injector at hop 2. It answers

* a UDP/53 query whose bytes contain ``--dns-match``, to any address (a resolver or not):
  at once, from the queried address and port, IP TTL 64, ``A --dns-answer`` (A queries;
  other types get no forged answer). r2's iptables drops the real query in FORWARD and
  the injector sends it on ``--hold`` seconds later, its TTL one less as r2 would have
  (not when it expired at r2), so the real answer (IP TTL 61 at far, the forged one 63)
  always comes second: the race OONI and the probe detect, in a fixed order (this kernel
  has no netem to delay the real one);
* a TCP segment to :80 containing ``--http-match`` (case-insensitive, as r2's rule):
  a blockpage (200, ``Connection: close``, the page of ``--page-file``) with FIN, from the
  site's address and port, its seq and ack continuing the client's connection, IP TTL 64,
  whatever the request's TTL. r2 drops the request itself: the real server never answers.

A hand-written BPF program (far's subnet, UDP to :53 or TCP to :80, no fragments) keeps
everything else out of Python (scapy cannot compile filters without libpcap here). One
line per injection on stdout (``<workdir>/r2-injector.log``); SIGTERM or SIGINT stops it.

``python -m tests.lab.injector check [--json]``, run in far (``Lab.verify_deep``): the
facts of the deep lab, checked with plain sockets and scapy, each with what was expected
and what was seen; exit 0 when all hold. ``sudo ip netns exec censorlab-XXXX-far python -m
tests.lab.injector check`` from the repository root, on a lab left up by ``python -m
tests.lab up --deep``.
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import json
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import traceback
from pathlib import Path

SO_ATTACH_FILTER = 26
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)  # Linux's value; Python does not name it
ETH_HLEN = 14


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} {msg}", flush=True)


# ----------------------------------------------------------------------------- the injector


def bpf_program(far_net: ipaddress.IPv4Network) -> list[tuple[int, int, int, int]]:
    """Classic BPF over Ethernet frames: IPv4 from far_net, not a fragment, UDP or TCP to
    port 53 or 80 (tcpdump: ``ip src net N and (udp or tcp) and dst port (53 or 80)``,
    fragments excluded). (code, jt, jf, k); jumps count from the next instruction."""
    net, mask = int(far_net.network_address), int(far_net.netmask)
    return [
        (0x28, 0, 0, 12),  # 0  ldh [12]            ethertype
        (0x15, 0, 13, 0x0800),  # 1  jeq IPv4 ? 2 : drop
        (0x20, 0, 0, 26),  # 2  ld [26]             source address
        (0x54, 0, 0, mask),  # 3  and mask
        (0x15, 0, 10, net),  # 4  jeq net ? 5 : drop
        (0x30, 0, 0, 23),  # 5  ldb [23]            protocol
        (0x15, 1, 0, 17),  # 6  jeq UDP ? 8 : 7
        (0x15, 0, 7, 6),  # 7  jeq TCP ? 8 : drop
        (0x28, 0, 0, 20),  # 8  ldh [20]            flags + fragment offset
        (0x45, 5, 0, 0x1FFF),  # 9  jset offset ? drop : 10
        (0xB1, 0, 0, 14),  # 10 ldxb 4*([14]&0xf)   IP header length
        (0x48, 0, 0, 16),  # 11 ldh [x+16]          destination port
        (0x15, 1, 0, 53),  # 12 jeq 53 ? accept : 13
        (0x15, 0, 1, 80),  # 13 jeq 80 ? accept : drop
        (0x06, 0, 0, 0x40000),  # 14 accept
        (0x06, 0, 0, 0),  # 15 drop
    ]


def attach_bpf(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    insns = (SockFilter * len(program))(*(SockFilter(*i) for i in program))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, SockFprog(len(program), insns))


def ip_checksum(header: bytes) -> int:
    if len(header) % 2:
        header += b"\0"
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def blockpage_response(body: bytes) -> bytes:
    head = ("HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


class Injector:
    def __init__(self, args: argparse.Namespace) -> None:
        self.far = ipaddress.ip_network(args.far_net)
        self.dns_match = args.dns_match.encode()
        self.dns_answer = args.dns_answer
        self.http_match = args.http_match.lower().encode()
        self.response = blockpage_response(Path(args.page_file).read_bytes())
        self.hold = args.hold
        # IPPROTO_RAW: we write whole IP packets (IP_HDRINCL), any source address
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.counts = {"dns": 0, "http": 0, "released": 0}

    def handle(self, pkt) -> None:
        """scapy's prn: never raises (a bad packet is logged, the sniffer goes on)."""
        try:
            frame = getattr(pkt, "original", None) or bytes(pkt)
            self._frame(frame)
        except Exception:  # the injector must outlive any packet
            log("error handling a packet:\n" + traceback.format_exc())

    def _frame(self, frame: bytes) -> None:
        if len(frame) < ETH_HLEN + 20 or frame[12:14] != b"\x08\x00":
            return
        ip = frame[ETH_HLEN:]
        ihl = (ip[0] & 0x0F) * 4
        ip = ip[:int.from_bytes(ip[2:4], "big")]
        if ip[0] >> 4 != 4 or int.from_bytes(ip[6:8], "big") & 0x3FFF:  # fragments: not ours
            return
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        if ipaddress.ip_address(src) not in self.far:
            return
        ttl, proto, l4 = ip[8], ip[9], ip[ihl:]
        if len(l4) < 8:
            return
        sport, dport = struct.unpack("!HH", l4[:4])
        if proto == 17 and dport == 53:
            self._dns(ip, src, dst, sport, ttl, l4[8:])
        elif proto == 6 and dport == 80 and len(l4) >= 20:
            seq, ack = struct.unpack("!II", l4[4:12])
            flags = l4[13]
            payload = l4[(l4[12] >> 4) * 4:]
            if payload and self.http_match in payload.lower():
                self._http(src, dst, sport, ttl, seq, ack, flags, payload)

    def send(self, packet: bytes, dst: str) -> None:
        self.raw.sendto(packet, (dst, 0))

    def _dns(self, ip: bytes, src: str, dst: str, sport: int, ttl: int, payload: bytes) -> None:
        if self.dns_match not in payload:  # r2's rule: the same bytes, case-sensitive
            return
        import dns.flags
        import dns.message
        import dns.rdatatype
        import dns.rrset
        from scapy.layers.inet import IP, UDP
        from scapy.packet import Raw

        what, forged = "?", False
        try:
            q = dns.message.from_wire(payload)
            question = q.question[0]
            what = f"{question.name} {dns.rdatatype.to_text(question.rdtype)} id {q.id}"
            if question.rdtype == dns.rdatatype.A:
                r = dns.message.make_response(q)
                r.flags |= dns.flags.RA
                r.answer.append(dns.rrset.from_text(question.name, 300, "IN", "A", self.dns_answer))
                reply = IP(src=dst, dst=src, ttl=64) / UDP(sport=53, dport=sport) / Raw(r.to_wire())
                self.send(bytes(reply), src)
                self.counts["dns"] += 1
                forged = True
                what += f": forged A {self.dns_answer} from {dst}:53"
            else:
                what += ": no forged answer for this type"
        except Exception as exc:  # not DNS after all: pass it on untouched
            what += f": not a DNS query ({exc})"
        # r2 dropped the real query; it goes on now, as r2 would have sent it (TTL - 1),
        # unless it expired here (then r2 itself answered ICMP time-exceeded)
        if ttl > 1:
            out = bytearray(ip)
            out[8] = ttl - 1
            ihl = (out[0] & 0x0F) * 4
            out[10:12] = b"\0\0"
            out[10:12] = ip_checksum(bytes(out[:ihl])).to_bytes(2, "big")
            # the UDP checksum too: on a veth the sender's kernel leaves it to a
            # (virtual) offload, so what we saw may hold only the pseudo-header's sum
            udp = out[ihl:]
            udp[6:8] = b"\0\0"
            pseudo = bytes(out[12:20]) + struct.pack("!BBH", 0, 17, len(udp))
            out[ihl + 6:ihl + 8] = (ip_checksum(pseudo + bytes(udp)) or 0xFFFF).to_bytes(2, "big")
            delay = self.hold if forged else 0.0
            timer = threading.Timer(delay, self._release, (bytes(out), dst))
            timer.daemon = True
            timer.start()
            what += f"; the real query goes on in {delay:g} s"
        else:
            what += "; the real query expired here (TTL 1)"
        log(f"dns {src}:{sport} -> {dst}:53 ttl {ttl}: {what}")

    def _release(self, packet: bytes, dst: str) -> None:
        try:
            self.send(packet, dst)
            self.counts["released"] += 1
        except OSError as exc:
            log(f"could not send the real query on to {dst}: {exc}")

    def _http(self, src: str, dst: str, sport: int, ttl: int, seq: int, ack: int, flags: int,
              payload: bytes) -> None:
        from scapy.layers.inet import IP, TCP
        from scapy.packet import Raw

        # the client's next byte: after its data (and its FIN, if it sent one)
        their_next = (seq + len(payload) + (1 if flags & 0x01 else 0)) & 0xFFFFFFFF
        forged = (IP(src=dst, dst=src, ttl=64)
                  / TCP(sport=80, dport=sport, seq=ack, ack=their_next, flags="FPA", window=65535)
                  / Raw(self.response))
        self.send(bytes(forged), src)
        self.counts["http"] += 1
        line = payload.split(b"\r\n", 1)[0].decode("latin-1")
        log(f"http {src}:{sport} -> {dst}:80 ttl {ttl}: {line!r}: forged blockpage ({len(self.response)} bytes, FIN)")


def run(args: argparse.Namespace) -> int:
    import scapy.layers.inet  # registers Ether/IP, so frames are dissected as such
    import scapy.layers.l2  # noqa: F401
    from scapy.config import conf
    from scapy.sendrecv import AsyncSniffer

    injector = Injector(args)
    listener = conf.L2listen(iface=args.iface)
    attach_bpf(listener.ins, bpf_program(ipaddress.IPv4Network(args.far_net)))
    started = threading.Event()
    sniffer = AsyncSniffer(opened_socket=listener, prn=injector.handle, store=False,
                           started_callback=started.set)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sniffer.start()
    if not started.wait(10):
        log("the sniffer did not start")
        return 1
    log(f"injector on {args.iface}: far {args.far_net}; DNS {args.dns_match!r} -> A {args.dns_answer} "
        f"(real query held {args.hold:g} s); HTTP {args.http_match!r} -> blockpage")
    if args.ready_file:
        Path(args.ready_file).write_text("ready\n")
    while not stop.wait(0.5):
        if not sniffer.running:
            log("the sniffer stopped")
            return 1
    try:
        sniffer.stop(join=True)
    except Exception:  # stopping anyway
        pass
    log(f"stopped: {injector.counts}")
    return 0


# ----------------------------------------------------------------------------- the check (in far)


class Capture:
    """Everything far receives on its link, from start() on: TCP, UDP and ICMP errors,
    with the IP TTL each arrived with."""

    def __init__(self, iface: str, me: str) -> None:
        from scapy.sendrecv import AsyncSniffer

        self.me = me
        self.seen: list[dict] = []
        self.lock = threading.Lock()
        started = threading.Event()
        self.sniffer = AsyncSniffer(iface=iface, store=False, prn=self._add, started_callback=started.set)
        self.sniffer.start()
        if not started.wait(10):
            raise RuntimeError(f"cannot sniff on {iface}")
        time.sleep(0.2)

    def _add(self, pkt) -> None:
        from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror

        if IP not in pkt or pkt[IP].dst != self.me:
            return
        ip = pkt[IP]
        rec = {"t": time.monotonic(), "src": ip.src, "ttl": ip.ttl}
        if ICMP in ip:
            rec.update(kind="icmp", type=ip[ICMP].type)
            if IPerror in ip:
                inner = ip[IPerror]
                rec.update(inner_dst=inner.dst,
                           inner_port=inner[TCPerror].sport if TCPerror in inner else
                           inner[UDPerror].sport if UDPerror in inner else None)
        elif TCP in ip:
            rec.update(kind="tcp", sport=ip[TCP].sport, dport=ip[TCP].dport, flags=str(ip[TCP].flags),
                       data=len(bytes(ip[TCP].payload)))
        elif UDP in ip:
            rec.update(kind="udp", sport=ip[UDP].sport, dport=ip[UDP].dport)
        else:
            return
        with self.lock:
            self.seen.append(rec)

    def tcp(self, port: int) -> list[dict]:
        time.sleep(0.3)  # the sniffer thread catches up
        with self.lock:
            return [r for r in self.seen if r["kind"] == "tcp" and r["dport"] == port]

    def icmp(self, port: int) -> list[dict]:
        time.sleep(0.3)
        with self.lock:
            return [r for r in self.seen if r["kind"] == "icmp" and r.get("inner_port") == port]

    def stop(self) -> None:
        try:
            self.sniffer.stop(join=True)
        except Exception:
            pass


def client_hello(name: str) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def http_get(host: str) -> bytes:
    return f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lab-check\r\nAccept: */*\r\nConnection: close\r\n\r\n".encode()


def exchange(ip: str | None, port: int, payload: bytes, *, ttl: int | None = None, wait: float = 2.0,
             connect_timeout: float = 3.0) -> dict:
    """Connect, (set the IP TTL,) send, read until EOF, reset or ``wait``: {"port" (ours),
    "data", "end": eof|reset|timeout|connect: ...}."""
    assert ip is not None, "a deep site without an address"
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(connect_timeout)
    try:
        s.connect((ip, port))
    except OSError as exc:
        s.close()
        return {"port": None, "data": b"", "end": f"connect: {type(exc).__name__}"}
    mine = s.getsockname()[1]
    if ttl is not None:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    data, end = b"", "timeout"
    deadline = time.monotonic() + wait
    try:
        s.sendall(payload)
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                end = "eof"
                break
            data += chunk
    except ConnectionResetError:
        end = "reset"
    except OSError as exc:
        end = f"error: {exc}"
    finally:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    return {"port": mine, "data": data, "end": end}


def dns_answers(server: str, name: str, *, ttl: int | None = None, wait: float = 1.5) -> dict:
    """One A query over UDP; every answer that comes within ``wait``: [{"from", "ttl",
    "a": [...], "after"}], and our port (to find ICMP errors about it)."""
    import dns.message
    import dns.rdatatype

    q = dns.message.make_query(name, "A")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    if ttl is not None:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    s.bind(("0.0.0.0", 0))
    mine = s.getsockname()[1]
    t0 = time.monotonic()
    s.sendto(q.to_wire(), (server, 53))
    out = []
    while (left := t0 + wait - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            data, anc, _flags, addr = s.recvmsg(4096, socket.CMSG_SPACE(4))
        except OSError:
            break
        ip_ttl = next((struct.unpack("i", d[:4])[0] for lvl, typ, d in anc
                       if lvl == socket.IPPROTO_IP and typ == socket.IP_TTL), None)
        try:
            m = dns.message.from_wire(data)
            a = [r.address for rr in m.answer if rr.rdtype == dns.rdatatype.A for r in rr]
            if m.id != q.id:
                continue
        except Exception:
            a = ["(not DNS)"]
        out.append({"from": f"{addr[0]}:{addr[1]}", "ttl": ip_ttl, "a": a,
                    "after": round(time.monotonic() - t0, 3)})
    s.close()
    return {"port": mine, "answers": out}


def check(as_json: bool) -> int:
    from scapy.config import conf
    from scapy.layers.inet import ICMP, IP, TCP
    from scapy.sendrecv import sr1

    from . import scenarios as S

    r1, r2, r3 = S.ROUTERS
    site = {d.name: d.site for d in S.DEEP_SITES}
    server_ttl = S.INITIAL_TTL - len(S.ROUTERS)  # 61: from net, three routers away
    censor_ttl = S.INITIAL_TTL - (S.CENSOR_HOP - 1)  # 63: from r2
    facts: list[dict] = []

    def fact(name: str, ok: bool, expected: str, observed) -> None:
        facts.append({"fact": name, "ok": bool(ok), "expected": expected,
                      "observed": observed if isinstance(observed, str) else json.dumps(observed, default=str)})

    def attempt(name: str, expected: str, fn) -> None:
        try:
            fn()
        except Exception as exc:  # a crashed check is a failed fact
            fact(name, False, expected, f"the check crashed: {exc!r}\n{traceback.format_exc()}")

    iface = conf.route.route(site["sni"].ip)[0]
    cap = Capture(iface, S.FAR_IP)

    def rsts(port: int) -> list[int]:
        return [r["ttl"] for r in cap.tcp(port) if "R" in r["flags"]]

    def synacks(port: int) -> list[int]:
        return [r["ttl"] for r in cap.tcp(port) if "S" in r["flags"] and "A" in r["flags"]]

    def icmp_from(port: int) -> list[str]:
        return sorted({r["src"] for r in cap.icmp(port) if r["type"] == 11})

    try:
        # 1. the path: TTL 1, 2, 3 expire at r1, r2, r3 (ICMP time-exceeded from their
        # address towards far); TTL 4 reaches the site
        def hops() -> None:
            seen: list[tuple[int, object, object, object]] = []
            for ttl in (1, 2, 3, 4):
                ans = sr1(IP(dst=site["sni"].ip, ttl=ttl) / TCP(sport=40000 + ttl, dport=443, flags="S"),
                          timeout=2, verbose=0)
                if ans is None:
                    seen.append((ttl, None, None, None))
                elif ICMP in ans:
                    seen.append((ttl, ans[IP].src, f"icmp {ans[ICMP].type}", ans[IP].ttl))
                else:
                    seen.append((ttl, ans[IP].src, f"tcp {ans[TCP].flags}" if TCP in ans else "?", ans[IP].ttl))
            want = [(1, r1.down_ip, "icmp 11"), (2, r2.down_ip, "icmp 11"), (3, r3.down_ip, "icmp 11"),
                    (4, site["sni"].ip, "tcp SA")]
            fact("hops: a SYN with TTL 1, 2, 3 expires at r1, r2, r3; TTL 4 reaches the site",
                 [x[:3] for x in seen] == want and seen[3][3] == server_ttl,
                 f"{want}, the SYN-ACK with IP TTL {server_ttl}", seen)

        attempt("hops", "", hops)

        # 2. the injected DNS answer, first, then the real one
        def dns_race() -> None:
            got = dns_answers(S.AUTH_DNS_IP, site["dns"].host)["answers"]
            first = got[0] if got else {}
            real = [a for a in got[1:] if a["a"] == [site["dns"].ip]]
            fact(f"deep-dns: a query to {S.AUTH_DNS_IP} gets two answers, the forged one first",
                 first.get("a") == [S.DEEP_FORGED_IP] and first.get("from") == f"{S.AUTH_DNS_IP}:53"
                 and first.get("ttl") == censor_ttl and len(real) == 1 and real[0]["ttl"] == server_ttl,
                 f"A {S.DEEP_FORGED_IP} from {S.AUTH_DNS_IP}:53 with IP TTL {censor_ttl}, then A "
                 f"{site['dns'].ip} with IP TTL {server_ttl}", got)
            other = dns_answers(S.AUTH_DNS_IP, site["sni"].host)["answers"]
            fact("deep-dns: another name (deep-sni) gets one answer, the real one",
                 [(a["a"], a["ttl"]) for a in other] == [([site["sni"].ip], server_ttl)],
                 f"A {site['sni'].ip}, IP TTL {server_ttl}, nothing else", other)
            sink = dns_answers(S.CONTROL_IP, site["dns"].host)["answers"]
            fact(f"deep-dns: a query to {S.CONTROL_IP}:53 (no DNS server) is answered by the injector",
                 [(a["a"], a["from"], a["ttl"]) for a in sink] == [([S.DEEP_FORGED_IP], f"{S.CONTROL_IP}:53",
                                                                    censor_ttl)],
                 f"one answer, A {S.DEEP_FORGED_IP} from {S.CONTROL_IP}:53, IP TTL {censor_ttl}", sink)

        attempt("deep-dns", "", dns_race)

        def dns_ttl() -> None:
            for ttl, router, answers in ((1, r1, []), (2, r2, [[S.DEEP_FORGED_IP]])):
                got = dns_answers(S.AUTH_DNS_IP, site["dns"].host, ttl=ttl, wait=1.0)
                icmp = icmp_from(got["port"])
                fact(f"deep-dns: a query with IP TTL {ttl}: ICMP from {router.name}"
                     + (", and the forged answer (the injector sees it before r2's TTL check)" if answers
                        else ", no answer"),
                     icmp == [router.down_ip] and [a["a"] for a in got["answers"]] == answers,
                     f"ICMP time-exceeded from {router.down_ip}; answers {answers}",
                     {"icmp_from": icmp, "answers": got["answers"]})

        attempt("deep-dns TTL", "", dns_ttl)

        # 3. SNI: reset by r2 (its TTL), not the server; a benign SNI works; the hop model
        def sni() -> None:
            ip = site["sni"].ip
            x = exchange(ip, 443, client_hello(site["sni"].host))
            fact("deep-sni: a ClientHello naming the site is reset by r2",
                 x["end"] == "reset" and rsts(x["port"]) == [censor_ttl] and synacks(x["port"]) == [server_ttl],
                 f"reset; the RST with IP TTL {censor_ttl} (r2), the SYN-ACK {server_ttl} (the server)",
                 {"end": x["end"], "rst_ttl": rsts(x["port"]), "synack_ttl": synacks(x["port"])})
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            try:
                with socket.create_connection((ip, 443), timeout=3) as raw, \
                        ctx.wrap_socket(raw, server_hostname="example.com") as tls:
                    benign = f"handshake done ({tls.version()})"
            except OSError as exc:
                benign = f"failed: {exc!r}"
            fact("deep-sni: a ClientHello naming example.com to the same address completes",
                 benign.startswith("handshake done"), "handshake done", benign)
            at2 = exchange(ip, 443, client_hello(site["sni"].host), ttl=2, wait=1.2)
            at3 = exchange(ip, 443, client_hello(site["sni"].host), ttl=3, wait=1.2)
            obs = {"ttl2": {"end": at2["end"], "icmp_from": icmp_from(at2["port"]), "rst_ttl": rsts(at2["port"])},
                   "ttl3": {"end": at3["end"], "icmp_from": icmp_from(at3["port"]), "rst_ttl": rsts(at3["port"])}}
            fact("deep-sni: the ClientHello with IP TTL 2 expires at r2 (no RST); with TTL 3 it is reset",
                 obs["ttl2"]["icmp_from"] == [r2.down_ip] and not obs["ttl2"]["rst_ttl"]
                 and obs["ttl3"]["end"] == "reset" and obs["ttl3"]["rst_ttl"] == [censor_ttl]
                 and not obs["ttl3"]["icmp_from"],
                 f"TTL 2: ICMP from {r2.down_ip}, no RST; TTL 3: reset, RST IP TTL {censor_ttl}, no ICMP", obs)

        attempt("deep-sni", "", sni)

        # 4. Host: reset by r2; another Host to the same address is answered by the server
        def host() -> None:
            ip = site["host"].ip
            x = exchange(ip, 80, http_get(site["host"].host))
            fact("deep-host: a request with Host: deep-host.lab.test is reset by r2",
                 x["end"] == "reset" and rsts(x["port"]) == [censor_ttl],
                 f"reset, the RST with IP TTL {censor_ttl}", {"end": x["end"], "rst_ttl": rsts(x["port"])})
            y = exchange(ip, 80, http_get("example.com"))
            fact("deep-host: Host: example.com to the same address gets the server's answer",
                 y["data"].startswith(b"HTTP/1.1 ") and y["end"] in ("eof", "timeout"),
                 "an HTTP response", {"end": y["end"], "status": y["data"][:15].decode("latin-1")})

        attempt("deep-host", "", host)

        # 5. the address: nothing gets through
        def address() -> None:
            ends = {port: exchange(site["ip"].ip, port, b"x", connect_timeout=1.5)["end"] for port in (443, 80)}
            fact("deep-ip: connections to the site's address time out",
                 all(e == "connect: TimeoutError" for e in ends.values()), "connect timeouts on :443 and :80", ends)

        attempt("deep-ip", "", address)

        # 6. the injected blockpage, at any TTL; the real server answers another Host
        def page() -> None:
            ip = site["page"].ip
            pages = {}
            for ttl in (None, 2):
                x = exchange(ip, 80, http_get(site["page"].host), ttl=ttl, wait=3)
                ttls = sorted({r["ttl"] for r in cap.tcp(x["port"]) if r["data"]})
                pages[f"ttl {ttl or 'default'}"] = {
                    "end": x["end"], "status": x["data"][:15].decode("latin-1"),
                    "fingerprint": S.BELTELECOM_FINGERPRINT.encode() in x["data"], "data_ttl": ttls,
                    "icmp_from": icmp_from(x["port"])}
            fact("deep-page: a request naming the site gets the injected blockpage, also with IP TTL 2",
                 all(p["status"] == "HTTP/1.1 200 OK" and p["fingerprint"] and p["end"] == "eof"
                     and p["data_ttl"] == [censor_ttl] for p in pages.values())
                 and pages["ttl 2"]["icmp_from"] == [r2.down_ip],
                 f"200 with the Beltelecom page and FIN, IP TTL {censor_ttl}; at TTL 2 also ICMP from "
                 f"{r2.down_ip}", pages)
            y = exchange(ip, 80, http_get("example.com"))
            title = S.Site("deep-page", ip).page_title
            fact("deep-page: Host: example.com to the same address gets the real site",
                 title.encode() in y["data"], f"the page titled {title!r}",
                 {"end": y["end"], "status": y["data"][:15].decode("latin-1"),
                  "data_ttl": sorted({r["ttl"] for r in cap.tcp(y["port"]) if r["data"]})})

        attempt("deep-page", "", page)

        # 7. the server's own reset: the server's TTL
        def server_reset() -> None:
            ip = site["rst"].ip
            obs = {}
            for port, payload in ((443, client_hello(site["rst"].host)), (80, http_get(site["rst"].host))):
                x = exchange(ip, port, payload)
                obs[port] = {"end": x["end"], "rst_ttl": rsts(x["port"]), "synack_ttl": synacks(x["port"])}
            fact("deep-rst: the server itself resets (:443 and :80), its RST with the server's TTL",
                 all(o["end"] == "reset" and o["rst_ttl"] == [server_ttl] and o["synack_ttl"] == [server_ttl]
                     for o in obs.values()),
                 f"reset; RST and SYN-ACK both with IP TTL {server_ttl}", obs)

        attempt("deep-rst", "", server_reset)

        def helper() -> None:
            x = exchange(S.CONTROL_IP, S.CONTROL_PORT, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            fact(f"the control helper {S.CONTROL_URL} answers far", x["data"].startswith(b"HTTP/1.1 200"),
                 "HTTP/1.1 200", {"end": x["end"], "status": x["data"][:15].decode("latin-1")})

        attempt("helper", "", helper)
    finally:
        cap.stop()

    if as_json:
        print(json.dumps(facts, indent=2, ensure_ascii=False))
    else:
        for f in facts:
            print(f"{'ok  ' if f['ok'] else 'FAIL'} {f['fact']}")
            print(f"       {'seen' if f['ok'] else 'expected ' + f['expected'] + '; seen'}: {f['observed']}")
        print(f"{sum(f['ok'] for f in facts)}/{len(facts)} facts hold")
    return 0 if facts and all(f["ok"] for f in facts) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.lab.injector", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="the on-path injector (in r2)")
    p.add_argument("--iface", required=True, help="r2's interface towards far")
    p.add_argument("--far-net", required=True, help="far's subnet (only its packets are looked at)")
    p.add_argument("--dns-match", required=True, help="bytes a UDP/53 query must contain")
    p.add_argument("--dns-answer", required=True, help="the forged A record")
    p.add_argument("--http-match", required=True, help="what a TCP/80 segment must contain (any case)")
    p.add_argument("--page-file", required=True, help="the blockpage's body")
    p.add_argument("--hold", type=float, default=0.2, help="seconds before the real query goes on")
    p.add_argument("--ready-file", default=None, help="written once the sniffer runs")
    p = sub.add_parser("check", help="the deep lab's facts, from far")
    p.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        return run(args)
    return check(args.json)


if __name__ == "__main__":
    sys.exit(main())
