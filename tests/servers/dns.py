"""A scriptable UDP DNS server for tests.

Every name in the zone is mapped to a *behaviour* that reproduces something a
real resolver (or a censor sitting between the probe and the resolver) does:
honest answers, NXDOMAIN/SERVFAIL/REFUSED, timeouts, malformed replies, racing
injected replies, slow replies.

The server only ever binds to a loopback address and only ever replies to the
address a query came from, so it never sends traffic off the machine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Mapping

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from .tcp import _require_loopback

__all__ = [
    "Answer",
    "Delayed",
    "DnsServer",
    "GARBAGE",
    "NXDOMAIN",
    "REFUSED",
    "Race",
    "SERVFAIL",
    "SILENT",
    "Txt",
]


@dataclasses.dataclass(frozen=True)
class Answer:
    """An honest resolver answering NOERROR with these addresses.

    For an ``A`` query the ``a`` list is returned, for ``AAAA`` the ``aaaa``
    list. If the asked type has no records the reply is NOERROR with an empty
    answer section (a real "no data" answer, e.g. a name without IPv6). With
    ``cname`` set, the answer starts with ``<qname> CNAME <cname>`` and the
    addresses are owned by the CNAME target, like a CDN-fronted site.
    """

    a: tuple[str, ...] | list[str] = ()
    aaaa: tuple[str, ...] | list[str] = ()
    ttl: int = 300
    cname: str | None = None

    def __post_init__(self) -> None:
        # Keep the dataclass hashable/immutable even if lists were passed.
        object.__setattr__(self, "a", tuple(self.a))
        object.__setattr__(self, "aaaa", tuple(self.aaaa))


@dataclasses.dataclass(frozen=True)
class Txt:
    """A name that only has TXT records (e.g. a verification/probe record).

    TXT queries get these strings; A/AAAA and other types get NOERROR with an
    empty answer.
    """

    texts: tuple[str, ...] | list[str] = ()
    ttl: int = 300

    def __post_init__(self) -> None:
        object.__setattr__(self, "texts", tuple(self.texts))


class _Rcode(enum.Enum):
    NXDOMAIN = dns.rcode.NXDOMAIN
    SERVFAIL = dns.rcode.SERVFAIL
    REFUSED = dns.rcode.REFUSED


class _Special(enum.Enum):
    SILENT = "silent"
    GARBAGE = "garbage"


#: The name does not exist (also what a lying resolver returns to hide a site).
NXDOMAIN = _Rcode.NXDOMAIN
#: The resolver failed (upstream broken, or a filter that fails closed).
SERVFAIL = _Rcode.SERVFAIL
#: The resolver refuses to answer (policy block / not an open resolver).
REFUSED = _Rcode.REFUSED
#: Queries are black-holed: no reply ever arrives, the client times out.
SILENT = _Special.SILENT
#: A reply arrives but it is not a parseable DNS message (broken middlebox).
GARBAGE = _Special.GARBAGE


@dataclasses.dataclass(frozen=True)
class Race:
    """An on-path injector racing the real resolver.

    The same query is answered twice with the same DNS id: ``first``
    immediately (the injected forgery, which wins the race) and ``second``
    after ``delay`` seconds (the genuine answer arriving late). ``first`` and
    ``second`` may be any replying behaviour (Answer, Txt, NXDOMAIN, ...).
    """

    first: Behaviour
    second: Behaviour
    delay: float = 0.2


@dataclasses.dataclass(frozen=True)
class Delayed:
    """A slow resolver (or a long path): reply per ``inner`` after ``delay`` s."""

    inner: Behaviour
    delay: float


Behaviour = Answer | Txt | _Rcode | _Special | Race | Delayed

#: Payload sent for GARBAGE: it starts with the query id (so a client that
#: matches on id accepts it as "the" reply) followed by response flags and
#: then text, so the header claims 0x6e6f (28271) questions that are not
#: there: no DNS parser can decode it.
_GARBAGE_TAIL = b"\x81\x80no DNS here\xff\xfe"


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


class DnsServer:
    """A UDP DNS resolver on loopback whose answers are scripted per name.

    Stands in for the resolver the probe is configured to use (the ISP's
    resolver, a public resolver, or a censoring one). Usage::

        async with DnsServer({"site.lab.test": Answer(a=["127.0.0.2"])}) as srv:
            ...  # point the probe at srv.address

    Names are matched case-insensitively and exactly (no suffix matching);
    unknown names get the ``"*"`` entry if there is one (a resolver that answers
    every name, as a captive portal's does), else NXDOMAIN. ``srv.queries`` records every query
    received as ``(qname, qtype)`` with the qname lower-cased and without the
    trailing dot, e.g. ``("site.lab.test", "A")``.
    """

    def __init__(self, zone: Mapping[str, Behaviour], host: str = "127.0.0.1") -> None:
        _require_loopback(host)
        self.zone: dict[str, Behaviour] = {_norm(k): v for k, v in zone.items()}
        self.host = host
        self.port: int = 0
        self.queries: list[tuple[str, str]] = []
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def address(self) -> str:
        """``"HOST:PORT"`` of the running server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> DnsServer:
        """Bind the UDP socket on an ephemeral port and start answering."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, 0)
        )
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    async def stop(self) -> None:
        """Cancel pending (delayed/racing) replies and close the socket."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            await asyncio.sleep(0)  # let the transport finish closing

    async def __aenter__(self) -> DnsServer:
        return await self.start()

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    # ---- internals -------------------------------------------------------

    def _handle(self, data: bytes, addr) -> None:
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return  # not a DNS query: ignore, like most resolvers
        if not query.question or query.flags & dns.flags.QR:
            return
        q = query.question[0]
        qname = _norm(q.name.to_text())
        qtype = dns.rdatatype.to_text(q.rdtype)
        self.queries.append((qname, qtype))
        behaviour = self.zone.get(qname, self.zone.get("*", NXDOMAIN))
        self._spawn(self._respond(behaviour, query, addr))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _respond(self, behaviour: Behaviour, query: dns.message.Message, addr) -> None:
        if isinstance(behaviour, Delayed):
            await asyncio.sleep(behaviour.delay)
            await self._respond(behaviour.inner, query, addr)
            return
        if isinstance(behaviour, Race):
            # Schedule the late (genuine) reply independently so both really
            # go out even if `first` is itself delayed.
            self._spawn(self._respond(Delayed(behaviour.second, behaviour.delay), query, addr))
            await self._respond(behaviour.first, query, addr)
            return
        wire = self._wire(behaviour, query)
        if wire is not None and self._transport is not None:
            self._transport.sendto(wire, addr)

    @staticmethod
    def _wire(behaviour: Behaviour, query: dns.message.Message) -> bytes | None:
        if behaviour is SILENT:
            return None
        if behaviour is GARBAGE:
            return query.id.to_bytes(2, "big") + _GARBAGE_TAIL
        response = dns.message.make_response(query, recursion_available=True)
        if isinstance(behaviour, _Rcode):
            response.set_rcode(behaviour.value)
            return response.to_wire()
        q = query.question[0]
        if isinstance(behaviour, Answer):
            owner = q.name
            if behaviour.cname and q.rdtype in (
                dns.rdatatype.A,
                dns.rdatatype.AAAA,
                dns.rdatatype.CNAME,
            ):
                target = dns.name.from_text(behaviour.cname)
                response.answer.append(
                    dns.rrset.from_text(
                        q.name, behaviour.ttl, "IN", "CNAME", target.to_text()
                    )
                )
                owner = target
            addrs: tuple[str, ...] | list[str] = ()
            if q.rdtype == dns.rdatatype.A:
                addrs = behaviour.a
            elif q.rdtype == dns.rdatatype.AAAA:
                addrs = behaviour.aaaa
            if addrs:
                response.answer.append(
                    dns.rrset.from_text_list(
                        owner, behaviour.ttl, "IN", dns.rdatatype.to_text(q.rdtype), list(addrs)
                    )
                )
        elif isinstance(behaviour, Txt):
            if q.rdtype == dns.rdatatype.TXT and behaviour.texts:
                rdatas = ['"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in behaviour.texts]
                response.answer.append(
                    dns.rrset.from_text_list(q.name, behaviour.ttl, "IN", "TXT", rdatas)
                )
        else:  # pragma: no cover - programming error in a test
            raise TypeError(f"unknown DNS behaviour: {behaviour!r}")
        return response.to_wire()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr) -> None:
        self.server._handle(data, addr)

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable
        pass
