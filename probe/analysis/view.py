"""A read-only view of one measurement for the classifier: what each side saw, derived
once. Pure: built from a probe.core.records.Measurement and a Context, no I/O."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Generic, TypeVar

from yarl import URL

from probe.analysis.fingerprints import FingerprintDB, Match, default_fingerprints
from probe.core import failures as F
from probe.core.answers import system_resolver_gave_up
from probe.core.records import DnsQuery, HttpRequest, Measurement, TlsHandshake

# Failures that mean "no answer came at all": nothing was learned about the name.
NO_RESPONSE = {F.GENERIC_TIMEOUT, F.DNS_TEMPORARY_FAILURE, F.CONNECTION_REFUSED, F.NETWORK_UNREACHABLE,
               F.HOST_UNREACHABLE}


@dataclass
class Context:
    """What the classifier knows beyond the measurement itself."""

    cc: str | None = None
    asn: str | None = None
    # censorship labs: private ranges standing for the open internet (recorded with the run)
    lab_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    fingerprints: FingerprintDB = field(default_factory=default_fingerprints)
    # share of this run's measurements whose local DNS failed; with no control at all,
    # a run where (nearly) every name fails says "no network", not "this site is blocked"
    run_dns_failure_rate: float | None = None
    run_size: int = 0
    # address families (4, 6) that fail at this vantage point for (nearly) every
    # dual-stack site of the run while the other works: the volunteer's own network
    broken_families: frozenset[int] = frozenset()
    # the link's download speed (bytes/s): measured against the control helper at the
    # start of the run, else the median of the run's large pages; None when unknown
    link_bytes_per_s: float | None = None

    def family_broken(self, fam: int) -> bool:
        return fam in self.broken_families


T = TypeVar("T")


class lazy(Generic[T]):  # a decorator, named like one
    """functools.cached_property without its lock: Python 3.11 takes an RLock on every
    first access, which cost a tenth of the classifier's time. A View is never shared
    between threads. Like cached_property, the value then lives in the instance."""

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> T:
        value = obj.__dict__[self.name] = self.func(obj)
        return value


@lru_cache(maxsize=1 << 16)
def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.split("%")[0].strip("[]"))
    except ValueError:
        return None


@lru_cache(maxsize=1 << 16)
def norm_host(name: str | None) -> str:
    """A host name as DNS sees it: lower case, no trailing dot, IDNA (punycode), so an
    OONI query for ``xn--d1acpjx3f.xn--p1ai`` belongs to the URL ``http://яндекс.рф/``."""
    name = (name or "").strip().rstrip(".").strip("[]").lower()
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return name


@dataclass
class HopSteps:
    """What the probe measured for the host of one redirect hop (OONI LTE measures every
    hop's DNS, TCP and TLS; our probe does when a later hop fails): the host's own DNS
    queries, connects to its addresses on the hop's port, and handshakes with its name."""

    url: str
    host: str
    scheme: str
    port: int
    dns: list[DnsQuery]
    answers: list[str]
    tcp: list
    tls: list[TlsHandshake]


def addresses_of(queries: list[DnsQuery]) -> list[str]:
    """Every address the queries answered, first seen first, once each."""
    out: list[str] = []
    for q in queries:
        out += [ip for ip in q.addresses() if ip not in out]
    return out


def family(ip: str) -> int:
    """4 or 6: what partial blocking is judged by, in DNS answers and connects alike."""
    return 6 if ":" in ip else 4


def host_of(address: str | None) -> str | None:
    """'1.2.3.4:80' / '[::1]:443' -> the IP."""
    if not address:
        return None
    if address.startswith("["):
        return address[1:].split("]")[0]
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


@lru_cache(maxsize=1 << 16)
def _is_special(ip: str) -> bool:
    addr = _ip(ip)
    if addr is None:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return not addr.is_global


@lru_cache(maxsize=1 << 16)
def _is_bogon(ip: str, lab_networks: tuple) -> bool:
    addr = _ip(ip)
    if addr is None or any(addr in net for net in lab_networks):
        return False
    return _is_special(ip)


class View:
    def __init__(self, m: Measurement, ctx: Context):
        self.m = m
        self.ctx = ctx
        self._http_matches: dict[str, list[Match]] = {}

    # --- helpers ---------------------------------------------------------------------

    def is_bogon(self, ip: str) -> bool:
        """Not routable on the internet: private, loopback, link-local, reserved, ...
        (a lab's own range excepted)."""
        return _is_bogon(ip, self.ctx.lab_networks)

    @staticmethod
    def is_special(ip: str) -> bool:
        """Not a global address, whatever the lab says: a fingerprint naming such an
        address (127.0.0.1, 10.10.34.35) counts only for its own country, since sites and
        labs use these addresses too."""
        return _is_special(ip)

    @lazy
    def ip_literal(self) -> bool:
        return _ip(self.m.hostname) is not None

    # --- local DNS -------------------------------------------------------------------

    @lazy
    def host_key(self) -> str:
        return norm_host(self.m.hostname)

    def _queries(self, engine: str, host: str | None = None) -> list[DnsQuery]:
        """Queries of one engine for the URL's own name (or ``host``): queries for a
        redirect target's name are that hop's evidence, not the site's."""
        key = self.host_key if host is None else norm_host(host)
        return [q for q in self.m.dns if q.engine == engine and norm_host(q.hostname) == key]

    @lazy
    def system_resolver_gave_up(self) -> bool:
        """getaddrinfo timed out while direct queries to the same resolvers were answered
        (a slow or lossy link): those answers stand in for it."""
        return system_resolver_gave_up(self._queries("system") + self._queries("udp"))

    @lazy
    def browser_queries(self) -> list[DnsQuery]:
        """What the browser's view rests on: getaddrinfo, else the direct UDP queries."""
        if self.system_resolver_gave_up:
            return self._queries("udp")
        return self._queries("system") or self._queries("udp")

    @lazy
    def local_answers(self) -> list[str]:
        return addresses_of(self.browser_queries)

    @lazy
    def local_dns_failure(self) -> str | None:
        """The failure of the browser's view when it gave no address (None otherwise).
        NXDOMAIN-like answers win over timeouts: they are what the resolver said."""
        if self.local_answers or not self.browser_queries:
            return None
        fails = [q.failure for q in self.browser_queries if q.failure]
        for preferred in (F.DNS_NXDOMAIN, F.DNS_SERVFAIL, F.DNS_REFUSED, F.DNS_NO_ANSWER):
            if preferred in fails:
                return preferred
        return fails[0] if fails else F.DNS_NO_ANSWER

    @lazy
    def doh_answers(self) -> list[str]:
        return sorted({ip for q in self._queries("doh") for ip in q.addresses()})

    @lazy
    def sink_answers(self) -> list[tuple[DnsQuery, str]]:
        return [(q, ip) for q in self._queries("sink") for ip in q.addresses()]

    @lazy
    def racing_replies(self) -> list[tuple[DnsQuery, list[str]]]:
        """UDP queries answered twice with different addresses."""
        out = []
        for q in self._queries("udp"):
            first = set(q.addresses())
            for r in q.extra_replies:
                other = {a.value for a in r.answers if a.answer_type in ("A", "AAAA")}
                if other != first:
                    out.append((q, sorted(other)))
        return out

    # --- control ---------------------------------------------------------------------

    @lazy
    def has_control(self) -> bool:
        c = self.m.control
        return c is not None and c.failure is None

    @lazy
    def control_answers(self) -> set[str]:
        if not self.has_control:
            return set()
        assert self.m.control is not None  # has_control
        return {ip for q in self.m.control.dns for ip in q.addresses()}

    @lazy
    def control_dns_failed(self) -> bool:
        if not self.has_control or self.ip_literal:
            return False
        return not self.control_answers

    @lazy
    def control_ip_info(self) -> dict[str, dict]:
        raw = (self.m.control.raw or {}) if self.m.control else {}
        info = raw.get("ip_info") if isinstance(raw, dict) else None
        return info if isinstance(info, dict) else {}

    @lazy
    def reference_answers(self) -> set[str]:
        """Addresses the name has where nobody lies: the control's, else DoH's."""
        return self.control_answers or set(self.doh_answers)

    def control_tls(self, port: int) -> list[TlsHandshake]:
        if not self.has_control:
            return []
        assert self.m.control is not None  # has_control
        return [t for t in self.m.control.tls if t.port == port and t.sni_role == "target"]

    @lazy
    def control_tls_ok(self) -> bool:
        return any(t.success and t.cert_valid for t in self.control_tls(self.m.port)) or (
            self.m.scheme == "https" and self.control_final is not None and self.control_final.status is not None
        )

    def control_tcp_ok(self, port: int) -> bool:
        if not self.has_control:
            return False
        assert self.m.control is not None  # has_control
        return any(c.success for c in self.m.control.tcp if c.port == port) or (
            self.control_final is not None and self.control_final.status is not None
        )

    @lazy
    def control_main(self) -> list[HttpRequest]:
        if not self.has_control:
            return []
        assert self.m.control is not None  # has_control
        return [h for h in self.m.control.http if h.kind == "main"]

    @lazy
    def control_final(self) -> HttpRequest | None:
        return self.control_main[-1] if self.control_main else None

    @lazy
    def control_http_ok(self) -> bool:
        """The control got a page: a final response that did not break off. Its last
        302 of a redirect loop is a response, but not a page (http_too_many_redirects)."""
        f = self.control_final
        return f is not None and f.status is not None and f.failure in (None, F.BODY_TOO_LARGE)

    # --- local TCP / TLS / HTTP ------------------------------------------------------

    @lazy
    def local_main(self) -> list[HttpRequest]:
        return [h for h in self.m.http if h.kind == "main"]

    @lazy
    def local_final(self) -> HttpRequest | None:
        return self.local_main[-1] if self.local_main else None

    @lazy
    def fallbacks(self) -> list[HttpRequest]:
        return [h for h in self.m.http if h.kind == "http_fallback"]

    def target_tcp(self, port: int) -> list:
        """Connects to the site's own addresses on ``port`` (not to a redirect target's)."""
        own = set(self.m.addresses)
        return [c for c in self.m.tcp if c.port == port and (not own or c.ip in own)]

    def target_tls(self, port: int, host: str | None = None) -> list[TlsHandshake]:
        """Handshakes with the site's name (or ``host``'s) on ``port``."""
        names = (self.host_key, "") if host is None else (norm_host(host),)
        return [t for t in self.m.tls if t.port == port and t.sni_role == "target" and norm_host(t.server_name) in names]

    def benign_tls(self, ip: str, port: int) -> list[TlsHandshake]:
        return [t for t in self.m.tls if t.port == port and t.ip == ip and t.sni_role == "control"]

    @lazy
    def tls_valid_ips(self) -> set[str]:
        """Local addresses that presented a valid certificate for the name: genuine."""
        return {t.ip for t in self.m.tls if t.sni_role == "target" and t.success and t.cert_valid}

    @lazy
    def https_fetch_address(self) -> str | None:
        """The local answer through which the URL itself (hop 0) was fetched over HTTPS
        with a certificate that validated for the name: "" when the fetch records no
        address (OONI v0.4, which fetches through the probe's own answers), None when
        there was no such fetch. A validated fetch vouches for the answer it used."""
        h = self.local_main[0] if self.local_main else None
        if (h is None or not h.url.startswith("https://") or h.status is None
                or h.failure not in (None, F.BODY_TOO_LARGE) or norm_host(URL(h.url).host) != self.host_key):
            return None
        ip = self.response_ip(h)
        if ip is None:
            return "" if self.local_answers else None
        return ip if ip in self.local_answers else None

    def hop_steps(self, h: HttpRequest) -> HopSteps | None:
        """The DNS/TCP/TLS evidence for the host of hop ``h``: for the URL's own host,
        what the main steps measured; for another host, what was measured for it."""
        u = URL(h.url)
        if not u.host or u.scheme not in ("http", "https"):
            return None
        host = u.host.strip("[]")
        port = u.port or (443 if u.scheme == "https" else 80)
        if norm_host(host) == self.host_key:
            dns = self.browser_queries
            answers = self.local_answers if dns else list(self.m.addresses)
            tcp = self.target_tcp(port)
        else:
            dns = self._queries("system", host) or self._queries("udp", host)
            answers = [host] if _ip(host) is not None else addresses_of(dns)
            tcp = [c for c in self.m.tcp if c.port == port and c.ip in answers]
        return HopSteps(h.url, host, u.scheme, port, dns, answers, tcp, self.target_tls(port, host))

    def http_matches(self, h: HttpRequest) -> list[Match]:
        """Fingerprint matches of one response, computed once per measurement (the DNS
        and HTTP layers both ask)."""
        if h.request_id not in self._http_matches:
            self._http_matches[h.request_id] = self.ctx.fingerprints.match_http(h)
        return self._http_matches[h.request_id]

    def response_ip(self, h: HttpRequest) -> str | None:
        if h.address:
            return host_of(h.address)
        host = URL(h.url).host
        return host.strip("[]") if host and _ip(host) else None
