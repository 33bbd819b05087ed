"""TCP/IP layer: can the site's addresses be reached at all?

Judged only on the URL's port and only when DNS is trusted (connect failures to a
censor's address say nothing about the site). Failures count as blocking only when the
control reaches the same site; scores follow ooni/data's TCP rules (failure_ctrl_ok
0.75, failure_ctrl_also_failing 0.25/0.75). Beyond OONI: a connection that is accepted
and then reset whatever is sent on it (our TLS handshake with the site's name AND the
one with a harmless name) is IP-level reset, told apart from SNI filtering.
"""

from __future__ import annotations

from probe.analysis.view import View, family
from probe.core import failures as F
from probe.core.verdicts import Evidence, LayerFinding, needs_control

RESET_LIKE = {F.CONNECTION_RESET, F.EOF}
VERDICT_FOR = {
    F.GENERIC_TIMEOUT: "tcp.timeout",
    F.HOST_UNREACHABLE: "tcp.timeout",
    F.NETWORK_UNREACHABLE: "tcp.timeout",
    F.CONNECTION_REFUSED: "tcp.refused",
    F.CONNECTION_RESET: "tcp.reset",
    F.CONNECTION_ABORTED: "tcp.reset",
}
IPV6_BROKEN = {F.NETWORK_UNREACHABLE, F.ADDRESS_FAMILY_NOT_SUPPORTED, F.HOST_UNREACHABLE}


def most_telling(failures: list[str]) -> str:
    """The failure that says most about a set of connects: refused/reset beat timeouts,
    which can also be loss."""
    return next((f for f in (F.CONNECTION_REFUSED, F.CONNECTION_RESET, F.GENERIC_TIMEOUT) if f in failures), failures[0])


def _f(rule, blocked, down, ok, verdict=None, *evidence) -> LayerFinding:
    return LayerFinding("tcp", blocked, down, ok, rule, verdict, list(evidence))


def dns_untrusted(dns: LayerFinding) -> bool:
    return dns.verdict is not None and dns.blocked > dns.ok


def _payload_reset_everywhere(v: View, reachable: list[str]) -> list[str]:
    """Addresses where even the harmless-SNI handshake was reset after our hello."""
    out = []
    for ip in reachable:
        for port in {443, v.m.port}:
            benign = v.benign_tls(ip, port)
            if benign and all(b.failure in RESET_LIKE and b.failure_stage == "after_client_hello" for b in benign):
                out.append(ip)
                break
    return out


def _one_family_blocked(v: View, conns: list) -> LayerFinding | None:
    """Every address of one family fails while the other family connects: partial
    blocking (a censor that filters IPv4 only, say), never a clean ok. Not judged where
    this computer itself cannot use the family (no IPv6 route) or where the whole run
    shows the family broken at this vantage point."""
    for fam in (4, 6):
        mine = [c for c in conns if family(c.ip) == fam]
        other_ok = [c for c in conns if family(c.ip) != fam and c.success]
        if not mine or not other_ok or any(c.success for c in mine):
            continue
        failures = sorted({c.failure or F.UNKNOWN_FAILURE for c in mine})
        if all(f in IPV6_BROKEN for f in failures) or v.ctx.family_broken(fam):
            continue
        main = most_telling(failures)
        verdict = VERDICT_FOR.get(main, "tcp.timeout")
        ips = sorted({c.ip for c in mine})
        ev = Evidence(f"every IPv{fam} connect to port {v.m.port} failed ({', '.join(failures)}) on {', '.join(ips[:4])}, "
                      f"while IPv{10 - fam} works ({other_ok[0].ip})",
                      {"family": f"ipv{fam}", "failures": failures, "addresses": ips, "working": other_ok[0].ip})
        ctrl_fam = [c for c in (v.m.control.tcp if v.m.control is not None and v.has_control else [])
                    if family(c.ip) == fam and c.port == v.m.port]
        tag = [f"partial:ipv{fam}"]
        if any(c.success for c in ctrl_fam):
            score = 0.75 if main == F.GENERIC_TIMEOUT else 0.85
            f = _f("one_family_blocked", score, 1 - score, 0, verdict, ev,
                   Evidence(f"the control connects over IPv{fam}"))
        elif v.has_control and ctrl_fam:
            continue  # the site's IPv{fam} fails for everyone: not ours to judge
        else:
            f = needs_control(_f("one_family_failing_no_ctrl", 0.5, 0.5, 0, verdict, ev,
                                 Evidence(f"no control connect over IPv{fam} to compare with")))
        f.tags = tag
        return f
    return None


def classify_tcp(v: View, dns: LayerFinding) -> LayerFinding:
    m = v.m
    conns = v.target_tcp(m.port)
    if not conns:
        return _f("no_tcp_data", 0, 0, 0)
    if dns_untrusted(dns):
        return _f("dns_untrusted", 0, 0, 0, None, Evidence("the addresses came from a tampered DNS answer: not judged"))

    ok = [c for c in conns if c.success]
    if ok:
        reset_ips = _payload_reset_everywhere(v, [c.ip for c in ok])
        if reset_ips and len(reset_ips) == len({c.ip for c in ok}):
            ctrl_ok = v.control_tls_ok or v.control_http_ok
            ev = Evidence(
                f"connections to {', '.join(reset_ips)} are accepted, then reset whatever is sent: "
                "even a TLS hello for a harmless name",
                {"addresses": reset_ips},
            )
            if ctrl_ok:
                return _f("established_then_reset", 0.85, 0.15, 0, "tcp.reset", ev,
                          Evidence("the control reaches the site"))
            if v.has_control:
                return _f("established_then_reset_ctrl_failing", 0.25, 0.75, 0, None, ev)
            return needs_control(_f("established_then_reset_no_ctrl", 0.6, 0.4, 0, "tcp.reset", ev))
        partial = _one_family_blocked(v, conns)
        if partial is not None:
            return partial
        failed = [c for c in conns if not c.success]
        extra = [Evidence(f"{len(failed)} of {len(conns)} addresses could not be reached",
                          {"failed": [c.ip for c in failed]})] if failed else []
        return _f("connect_ok", 0, 0, 1.0, None, Evidence(f"TCP connect to {ok[0].ip}:{m.port} succeeded"), *extra)

    failures = sorted({c.failure or F.UNKNOWN_FAILURE for c in conns})
    v4 = [c for c in conns if ":" not in c.ip]
    if not v4 and all(c.failure in IPV6_BROKEN for c in conns):
        return _f("ipv6_broken_probe", 0, 0, 0, None,
                  Evidence("only IPv6 addresses, and this network has no working IPv6: not judged"))
    main = most_telling(failures)
    verdict = VERDICT_FOR.get(main, "tcp.timeout")
    ev = Evidence(
        f"every TCP connect to port {m.port} failed locally ({', '.join(failures)}) on "
        f"{', '.join(sorted({c.ip for c in conns})[:4])}",
        {"failures": failures, "addresses": sorted({c.ip for c in conns})},
    )
    if v.control_tcp_ok(m.port):
        score = 0.75 if main == F.GENERIC_TIMEOUT else 0.85
        return _f("failure_ctrl_ok", score, 1 - score, 0, verdict, ev, Evidence("the control connects to the site"))
    if v.has_control:
        return _f("failure_ctrl_also_failing", 0.25, 0.75, 0, None, ev,
                  Evidence("the control cannot connect either: the site is down"))
    return needs_control(_f("failure_no_ctrl", 0.5, 0.5, 0, verdict, ev,
                            Evidence("there was no control to compare with")))
