"""Where the volunteer measures from: country, ASN and network name, never their IP.

Looked up with two DNS questions, the usual way on a network that allows it: the public
address from OpenDNS's ``myip.opendns.com``, then Team Cymru's IP-to-ASN TXT records.
The address is used for the lookup and dropped; it is stored only when the volunteer
opts in with --store-ip. Service names are resolved through the system resolver first,
so a machine with no internet sends nothing anywhere and simply gets "unknown".
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

MYIP_NAME = "myip.opendns.com"
MYIP_RESOLVER = "resolver1.opendns.com"
CYMRU_ORIGIN = "origin.asn.cymru.com"
CYMRU_ORIGIN6 = "origin6.asn.cymru.com"
CYMRU_ASN = "asn.cymru.com"


@dataclass
class Vantage:
    cc: str | None = None
    asn: str | None = None  # "AS6697"
    network_name: str | None = None
    ip: str | None = None  # held only for the lookup; stored only with --store-ip
    source: str = "unknown"  # "cli", "dns", or "unknown"


def reverse_name(ip: str, zone_v4: str = CYMRU_ORIGIN, zone_v6: str = CYMRU_ORIGIN6) -> str:
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return ".".join(reversed(ip.split("."))) + "." + zone_v4
    nibbles = addr.exploded.replace(":", "")
    return ".".join(reversed(nibbles)) + "." + zone_v6


def parse_origin_txt(txt: str) -> tuple[str | None, str | None]:
    """'6697 | 178.120.0.0/13 | BY | ripencc | 2008-01-01' -> ('AS6697', 'BY')."""
    parts = [p.strip() for p in txt.strip('"').split("|")]
    asn = parts[0].split()[0] if parts and parts[0] else None
    cc = parts[2].upper() if len(parts) > 2 and parts[2] else None
    return (f"AS{asn}" if asn and asn.isdigit() else None), cc


def parse_asname_txt(txt: str) -> str | None:
    """'6697 | BY | ripencc | 2002-08-20 | BELPAK-AS Republican Unitary Telecommunication
    Enterprise Beltelecom, BY' -> the last field."""
    parts = [p.strip() for p in txt.strip('"').split("|")]
    return parts[4] if len(parts) > 4 and parts[4] else None


async def _txt(resolver: dns.asyncresolver.Resolver, name: str) -> str | None:
    try:
        answer = await resolver.resolve(name, "TXT")
    except (dns.exception.DNSException, OSError):
        return None
    for rdata in answer:
        return b"".join(rdata.strings).decode(errors="replace")
    return None


async def lookup_vantage(
    *,
    timeout: float = 3.0,
    myip_resolver: str | None = None,
    cymru_resolvers: list[str] | None = None,
    names: dict[str, str] | None = None,
) -> Vantage:
    """Best effort; gives Vantage(source='unknown') on any failure, within ``timeout``.

    ``myip_resolver`` / ``cymru_resolvers`` / ``names`` exist for tests and labs, which
    answer these questions with their own DNS server.
    """
    names = {"myip": MYIP_NAME, "myip_resolver": MYIP_RESOLVER, "origin": CYMRU_ORIGIN,
             "origin6": CYMRU_ORIGIN6, "asn": CYMRU_ASN, **(names or {})}
    try:
        return await asyncio.wait_for(_lookup(names, myip_resolver, cymru_resolvers, timeout), timeout)
    except (TimeoutError, OSError, dns.exception.DNSException, ValueError):
        return Vantage()


def _resolver(nameservers: list[str] | None, timeout: float) -> dns.asyncresolver.Resolver:
    if nameservers:
        r = dns.asyncresolver.Resolver(configure=False)
        r.nameservers = []
        for ns in nameservers:
            host, _, port = ns.rpartition(":") if ns.count(":") == 1 else (ns, "", "")
            r.nameservers.append(host or ns)
            if port:
                r.port = int(port)
    else:
        r = dns.asyncresolver.Resolver(configure=True)
    r.lifetime = timeout
    return r


async def _lookup(names: dict[str, str], myip_resolver: str | None, cymru: list[str] | None, timeout: float) -> Vantage:
    loop = asyncio.get_running_loop()
    if myip_resolver is None:
        infos = await loop.getaddrinfo(names["myip_resolver"], 53, type=socket.SOCK_DGRAM)
        myip_resolver = str(infos[0][4][0])
    r = _resolver([myip_resolver], timeout)
    answer = await r.resolve(names["myip"], "A")
    ip = next(iter(answer)).address
    sys_r = _resolver(cymru, timeout)
    origin = await _txt(sys_r, reverse_name(ip, names["origin"], names["origin6"]))
    if not origin:
        return Vantage(ip=ip, source="dns")
    asn, cc = parse_origin_txt(origin)
    name = await _txt(sys_r, f"{asn}.{names['asn']}") if asn else None
    return Vantage(cc=cc, asn=asn, network_name=parse_asname_txt(name) if name else None, ip=ip, source="dns")
