"""The real probe against real local servers: one test per failure string and per
hostile-server case. Each builds a tiny world (DNS, web, TLS, raw TCP) on loopback."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import lab_config
from servers import (
    CP1251_TITLE,
    GARBAGE,
    NXDOMAIN,
    REFUSED,
    SERVFAIL,
    SILENT,
    Answer,
    DnsServer,
    Race,
    RawTcpServer,
    WebServer,
    site_app,
    unused_port,
)

from probe.core import failures as F
from probe.measure.url import measure_url

SITE = "site.lab.test"


def local_dns(m, qtype="A"):
    return next(q for q in m.dns if q.engine == "udp" and q.query_type == qtype)


def main_hops(m):
    return [h for h in m.http if h.kind == "main"]


# --- a working site ----------------------------------------------------------------------


async def test_working_https_site_records_every_step(pki, ca_file):
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, WebServer(
        site_app(title="Working site"), ssl_context=pki.server_context(SITE)
    ) as web:
        m = await measure_url(web.url("/", hostname=SITE), lab_config(dns.address, ca_file))
    a = local_dns(m)
    assert a.failure is None and a.rcode == "NOERROR" and a.responder == dns.address
    assert [x.value for x in a.answers] == ["127.0.0.1"] and a.answers[0].ttl == 300
    assert local_dns(m, "AAAA").failure == F.DNS_NO_ANSWER
    assert m.addresses == ["127.0.0.1"]
    assert [c.success for c in m.tcp] == [True]
    (tls,) = m.tls
    assert tls.success and tls.cert_valid and tls.server_name == SITE
    assert tls.tls_version in ("TLSv1.2", "TLSv1.3") and tls.alpn == "http/1.1"
    assert SITE in tls.peer_certificates[0].sans and "Lab CA" in tls.peer_certificates[0].issuer
    (hop,) = main_hops(m)
    assert hop.status == 200 and hop.title == "Working site" and hop.failure is None
    assert hop.address == f"127.0.0.1:{web.port}"
    assert hop.body_length == 2000 and len(hop.body_sha256) == 64 and hop.body_head.startswith(b"<")
    assert ("X-Lab-Site", "1") in [tuple(h) for h in hop.headers]
    assert m.duration_ms is not None and m.finished_at is not None
    assert m.duration_ms < 5000 and m.finished_at >= m.started_at


async def test_redirects_are_recorded_hop_by_hop(pki, ca_file):
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, WebServer(site_app()) as web:
        m = await measure_url(web.url("/redirect/2", hostname=SITE), lab_config(dns.address, ca_file))
    hops = main_hops(m)
    assert [h.status for h in hops] == [302, 302, 302, 200]
    assert hops[0].location.endswith("/redirect/1") and hops[-1].url.endswith("/")


# --- DNS failures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "behaviour, failure",
    [
        (NXDOMAIN, F.DNS_NXDOMAIN),
        (SERVFAIL, F.DNS_SERVFAIL),
        (REFUSED, F.DNS_REFUSED),
        (Answer(), F.DNS_NO_ANSWER),
        (SILENT, F.GENERIC_TIMEOUT),
        (GARBAGE, F.DNS_BAD_RESPONSE),
    ],
)
async def test_dns_failures(behaviour, failure):
    async with DnsServer({SITE: behaviour}) as dns:
        m = await measure_url(f"https://{SITE}/", lab_config(dns.address))
    assert local_dns(m).failure == failure
    assert m.addresses == [] and m.tcp == [] and m.tls == []
    assert main_hops(m)[0].failure == F.NO_ADDRESSES


async def test_cname_only_answer_is_no_answer():
    async with DnsServer({SITE: Answer(cname="elsewhere.lab.test")}) as dns:
        m = await measure_url(f"http://{SITE}/", lab_config(dns.address))
    q = local_dns(m)
    assert q.failure == F.DNS_NO_ANSWER and q.answers[0].answer_type == "CNAME"


async def test_a_second_racing_reply_is_kept_as_evidence(pki, ca_file):
    race = Race(first=Answer(a=["127.0.0.9"]), second=Answer(a=["127.0.0.1"]), delay=0.1)
    async with DnsServer({SITE: race}) as dns:
        m = await measure_url(f"http://{SITE}:{unused_port()}/", lab_config(dns.address, dns_late_window=0.6))
    q = local_dns(m)
    assert [a.value for a in q.answers] == ["127.0.0.9"]
    assert len(q.extra_replies) == 1
    extra = q.extra_replies[0]
    assert [a.value for a in extra.answers] == ["127.0.0.1"] and extra.delay_ms >= 80


async def test_system_resolver_is_recorded_for_localhost():
    async with WebServer(site_app()) as web:
        m = await measure_url(web.url("/", hostname="localhost"), lab_config(None, system_resolver=True))
    system = [q for q in m.dns if q.engine == "system"]
    assert system and system[0].failure is None and "127.0.0.1" in system[0].addresses()
    assert main_hops(m)[-1].status == 200


# --- TCP ----------------------------------------------------------------------------------


async def test_connection_refused():
    port = unused_port()
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns:
        m = await measure_url(f"http://{SITE}:{port}/", lab_config(dns.address))
    assert [(c.port, c.failure) for c in m.tcp] == [(port, F.CONNECTION_REFUSED)]
    assert main_hops(m)[0].failure == F.CONNECTION_REFUSED


async def test_connect_timeout_on_a_silent_address():
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, RawTcpServer("backlog_full") as srv:
        t0 = time.monotonic()
        m = await measure_url(f"http://{SITE}:{srv.port}/", lab_config(dns.address, tcp_timeout=0.8))
        elapsed = time.monotonic() - t0
    assert m.tcp[0].failure == F.GENERIC_TIMEOUT and m.tcp[0].duration_ms >= 700
    assert main_hops(m)[0].failure == F.GENERIC_TIMEOUT
    assert elapsed < 6


async def test_addresses_are_capped_per_family():
    ips = [f"127.0.0.{i}" for i in range(1, 9)]
    async with DnsServer({SITE: Answer(a=ips)}) as dns:
        m = await measure_url(f"http://{SITE}:{unused_port()}/", lab_config(dns.address, per_family=3))
    assert len(m.addresses) == 3 and set(m.addresses) <= set(ips)  # an rrset has no order
    assert len(m.tcp) == 3


# --- TLS ----------------------------------------------------------------------------------


async def test_reset_after_client_hello_is_told_from_a_connect_failure():
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, RawTcpServer("reset_after_data") as srv:
        m = await measure_url(f"https://{SITE}:{srv.port}/", lab_config(dns.address))
    target = [t for t in m.tls if t.sni_role == "target"][0]
    assert target.failure == F.CONNECTION_RESET
    assert target.failure_stage == "after_client_hello"
    assert target.bytes_sent > 200 and target.bytes_received == 0
    benign = [t for t in m.tls if t.sni_role == "control"]
    assert benign and benign[0].server_name == "benign.lab.test" and benign[0].failure == F.CONNECTION_RESET
    assert main_hops(m)[0].failure == F.CONNECTION_RESET


async def test_close_after_client_hello_is_eof():
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, RawTcpServer("close_after_data") as srv:
        m = await measure_url(f"https://{SITE}:{srv.port}/", lab_config(dns.address))
    target = [t for t in m.tls if t.sni_role == "target"][0]
    assert (target.failure, target.failure_stage) == (F.EOF, "after_client_hello")
    assert main_hops(m)[0].failure == F.EOF


async def test_garbage_instead_of_a_server_hello():
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, RawTcpServer("garbage") as srv:
        m = await measure_url(f"https://{SITE}:{srv.port}/", lab_config(dns.address))
    target = m.tls[0]
    assert target.failure == F.SSL_HANDSHAKE_FAILURE and target.failure_stage == "after_server_hello"
    assert [t.sni_role for t in m.tls] == ["target"]  # the server answered: no SNI retry


async def test_tls_stall_is_a_timeout():
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, RawTcpServer("silent") as srv:
        m = await measure_url(f"https://{SITE}:{srv.port}/", lab_config(dns.address, tls_timeout=0.8, http_timeout=1.0))
    assert m.tls[0].failure == F.GENERIC_TIMEOUT and m.tls[0].failure_stage == "after_client_hello"


@pytest.mark.parametrize(
    "kind, failure",
    [("expired", F.SSL_INVALID_CERTIFICATE), ("wrong_host", F.SSL_INVALID_HOSTNAME), ("unknown_ca", F.SSL_UNKNOWN_AUTHORITY)],
)
async def test_bad_certificates_are_recorded_with_the_chain(pki, ca_file, kind, failure):
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, WebServer(
        site_app(), ssl_context=pki.server_context(SITE, kind=kind)
    ) as web:
        m = await measure_url(web.url("/", hostname=SITE), lab_config(dns.address, ca_file))
    (tls,) = m.tls
    assert tls.failure == failure and tls.cert_valid is False and tls.cert_failure == failure
    assert tls.failure_stage == "after_server_hello"
    assert tls.peer_certificates, "the presented chain is captured even though it did not validate"
    leaf = tls.peer_certificates[0]
    if kind == "unknown_ca":
        assert "Untrusted Interception CA" in leaf.issuer
    if kind == "wrong_host":
        assert "wrong.host.invalid" in leaf.sans
    if kind == "expired":
        assert leaf.not_after < m.started_at
    assert main_hops(m)[0].failure == failure


# --- HTTP: hostile servers ---------------------------------------------------------------


async def test_endless_redirects_stop_at_the_limit():
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, WebServer(site_app()) as web:
        m = await measure_url(web.url("/loop", hostname=SITE), lab_config(dns.address))
    hops = main_hops(m)
    assert len(hops) == 11 and all(h.status == 302 for h in hops)
    assert hops[-1].failure == F.HTTP_TOO_MANY_REDIRECTS


async def test_huge_body_is_cut_without_holding_it(ca_file):
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, WebServer(site_app()) as web:
        t0 = time.monotonic()
        m = await measure_url(web.url("/huge", hostname=SITE), lab_config(dns.address, http_timeout=10))
        elapsed = time.monotonic() - t0
    (hop,) = main_hops(m)
    assert hop.status == 200 and hop.failure == F.BODY_TOO_LARGE and hop.body_truncated
    assert hop.body_length == 2 * 1024 * 1024 and len(hop.body_head) == 64 * 1024
    assert elapsed < 5, "reading stops at the cap; the other 98 MB are never fetched"


async def test_drip_feed_times_out_with_the_partial_body_kept():
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, WebServer(site_app()) as web:
        t0 = time.monotonic()
        m = await measure_url(web.url("/drip", hostname=SITE), lab_config(dns.address, http_timeout=1.5))
        elapsed = time.monotonic() - t0
    (hop,) = main_hops(m)
    assert hop.status == 200 and hop.failure == F.GENERIC_TIMEOUT
    assert 1 <= hop.body_length < 20
    assert elapsed < 4


async def test_invalid_utf8_title_is_kept_with_replacement_characters():
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, WebServer(site_app()) as web:
        m = await measure_url(web.url("/badutf8", hostname=SITE), lab_config(dns.address))
    (hop,) = main_hops(m)
    assert hop.status == 200 and hop.failure is None
    assert "\ufffd" in hop.title


async def test_a_windows_1251_title_declared_in_meta_is_decoded_with_its_entities():
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, WebServer(site_app()) as web:
        m = await measure_url(web.url("/cp1251", hostname=SITE), lab_config(dns.address))
    (hop,) = main_hops(m)
    assert hop.title == CP1251_TITLE


async def test_a_windows_1251_blockpage_matches_its_fingerprint():
    from probe.analysis.fingerprints import default_fingerprints

    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, WebServer(site_app()) as web:
        m = await measure_url(web.url("/blockpage-cp1251", hostname=SITE), lab_config(dns.address))
    (hop,) = main_hops(m)
    names = {x.fingerprint.name for x in default_fingerprints().match_http(hop)}
    assert "cl.isp_by_beltelecom_block" in names


async def test_http_reset_after_request():
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, RawTcpServer("reset_after_data") as srv:
        m = await measure_url(f"http://{SITE}:{srv.port}/", lab_config(dns.address))
    assert m.tcp[0].success
    assert main_hops(m)[0].failure == F.CONNECTION_RESET


async def test_http_eof_and_protocol_error():
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, RawTcpServer(
        "close_after_data"
    ) as closing, RawTcpServer("garbage") as garbage:
        m1 = await measure_url(f"http://{SITE}:{closing.port}/", lab_config(dns.address))
        m2 = await measure_url(f"http://{SITE}:{garbage.port}/", lab_config(dns.address))
    assert main_hops(m1)[0].failure == F.EOF
    assert main_hops(m2)[0].failure == F.HTTP_PROTOCOL_ERROR


async def test_redirect_to_a_non_http_location_is_invalid():
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, WebServer(site_app()) as web:
        m = await measure_url(web.url("/redirect-to?url=ftp://files.lab.test/x", hostname=SITE), lab_config(dns.address))
    (hop,) = main_hops(m)
    assert hop.status == 302 and hop.failure == F.HTTP_INVALID_REDIRECT


async def test_https_failure_triggers_plain_http_fallback_per_address(pki):
    async with DnsServer({SITE: Answer(a=["127.0.0.1", "127.0.0.2"])}) as dns, RawTcpServer(
        "reset_after_data"
    ) as tls_reset, WebServer(site_app(title="Port 80 page"), host="127.0.0.1") as plain:
        config = lab_config(dns.address, http_fallback_port=plain.port)
        m = await measure_url(f"https://{SITE}:{tls_reset.port}/", config)
    fallback = {h.url: h for h in m.http if h.kind == "http_fallback"}
    assert set(fallback) == {f"http://127.0.0.1:{plain.port}/", f"http://127.0.0.2:{plain.port}/"}
    assert fallback[f"http://127.0.0.1:{plain.port}/"].title == "Port 80 page"
    assert fallback[f"http://127.0.0.2:{plain.port}/"].failure == F.CONNECTION_REFUSED


async def test_ip_literal_url_skips_dns():
    async with WebServer(site_app()) as web:
        m = await measure_url(web.url("/"), lab_config(None))
    assert m.dns == [] and m.addresses == ["127.0.0.1"] and main_hops(m)[0].status == 200


async def test_many_urls_in_parallel_share_nothing():
    async with DnsServer({f"s{i}.lab.test": Answer(a=["127.0.0.1"]) for i in range(20)}) as dns, WebServer(
        site_app()
    ) as web:
        config = lab_config(dns.address)
        ms = await asyncio.gather(*(measure_url(web.url("/", hostname=f"s{i}.lab.test"), config) for i in range(20)))
    assert all(main_hops(m)[-1].status == 200 for m in ms)
    assert len({m.measurement_id for m in ms}) == 20


async def test_an_answer_from_the_dns_sink_is_kept_apart_as_injection_evidence():
    """A query to an address that runs no DNS server should go unanswered; here an
    'injector' answers it, and that answer must never be used as the site's address."""
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, DnsServer({SITE: Answer(a=["127.0.0.66"])}) as injector:
        m = await measure_url(f"http://{SITE}:{unused_port()}/", lab_config(dns.address, dns_sink=injector.address))
    sink = [q for q in m.dns if q.engine == "sink"]
    assert len(sink) == 1 and [a.value for a in sink[0].answers] == ["127.0.0.66"]
    assert m.addresses == ["127.0.0.1"]


async def test_a_true_sink_gives_no_answer():
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns:
        m = await measure_url(f"http://{SITE}:{unused_port()}/", lab_config(dns.address, dns_sink=f"127.0.0.1:{unused_port()}"))
    (sink,) = [q for q in m.dns if q.engine == "sink"]
    assert sink.answers == [] and sink.failure in (F.CONNECTION_REFUSED, F.GENERIC_TIMEOUT)


# --- a redirect to another host that fails ----------------------------------------------------


async def test_a_failing_redirect_target_gets_its_own_tcp_and_tls_steps():
    """OONI LTE measures every hop; we do for the hop that failed, so analysis can say
    where the redirect target broke (here: reset right after the ClientHello)."""
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, WebServer(site_app()) as web, RawTcpServer(
        "reset_after_data"
    ) as srv:
        target = f"https://127.0.0.1:{srv.port}/"
        m = await measure_url(web.url(f"/redirect-to?url={target}", hostname=SITE), lab_config(dns.address))
    hops = main_hops(m)
    assert [(h.hop, h.status) for h in hops] == [(0, 302), (1, None)] and hops[1].failure == F.CONNECTION_RESET
    assert [(c.ip, c.port, c.success) for c in m.tcp if c.port == srv.port] == [("127.0.0.1", srv.port, True)]
    hop_tls = [t for t in m.tls if t.port == srv.port and t.sni_role == "target"]
    assert [(t.server_name, t.failure, t.failure_stage) for t in hop_tls] == [
        ("127.0.0.1", F.CONNECTION_RESET, "after_client_hello")
    ]


async def test_a_refused_redirect_target_is_measured_and_a_working_chain_is_not():
    port = unused_port()
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, WebServer(site_app()) as web:
        m = await measure_url(web.url(f"/redirect-to?url=http://127.0.0.1:{port}/", hostname=SITE), lab_config(dns.address))
        ok = await measure_url(web.url("/redirect/2", hostname=SITE), lab_config(dns.address))
    assert [(c.port, c.failure) for c in m.tcp if c.port == port] == [(port, F.CONNECTION_REFUSED)]
    assert main_hops(m)[-1].failure == F.CONNECTION_REFUSED
    assert {c.port for c in ok.tcp} == {web.port}  # no extra steps when every hop worked


# --- a local clock that is off: certificates judged at the control's time -------------------


def _dated_site(pki, name: str, days_from: int, days_to: int):
    import datetime as dt
    import ssl as ssl_mod

    now = dt.datetime.now(dt.UTC)
    leaf = pki.ca.issue_cert(name, not_before=now + dt.timedelta(days=days_from),
                             not_after=now + dt.timedelta(days=days_to))
    ctx = ssl_mod.create_default_context(ssl_mod.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@pytest.mark.parametrize("skew_days,valid", [(400, True), (0, False)])
async def test_a_certificate_is_judged_at_the_controls_time_when_the_clock_is_off(pki, ca_file, skew_days, valid):
    """The site's certificate expired 100 days ago by this computer's clock, which is
    400 days ahead: at the control's time it is valid, handshake and fetch included."""
    ctx = _dated_site(pki, SITE, -500, -100)
    config = lab_config(None, ca_file, clock_skew_s=skew_days * 86400.0 or None)
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, \
            WebServer(site_app(title="Dated"), ssl_context=ctx) as web:
        config.resolvers = [dns.address]
        m = await measure_url(web.url("/", hostname=SITE), config)
    (t,) = [t for t in m.tls if t.sni_role == "target"]
    (hop,) = main_hops(m)
    if valid:
        assert t.success and t.cert_valid and t.cert_checked_at, t
        assert hop.status == 200 and hop.title == "Dated"
    else:
        assert (t.failure, t.cert_valid, t.cert_checked_at) == ("ssl_invalid_certificate", False, None)
        assert hop.failure == "ssl_invalid_certificate"


async def test_a_corrected_clock_does_not_clear_an_interception_certificate(pki, ca_file):
    """Judging at another time is about validity periods only: a chain from an unknown
    authority, or for another name, stays invalid."""
    config = lab_config(None, ca_file, clock_skew_s=400 * 86400.0)
    for kind, failure in (("unknown_ca", "ssl_unknown_authority"), ("wrong_host", "ssl_invalid_hostname")):
        async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, \
                WebServer(site_app(), ssl_context=pki.server_context(SITE, kind=kind)) as web:
            config.resolvers = [dns.address]
            m = await measure_url(web.url("/", hostname=SITE), config)
        (t,) = [t for t in m.tls if t.sni_role == "target"]
        assert (t.success, t.failure, t.cert_valid) == (False, failure, False), kind
        assert main_hops(m)[0].failure == failure
