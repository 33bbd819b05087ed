"""TLS layer (https URLs): did the handshake with the site's name work, and with whom?

OONI reports all of this as "http-failure". We tell apart: a reset or close right after
our ClientHello (SNI filtering, what Belarusian ISPs did in 2020), a stall (tls.timeout),
and a certificate that fails locally while the control gets a valid one (interception).
The handshake with a harmless name on the same address is our own local control: when
it succeeds and the real name's does not, the name is what is being filtered. Scores
follow ooni/data's TLS rules (reset 0.8, ssl_* 0.9, other 0.7), raised when the
harmless name succeeds.
"""

from __future__ import annotations

from probe.analysis.tcpip import RESET_LIKE, dns_untrusted
from probe.analysis.view import View
from probe.core import failures as F
from probe.core.verdicts import Evidence, LayerFinding, needs_control


def _f(rule, blocked, down, ok, verdict=None, *evidence) -> LayerFinding:
    return LayerFinding("tls", blocked, down, ok, rule, verdict, list(evidence))


def classify_tls(v: View, dns: LayerFinding, tcp: LayerFinding) -> LayerFinding:
    m = v.m
    hs = v.target_tls(m.port)
    if m.scheme != "https" or not hs:
        return _f("no_tls_data", 0, 0, 0)
    if dns_untrusted(dns):
        return _f("dns_untrusted", 0, 0, 0, None, Evidence("handshakes went to a tampered DNS answer: not judged"))
    if tcp.verdict is not None and tcp.blocked > tcp.ok:
        return _f("tcp_blocked", 0, 0, 0, None, Evidence("TCP is already blocked: not judged"))

    good = [h for h in hs if h.success and h.cert_valid]
    if good:
        h = good[0]
        return _f("certificate_valid", 0, 0, 1.0, None,
                  Evidence(f"TLS with {h.server_name} on {h.ip} succeeded ({h.tls_version}), valid certificate"))

    h = hs[0]
    failures = sorted({x.failure or F.UNKNOWN_FAILURE for x in hs})
    ctrl_ok = v.control_tls_ok
    where = f"on {h.ip}:{h.port}" + (f" {h.failure_stage.replace('_', ' ')}" if h.failure_stage else "")
    local = Evidence(f"TLS handshake with SNI {h.server_name} failed {where}: {h.failure}",
                     {"failure": h.failure, "stage": h.failure_stage, "address": h.ip,
                      "bytes_sent": h.bytes_sent, "bytes_received": h.bytes_received})

    if h.failure in F.CERT_FAILURES:
        leaf = h.peer_certificates[0] if h.peer_certificates else None
        shown = Evidence(
            f"the certificate shown here: subject {leaf.subject}, issued by {leaf.issuer}" if leaf else "no certificate captured",
            {"issuer": leaf.issuer if leaf else None, "subject": leaf.subject if leaf else None,
             "sha256": leaf.sha256 if leaf else None},
        )
        if ctrl_ok:
            return _f("failure_ctrl_ok_ssl", 0.9, 0.1, 0, "tls.mitm", local, shown,
                      Evidence("the control gets a valid certificate for the same name"))
        if v.has_control:
            return _f("failure_ctrl_also_failing", 0.2, 0.8, 0, None, local, shown,
                      Evidence("the control's handshake fails too: the site's certificate is broken for everyone"))
        return needs_control(_f("ssl_failure_no_ctrl", 0.5, 0.5, 0, "tls.mitm", local, shown))

    benign_ok = [b for x in hs for b in v.benign_tls(x.ip, x.port) if b.success]
    benign_ev = [Evidence(f"a handshake with the harmless name {benign_ok[0].server_name} to the same address succeeded: "
                          "the site's name is what is filtered", {"benign_sni": benign_ok[0].server_name})] if benign_ok else []
    if h.failure == F.GENERIC_TIMEOUT:
        verdict, base, rule = "tls.timeout", 0.7, "failure_ctrl_ok_timeout"
    elif h.failure in RESET_LIKE:
        verdict, base, rule = "tls.reset", 0.8, "failure_ctrl_ok_reset"
    else:
        verdict, base, rule = "tls.reset", 0.7, "failure_ctrl_ok_other"
    if benign_ok:
        base = min(0.97, base + 0.15)
    if ctrl_ok:
        return _f(rule, base, 1 - base, 0, verdict, local, *benign_ev,
                  Evidence("the control completes the handshake"))
    if v.has_control:
        return _f("failure_ctrl_also_failing", 0.2, 0.8, 0, None, local,
                  Evidence(f"the control's handshake fails too ({', '.join(failures)}): the site is down"))
    if benign_ok:
        return _f("sni_filtered_no_ctrl", 0.7, 0.3, 0, verdict, local, *benign_ev)
    return needs_control(_f("failure_no_ctrl", 0.5, 0.5, 0, verdict, local))
