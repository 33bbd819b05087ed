"""One URL, every step: DNS, then TCP and TLS to every address, HTTP, and the control.

This module sequences the steps and collects their records; it decides nothing. Steps
that do not depend on each other run concurrently (all DNS queries; all connects; the
control query alongside everything after DNS), each under its own timeout, so a URL
costs about one timeout of its slowest step rather than the sum of all of them. Nothing
is waited for twice: a fetch is not sent to an address whose connect already timed out
on its port. ``measure_network`` returns when the network work is done; the late-DNS
window then closes in ``Pending.finish``, so that a run can give the target's slot to
the next target meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from typing import Protocol

from yarl import URL

from probe.core import failures as F
from probe.core.addresses import is_ip, split_url
from probe.core.answers import browser_addresses
from probe.core.constants import BODY_CAP, BODY_KEEP
from probe.core.records import (
    ControlResult,
    HttpRequest,
    Measurement,
    Stopwatch,
    TcpConnect,
    TlsHandshake,
)
from probe.core.scrub import Scrubber
from probe.measure import dns as dnsstep
from probe.measure.http import (
    AddressGuard,
    ByteMeter,
    FetchOptions,
    fallback_url,
    fetch_http,
    fetch_http_fallback,
    new_session,
)
from probe.measure.pacing import PER_HOST_CONNECTIONS, START_SPREAD_S, HostLimiter
from probe.measure.tcp import tcp_connect
from probe.measure.tls import (
    ClockCorrection,
    load_trust_roots,
    make_ssl_context,
    tls_handshake,
)

# Failures right after our ClientHello, before any server byte, after which a benign
# SNI is tried on the same address: that is what SNI filtering looks like. A server
# that answered (bad certificate, garbage) is not retried.
SNI_RETRY_FAILURES = {F.CONNECTION_RESET, F.EOF, F.GENERIC_TIMEOUT, F.SSL_HANDSHAKE_FAILURE}


@dataclass
class ProbeConfig:
    """Everything that shapes a measurement. Defaults suit a home connection."""

    dns_timeout: float = 4.0  # OONI's per-lookup timeout
    tcp_timeout: float = 5.0
    tls_timeout: float = 8.0
    http_timeout: float = 15.0
    control_timeout: float = 50.0  # outlasts the helper's own 45 s hard timeout
    resolvers: list[str] = field(default_factory=dnsstep.system_resolvers)
    system_resolver: bool = True
    doh_url: str | None = None
    dns_late_window: float = 1.0  # listen this long for a second, racing reply
    # An address that runs no DNS server (by default the control helper's): a query
    # sent there should go unanswered, so any answer was injected on the path
    # (GFWatch's method; OONI ts-012).
    dns_sink: str | None = None
    per_family: int = 4
    ports: tuple[int, ...] = (80, 443)
    max_redirects: int = 10
    body_cap: int = BODY_CAP
    body_keep: int = BODY_KEEP
    ca_file: str | None = None
    control_sni: str | None = "example.com"
    http_fallback_port: int = 80
    http_fallback: bool = True
    # Censorship labs only: private ranges that stand for the open internet, recorded
    # with the run so that analysis does not call every lab address a bogon.
    lab_networks: list[str] = field(default_factory=list)
    # control helpers of the run, in the order they are used (recorded with the run)
    controls: list[str] = field(default_factory=list)
    # after the first attempt, retries of one control request (429, 503, a lost
    # connection) fit in this many seconds; waiting for the helper's grant is not counted
    control_retry_budget: float = 60.0
    # local clock minus the control helper's, when it is off by more than a few
    # minutes: certificates are then judged at the helper's time
    clock_skew_s: float | None = None
    # this computer's download speed from the control helper, bytes/s: analysis tells a
    # slow link (every large page slow) from one site throttled
    link_bytes_per_s: float | None = None
    # what a run that continues after a network change needs to know: whether the
    # resolvers are this computer's (read again then) and the network may be looked up
    resolvers_from_system: bool = True
    vantage_lookup: bool = True
    # Whether this run replaces the volunteer's public address by a placeholder in what
    # pages show (probe.core.scrub): on unless --store-ip. Recorded with the run.
    scrub_own_address: bool = False
    # That address, while the run knows it (the vantage lookup). Never stored: the
    # "stored": False of its metadata keeps it out of the run's recorded configuration.
    own_addresses: list[str] = field(default_factory=list, metadata={"stored": False})
    # Pacing (probe.measure.pacing), recorded with the run: connections to one address
    # at once, and the moment over which the run's workers start.
    per_host_connections: int = PER_HOST_CONNECTIONS
    start_spread: float = START_SPREAD_S

    def fetch_options(self) -> FetchOptions:
        return FetchOptions(
            timeout=self.http_timeout,
            connect_timeout=self.tcp_timeout,
            max_redirects=self.max_redirects,
            body_cap=self.body_cap,
            body_keep=self.body_keep,
            scrubber=self.scrubber() or None,
        )

    def scrubber(self) -> Scrubber:
        """What replaces the volunteer's address in pages (nothing, when not known)."""
        return Scrubber(self.own_addresses if self.scrub_own_address else ())


class Control(Protocol):
    async def measure(self, url: str, addresses: list[str]) -> ControlResult: ...


@dataclass
class Contexts:
    """TLS contexts are costly to build (they load the trust store): build once per run.

    When this computer's clock is off (``clock_skew_s``), ``verify`` verifies nothing and
    ``clock`` judges every chain at the control's time instead (OpenSSL can only judge
    at the local time, which would make every certificate look expired or not yet
    valid)."""

    verify: ssl.SSLContext
    capture: ssl.SSLContext
    clock: ClockCorrection | None = None
    meter: ByteMeter | None = None  # what the run downloaded, against its data cap
    hosts: HostLimiter | None = None  # a run's cap on connections per address (none: uncapped)

    @classmethod
    def for_config(cls, config: ProbeConfig) -> Contexts:
        capture = make_ssl_context(verify=False)
        if config.clock_skew_s:
            return cls(capture, capture, ClockCorrection(config.clock_skew_s, load_trust_roots(config.ca_file)))
        return cls(make_ssl_context(config.ca_file), capture)


async def run_dns(hostname: str, config: ProbeConfig, session, late_tasks: list[asyncio.Task]):
    """Every DNS query for the name, concurrently."""
    if is_ip(hostname):
        return []
    jobs = []
    if config.system_resolver:
        jobs.append(dnsstep.resolve_system(hostname, timeout=config.dns_timeout))
    for resolver in config.resolvers:
        for qtype in ("A", "AAAA"):
            jobs.append(
                dnsstep.resolve_udp(
                    hostname,
                    qtype,
                    resolver,
                    timeout=config.dns_timeout,
                    late_window=config.dns_late_window,
                    late_tasks=late_tasks,
                )
            )
    if config.doh_url and session is not None:
        for qtype in ("A", "AAAA"):
            jobs.append(dnsstep.resolve_doh(hostname, qtype, config.doh_url, session, timeout=config.dns_timeout))
    return list(await asyncio.gather(*jobs))


async def _sink_query(hostname: str, config: ProbeConfig):
    # An injected reply comes within a round trip to the injector: the sink is listened
    # to as long as second replies are (--dns-wait), overlapping the other steps.
    assert config.dns_sink is not None  # only started with a sink
    q = await dnsstep.resolve_udp(hostname, "A", config.dns_sink,
                                  timeout=min(config.dns_timeout, config.dns_late_window))
    q.engine = "sink"
    return q


async def run_connects(
    addresses: list[str], ports: list[int], config: ProbeConfig, guard: AddressGuard | None = None,
    hosts: HostLimiter | None = None,
) -> list[TcpConnect]:
    """A connect to every address on every port, at once (within ``hosts``' cap per
    address, waited for before each connect's own timeout starts)."""
    jobs = []
    for ip in addresses:
        for port in ports:
            if guard is not None and not guard(ip):
                sw = Stopwatch()
                jobs.append(_const(TcpConnect(ip, port, sw.started_at, 0.0, False, F.REFUSED_ADDRESS)))
            else:
                jobs.append(_paced_connect(ip, port, config.tcp_timeout, hosts))
    return list(await asyncio.gather(*jobs))


async def _paced_connect(ip: str, port: int, timeout: float, hosts: HostLimiter | None) -> TcpConnect:
    async with held(hosts, ip):
        return await tcp_connect(ip, port, timeout=timeout)


def held(hosts: HostLimiter | None, *ips: str) -> contextlib.AbstractAsyncContextManager:
    """A slot on each of ``ips`` under the run's cap, or nothing when uncapped."""
    return hosts.hold_all(ips) if hosts is not None else contextlib.nullcontext()


async def _const(value):
    return value


async def run_handshakes(
    hostname: str,
    tls_ports: list[int],
    connects: list[TcpConnect],
    config: ProbeConfig,
    contexts: Contexts,
    *,
    sni_retry: bool = True,
) -> list[TlsHandshake]:
    """A handshake on every address whose TCP connect to a TLS port succeeded; after a
    failure that looks like SNI filtering, the same address with a benign SNI."""
    reachable = [(c.ip, c.port) for c in connects if c.success and c.port in tls_ports]

    async def one(ip: str, port: int) -> list[TlsHandshake]:
        async with held(contexts.hosts, ip):
            return await both(ip, port)

    async def both(ip: str, port: int) -> list[TlsHandshake]:
        first = await tls_handshake(
            ip,
            port,
            hostname,
            timeout=config.tls_timeout,
            context=contexts.verify,
            capture_context=contexts.capture,
            clock=contexts.clock,
        )
        out = [first]
        if (
            sni_retry
            and config.control_sni
            and config.control_sni != hostname
            and first.failure in SNI_RETRY_FAILURES
            and first.failure_stage == "after_client_hello"
        ):
            out.append(
                await tls_handshake(
                    ip,
                    port,
                    config.control_sni,
                    timeout=config.tls_timeout,
                    context=contexts.capture,  # only "does it handshake", not validity
                    sni_role="control",
                )
            )
        return out

    results = await asyncio.gather(*(one(ip, port) for ip, port in reachable))
    return [h for group in results for h in group]


# A hop that failed for one of these reasons got a reply: there is nothing more for the
# DNS/TCP/TLS steps of its host to tell.
REPLY_FAILURES = {F.HTTP_INVALID_REDIRECT, F.HTTP_TOO_MANY_REDIRECTS, F.HTTP_PROTOCOL_ERROR, F.BODY_TOO_LARGE,
                  F.REFUSED_ADDRESS}


async def measure_failed_hop(
    m: Measurement, config: ProbeConfig, contexts: Contexts, late_tasks: list[asyncio.Task]
) -> None:
    """When a redirect leads to another host and that hop fails, measure that host's DNS,
    TCP and TLS too (OONI LTE measures every hop), so analysis can say whether the target
    was blocked by name, address or SNI. Its records join the measurement's lists: DNS
    queries carry the name, connects the addresses, handshakes the SNI."""
    main = [h for h in m.http if h.kind == "main"]
    if len(main) < 2 or main[-1].failure is None or main[-1].failure in REPLY_FAILURES:
        return
    try:
        scheme, host, port = split_url(main[-1].url)
    except ValueError:
        return
    measured_ports, _ = ports_for(m.scheme, m.port, config)
    if host == m.hostname and port in measured_ports:
        return  # the main steps already covered this host and port
    queries = await run_dns(host, config, None, late_tasks)
    addresses = [host] if is_ip(host) else dnsstep.collect_addresses(queries, config.per_family)
    connects = await run_connects(addresses, [port], config, hosts=contexts.hosts)
    handshakes = await run_handshakes(host, [port] if scheme == "https" else [], connects, config, contexts)
    m.dns += queries
    m.tcp += connects
    m.tls += handshakes


def ports_for(scheme: str, port: int, config: ProbeConfig) -> tuple[list[int], list[int]]:
    """(TCP ports, TLS ports): the URL's port plus 80 and 443; TLS on 443 and on the
    URL's port when the URL is https."""
    tcp_ports = [port] + [p for p in config.ports if p != port]
    tls_ports = [443] if 443 in tcp_ports else []
    if scheme == "https" and port not in tls_ports:
        tls_ports.insert(0, port)
    return tcp_ports, tls_ports


@dataclass
class Pending:
    """A measurement whose network work is done but whose DNS sockets are still open
    for late (injected, racing) replies. Why apart: that window is a wait, not work, so
    a run frees the target's slot for the next target and finishes this one when the
    window closes. Only a finished measurement is stored: one cut short (Ctrl-C, a
    deadline) is measured again on --resume, never stored without its window."""

    m: Measurement
    stopwatch: Stopwatch
    late_tasks: list[asyncio.Task] = field(default_factory=list)
    sink_task: asyncio.Task | None = None

    async def finish(self) -> Measurement:
        """Wait for the late-reply windows to close (they close by themselves), add
        what they heard, and stamp the end of the measurement."""
        try:
            if self.late_tasks:
                await asyncio.gather(*self.late_tasks, return_exceptions=True)
        except BaseException:
            self.cancel()
            raise
        sink = self.sink_task
        if sink is not None and not sink.cancelled() and sink.exception() is None:
            self.m.dns.append(sink.result())
        self.m.finished_at = Stopwatch().started_at
        self.m.duration_ms = self.stopwatch.ms()
        return self.m

    def cancel(self) -> None:
        for t in self.late_tasks:
            t.cancel()


async def measure_url(
    url: str,
    config: ProbeConfig,
    *,
    contexts: Contexts | None = None,
    control: Control | None = None,
    category: str | None = None,
) -> Measurement:
    """Measure one URL from here, and ask the control for the same. Never raises for a
    network failure; every failure is a field of the returned Measurement."""
    pending = await measure_network(url, config, contexts=contexts, control=control, category=category)
    return await pending.finish()


async def measure_network(
    url: str,
    config: ProbeConfig,
    *,
    contexts: Contexts | None = None,
    control: Control | None = None,
    category: str | None = None,
) -> Pending:
    """Every network step of one URL and the control's answer; returns as soon as those
    are done, with the late-DNS windows still open (``Pending.finish`` closes them)."""
    contexts = contexts or Contexts.for_config(config)
    scheme, hostname, port = split_url(url)
    sw = Stopwatch()
    m = Measurement(url=url, hostname=hostname, scheme=scheme, port=port, started_at=sw.started_at, category=category)
    pending = Pending(m, sw)
    control_task: asyncio.Task | None = None
    try:
        # The sink usually stays silent until its timeout: let that wait overlap the
        # other steps instead of holding up the DNS phase.
        if config.dns_sink and config.dns_late_window > 0 and not is_ip(hostname):
            pending.sink_task = asyncio.ensure_future(_sink_query(hostname, config))
            pending.late_tasks.append(pending.sink_task)
        m.dns = await _dns_step(hostname, config, contexts, pending.late_tasks)
        if is_ip(hostname):
            m.addresses = [hostname]
            browser = [hostname]
        else:
            m.addresses = dnsstep.collect_addresses(m.dns, config.per_family)
            browser = browser_addresses(m.dns)

        if control is not None:
            control_task = asyncio.ensure_future(control.measure(url, m.addresses))

        tcp_ports, tls_ports = ports_for(scheme, port, config)
        m.tcp = await run_connects(m.addresses, tcp_ports, config, hosts=contexts.hosts)
        m.tls = await run_handshakes(hostname, tls_ports, m.tcp, config, contexts)
        m.http = await _http_step(url, hostname, browser, m, config, contexts)
        await measure_failed_hop(m, config, contexts, pending.late_tasks)

        if control_task is not None:
            m.control = await control_task
    except BaseException:
        if control_task is not None:
            control_task.cancel()
        pending.cancel()
        raise
    return pending


async def _dns_step(hostname: str, config: ProbeConfig, contexts: Contexts, late_tasks: list[asyncio.Task]):
    # The DoH query rides on an unpinned session; the page fetch gets its own.
    opts = config.fetch_options()
    doh_session = new_session({}, contexts.verify, opts, clock=contexts.clock) if config.doh_url else None
    try:
        return await run_dns(hostname, config, doh_session, late_tasks)
    finally:
        if doh_session is not None:
            await doh_session.close()


async def _http_step(url: str, hostname: str, browser: list[str], m: Measurement, config: ProbeConfig,
                     contexts: Contexts) -> list[HttpRequest]:
    """The page as a browser fetches it, then (an https page that got no reply) plain
    http:// on each address. An address whose connect timed out in the TCP step is not
    connected to again on that port: a second wait of a whole timeout would tell
    nothing the first did not (``timed_out_fetch``)."""
    opts = config.fetch_options()
    opts.meter = contexts.meter
    # aiohttp resolves the punycode spelling of an IDN host: pin both.
    raw_host = (URL(url).raw_host or hostname).strip("[]").lower()
    session = new_session({hostname: browser, raw_host: browser}, contexts.verify, opts, clock=contexts.clock)
    try:
        if not browser:
            http = [HttpRequest(url, "main", 0, Stopwatch().started_at, 0.0, failure=F.NO_ADDRESSES)]
        elif (skipped := timed_out_fetch(url, "main", browser, m.port, m.tcp)) is not None:
            http = [skipped]
        else:
            async with held(contexts.hosts, *browser):
                http = await fetch_http(session, url, opts)
        if m.scheme == "https" and http[0].status is None and config.http_fallback:
            http += await asyncio.gather(*(
                _fallback(session, hostname, ip, opts, config.http_fallback_port, m.tcp, contexts.hosts)
                for ip in m.addresses))
    finally:
        await session.close()
    return http


async def _fallback(session, hostname: str, ip: str, opts: FetchOptions, port: int, tcp: list[TcpConnect],
                    hosts: HostLimiter | None) -> HttpRequest:
    skipped = timed_out_fetch(fallback_url(ip, port), "http_fallback", [ip], port, tcp)
    if skipped is not None:
        return skipped
    async with held(hosts, ip):
        return await fetch_http_fallback(session, hostname, ip, opts, port)


def timed_out_fetch(url: str, kind: str, addresses: list[str], port: int,
                    tcp: list[TcpConnect]) -> HttpRequest | None:
    """The record of a fetch that was not attempted because every address it would
    connect to already timed out on that port in the TCP step (a blackholed address),
    else None. Why: the fetch would open a new connection to the same silent address
    and wait the same connect timeout again, doubling the cost of every blackholed
    target for no new evidence. The record says so (``attempted`` false) and what a
    fetch would have met, and when: ``generic_timeout`` (as aiohttp's connect timeout is
    recorded), with the start and duration of the timed-out connect it stands for, and
    no address (none answered)."""
    tried = {c.ip: c for c in tcp if c.port == port and c.ip in addresses}
    if not addresses or set(addresses) - tried.keys():
        return None  # an address the TCP step did not try: fetch as usual
    if any(c.failure != F.GENERIC_TIMEOUT for c in tried.values()):
        return None
    first = min(tried.values(), key=lambda c: c.started_at)
    longest = max(c.duration_ms for c in tried.values())
    return HttpRequest(url, kind, 0, first.started_at, longest, failure=F.GENERIC_TIMEOUT, attempted=False)
