"""Has this computer's network changed since the run started?

A laptop that moves from one ISP to another half-way through a run mixes two networks'
blocking under one label, and the sites in flight at the switch fail in ways that look
like blocking (measured: they became ``tls.timeout``). So a run watches what a change
of network changes, read locally and cheaply, with no packet sent:

* the resolvers in /etc/resolv.conf,
* the default routes (/proc/net/route, /proc/net/ipv6_route; Linux only),
* the source address the kernel picks towards a few anchors (the control helper, the
  resolvers, a documentation address): a UDP socket is "connected", never used.

Only a digest and the words of what changed leave this module: a volunteer's addresses
are not stored.
"""

from __future__ import annotations

import hashlib
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from probe.core.addresses import is_ip, split_hostport
from probe.measure.dns import system_resolvers

# Where the kernel would send a packet for "the internet", v4 and v6 (documentation
# addresses: routed like any other, never used).
INTERNET_ANCHORS = ("192.0.2.53", "2001:db8::53")


@dataclass(frozen=True)
class NetworkView:
    resolvers: tuple[str, ...]
    routes: tuple[str, ...]
    sources: tuple[str, ...]

    @property
    def digest(self) -> str:
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]

    def changes(self, other: NetworkView) -> list[str]:
        """What differs, in words (no addresses)."""
        out = []
        if self.resolvers != other.resolvers:
            out.append("resolvers")
        if self.routes != other.routes:
            out.append("route")
        if self.sources != other.sources:
            out.append("address")
        return out


def _default_routes() -> tuple[str, ...]:
    out = []
    try:
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 8 and parts[1] == "00000000" and parts[7] == "00000000":
                out.append(f"v4 {parts[0]} {parts[2]}")
    except OSError:
        pass
    try:
        for line in Path("/proc/net/ipv6_route").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 10 and parts[0] == "0" * 32 and parts[1] == "00":
                out.append(f"v6 {parts[9]} {parts[4]}")
    except OSError:
        pass
    return tuple(sorted(out))


def _source_towards(ip: str) -> str:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((ip, 53))  # no packet: only the route lookup
            return str(s.getsockname()[0])
    except OSError:
        return "-"


def read_network(anchors: list[str] | tuple[str, ...] = ()) -> NetworkView:
    hosts = []
    for a in [*anchors, *INTERNET_ANCHORS]:
        try:
            host = split_hostport(a)[0] if a.count(":") <= 1 or a.startswith("[") else a
        except ValueError:
            continue
        if is_ip(host) and host not in hosts:
            hosts.append(host)
    return NetworkView(
        resolvers=tuple(system_resolvers()),
        routes=_default_routes(),
        sources=tuple(f"{h}>{_source_towards(h)}" for h in hosts),
    )


@dataclass
class Change:
    at: float  # monotonic
    what: list[str]


@dataclass
class NetworkWatch:
    """The run's current network and its changes. ``epoch`` counts changes: a
    measurement that starts and ends in different epochs was in flight across one."""

    anchors: list[str]
    view: NetworkView = field(init=False)
    epoch: int = 0
    changes: list[Change] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.view = read_network(self.anchors)

    def check(self) -> bool:
        """Read the network again; True when it changed (and the epoch moved on)."""
        now = read_network(self.anchors)
        if now == self.view:
            return False
        self.changes.append(Change(time.monotonic(), self.view.changes(now)))
        self.view = now
        self.epoch += 1
        return True
