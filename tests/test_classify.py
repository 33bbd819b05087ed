"""The classifier is a pure function of observations: each case builds the records a
measurement would hold and checks the verdict, its layer and rule. End-to-end verdicts
on real packets are in tests/lab; OONI's real and labelled data in test_ooni_agreement."""

from __future__ import annotations

from probe.analysis.classify import classify
from probe.analysis.view import Context
from probe.core import failures as F
from probe.core.records import (
    Certificate,
    ControlResult,
    DnsAnswer,
    DnsQuery,
    DnsReply,
    HttpRequest,
    Measurement,
    TcpConnect,
    TlsHandshake,
)
from probe.core.verdicts import VERDICTS

T = "2026-11-25T10:00:00.000000Z"
SITE_IP = "93.184.216.34"
PAGE = b"<html><head><title>Charter 97 news</title></head><body>" + b"news " * 400 + b"</body></html>"
BLOCKPAGE = (
    '<div class="exactCenter">Доступ к информационному ресурсу ограничен на основании решения Министерства '
    'информации Республики Беларусь, принятого в соответствии с Законом Республики Беларусь '
    '"О средствах массовой информации"</div>'
).encode()
CERT = Certificate("CN=charter97.org", "CN=R3,O=Let's Encrypt", ["charter97.org"], "", "", "1", "ab" * 32, "")
EVIL = Certificate("CN=charter97.org", "CN=Interception CA", ["charter97.org"], "", "", "2", "cd" * 32, "")


def dns(engine="system", answers=(SITE_IP,), failure=None, resolver=None, extra=()):
    q = DnsQuery(engine, resolver, "charter97.org", "ANY" if engine == "system" else "A", T, 5.0, failure,
                 None if engine == "system" else ("NXDOMAIN" if failure == F.DNS_NXDOMAIN else "NOERROR"),
                 resolver, [DnsAnswer("A", a, 60) for a in answers])
    q.extra_replies = [DnsReply(resolver or "", 30.0, "NOERROR", [DnsAnswer("A", a)]) for a in extra]
    return q


def tcp(ip=SITE_IP, port=443, failure=None):
    return TcpConnect(ip, port, T, 10.0, failure is None, failure)


def tls(ip=SITE_IP, failure=None, stage=None, sni="charter97.org", role="target", cert=CERT, valid=None):
    ok = failure is None
    return TlsHandshake(ip, 443, sni, T, 20.0, ok, failure, role, stage, 517, 0 if stage == "after_client_hello" else 3000,
                        "TLSv1.3" if ok else None, None, None,
                        (True if ok else (False if failure in (F.SSL_UNKNOWN_AUTHORITY, F.SSL_INVALID_HOSTNAME) else None))
                        if valid is None else valid, failure if failure and failure.startswith("ssl_") else None,
                        [cert] if (ok or (failure or "").startswith("ssl_")) else [])


def http(url="https://charter97.org/", status=200, body=PAGE, title="Charter 97 news", failure=None, hop=0,
         headers=None, location=None, kind="main", address=f"{SITE_IP}:443"):
    return HttpRequest(url, kind, hop, T, 50.0, address=address if status else None, failure=failure, status=status,
                       headers=headers if headers is not None else [["Content-Type", "text/html"], ["X-Site-Cache", "HIT"]],
                       location=location, body_length=len(body) if status else None, body_head=body if status else None,
                       title=title if status else None)


def control(dns_answers=(SITE_IP,), tcp_ok=True, tls_ok=True, http_req=None, failure=None, dns_failure=None):
    if failure:
        return ControlResult("http://control", T, 100.0, failure)
    c = ControlResult("http://control", T, 100.0)
    c.dns = [DnsQuery("system", None, "charter97.org", "ANY", T, 5.0, dns_failure, None, None,
                      [DnsAnswer("A", a) for a in dns_answers])]
    ips = list(dns_answers) or [SITE_IP]
    c.tcp = [TcpConnect(ip, 443, T, 5.0, tcp_ok, None if tcp_ok else F.GENERIC_TIMEOUT) for ip in ips]
    c.tls = [tls(ip) if tls_ok else tls(ip, F.CONNECTION_RESET, "after_client_hello") for ip in ips] if tcp_ok else []
    c.http = [http_req if http_req is not None else http()]
    c.raw = {"ip_info": {}}
    return c


def measurement(url="https://charter97.org/", **parts) -> Measurement:
    scheme = url.split(":")[0]
    m = Measurement(url=url, hostname="charter97.org", scheme=scheme, port=443 if scheme == "https" else 80, started_at=T)
    m.dns = parts.get("dns", [dns()])
    m.addresses = parts.get("addresses", [a.value for q in m.dns for a in q.answers if q.engine != "sink"])
    m.tcp = parts.get("tcp", [tcp(port=m.port)])
    m.tls = parts.get("tls", [tls()] if scheme == "https" else [])
    m.http = parts.get("http", [http(url)])
    m.control = parts.get("control", control(http_req=http(url)))
    return m


def verdict(m, **ctx):
    v = classify(m, Context(**ctx))
    assert v.verdict in VERDICTS
    return v


# --- ok and down -----------------------------------------------------------------------


def test_ok_https():
    v = verdict(measurement())
    assert (v.verdict, v.blocked) == ("ok", False) and v.confidence >= 0.9
    assert v.layers["dns"].rule_id == "answer_matches_ctrl"


def test_dns_answer_unlike_the_control_but_proven_by_a_valid_certificate_is_ok():
    """A geo-DNS answer the control never sees: the valid certificate proves the address."""
    m = measurement(dns=[dns(answers=("104.16.1.1",))], tcp=[tcp("104.16.1.1")], tls=[tls("104.16.1.1")],
                    http=[http(address="104.16.1.1:443")])
    v = verdict(m)
    assert v.verdict == "ok" and v.layers["dns"].rule_id == "tls_consistent_answer"


def test_ok_http_with_dynamic_page():
    url = "http://charter97.org/"
    local = http(url, body=PAGE + b"x" * 900, title="Charter 97 news 12:01")
    ctrl = http(url, body=PAGE, title="Charter 97 news 12:02")
    v = verdict(measurement(url, tls=[], http=[local], control=control(http_req=ctrl)))
    assert v.verdict == "ok", v.evidence


def test_ok_when_dns_differs_but_serves_the_same_page_cdn():
    url = "http://charter97.org/"
    m = measurement(url, dns=[dns(answers=("104.16.1.1",))], tcp=[tcp("104.16.1.1", 80)], tls=[],
                    http=[http(url, address="104.16.1.1:80")], control=control(http_req=http(url)))
    v = verdict(m)
    assert v.verdict == "ok" and v.layers["dns"].rule_id == "http_consistent_answer"


def test_down_when_control_fails_the_same_way():
    m = measurement(tcp=[tcp(failure=F.GENERIC_TIMEOUT)], tls=[], http=[http(status=None, failure=F.GENERIC_TIMEOUT)],
                    control=control(tcp_ok=False, http_req=http(status=None, failure=F.GENERIC_TIMEOUT)))
    v = verdict(m)
    assert (v.verdict, v.blocked, v.layer) == ("down", False, "tcp")


def test_down_when_name_is_gone_everywhere():
    m = measurement(dns=[dns(answers=(), failure=F.DNS_NXDOMAIN)], addresses=[], tcp=[], tls=[],
                    http=[http(status=None, failure=F.NO_ADDRESSES)],
                    control=control(dns_answers=(), dns_failure=F.DNS_NXDOMAIN,
                                    http_req=http(status=None, failure="dns_lookup_error")))
    assert verdict(m).verdict == "down"


def test_expired_certificate_for_everyone_is_down():
    bad = tls(failure=F.SSL_INVALID_CERTIFICATE, stage="after_server_hello", valid=False)
    c = control(http_req=http(status=None, failure=F.SSL_INVALID_CERTIFICATE))
    c.tls = [tls(failure=F.SSL_INVALID_CERTIFICATE, stage="after_server_hello", valid=False)]
    m = measurement(tls=[bad], http=[http(status=None, failure=F.SSL_INVALID_CERTIFICATE)], control=c)
    assert verdict(m).verdict == "down"


# --- DNS ----------------------------------------------------------------------------------


def test_dns_nxdomain():
    m = measurement(dns=[dns(answers=(), failure=F.DNS_NXDOMAIN)], addresses=[], tcp=[], tls=[],
                    http=[http(status=None, failure=F.NO_ADDRESSES)])
    v = verdict(m)
    assert (v.verdict, v.layer, v.rule_id) == ("dns.nxdomain", "dns", "dns_failure_ctrl_ok") and v.confidence >= 0.85


def test_dns_bogon():
    m = measurement(dns=[dns(answers=("127.0.0.2",))], tcp=[tcp("127.0.0.2", failure=F.CONNECTION_REFUSED)], tls=[],
                    http=[http(status=None, failure=F.CONNECTION_REFUSED)])
    assert verdict(m).verdict == "dns.bogon"


def test_bogon_that_the_control_also_gets_is_misconfiguration():
    m = measurement(dns=[dns(answers=("192.168.1.10",))], tcp=[tcp("192.168.1.10", failure=F.GENERIC_TIMEOUT)], tls=[],
                    http=[http(status=None, failure=F.GENERIC_TIMEOUT)],
                    control=control(dns_answers=("192.168.1.10",), tcp_ok=False, http_req=http(status=None, failure="x")))
    assert verdict(m).verdict == "down"


def test_lab_network_is_not_a_bogon():
    import ipaddress

    m = measurement(dns=[dns(answers=("10.77.2.10",))], tcp=[tcp("10.77.2.10")], tls=[tls("10.77.2.10")],
                    http=[http(address="10.77.2.10:443")], control=control(dns_answers=("10.77.2.10",)))
    assert verdict(m, lab_networks=(ipaddress.ip_network("10.77.0.0/16"),)).verdict == "ok"


def test_dns_answer_of_a_known_censor_address():
    m = measurement(dns=[dns(answers=("134.17.0.7",))], tcp=[tcp("134.17.0.7")],
                    tls=[tls("134.17.0.7", F.SSL_INVALID_HOSTNAME, "after_server_hello")],
                    http=[http(status=None, failure=F.SSL_INVALID_HOSTNAME)])
    v = verdict(m, cc="BY")
    assert (v.verdict, v.rule_id, v.confidence) == ("dns.blockpage", "answer_matches_fingerprint", 1.0)


def test_dns_answer_that_serves_a_blockpage_on_port_80():
    ip = "178.124.134.7"  # any routable-looking address: records only, no traffic
    fallback = http(f"http://{ip}/", kind="http_fallback", body=BLOCKPAGE, title=None, address=f"{ip}:80")
    m = measurement(dns=[dns(answers=(ip,))], tcp=[tcp(ip)], tls=[tls(ip, F.SSL_INVALID_HOSTNAME, "after_server_hello")],
                    http=[http(status=None, failure=F.SSL_INVALID_HOSTNAME), fallback])
    v = verdict(m, cc="BY")
    assert (v.verdict, v.rule_id) == ("dns.blockpage", "answer_serves_blockpage")


def test_dns_inconsistent():
    ip = "185.12.40.9"
    m = measurement(dns=[dns(answers=(ip,))], tcp=[tcp(ip)], tls=[tls(ip, F.SSL_INVALID_HOSTNAME, "after_server_hello")],
                    http=[http(status=None, failure=F.SSL_INVALID_HOSTNAME),
                          http(f"http://{ip}/", kind="http_fallback", title="Welcome to nginx",
                               body=b"<title>Welcome to nginx</title>", address=f"{ip}:80")])
    v = verdict(m)
    assert v.verdict == "dns.inconsistent" and v.rule_id == "dns_answer_unmatched"


def test_dns_injection_from_the_sink():
    m = measurement(dns=[dns(), dns("sink", answers=("10.10.34.35",), resolver="198.51.100.80:53")])
    v = verdict(m)
    assert (v.verdict, v.rule_id) == ("dns.injection", "answer_from_sink")


def test_dns_injection_by_racing_replies():
    m = measurement(dns=[dns("udp", answers=("10.10.34.35",), resolver="192.0.2.53:53", extra=(SITE_IP,))])
    assert verdict(m).verdict == "dns.injection"


# --- TCP ----------------------------------------------------------------------------------


def test_tcp_timeout_refused_reset():
    for failure, expected in ((F.GENERIC_TIMEOUT, "tcp.timeout"), (F.CONNECTION_REFUSED, "tcp.refused"),
                              (F.CONNECTION_RESET, "tcp.reset")):
        m = measurement(tcp=[tcp(failure=failure)], tls=[], http=[http(status=None, failure=failure)])
        v = verdict(m)
        assert (v.verdict, v.layer) == (expected, "tcp"), failure


def test_established_then_reset_whatever_is_sent_is_tcp_reset():
    t = tls(failure=F.CONNECTION_RESET, stage="after_client_hello")
    benign = tls(failure=F.CONNECTION_RESET, stage="after_client_hello", sni="example.com", role="control")
    m = measurement(tls=[t, benign], http=[http(status=None, failure=F.CONNECTION_RESET)])
    v = verdict(m)
    assert (v.verdict, v.rule_id) == ("tcp.reset", "established_then_reset")


def test_ipv6_only_failures_on_a_probe_without_ipv6_are_not_judged():
    ip6 = "2606:2800:220:1::1"
    m = measurement(dns=[dns(answers=(ip6,))], tcp=[tcp(ip6, failure=F.NETWORK_UNREACHABLE)], tls=[],
                    http=[http(status=None, failure=F.NETWORK_UNREACHABLE)], control=control(dns_answers=(ip6,)))
    v = verdict(m)
    assert v.layers["tcp"].rule_id == "ipv6_broken_probe" and not v.blocked


# --- TLS ----------------------------------------------------------------------------------


def test_sni_filtering_is_tls_reset_with_the_benign_name_as_proof():
    t = tls(failure=F.CONNECTION_RESET, stage="after_client_hello")
    benign = tls(sni="example.com", role="control", valid=False)
    m = measurement(tls=[t, benign], http=[http(status=None, failure=F.CONNECTION_RESET)])
    v = verdict(m)
    assert (v.verdict, v.layer) == ("tls.reset", "tls") and v.confidence >= 0.9
    assert any("harmless name" in e.text for e in v.evidence)


def test_tls_timeout():
    t = tls(failure=F.GENERIC_TIMEOUT, stage="after_client_hello")
    m = measurement(tls=[t], http=[http(status=None, failure=F.GENERIC_TIMEOUT)])
    assert verdict(m).verdict == "tls.timeout"


def test_interception_certificate_is_tls_mitm():
    t = tls(failure=F.SSL_UNKNOWN_AUTHORITY, stage="after_server_hello", cert=EVIL)
    m = measurement(tls=[t], http=[http(status=None, failure=F.SSL_UNKNOWN_AUTHORITY)])
    v = verdict(m)
    assert v.verdict == "tls.mitm" and any("Interception CA" in e.text for e in v.evidence)


# --- HTTP ---------------------------------------------------------------------------------


def test_transparent_blockpage():
    url = "http://charter97.org/"
    m = measurement(url, tls=[], http=[http(url, body=BLOCKPAGE, title=None, address=f"{SITE_IP}:80")],
                    control=control(http_req=http(url)))
    v = verdict(m, cc="BY")
    assert (v.verdict, v.layer, v.confidence) == ("http.blockpage", "http", 1.0)


def test_redirect_to_beltelecom_blockpage_ip():
    url = "http://charter97.org/"
    hop = http(url, status=302, body=b"", title=None, location="http://82.209.230.23/?u=charter97.org",
               headers=[["Location", "http://82.209.230.23/?u=charter97.org"], ["Connection", "keep-alive"]])
    nxt = http("http://82.209.230.23/?u=charter97.org", hop=1, body=BLOCKPAGE, title="Доступ ограничен")
    v = verdict(measurement(url, tls=[], http=[hop, nxt], control=control(http_req=http(url))), cc="BY")
    assert v.verdict == "http.blockpage" and v.rule_id == "matches_fingerprint"


def test_article_quoting_the_blocking_notice_is_not_a_blockpage():
    url = "http://charter97.org/"
    article = b"<title>How Belarus blocks</title>" + BLOCKPAGE + PAGE
    m = measurement(url, tls=[], http=[http(url, body=article, title="How Belarus blocks")],
                    control=control(http_req=http(url, body=article, title="How Belarus blocks")))
    assert verdict(m, cc="BY").verdict == "ok"


def test_http_reset_and_timeout():
    url = "http://charter97.org/"
    for failure, expected in ((F.CONNECTION_RESET, "http.reset"), (F.EOF, "http.reset"), (F.GENERIC_TIMEOUT, "http.timeout")):
        m = measurement(url, tcp=[tcp(port=80)], tls=[], http=[http(url, status=None, failure=failure)],
                        control=control(http_req=http(url)))
        assert verdict(m).verdict == expected, failure


def test_http_diff_without_fingerprint():
    url = "http://charter97.org/"
    local = http(url, status=403, body=b"<title>Forbidden</title>denied", title="Forbidden", headers=[["Server", "x"]])
    v = verdict(measurement(url, tls=[], http=[local], control=control(http_req=http(url))))
    assert (v.verdict, v.rule_id) == ("http.diff", "http_diff")


def test_redirect_to_a_foreign_host_is_a_diff_but_the_same_redirect_for_everyone_is_not():
    url = "http://charter97.org/"
    hop = http(url, status=302, body=b"", title=None, location="http://portal.isp.example/stop")
    foreign = http("http://portal.isp.example/stop", hop=1, title="Stop page", body=b"<title>Stop page</title>")
    v = verdict(measurement(url, tls=[], http=[hop, foreign], control=control(http_req=http(url))))
    assert (v.verdict, v.rule_id) == ("http.diff", "redirect_to_foreign_host")
    c = control(http_req=http("http://news.other-site.example/", hop=1))
    m = measurement(url, tls=[], http=[hop, http("http://news.other-site.example/", hop=1)], control=c)
    assert verdict(m).verdict == "ok"


def test_cdn_challenge_page_is_not_censorship():
    url = "http://charter97.org/"
    captcha = b"<title>Just a moment...</title><body>Checking your browser before accessing. cf-browser-verification</body>"
    local = http(url, status=503, body=captcha, title="Just a moment...", headers=[["Server", "cloudflare"], ["CF-RAY", "1"]])
    v = verdict(measurement(url, tls=[], http=[local], control=control(http_req=http(url))))
    assert not v.blocked, (v.verdict, v.rule_id, [e.text for e in v.evidence])


def test_https_success_is_ok_even_if_the_page_differs():
    local = http(body=b"<title>Other</title>x", title="Other")
    assert verdict(measurement(http=[local])).verdict == "ok"


# --- a later hop fails: blocked at the layer where the redirect target broke ----------------

OTHER_IP = "198.51.100.7"


def redirect_to(target: str, failure: str, *, dns_parts=None, tcp_parts=None, tls_parts=None):
    """charter97.org/ 302 -> target, whose own steps are given; the control follows the
    redirect and gets the page."""
    url = "http://charter97.org/"
    hop0 = http(url, status=302, body=b"", title=None, location=target, address=f"{SITE_IP}:80")
    hop1 = http(target, hop=1, status=None, failure=failure)
    m = measurement(url, tcp=[tcp(port=80), *(tcp_parts or [])], tls=list(tls_parts or []), http=[hop0, hop1],
                    control=control(http_req=http(target, hop=1)))
    m.dns += list(dns_parts or [])
    return m


def other_dns(answers=(OTHER_IP,), failure=None):
    q = dns(answers=answers, failure=failure)
    q.hostname = "news.example.org"
    return q


def test_redirect_target_refused_is_tcp_refused():
    m = redirect_to("http://news.example.org/", F.CONNECTION_REFUSED, dns_parts=[other_dns()],
                    tcp_parts=[tcp(OTHER_IP, 80, F.CONNECTION_REFUSED)])
    v = verdict(m)
    assert (v.verdict, v.rule_id) == ("tcp.refused", "redirect_target_tcp_failure"), [e.text for e in v.evidence]
    # the redirect target's connect is not the site's: the TCP layer still says the site connects
    assert v.layers["tcp"].rule_id == "connect_ok" and v.layers["dns"].rule_id == "answer_matches_ctrl"


def test_redirect_target_that_does_not_resolve_is_dns_nxdomain():
    m = redirect_to("http://news.example.org/", F.DNS_NXDOMAIN, dns_parts=[other_dns((), F.DNS_NXDOMAIN)])
    assert verdict(m).verdict == "dns.nxdomain"


def test_redirect_target_sni_reset_is_tls_reset():
    target = "https://news.example.org/"
    t = tls(OTHER_IP, F.CONNECTION_RESET, "after_client_hello", sni="news.example.org")
    m = redirect_to(target, F.CONNECTION_RESET, dns_parts=[other_dns()], tcp_parts=[tcp(OTHER_IP, 443)], tls_parts=[t])
    v = verdict(m)
    assert (v.verdict, v.rule_id) == ("tls.reset", "redirect_target_tls_failure")
    assert v.layers["tls"].rule_id == "no_tls_data"  # the site's own URL is http: no TLS judged for it


def test_redirect_target_reset_after_a_good_handshake_is_http_reset_and_without_records_a_likely_tls_reset():
    target = "https://news.example.org/"
    m = redirect_to(target, F.CONNECTION_RESET, dns_parts=[other_dns()], tcp_parts=[tcp(OTHER_IP, 443)],
                    tls_parts=[tls(OTHER_IP, sni="news.example.org")])
    assert verdict(m).verdict == "http.reset"
    v = verdict(redirect_to(target, F.CONNECTION_RESET))  # an OONI v0.4 measurement: no hop steps
    assert (v.verdict, v.rule_id) == ("tls.reset", "reset_on_https_hop") and v.confidence <= 0.6


def test_broken_redirect_is_a_diff_and_an_unknown_probe_failure_is_error():
    url = "http://charter97.org/"
    hop0 = http(url, status=302, body=b"", title=None, location="http://", failure=F.HTTP_INVALID_REDIRECT)
    v = verdict(measurement(url, tls=[], http=[hop0], control=control(http_req=http(url))))
    assert (v.verdict, v.rule_id) == ("http.diff", "invalid_redirect")
    broken = http(url, status=None, failure="unknown_failure: 'ascii' codec can't decode byte 0xd9")
    v = verdict(measurement(url, tcp=[tcp(port=80)], tls=[], http=[broken], control=control(http_req=http(url))))
    assert (v.verdict, v.blocked, v.rule_id) == ("error", False, "probe_failure")


# --- no control, error ----------------------------------------------------------------------


def test_without_control_confidence_is_lower_and_said():
    m = measurement(dns=[dns(answers=(), failure=F.DNS_NXDOMAIN)], addresses=[], tcp=[], tls=[],
                    http=[http(status=None, failure=F.NO_ADDRESSES)], control=None)
    v = verdict(m)
    assert v.verdict == "dns.nxdomain" and v.confidence <= 0.3
    assert any("no control" in e.text for e in v.evidence)


def test_sni_filtering_without_control_still_shows_through_the_benign_name():
    t = tls(failure=F.CONNECTION_RESET, stage="after_client_hello")
    benign = tls(sni="example.com", role="control", valid=False)
    m = measurement(tls=[t, benign], http=[http(status=None, failure=F.CONNECTION_RESET)], control=None)
    v = verdict(m)
    assert v.verdict == "tls.reset" and 0.3 < v.confidence < 0.6


def test_error_when_nothing_could_be_measured():
    m = measurement(dns=[dns(answers=(), failure=F.GENERIC_TIMEOUT)], addresses=[], tcp=[], tls=[],
                    http=[http(status=None, failure=F.NO_ADDRESSES)], control=control(failure=F.CONTROL_UNAVAILABLE))
    v = verdict(m)
    assert (v.verdict, v.blocked) == ("error", False)


def test_whole_run_without_dns_is_error_not_blocking():
    m = measurement(dns=[dns(answers=(), failure=F.DNS_NXDOMAIN)], addresses=[], tcp=[], tls=[],
                    http=[http(status=None, failure=F.NO_ADDRESSES)], control=None)
    assert verdict(m, run_dns_failure_rate=1.0, run_size=162).verdict == "error"


def test_every_verdict_of_the_vocabulary_is_reachable_here():
    """Guard: the cases above cover every verdict the spec defines."""
    import inspect
    import sys

    source = inspect.getsource(sys.modules[__name__])
    missing = [v for v in VERDICTS if f'"{v}"' not in source]
    assert not missing, missing


# --- no control: honest about what cannot be told from an outage -------------------------

NO_CONTROL_OUTAGE_LOOKALIKES = {
    # a name that no longer exists
    "dns.nxdomain": dict(dns=[dns(answers=(), failure=F.DNS_NXDOMAIN)], tcp=[], tls=[],
                         http=[http(status=None, failure=F.NO_ADDRESSES)]),
    # a site misconfigured to 127.0.0.1
    "dns.bogon": dict(dns=[dns(answers=("127.0.0.1",))], tcp=[tcp("127.0.0.1", failure=F.CONNECTION_REFUSED)],
                      tls=[], http=[http(status=None, failure=F.CONNECTION_REFUSED)]),
    # a server that is off
    "tcp.refused": dict(tcp=[tcp(failure=F.CONNECTION_REFUSED)], tls=[],
                        http=[http(status=None, failure=F.CONNECTION_REFUSED)]),
    "tcp.timeout": dict(tcp=[tcp(failure=F.GENERIC_TIMEOUT)], tls=[],
                        http=[http(status=None, failure=F.GENERIC_TIMEOUT)]),
    # a certificate that expired for everyone
    "tls.mitm": dict(tls=[tls(failure=F.SSL_INVALID_CERTIFICATE, stage="after_server_hello", valid=False)],
                     http=[http(status=None, failure=F.SSL_INVALID_CERTIFICATE)]),
    # a server that drops the handshake for everyone (no harmless-SNI evidence)
    "tls.timeout": dict(tls=[tls(failure=F.GENERIC_TIMEOUT, stage="after_client_hello")],
                        http=[http(status=None, failure=F.GENERIC_TIMEOUT)]),
}


import pytest  # noqa: E402


@pytest.mark.parametrize("likely", sorted(NO_CONTROL_OUTAGE_LOOKALIKES))
def test_without_a_control_an_outage_lookalike_is_cant_tell(likely):
    for control_part in (None, control(failure=F.CONTROL_UNAVAILABLE)):  # none asked, or its answer lost
        v = verdict(measurement(control=control_part, **NO_CONTROL_OUTAGE_LOOKALIKES[likely]))
        assert (v.verdict, v.blocked) == (likely, None), (v.rule_id, [e.text for e in v.evidence])
        assert any("down for everyone" in e.text for e in v.evidence)


@pytest.mark.parametrize("likely", sorted(NO_CONTROL_OUTAGE_LOOKALIKES))
def test_with_a_control_the_same_failure_is_blocked(likely):
    v = verdict(measurement(**NO_CONTROL_OUTAGE_LOOKALIKES[likely]))
    assert (v.verdict, v.blocked) == (likely, True), (v.rule_id, [e.text for e in v.evidence])


def test_without_a_control_a_transparent_blockpage_is_http_not_dns():
    """Port 80 DNATed to the censor's server; the DNS answer is genuine, and the same
    address served a certificate valid for the name on 443: an answer that a validated
    handshake vouches for is never the layer at fault."""
    v = verdict(measurement(url="http://charter97.org/", control=None, tcp=[tcp(port=80), tcp(port=443)],
                            tls=[tls()],
                            http=[http("http://charter97.org/", body=BLOCKPAGE, title=None, address=f"{SITE_IP}:80")]),
                cc="BY")
    assert (v.verdict, v.blocked) == ("http.blockpage", True)
    assert v.layers["dns"].rule_id == "tls_consistent_answer"


def test_a_validated_https_fetch_vouches_for_the_answer_it_used():
    """OONI v0.4 (no addresses on handshakes, no ASNs for control answers): a CDN site
    whose local and control answers differ, fetched over HTTPS through the local answer
    with a valid certificate and the control's title, is not dns.inconsistent."""
    cdn = "151.101.1.1"
    v = verdict(measurement(dns=[dns(answers=(cdn,))], tcp=[tcp(cdn)], tls=[],
                            http=[http(address=None)], control=control(dns_answers=("151.101.65.1",))))
    assert (v.verdict, v.blocked) == ("ok", False), (v.rule_id, [e.text for e in v.evidence])
    assert v.layers["dns"].rule_id == "https_fetch_consistent_answer"


def test_without_a_control_an_injected_answer_is_still_blocked():
    sink = dns("sink", answers=("10.10.34.35",), resolver="192.0.2.53:53")
    v = verdict(measurement(control=None, dns=[dns(answers=("10.10.34.35",)), sink],
                            tcp=[tcp("10.10.34.35", failure=F.GENERIC_TIMEOUT)], tls=[],
                            http=[http(status=None, failure=F.GENERIC_TIMEOUT)]))
    assert (v.verdict, v.blocked) == ("dns.injection", True)


def test_without_a_control_a_doh_contradiction_is_still_blocked():
    v = verdict(measurement(control=None, dns=[dns(answers=(), failure=F.DNS_NXDOMAIN),
                                              dns("doh", resolver="https://dns.example/dns-query")],
                            tls=[], http=[http(status=None, failure=F.NO_ADDRESSES)]))
    assert (v.verdict, v.blocked) == ("dns.nxdomain", True)


def test_without_a_control_sni_filtering_is_still_blocked():
    """Reset after the site's name, while a harmless name on the same address works: an
    outage does not pick names."""
    v = verdict(measurement(control=None, tls=[tls(failure=F.CONNECTION_RESET, stage="after_client_hello"),
                                               tls(sni="example.com", role="control", valid=None)],
                            http=[http(status=None, failure=F.CONNECTION_RESET)]))
    assert (v.verdict, v.blocked) == ("tls.reset", True)


def test_a_redirect_loop_for_everyone_is_down():
    """The helper follows redirects as the probe does: both stop after 10 with
    http_too_many_redirects. The control's last 302 is a response, not a page."""
    def loop(failure_at_end: bool):
        hops = [http(f"https://charter97.org/loop?i={i}", status=302, location=f"/loop?i={i + 1}", hop=i)
                for i in range(11)]
        hops[-1].failure = F.HTTP_TOO_MANY_REDIRECTS if failure_at_end else None
        return hops

    c = control()
    c.http = loop(True)
    v = verdict(measurement(http=loop(True), control=c))
    assert (v.verdict, v.blocked, v.layer) == ("down", False, "http"), (v.rule_id, [e.text for e in v.evidence])


# --- partial blocking: one address family, or one record type ----------------------------

SITE_V6 = "2a01:4f8:97::1"


def _dual(**parts):
    """A dual-stack site (A and AAAA) measured over both families; the control reaches both."""
    d = DnsQuery("system", None, "charter97.org", "ANY", T, 5.0, None, None, None,
                 [DnsAnswer("A", SITE_IP, 60), DnsAnswer("AAAA", SITE_V6, 60)])
    c = control(dns_answers=(SITE_IP, SITE_V6))
    base = dict(dns=[d], tcp=[tcp(SITE_IP), tcp(SITE_V6)], tls=[tls(SITE_IP), tls(SITE_V6)],
                http=[http(address=f"[{SITE_V6}]:443")], control=c)
    base.update(parts)
    return measurement(**base)


def test_ipv4_blackholed_while_ipv6_works_is_partial_blocking():
    v = verdict(_dual(tcp=[tcp(SITE_IP, failure=F.GENERIC_TIMEOUT), tcp(SITE_V6)], tls=[tls(SITE_V6)]))
    assert (v.verdict, v.blocked, v.tags) == ("tcp.timeout", True, ["partial:ipv4"]), [e.text for e in v.evidence]
    assert any("IPv6 works" in e.text for e in v.evidence)


def test_both_families_working_is_a_clean_ok():
    v = verdict(_dual())
    assert (v.verdict, v.tags) == ("ok", [])


def test_a_family_this_network_cannot_use_is_not_blocking():
    v = verdict(_dual(tcp=[tcp(SITE_IP), tcp(SITE_V6, failure=F.NETWORK_UNREACHABLE)], tls=[tls(SITE_IP)],
                      http=[http()]))
    assert (v.verdict, v.tags) == ("ok", [])


def test_a_family_broken_for_the_whole_run_is_not_blocking():
    v = verdict(_dual(tcp=[tcp(SITE_IP), tcp(SITE_V6, failure=F.GENERIC_TIMEOUT)], tls=[tls(SITE_IP)], http=[http()]),
                broken_families=frozenset({6}))
    assert (v.verdict, v.tags) == ("ok", [])


def test_a_lie_in_the_a_record_only_is_partial_blocking():
    lie = "10.10.34.35"
    d = DnsQuery("system", None, "charter97.org", "ANY", T, 5.0, None, None, None,
                 [DnsAnswer("A", lie, 60), DnsAnswer("AAAA", SITE_V6, 60)])
    v = verdict(_dual(dns=[d], tcp=[tcp(lie, failure=F.GENERIC_TIMEOUT), tcp(SITE_V6)], tls=[tls(SITE_V6)]),
                lab_networks=())
    assert v.verdict in ("dns.inconsistent", "dns.bogon") and v.blocked and v.tags == ["partial:ipv4"], \
        (v.verdict, v.rule_id, [e.text for e in v.evidence])


def test_a_lie_in_the_a_record_to_a_public_address_is_dns_inconsistent():
    lie = "203.0.114.9"
    d = DnsQuery("system", None, "charter97.org", "ANY", T, 5.0, None, None, None,
                 [DnsAnswer("A", lie, 60), DnsAnswer("AAAA", SITE_V6, 60)])
    v = verdict(_dual(dns=[d], tcp=[tcp(lie), tcp(SITE_V6)],
                      tls=[tls(lie, failure=F.SSL_INVALID_HOSTNAME, stage="after_server_hello"), tls(SITE_V6)]))
    assert (v.verdict, v.blocked, v.tags) == ("dns.inconsistent", True, ["partial:ipv4"]), \
        (v.verdict, v.rule_id, [e.text for e in v.evidence])


# --- a slow link is not throttling -------------------------------------------------------

BIG = 2 * 1024 * 1024


def _timed_out_page(received: int, seconds: float = 15.0, title="Charter 97 news"):
    h = http("http://charter97.org/big", address=f"{SITE_IP}:80")
    h.failure, h.body_length, h.duration_ms, h.title = F.GENERIC_TIMEOUT, received, seconds * 1000, title
    return h


def _big_control():
    big = http("http://charter97.org/big", address=f"{SITE_IP}:80")
    big.failure, big.body_length, big.body_truncated = F.BODY_TOO_LARGE, BIG, True
    return control(http_req=big)


def test_a_large_page_arriving_at_the_links_speed_is_slow_not_blocked():
    m = measurement(url="http://charter97.org/big", tcp=[tcp(port=80)], tls=[],
                    http=[_timed_out_page(480_000)], control=_big_control())
    v = verdict(m, link_bytes_per_s=32_000.0)
    assert (v.verdict, v.blocked, v.tags) == ("ok", False, ["slow"]), (v.rule_id, [e.text for e in v.evidence])


def test_a_long_page_on_a_lossy_link_keeps_a_third_of_the_short_downloads_speed_and_is_slow():
    """Loss costs a long transfer more than the short download that measured the link."""
    m = measurement(url="http://charter97.org/big", tcp=[tcp(port=80)], tls=[],
                    http=[_timed_out_page(int(0.28 * 37_000 * 15))], control=_big_control())
    v = verdict(m, link_bytes_per_s=37_000.0)
    assert (v.verdict, v.blocked, v.tags) == ("ok", False, ["slow"]), (v.rule_id, [e.text for e in v.evidence])


def test_one_site_far_slower_than_the_link_is_throttling():
    m = measurement(url="http://charter97.org/big", tcp=[tcp(port=80)], tls=[],
                    http=[_timed_out_page(120_000)], control=_big_control())
    v = verdict(m, link_bytes_per_s=5_000_000.0)  # the link carries MB/s; this site 8 kB/s
    assert (v.verdict, v.blocked, v.tags) == ("http.timeout", True, [])


def test_without_knowing_the_link_a_timeout_is_still_a_timeout():
    m = measurement(url="http://charter97.org/big", tcp=[tcp(port=80)], tls=[],
                    http=[_timed_out_page(480_000)], control=_big_control())
    assert verdict(m).verdict == "http.timeout"


def test_a_system_resolver_that_timed_out_while_a_direct_query_answered_is_the_link():
    system = dns(answers=(), failure=F.DNS_TEMPORARY_FAILURE)
    direct = dns("udp", resolver="10.77.5.1:53")
    v = verdict(measurement(dns=[system, direct]))
    assert (v.verdict, v.blocked) == ("ok", False), (v.rule_id, [e.text for e in v.evidence])
    assert any("slow or lossy link" in e.text for e in v.layers["dns"].evidence)
    # but a resolver that says "no such name" is an answer, whatever the direct query says
    v = verdict(measurement(dns=[dns(answers=(), failure=F.DNS_NXDOMAIN), direct],
                            tls=[], http=[http(status=None, failure=F.NO_ADDRESSES)]))
    assert v.verdict == "dns.nxdomain"


def test_a_measurement_across_a_network_change_cannot_say_blocked():
    m = measurement(tcp=[tcp(failure=F.GENERIC_TIMEOUT)], tls=[], http=[http(status=None, failure=F.GENERIC_TIMEOUT)])
    m.network_changed, m.network_epoch = True, 0
    v = verdict(m)
    assert (v.verdict, v.blocked, v.tags) == ("tcp.timeout", None, ["network_changed"])
    assert any("network changed" in e.text for e in v.evidence)
