"""One measurement in, one verdict out: the combiner over the four layers.

The verdict names the first layer on the path (DNS, TCP, TLS, HTTP) whose finding is
"blocked" (its blocked score beats both down and ok), and the evidence lists what the
other layers saw. With no layer blocked: "down" when a layer says the site fails from
the control too, "error" when nothing could be learned, else "ok". A blocked verdict
always rests on a local failure or anomaly that the control did not see; without any
control, confidence is scaled down (NO_CONTROL_FACTOR) and the evidence says why. A
failure that a site down for everyone would show too is then not reported as blocked:
``blocked`` is None ("can't tell") and the likely verdict is still named. Evidence that
needs no control (a blockpage, a censor's address, an injected or DoH-contradicted DNS
answer, a handshake reset only for the site's name) still counts as blocked.
Pure: no I/O, so it runs the same under pytest, over SQLite or in a pipeline.
"""

from __future__ import annotations

from probe.analysis.dns import classify_dns
from probe.analysis.http import classify_http
from probe.analysis.tcpip import classify_tcp
from probe.analysis.tls import classify_tls
from probe.analysis.view import Context, View
from probe.core.records import Measurement
from probe.core.verdicts import LAYERS, Evidence, LayerFinding, Verdict

NO_CONTROL_FACTOR = 0.6


def _is_blocked(f: LayerFinding) -> bool:
    return f.verdict is not None and f.blocked > 0 and f.blocked >= f.down and f.blocked > f.ok


def _is_down(f: LayerFinding) -> bool:
    return f.down > 0 and f.down > f.ok and f.down > f.blocked


def classify(m: Measurement, ctx: Context | None = None) -> Verdict:
    verdict = _classify(m, ctx)
    if m.network_changed:
        # half measured on one network, half on another: what failed may be the move
        verdict.tags.append("network_changed")
        verdict.evidence.append(Evidence(
            "this computer's network changed while this was measured (it was measured again on the new network): "
            "what it shows mixes two networks", {"network_epoch": m.network_epoch}))
        if verdict.blocked:
            verdict.blocked = None
            verdict.confidence = round(verdict.confidence * 0.5, 3)
    checked = sorted({t.cert_checked_at for t in m.tls if t.cert_checked_at})
    if checked:
        verdict.tags.append("clock_skew")
        verdict.evidence.append(Evidence(
            f"this computer's clock was off: certificates were judged at the control helper's time ({checked[0][:16]})",
            {"cert_checked_at": checked[0]}))
    return verdict


def _classify(m: Measurement, ctx: Context | None) -> Verdict:
    v = View(m, ctx or Context())
    dns = classify_dns(v)
    tcp = classify_tcp(v, dns)
    tls = classify_tls(v, dns, tcp)
    http = classify_http(v, dns, tcp, tls)
    layers = {"dns": dns, "tcp": tcp, "tls": tls, "http": http}
    factor = 1.0 if v.has_control else NO_CONTROL_FACTOR
    no_control = []
    if not v.has_control:
        why = m.control.failure if m.control is not None else "none was asked"
        no_control = [Evidence(f"no control measurement ({why}): a site that is down for everyone could look the same",
                               {"control": why})]

    for name in LAYERS:
        f = layers[name]
        if _is_blocked(f):
            also = [
                Evidence(f"also at {other}: {e.text}", e.fields)
                for other in LAYERS
                if other != name and layers[other].blocked > 0 and layers[other].rule_id != "upstream_failure"
                for e in layers[other].evidence[:1]
            ]
            blocked = None if f.needs_control and not v.has_control else True
            assert f.verdict is not None  # _is_blocked
            return Verdict(f.verdict, blocked, round(f.blocked * factor, 3), name, f.rule_id,
                           [*f.evidence, *also, *no_control], layers, tags=list(f.tags))

    for name in LAYERS:
        f = layers[name]
        if _is_down(f):
            return Verdict("down", False, round(f.down, 3), name, f.rule_id, list(f.evidence), layers)

    broken = [layers[n] for n in LAYERS if layers[n].error]
    if broken:
        f = broken[0]
        return Verdict("error", False, 0.5, f.layer, f.rule_id, list(f.evidence), layers)

    oks = [layers[n] for n in LAYERS if layers[n].ok > 0]
    if not oks:
        evidence = [e for n in LAYERS for e in layers[n].evidence] or [Evidence("nothing was measured")]
        if m.control is not None and m.control.failure:
            evidence.append(Evidence(f"the control could not be asked: {m.control.failure}", {"control": m.control.failure}))
        return Verdict("error", False, 0.5, None, "nothing_learned", evidence, layers)
    best = oks[-1]  # the furthest layer that worked: usually the page itself
    evidence = [e for f in oks for e in f.evidence[:1]]
    return Verdict("ok", False, round(best.ok * factor, 3), best.layer, best.rule_id, [*evidence, *no_control], layers,
                   tags=[t for f in oks for t in f.tags])
