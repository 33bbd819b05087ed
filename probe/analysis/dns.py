"""DNS layer: is the local answer what the name really resolves to?

Rules are tried in order and the first that applies decides, as in OONI's newer
pipeline (ooni/data analysis/rules.py), whose (blocked, down, ok) scores these follow
where they overlap. What we add: injection evidence (an answer from a sink that runs no
resolver; a second, different reply racing the first), TLS-proven addresses checked
before anything else, and a DNS answer judged by the page its address serves.
"""

from __future__ import annotations

from typing import Any

from probe.analysis.view import NO_RESPONSE, View, family
from probe.core import failures as F
from probe.core.verdicts import Evidence, LayerFinding, needs_control


def _finding(rule: str, blocked: float, down: float, ok: float, verdict: str | None = None,
             *evidence: Evidence) -> LayerFinding:
    return LayerFinding("dns", blocked, down, ok, rule, verdict, list(evidence))


def _genuine(v: View, ip: str) -> bool:
    """What vouches for one local answer: the control's answers, a valid certificate
    from it (here or at the control)."""
    return (ip in v.reference_answers or ip in v.tls_valid_ips
            or bool(v.control_ip_info.get(ip, {}).get("valid_for_domain")))


def _one_family_lies(v: View) -> tuple[int, list[str], list[str]] | None:
    """(family, its local answers, the control's) when one record type is a lie while
    the other is genuine: nothing vouches for any of that family's answers, not even
    a shared network."""
    for fam in (4, 6):
        mine = [ip for ip in v.local_answers if family(ip) == fam]
        ref = sorted(ip for ip in v.reference_answers if family(ip) == fam)
        if not mine or not ref or any(_genuine(v, ip) for ip in mine):
            continue
        asns = {v.control_ip_info.get(ip, {}).get("asn") for ip in mine} - {None, 0}
        ref_asns = {v.control_ip_info.get(ip, {}).get("asn") for ip in ref} - {None, 0}
        if asns & ref_asns:
            continue
        return fam, mine, ref
    return None


def classify_dns(v: View) -> LayerFinding:
    f = _classify_dns(v)
    if v.system_resolver_gave_up:
        f.evidence.append(Evidence("this computer's resolver timed out, but a direct query to the same resolver "
                                   "was answered: a slow or lossy link, judged on that answer"))
    return f


def _classify_dns(v: View) -> LayerFinding:
    m = v.m
    if v.ip_literal:
        return _finding("ip_literal", 0, 0, 0, None, Evidence("the URL has an IP address: no DNS involved"))
    if not m.dns:
        return _finding("no_dns_data", 0, 0, 0)

    # 1. Injection: answers no honest resolver could have given.
    if v.sink_answers:
        q, ip = v.sink_answers[0]
        return _finding(
            "answer_from_sink", 0.95, 0, 0.05, "dns.injection",
            Evidence(f"{q.resolver} runs no DNS server, yet a reply came for {m.hostname}: {ip}",
                     {"sink": q.resolver, "answer": ip, "responder": q.responder}),
        )
    if v.racing_replies:
        q, other = v.racing_replies[0]
        return _finding(
            "racing_replies", 0.9, 0, 0.1, "dns.injection",
            Evidence(f"two different replies to one query to {q.resolver}: {', '.join(q.addresses()) or q.rcode} "
                     f"then {', '.join(other) or 'no address'}",
                     {"resolver": q.resolver, "first": q.addresses(), "second": other}),
        )

    # 2. An answer that is a known censor's address (and not what everyone gets: some
    # lists name 127.0.0.1, which sites also misuse for themselves).
    for ip in v.local_answers:
        if ip in v.control_answers:
            continue
        matches = [x for x in v.ctx.fingerprints.match_dns(ip) if not x.fingerprint.is_false_positive]
        in_country = [x for x in matches if v.ctx.cc and v.ctx.cc in x.fingerprint.countries]
        if matches and (in_country or not v.is_special(ip)):
            fp = (in_country or matches)[0].fingerprint
            score = 1.0 if in_country else 0.9
            return _finding(
                "answer_matches_fingerprint", score, 0, 1 - score, "dns.blockpage",
                Evidence(f"the local answer {ip} is a known blockpage address "
                         f"({fp.name}, {'/'.join(fp.countries) or 'any country'})",
                         {"answer": ip, "fingerprint": fp.name, "scope": fp.scope}),
            )

    # 3. No address locally.
    if not v.local_answers:
        failure = v.local_dns_failure or F.DNS_NO_ANSWER
        local = Evidence(f"the local resolver gave no address for {m.hostname}: {failure}", {"local_failure": failure})
        if v.reference_answers:
            who = "the control" if v.control_answers else "DNS-over-HTTPS"
            ref = Evidence(f"{who} resolves it: {', '.join(sorted(v.reference_answers)[:4])}",
                           {"reference": sorted(v.reference_answers)})
            score = 0.9 if v.control_answers else 0.75
            if failure in NO_RESPONSE:
                score -= 0.15  # a timeout is weaker than a resolver saying "no such name"
            return _finding("dns_failure_ctrl_ok", score, 1 - score, 0, "dns.nxdomain", local, ref)
        if v.has_control:
            return _finding("dns_failure_ctrl_also_failing", 0.1, 0.9, 0, None, local,
                            Evidence("the control cannot resolve it either: the name is gone, not blocked"))
        if failure in NO_RESPONSE:
            return _finding("dns_no_response_no_ctrl", 0, 0, 0, None, local,
                            Evidence("no resolver answered at all, and there was no control"))
        if (v.ctx.run_dns_failure_rate or 0) >= 0.9 and v.ctx.run_size >= 5:
            return _finding("dns_failure_whole_run_no_ctrl", 0, 0, 0, None, local,
                            Evidence(f"{v.ctx.run_dns_failure_rate:.0%} of this run's names failed to resolve and there "
                                     "was no control: this network has no working DNS, nothing is known about the site"))
        return needs_control(_finding("dns_failure_no_ctrl", 0.5, 0.5, 0, "dns.nxdomain", local,
                        Evidence("there was no control, so a site that no longer exists would look the same")))

    # 4. Unroutable answers.
    bogons = [ip for ip in v.local_answers if v.is_bogon(ip)]
    if bogons:
        ev = Evidence(f"the local answer {', '.join(bogons)} is not a routable internet address", {"bogons": bogons})
        if set(bogons) & v.control_answers:
            return _finding("bogon_in_ctrl", 0.1, 0.9, 0, None, ev,
                            Evidence("the control gets the same address: the site's own DNS is misconfigured"))
        if not v.reference_answers:
            # a site misconfigured to 127.0.0.1 looks the same, for everyone
            return needs_control(_finding("bogon_no_reference", 0.95, 0.05, 0, "dns.bogon", ev,
                                          Evidence("no control or DNS-over-HTTPS answer to compare it with")))
        who = "the control" if v.control_answers else "DNS-over-HTTPS"
        f = _finding("bogon_not_in_ctrl", 0.95, 0.05, 0, "dns.bogon", ev,
                     Evidence(f"{who} resolves {', '.join(sorted(v.reference_answers)[:4])}"))
        fams = {family(ip) for ip in bogons}
        genuine = [ip for ip in v.local_answers if family(ip) not in fams and _genuine(v, ip)]
        if len(fams) == 1 and genuine:
            f.tags = [f"partial:ipv{fams.pop()}"]
            f.evidence.append(Evidence(f"the other record type is genuine ({genuine[0]})"))
        return f

    # 5. Consistency with what the name really resolves to.
    shared = sorted(set(v.local_answers) & v.reference_answers)
    if shared:
        lie = _one_family_lies(v)
        if lie is not None:
            fam, ips, ref_ips = lie
            f = _finding("one_record_type_inconsistent", 0.7, 0, 0.3, "dns.inconsistent",
                         Evidence(f"the local {'A' if fam == 4 else 'AAAA'} answer {', '.join(ips[:4])} shares nothing "
                                  f"with the control's {', '.join(ref_ips[:4])} and nothing vouches for it (no valid "
                                  f"certificate, no shared network), while the other record type matches ({shared[0]})",
                                  {"family": f"ipv{fam}", "local": ips, "control": ref_ips}))
            f.tags = [f"partial:ipv{fam}"]
            return f
        return _finding("answer_matches_ctrl", 0, 0, 0.9, None,
                        Evidence(f"the control gets the same address {shared[0]}"))
    if v.control_dns_failed:
        differ = Evidence(
            f"the local resolver answers {', '.join(v.local_answers[:4])}, but the control finds no address at all",
            {"local": v.local_answers, "control": []},
        )
    else:
        differ = Evidence(
            f"the local answer {', '.join(v.local_answers[:4])} shares nothing with the control's "
            f"{', '.join(sorted(v.reference_answers)[:4]) or '(no control)'}",
            {"local": v.local_answers, "control": sorted(v.reference_answers)},
        )
    # An answer that served a valid certificate for the name leads to the site: whatever
    # else goes wrong there (a transparent HTTP blockpage on port 80, say) is not DNS's.
    proven = [ip for ip in v.local_answers if ip in v.tls_valid_ips]
    if proven:
        if v.reference_answers:
            # differs from the control, yet leads to the site: an ISP proxy relaying TLS.
            # Not at fault, but a researcher should see it next to what the proxy did.
            return _finding("tls_consistent_answer", 0.1, 0, 0.9, None,
                            Evidence(f"the local answer {proven[0]} differs from {', '.join(sorted(v.reference_answers)[:4])} "
                                     f"but presented a valid certificate for {m.hostname}: it leads to the site "
                                     "(a proxy that relays TLS), so DNS is not the layer at fault",
                                     {"local": v.local_answers, "control": sorted(v.reference_answers)}))
        return _finding("tls_consistent_answer", 0, 0, 1.0, None,
                        Evidence(f"{proven[0]} presented a valid certificate for {m.hostname}: the answer is genuine"))
    fetched = v.https_fetch_address
    if fetched is not None:
        return _finding("https_fetch_consistent_answer", 0, 0, 0.95, None,
                        Evidence(f"the page was fetched over HTTPS from {fetched or 'the local answer'} with a valid "
                                 f"certificate for {m.hostname}: the answer is genuine"))
    # What does the odd address serve? A blockpage there settles it.
    for h in [*v.local_main, *v.fallbacks]:
        served_by = v.response_ip(h)
        if served_by not in v.local_answers:
            continue
        matches = [x for x in v.http_matches(h) if not x.fingerprint.is_false_positive]
        confirming = [x for x in matches if x.fingerprint.confirms]
        if not confirming and v.reference_answers:
            confirming = matches  # a vague word counts when we know the address is not the site's
        if confirming:
            x = confirming[0]
            return _finding("answer_serves_blockpage", 0.95, 0, 0.05, "dns.blockpage", differ,
                            Evidence(f"{served_by} serves a blockpage: {x.describe()}",
                                     {"address": served_by, "fingerprint": x.fingerprint.name, "url": h.url}))
    valid_at_ctrl = [ip for ip in v.local_answers if v.control_ip_info.get(ip, {}).get("valid_for_domain")]
    if valid_at_ctrl:
        return _finding("answer_valid_from_ctrl", 0, 0, 0.95, None,
                        Evidence(f"the control got a valid certificate for {m.hostname} from {valid_at_ctrl[0]}"))
    if not v.reference_answers and not v.control_dns_failed:
        return _finding("no_reference", 0, 0, 0, None,
                        Evidence("no control answer to compare the local answer with"))
    local_asns: set[Any] = {v.control_ip_info.get(ip, {}).get("asn") for ip in v.local_answers} - {None, 0}  # JSON
    ctrl_asns = {v.control_ip_info.get(ip, {}).get("asn") for ip in v.reference_answers} - {None, 0}
    if local_asns & ctrl_asns:
        return _finding("answer_asn_matches_ctrl", 0.2, 0, 0.8, None,
                        Evidence(f"local and control addresses are in the same network (AS{sorted(local_asns & ctrl_asns)[0]})"))
    # A CDN or geo-DNS answer serves the same page: not tampering.
    final, ctrl = v.local_final, v.control_final
    if (final and ctrl and final.status and ctrl.status and final.title and final.title == ctrl.title
            and v.response_ip(final) in v.local_answers):
        return _finding("http_consistent_answer", 0.1, 0, 0.7, None, differ,
                        Evidence(f"but it serves the same page as the control ({final.title!r}): a CDN or geo-DNS answer"))
    if v.control_dns_failed:
        return _finding("answer_for_missing_name", 0.8, 0.1, 0.1, "dns.inconsistent", differ)
    return _finding("dns_answer_unmatched", 0.75, 0, 0.25, "dns.inconsistent", differ)
