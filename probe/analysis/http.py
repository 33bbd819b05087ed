"""HTTP layer: is the page we got the site's page?

Order: blockpage fingerprints first (a censor's own page is proof), then a failed fetch
compared with the control, then comparison of the final responses. The comparison is
OONI's (webconnectivity httpdiff, identical in v0.4 and v0.5), with its thresholds:
the page is the same when the status matches AND at least one of body length (ratio of
the shorter to the longer > 0.7), uncommon header names, or title words agrees. That
tolerates dynamic pages, whose title or length change between fetches. Beyond OONI:
titles compare whole words by characters (not bytes: Cyrillic titles are not
"longer"), a redirect chain that ends on a foreign host is a difference, and a body or
title fingerprint counts only when the page differs from the control's, so a news
article that quotes a blocking notice is not itself a blockpage.
"""

from __future__ import annotations

import re

from yarl import URL

from probe.analysis.fingerprints import Match
from probe.analysis.tcpip import RESET_LIKE, most_telling
from probe.analysis.tcpip import VERDICT_FOR as TCP_VERDICT_FOR
from probe.analysis.view import HopSteps, View, norm_host
from probe.core import failures as F
from probe.core.records import HttpRequest
from probe.core.verdicts import Evidence, LayerFinding, needs_control

BODY_PROPORTION_MIN = 0.7  # OONI's body_length_match threshold
TITLE_WORD_MIN_CHARS = 4  # OONI uses 5 *bytes*; characters treat Cyrillic fairly
# OONI's 25 "common" header names, ignored when comparing header sets
COMMON_HEADERS = {
    "date", "content-type", "server", "cache-control", "vary", "set-cookie", "location", "expires",
    "x-powered-by", "content-encoding", "last-modified", "accept-ranges", "pragma", "x-frame-options",
    "etag", "x-content-type-options", "age", "via", "p3p", "x-xss-protection", "content-language",
    "cf-ray", "strict-transport-security", "link", "x-varnish",
    # transport-level names that say nothing about the site (OONI's ID false negative:
    # "Connection" on both sides made a blockpage "match")
    "connection", "content-length", "transfer-encoding", "keep-alive",
}
_WORD = re.compile(r"\w+", re.UNICODE)


def _f(rule, blocked, down, ok, verdict=None, *evidence) -> LayerFinding:
    return LayerFinding("http", blocked, down, ok, rule, verdict, list(evidence))


def body_proportion(a: int | None, b: int | None) -> float | None:
    if not a or not b or a <= 0 or b <= 0:
        return None
    return min(a, b) / max(a, b)


def title_words(title: str | None) -> set[str]:
    return {w.casefold() for w in _WORD.findall(title or "") if len(w) >= TITLE_WORD_MIN_CHARS}


def title_match(a: str | None, b: str | None) -> bool | None:
    if not a or not b:
        return None
    wa, wb = title_words(a), title_words(b)
    if not wa and not wb:
        return a.strip() == b.strip()
    return not (wa ^ wb)  # OONI: no long word appears in only one title


def headers_match(a: HttpRequest, b: HttpRequest) -> bool | None:
    na = {k.lower() for k, _ in a.headers}
    nb = {k.lower() for k, _ in b.headers}
    if not na or not nb:
        return None
    if na == nb:
        return True
    return bool((na - COMMON_HEADERS) & (nb - COMMON_HEADERS))


def status_match(local: int, control: int) -> bool | None:
    if local == control:
        return True
    if control // 100 != 2:
        return None  # the control's own error page says little (OONI v0.5)
    return False


def site_of(host: str | None) -> str:
    """Last two labels: enough to tell 'www.example.com' from 'example.com' as the same
    site, and a blockpage host as another one (no public-suffix list on purpose)."""
    labels = (host or "").lower().strip(".").split(".")
    return ".".join(labels[-2:])


def compare(local: HttpRequest, control: HttpRequest) -> dict:
    sm = status_match(local.status or 0, control.status or 0)
    bp = None if local.body_truncated or control.body_truncated else body_proportion(local.body_length, control.body_length)
    return {
        "status_match": sm,
        "body_proportion": round(bp, 3) if bp is not None else None,
        "body_length_match": None if bp is None else bp > BODY_PROPORTION_MIN,
        "headers_match": headers_match(local, control),
        "title_match": title_match(local.title, control.title),
    }


def same_page(c: dict) -> bool:
    return c["status_match"] is not False and bool(c["body_length_match"] or c["headers_match"] or c["title_match"])


def _differs_from_control(v: View, h: HttpRequest) -> bool | None:
    """Strict sameness for clearing a fingerprint: the same body, or the same length
    and title. OONI's looser test (any one of length, uncommon headers, title) is how an
    ISP blockpage that shared a header with the real site was scored accessible."""
    ctrl = v.control_final
    if ctrl is None or ctrl.status is None:
        return None
    if h.body_sha256 and h.body_sha256 == ctrl.body_sha256:
        return False
    c = compare(h, ctrl)
    return not (c["status_match"] is not False and c["body_length_match"] and c["title_match"] is not False)


def _blockpage(v: View) -> tuple[Match, HttpRequest] | None:
    """The first fingerprint match on a local hop that counts as a blockpage."""
    weak: tuple[Match, HttpRequest] | None = None
    for h in v.local_main:
        for x in v.http_matches(h):
            fp = x.fingerprint
            if fp.is_false_positive:
                continue
            in_headers = fp.location.startswith("header.")
            differs = _differs_from_control(v, h)
            if fp.confirms and (in_headers or differs is not False):
                return x, h
            if weak is None and differs:
                weak = (x, h)
    return weak


def _step_verdict(steps: HopSteps) -> tuple[str, float, str, list[Evidence]] | None:
    """The first of the hop's own steps (DNS, TCP, TLS) that failed, as that layer's
    verdict: a redirect to a host whose name, address or SNI is blocked is blocked there,
    not "at HTTP" (OONI reports all of these as http-failure)."""
    name = f"{steps.host}:{steps.port}"
    if steps.dns and not steps.answers:
        fails = sorted({q.failure for q in steps.dns if q.failure}) or [F.DNS_NO_ANSWER]
        return "dns.nxdomain", 0.8, "redirect_target_dns_failure", [
            Evidence(f"the redirect target {steps.host} does not resolve here: {', '.join(fails)}",
                     {"host": steps.host, "failures": fails})]
    if steps.tcp and not any(c.success for c in steps.tcp):
        fails = sorted({c.failure or F.UNKNOWN_FAILURE for c in steps.tcp})
        main = most_telling(fails)
        verdict = TCP_VERDICT_FOR.get(main, "tcp.timeout")
        return verdict, 0.75 if main == F.GENERIC_TIMEOUT else 0.8, "redirect_target_tcp_failure", [
            Evidence(f"every TCP connect to the redirect target {name} failed here ({', '.join(fails)})",
                     {"host": steps.host, "port": steps.port, "failures": fails})]
    if steps.scheme == "https" and steps.tls and not any(t.success for t in steps.tls):
        t = steps.tls[0]
        if t.failure in F.CERT_FAILURES:
            verdict, score = "tls.mitm", 0.8
        elif t.failure == F.GENERIC_TIMEOUT:
            verdict, score = "tls.timeout", 0.7
        else:
            verdict, score = "tls.reset", 0.8
        stage = f" {t.failure_stage.replace('_', ' ')}" if t.failure_stage else ""
        return verdict, score, "redirect_target_tls_failure", [
            Evidence(f"the TLS handshake with the redirect target {name} (SNI {t.server_name}) failed{stage}: {t.failure}",
                     {"host": steps.host, "failure": t.failure, "stage": t.failure_stage})]
    return None


# A page arriving at no less than this share of the link's own speed is limited by the
# link; far slower than the link (and than the control) is one site held back: throttling.
# Why 0.2: the link's speed is measured with a short download, and on a lossy link (5% of
# packets lost, a poor mobile connection) a long transfer keeps only 35-40% of it (the
# lab's slow vantage: 0.35-0.38 over several runs, once below 0.3), while a censor's
# throttling holds a site 10 to 100 times below the link (Roskomnadzor's Twitter
# slowdown of 2021: 128 kbit/s on links of several Mbit/s).
SLOW_LINK_SHARE = 0.2


def _slow_link(v: View, final: HttpRequest) -> LayerFinding | None:
    """A page still arriving when its deadline came, at about the link's own speed, and
    too large for this link to carry in time: the link is slow, the site is not blocked
    ("slow", not http.timeout). Throttling of one site (it arrives far slower than the
    link carries) still counts as blocking."""
    link = v.ctx.link_bytes_per_s
    seconds = (final.duration_ms or 0) / 1000
    if not link or seconds <= 0:
        return None
    got = final.body_length or 0
    rate = got / seconds
    ctrl = v.control_final
    size = ctrl.body_length if v.control_http_ok and ctrl and ctrl.body_length else None
    if size is not None and size / link <= seconds:
        return None  # this link could have carried the whole page in time
    if rate < SLOW_LINK_SHARE * link:
        return None  # far slower than the link: held back on the way
    ev = Evidence(f"the page was still arriving when its {seconds:.0f} s deadline came: {got} bytes at "
                  f"{rate / 1000:.1f} kB/s, about this link's own speed ({link / 1000:.1f} kB/s)"
                  + (f", too slow for its {size} bytes" if size else ""),
                  {"received": got, "seconds": round(seconds, 3), "rate": round(rate, 1), "link_rate": round(link, 1),
                   "size": size})
    same = title_match(final.title, ctrl.title) if ctrl is not None else None
    if same:
        f = _f("slow_link_same_page", 0, 0, 0.6, None, ev,
               Evidence(f"and it is the control's page ({final.title!r}): the link is slow, the site is not blocked"))
    else:
        f = _f("slow_link", 0, 0, 0.4, None, ev,
               Evidence("the link is slow: too little arrived to compare the page with the control's"))
    f.tags = ["slow"]
    return f


def hop_failure(v: View, final: HttpRequest, failure: str) -> tuple[str, float, str, list[Evidence]]:
    """(verdict, blocked score, rule id, evidence) for a fetch whose last hop failed
    while the control's succeeded: judged on that hop's own DNS/TCP/TLS when they were
    measured, else on the failure string and the scheme."""
    if failure == F.HTTP_INVALID_REDIRECT:
        return "http.diff", 0.6, "invalid_redirect", [
            Evidence(f"hop {final.hop} redirects here to a location that cannot be followed "
                     f"({final.location!r}), which the control does not get", {"location": final.location})]
    if failure == F.HTTP_TOO_MANY_REDIRECTS:
        return "http.diff", 0.6, "redirect_loop", [
            Evidence("the redirects here never end, while the control reaches a page")]
    if failure == F.HTTP_PROTOCOL_ERROR:
        return "http.diff", 0.6, "invalid_http_reply", [Evidence("the reply here is not valid HTTP")]
    steps = v.hop_steps(final)
    other_host = steps is not None and norm_host(steps.host) != v.host_key
    if steps is not None and (other_host or final.hop > 0):
        judged = _step_verdict(steps)
        if judged is not None:
            return judged
    if failure.startswith("dns_"):
        return "dns.nxdomain", 0.8, "redirect_target_dns_failure", [
            Evidence("a redirect target's name does not resolve here")]
    if failure == F.CONNECTION_REFUSED:
        return "tcp.refused", 0.75, "redirect_target_refused", []
    if failure in (F.HOST_UNREACHABLE, F.NETWORK_UNREACHABLE):
        return "tcp.timeout", 0.6, "redirect_target_unreachable", []
    if failure in F.CERT_FAILURES:
        return "tls.mitm", 0.6, "redirect_target_bad_certificate", []
    no_tls_record = final.url.startswith("https://") and other_host and not (steps and steps.tls)
    if failure in RESET_LIKE:
        if no_tls_record:
            # an https hop with no handshake recorded: a reset there most likely cut the
            # handshake (SNI filtering), but it is not proven
            return "tls.reset", 0.6, "reset_on_https_hop", [
                Evidence("no TLS handshake with that host was recorded: the reset probably came during it")]
        return "http.reset", 0.8, "failure_ctrl_ok", []
    if failure == F.GENERIC_TIMEOUT:
        return "http.timeout", 0.75, "failure_ctrl_ok", []
    return "http.reset", 0.6, "failure_ctrl_ok", []


def classify_http(v: View, dns: LayerFinding, tcp: LayerFinding, tls: LayerFinding) -> LayerFinding:
    m = v.m
    final = v.local_final
    if final is None or final.failure == F.NO_ADDRESSES:
        return _f("no_http_data", 0, 0, 0)

    hit = _blockpage(v)
    if hit is not None:
        x, h = hit
        fp = x.fingerprint
        score = 1.0 if fp.confirms and v.ctx.cc and v.ctx.cc in fp.countries else (0.95 if fp.confirms else 0.7)
        ev = [Evidence(f"hop {h.hop} ({h.url}) is a known blockpage: {x.describe()}",
                       {"fingerprint": fp.name, "scope": fp.scope, "countries": list(fp.countries), "url": h.url,
                        "status": h.status, "location": h.location})]
        if v.control_final is not None and v.control_final.status:
            ev.append(Evidence(f"the control gets {v.control_final.status} {v.control_final.title or ''}".rstrip()))
        return _f("matches_fingerprint", score, 0, 1 - score, "http.blockpage", *ev)

    upstream = [f for f in (dns, tcp, tls) if f.verdict is not None and f.blocked > f.ok]
    # A response that broke off (throttled body, too many redirects) is a failed fetch.
    if final.status is None or final.failure not in (None, F.BODY_TOO_LARGE):
        failure = final.failure or F.UNKNOWN_FAILURE
        if final.attempted:
            local = Evidence(f"the HTTP request to {final.url} failed: {failure}", {"failure": failure, "hop": final.hop})
        else:  # the record stands for the connect that had already timed out
            local = Evidence(f"no HTTP request was sent to {final.url}: its connect had already timed out ({failure})",
                             {"failure": failure, "hop": final.hop, "attempted": False})
        connected = any(c.success for c in v.target_tcp(m.port))
        handshaken = any(t.success for t in v.target_tls(m.port))
        if upstream or (final.hop == 0 and v.target_tcp(m.port) and not connected) or (
            m.scheme == "https" and final.hop == 0 and tls.rule_id != "no_tls_data" and not handshaken
        ):
            # the same failure seen by an earlier step, which judged it (or set it aside)
            return _f("upstream_failure", 0, 0, 0, None, local)
        if v.has_control and not v.control_http_ok:
            return _f("failure_ctrl_also_failing", 0.2, 0.8, 0, None, local,
                      Evidence("the control's request fails too: the site is down"))
        if failure.startswith(F.UNKNOWN_FAILURE):
            # not a network event we know: the probe itself could not complete the fetch
            f = _f("probe_failure", 0, 0, 0, None, local,
                   Evidence("this is not a network failure the probe knows: it could not measure the page"))
            f.error = True
            return f
        if failure == F.GENERIC_TIMEOUT and final.status is not None and final.body_length:
            slow = _slow_link(v, final)
            if slow is not None:
                return slow
        verdict, score, rule, why = hop_failure(v, final, failure)
        ev = [local, *why]
        if v.control_http_ok:
            assert v.control_final is not None  # control_http_ok
            return _f(rule, score, 1 - score, 0, verdict, *ev,
                      Evidence(f"the control gets {v.control_final.status} {v.control_final.title or ''}".rstrip()))
        return needs_control(_f("failure_no_ctrl", 0.5, 0.5, 0, verdict, *ev))

    # a response came
    got = Evidence(f"got {final.status} {final.title or ''} ({final.body_length} bytes) from {final.url}".replace("  ", " "),
                   {"status": final.status, "title": final.title, "body_length": final.body_length, "url": final.url})
    known_fp = [x for h in v.local_main for x in v.http_matches(h) if x.fingerprint.is_false_positive]
    ctrl = v.control_final
    if final.url.startswith("https://") and final.failure in (None, F.BODY_TOO_LARGE):
        # no control needed to trust it: the certificate proves who served the page
        return _f("https_response", 0, 0, 1.0, None, got,
                  Evidence("over HTTPS with a valid certificate: the page comes from the site itself"))
    if not v.control_http_ok:
        if v.has_control:
            return _f("ctrl_failed_local_ok", 0, 0.2, 0.6, None, got,
                      Evidence("the control's request failed, but the page loads here"))
        return _f("response_no_ctrl", 0, 0, 0.5, None, got)

    assert ctrl is not None  # control_http_ok
    cmp = compare(final, ctrl)
    local_site, ctrl_site = site_of(URL(final.url).host), site_of(URL(ctrl.url).host)
    if local_site != ctrl_site and local_site != site_of(m.hostname):
        return _f("redirect_to_foreign_host", 0.8, 0, 0.2, "http.diff", got,
                  Evidence(f"redirected to {URL(final.url).host}, while the control ends on {URL(ctrl.url).host}",
                           {"local_final": final.url, "control_final": ctrl.url}))
    if same_page(cmp):
        if known_fp:
            return _f("matches_ctrl", 0, 0, 0.9, None, got)
        return _f("matches_ctrl", 0, 0, 0.9, None, got, Evidence("the control gets the same page", cmp))
    if known_fp:
        x = known_fp[0]
        return _f("known_false_positive_page", 0.1, 0.2, 0.6, None, got,
                  Evidence(f"a page known not to be censorship ({x.fingerprint.name}): the site itself "
                           "answers differently here (e.g. a CDN challenge)"))
    diff = Evidence(
        f"differs from the control's {ctrl.status} {ctrl.title or ''} ({ctrl.body_length} bytes): "
        + ", ".join(f"{k}={val}" for k, val in cmp.items()),
        cmp,
    )
    return _f("http_diff", 0.7, 0, 0.3, "http.diff", got, diff)
