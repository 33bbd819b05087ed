"""What a set of DNS queries says, read the same way by the probe and the analysis.

Why in core: the probe connects to the addresses a browser would use, and the
classifier must judge the same addresses; one function keeps them from drifting."""

from __future__ import annotations

from probe.core import failures as F
from probe.core.records import DnsQuery

# getaddrinfo failures that say nothing about the name: it got no answer in time
GAVE_UP = {F.GENERIC_TIMEOUT, F.DNS_TEMPORARY_FAILURE}


def system_resolver_gave_up(queries: list[DnsQuery]) -> bool:
    """getaddrinfo timed out (or gave up) while a direct query to the same resolvers got
    an answer: a slow or lossy link, not an answer. Its answer is then the direct one."""
    system = [q for q in queries if q.engine == "system"]
    return (bool(system) and all(q.failure in GAVE_UP and not q.addresses() for q in system)
            and any(q.addresses() for q in queries if q.engine == "udp"))


def browser_addresses(queries: list[DnsQuery]) -> list[str]:
    """The addresses a browser would use: getaddrinfo's (possibly none, when it failed:
    the browser would fail too). Only when the system resolver was not asked at all
    (turned off, as in tests), or gave up while the same resolvers answered a direct
    query, do the other engines stand in."""
    asked_system = any(q.engine == "system" for q in queries)
    engines = ["system"] if asked_system and not system_resolver_gave_up(queries) else ["udp", "doh"]
    for engine in engines:
        ips: list[str] = []
        for q in queries:
            if q.engine == engine:
                ips.extend(ip for ip in q.addresses() if ip not in ips)
        if ips:
            return ips
    return []
