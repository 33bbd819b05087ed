"""A local world with realistic latency, for measuring how fast `probe run` is.

What it is: a DNS server that answers every name after ``dns_delay`` (50 ms), one web
server that answers every page after ``page_delay`` (200 ms), and N targets with
distinct names, each resolving to an address of its own, so that no server is shared
(as on the real list, mostly). The addresses are loopback ones, in three /16 ranges:

- reachable (85%): ``127.<net>.x.y``; port 80 is sent to the web server by an iptables
  DNAT rule, other ports are closed (refused at once, as a site without HTTPS);
- blackholed (10%): ``127.<net+1>.x.y``; every packet to them is dropped by an iptables
  rule in INPUT, so a connect waits for its whole timeout, as a censor's blackhole;
- reset (5%): ``127.<net+2>.x.y``; nothing listens there, so the kernel answers each
  SYN with RST (what ``REJECT --reject-with tcp-reset`` does), as a censor resetting.

The kinds are spread over the list with a fixed seed, so every run is the same world.
The iptables rules live in chains of their own, named with this process's id: they
are removed when the world closes, and chains left by a process that is no longer
alive (a benchmark killed with -9) are removed when the next world opens. Needs root.

``physical_minimum`` is what each target must cost at least in this world (the
latencies, and the connect timeout for a blackhole); ``lower_bound`` schedules those
minimums on a pool of workers as the probe's runner does (targets in list order, each
worker taking the next target when it is free).
"""

from __future__ import annotations

import asyncio
import heapq
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import Answer, Delayed, DnsServer, WebServer  # noqa: E402

CHAIN_PREFIX = "BYWORLD"  # iptables chains of worlds: BYWORLD<pid>N (nat), BYWORLD<pid>D (filter)
KINDS = ("ok", "blackholed", "reset")


class WorldError(Exception):
    """The world cannot be built here (not root, no iptables)."""


@dataclass(frozen=True)
class Target:
    url: str
    hostname: str
    ip: str
    kind: str  # ok | blackholed | reset


@dataclass
class World:
    """The world as an async context manager: ``async with World(1000) as w: ...``."""

    n: int
    dns_delay: float = 0.05
    page_delay: float = 0.2
    blackholed_share: float = 0.10
    reset_share: float = 0.05
    net: int = 77  # second octet of the reachable range; +1 blackholed, +2 reset
    seed: int = 11
    page_size: int = 8_000
    targets: list[Target] = field(default_factory=list)
    first_query_at: float | None = None  # time.monotonic() of the first DNS query of a target
    requests: int = 0  # pages served

    def __post_init__(self) -> None:
        if self.n > 65_000:
            raise WorldError("at most 65,000 targets (one /16 per kind)")
        kinds = self._kinds()
        ranges = {"ok": self.net, "blackholed": self.net + 1, "reset": self.net + 2}
        for i, kind in enumerate(kinds):
            ip = f"127.{ranges[kind]}.{(i + 1) // 256}.{(i + 1) % 256}"
            name = f"t{i}.world.test"
            self.targets.append(Target(f"http://{name}/", name, ip, kind))
        self._dns: DnsServer | None = None
        self._web: WebServer | None = None
        self._tag = f"{CHAIN_PREFIX}{os.getpid()}x{self.net}"

    def _kinds(self) -> list[str]:
        blackholed = round(self.n * self.blackholed_share)
        reset = round(self.n * self.reset_share)
        kinds = ["blackholed"] * blackholed + ["reset"] * reset + ["ok"] * (self.n - blackholed - reset)
        random.Random(self.seed).shuffle(kinds)
        return kinds

    # ---- what the probe is pointed at ------------------------------------

    @property
    def resolver(self) -> str:
        assert self._dns is not None, "the world is not open"
        return self._dns.address

    def write_targets(self, path: Path) -> Path:
        path.write_text("".join(f"{t.url} NEWS\n" for t in self.targets))
        return path

    def count(self, kind: str) -> int:
        return sum(t.kind == kind for t in self.targets)

    # ---- lower bound --------------------------------------------------------

    def physical_minimum(self, kind: str, connect_timeout: float) -> float:
        """The least time one target of ``kind`` can take: its DNS answer, then the page
        (reachable), the RST (reset: no wait beyond the DNS), or the connect timeout."""
        return self.dns_delay + {"ok": self.page_delay, "reset": 0.0, "blackholed": connect_timeout}[kind]

    def lower_bound(self, concurrency: int, connect_timeout: float) -> float:
        """The probe's own worker pool (``concurrency`` workers, targets taken in list
        order) scheduled with each target's physical minimum: the time no run at that
        concurrency can beat."""
        free = [0.0] * max(1, concurrency)
        for t in self.targets:
            start = heapq.heappop(free)
            heapq.heappush(free, start + self.physical_minimum(t.kind, connect_timeout))
        return max(free)

    # ---- life -------------------------------------------------------------

    async def __aenter__(self) -> World:
        if os.geteuid() != 0 or shutil.which("iptables") is None:
            raise WorldError("the world needs root and iptables (for the blackholed and redirected addresses)")
        remove_stale_chains()
        zone = {t.hostname: Delayed(Answer(a=[t.ip]), self.dns_delay) for t in self.targets}
        self._dns = _TimedDns(self, zone)
        await self._dns.start()
        self._web = WebServer(self._app())
        await self._web.start()
        try:
            self._add_rules(self._web.port)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        remove_chains(self._tag)
        for server in (self._web, self._dns):
            if server is not None:
                await server.stop()

    def _app(self) -> web.Application:
        body = _page(self.page_size)

        async def page(request: web.Request) -> web.Response:
            self.requests += 1
            await asyncio.sleep(self.page_delay)
            return web.Response(body=body, content_type="text/html", charset="utf-8")

        app = web.Application()
        app.router.add_get("/{tail:.*}", page)
        return app

    def _add_rules(self, web_port: int) -> None:
        nat, drop = f"{self._tag}N", f"{self._tag}D"
        _iptables("-t", "nat", "-N", nat)
        _iptables("-t", "nat", "-A", nat, "-p", "tcp", "--dport", "80", "-j", "DNAT",
                  "--to-destination", f"127.0.0.1:{web_port}")
        _iptables("-t", "nat", "-A", "OUTPUT", "-d", f"127.{self.net}.0.0/16", "-j", nat)
        _iptables("-N", drop)
        _iptables("-A", drop, "-j", "DROP")
        _iptables("-A", "INPUT", "-d", f"127.{self.net + 1}.0.0/16", "-j", drop)


class _TimedDns(DnsServer):
    """The world's DNS server, noting when the first target's query came (the probe's
    start-up ends there)."""

    def __init__(self, world: World, zone: dict) -> None:
        super().__init__(zone)
        self.world = world

    def _handle(self, data: bytes, addr) -> None:
        if self.world.first_query_at is None:
            self.world.first_query_at = time.monotonic()
        super()._handle(data, addr)


def _page(size: int) -> bytes:
    head = b"<!DOCTYPE html><html><head><title>World site</title></head><body><p>"
    tail = b"</p></body></html>\n"
    return head + b"x" * max(0, size - len(head) - len(tail)) + tail


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise WorldError(f"iptables {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def remove_chains(tag: str) -> None:
    """Every rule jumping to a chain whose name starts with ``tag``, then the chains."""
    for table in ("nat", "filter"):
        listing = _iptables("-t", table, "-S", check=False).stdout
        for line in listing.splitlines():
            if line.startswith("-A ") and f"-j {tag}" in line:
                _iptables("-t", table, *("-D" + line[2:]).split(), check=False)
        for chain in re.findall(rf"^-N ({re.escape(tag)}\S*)$", listing, flags=re.M):
            _iptables("-t", table, "-F", chain, check=False)
            _iptables("-t", table, "-X", chain, check=False)


def remove_stale_chains() -> None:
    """Chains of worlds whose process is gone (killed before it could clean up)."""
    listing = _iptables("-t", "nat", "-S", check=False).stdout + _iptables("-S", check=False).stdout
    for pid in set(re.findall(rf"^-N {CHAIN_PREFIX}(\d+)x", listing, flags=re.M)):
        if not Path(f"/proc/{pid}").exists():
            remove_chains(f"{CHAIN_PREFIX}{pid}x")
