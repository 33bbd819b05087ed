"""Is this network behind a captive portal (a hotel's or a café's login page)?

Behind one, every site looks blocked: every name resolves to the portal's address and
every plain-HTTP request is redirected to its login page. Measured that way, a run
called every site ``dns.injection`` at 0.95. So before measuring, the probe asks what
operating systems ask: a few well-known portal-detection URLs whose exact answers are
known, and two random names that cannot exist. A portal is found when at least two of
those URLs are answered wrongly *and* the wrong answers point at one place (the same
redirect target or the same page), or the random names resolve (to one address).

A censor's blockpage for one of these URLs alone is not a portal; a network with no
internet at all (the answers never come) is not one either: then nothing is decided
here and the run goes on. Nothing is stored; only the verdict reaches the run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from yarl import URL

from probe.core.addresses import is_ip, split_url
from probe.core.answers import browser_addresses
from probe.measure import dns as dnsstep
from probe.measure.http import FetchOptions, fetch_http, new_session
from probe.measure.url import Contexts, ProbeConfig, run_dns

# (URL, expected status, what the body must contain): what Android, Firefox and Apple
# devices fetch to find a portal. Plain HTTP on purpose: a portal cannot intercept TLS.
PORTAL_PROBES: tuple[tuple[str, int, bytes], ...] = (
    ("http://connectivitycheck.gstatic.com/generate_204", 204, b""),
    ("http://detectportal.firefox.com/success.txt", 200, b"success"),
    ("http://captive.apple.com/hotspot-detect.html", 200, b"Success"),
)
# Names under these cannot exist (RFC 2606 domains, no wildcard): resolving a random
# label under them means the resolver answers everything.
RANDOM_PARENTS = ("example.com", "example.net")
CHECK_TIMEOUT = 6.0


@dataclass
class PortalCheck:
    portal: bool
    reason: str = ""  # one line, for the volunteer
    login_url: str | None = None
    answers: dict[str, str] = field(default_factory=dict)  # probe URL -> what came back


def _fetch_options() -> FetchOptions:
    return FetchOptions(timeout=4.0, connect_timeout=3.0, max_redirects=0, body_cap=65536, body_keep=4096)


async def _resolve(name: str, config: ProbeConfig) -> list[str]:
    queries = await run_dns(name, config, None, [])
    return browser_addresses(queries) or dnsstep.collect_addresses(queries, 4)


async def _ask(url: str, status: int, marker: bytes, config: ProbeConfig,
               contexts: Contexts) -> tuple[str, str | None, str | None]:
    """('right' | 'wrong' | 'none', redirect target, body digest) for one probe URL."""
    _, host, _ = split_url(url)
    addresses = [host] if is_ip(host) else await _resolve(host, config)
    if not addresses:
        return "none", None, None
    raw_host = (URL(url).raw_host or host).lower()
    session = new_session({host: addresses, raw_host: addresses}, contexts.verify, _fetch_options())
    try:
        hops = await fetch_http(session, url, _fetch_options())
    finally:
        await session.close()
    first = hops[0]
    if first.status is None:
        return "none", None, None
    body = first.body_head or b""
    if first.status == status and marker in body:
        return "right", None, None
    target = str(URL(url).join(URL(first.location))) if first.location else None
    return "wrong", target, hashlib.sha256(body).hexdigest() if body else None


async def check_portal(config: ProbeConfig, contexts: Contexts | None = None,
                       probes: tuple[tuple[str, int, bytes], ...] = PORTAL_PROBES,
                       random_parents: tuple[str, ...] = RANDOM_PARENTS) -> PortalCheck:
    """Ask the portal-detection URLs and two random names, within a few seconds."""
    cfg = dataclasses.replace(config, doh_url=None, dns_late_window=0.0, dns_sink=None)
    contexts = contexts or Contexts.for_config(cfg)
    names = [f"bynet-{secrets.token_hex(6)}.{parent}" for parent in random_parents]
    # the answers of _ask, then the addresses of _resolve: one gather for both
    jobs: list[Coroutine[Any, Any, Any]] = [_ask(url, status, marker, cfg, contexts) for url, status, marker in probes]
    jobs += [_resolve(n, cfg) for n in names]
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            results = await asyncio.gather(*jobs, return_exceptions=True)
    except TimeoutError:
        return PortalCheck(False, "the portal check did not finish in time")
    answers = [r if not isinstance(r, BaseException) else ("none", None, None) for r in results[:len(probes)]]
    resolved = [r if not isinstance(r, BaseException) else [] for r in results[len(probes):]]
    seen = {url: kind for (url, _, _), (kind, _, _) in zip(probes, answers, strict=False)}
    wrong = [a for a in answers if a[0] == "wrong"]
    targets = {URL(t).host for _, t, _ in wrong if t}
    bodies = {b for _, _, b in wrong if b}
    wildcard = all(resolved) and len({ip for r in resolved for ip in r}) <= 2
    one_place = (len(targets) == 1 and all(t for _, t, _ in wrong)) or (len(bodies) == 1 and len(wrong) >= 2)
    if len(wrong) >= 2 and (one_place or wildcard):
        login = next((t for _, t, _ in wrong if t), None)
        where = f"its login page {login}" if login else "the same page"
        why = ", and names that cannot exist resolve too" if wildcard else ""
        return PortalCheck(True, f"every plain-HTTP request here is answered with {where}{why}", login, seen)
    return PortalCheck(False, "", None, seen)
