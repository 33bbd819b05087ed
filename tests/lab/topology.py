"""The lab's network: four namespaces, a censoring ISP in the middle.

::

    vol ---------------- isp ---------------- net
    10.77.0.2   10.77.0.1 | 10.77.1.1   10.77.1.2   authoritative DNS 10.77.1.53
    volunteer   router,   |                         control helper    10.77.1.80:8080
    (the probe) resolver, | 10.77.3.1               web sites         10.77.2.0/24
                censor    |
                         cen  10.77.3.2             censor's resolver 10.77.3.53,
                                                    blockpage .80, redirector .30,
                                                    other page .90, interception .43

Other volunteers' networks (``scenarios.VANTAGES``) each have a link of their own to the
ISP (10.77.N.2 <-> 10.77.N.1): slow, hotel, roam, vol2 (a second ISP's subscriber: its
own clean resolver on 10.77.9.1, its own censor keyed on its subnet); abroad's link goes
straight to net (10.77.10.2 <-> 10.77.10.1), no censor.

``Lab(deep=True)`` adds issue 10's longer path: far (10.77.11.2) reaches net through
three routers, r1, r2 and r3 (``scenarios.ROUTERS``), each answering an expired packet
with ICMP time-exceeded; r2 censors far's traffic to ``scenarios.DEEP_SITES`` and runs
the on-path injector (``injector.py``). ``Lab.verify_deep()`` checks that path from far.

Every veth is created with both ends inside lab namespaces, and no lab namespace has a
route outside 10.77.0.0/16: no lab packet can leave, and nothing is added to the host's
own namespace. ``Lab`` is a synchronous context manager::

    with Lab() as lab:
        lab.run_probe(db)          # the probe, inside the volunteer's namespace

It cleans up on every exit path (processes killed by pid, namespaces deleted,
/etc/netns/<ns> removed); ``Lab.from_state(path).down()`` does the same for a lab left
running by ``python -m tests.lab up``.
"""

from __future__ import annotations

import glob
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import REPO_ROOT
from . import scenarios as S

# the four of the censorship lab, then the other volunteers' networks (S.VANTAGES), then
# the deep lab's longer path (only with Lab(deep=True))
ROLES = ("vol", "isp", "net", "cen", *S.VANTAGE_NAMES, *S.DEEP_ROLES)
NS_PREFIX = "censorlab-"
NS_RE = re.compile(rf"^{NS_PREFIX}([0-9a-f]{{4}})-({'|'.join(ROLES)})$")
HERE = Path(__file__).resolve().parent

# Debian package of every command the lab runs (for skips and for .ci/run).
NEEDED_COMMANDS = {
    "ip": "iproute2",
    "tc": "iproute2",
    "iptables": "iptables",
    "iptables-restore": "iptables",
    "dnsmasq": "dnsmasq-base",
    "sysctl": "procps",
    "faketime": "faketime",  # the clock run: a volunteer whose clock is a year off
}


class LabError(RuntimeError):
    pass


def probe_here(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m probe ...` on this machine, outside the lab's namespaces (tokens,
    config, show, explain, reports: no network needed); a timeout is a result, not an error."""
    try:
        return subprocess.run([sys.executable, "-m", "probe", *args], capture_output=True, text=True,
                              cwd=str(HERE.parent.parent), timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(exc.cmd, -9, str(exc.stdout or ""), f"timed out after {timeout} s")


def assert_torn_down(lab: Lab, pids: list[int]) -> None:
    """After ``lab.down()``: no namespace, netns folder or lab process is left, and a
    second ``down()`` finds nothing to do."""
    assert not set(lab.ns.values()) & set(netns_list()), netns_list()
    for ns in lab.ns.values():
        assert not os.path.exists(f"/etc/netns/{ns}")
        assert netns_pids(ns) == []
    survivors = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
    assert survivors == [], f"lab processes still alive: {survivors}"
    assert lab.down() == []


def skip_or_fail_without_lab() -> None:
    """For a lab test module: skip it when not root or a command is missing, saying
    why; in CI, which runs as root and installs the lab's tools, fail instead: a skip
    there would hide that the end-to-end verdicts were never checked."""
    import pytest

    reason = None
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        reason = "the censorship lab needs root for network namespaces and iptables"
    elif missing := missing_commands():
        reason = "the censorship lab needs " + ", ".join(missing)
    if reason is None:
        return
    if os.environ.get("CI") and hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.fail(f"{reason} (CI is root: .ci/run should have installed it)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def missing_commands() -> list[str]:
    """Commands the lab needs that are not installed ("iptables (Debian package iptables)")."""
    return [f"{c} (Debian package {p})" for c, p in NEEDED_COMMANDS.items() if shutil.which(c) is None]


def _run(argv: list[str], *, input: str | None = None, timeout: float = 30, check: bool = True):
    p = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(argv)}: exit {p.returncode}: {(p.stderr or p.stdout).strip()}")
    return p


def netns_list() -> list[str]:
    p = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]


def netns_pids(ns: str) -> list[int]:
    p = _run(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in p.stdout.split() if x.isdigit()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Lab:
    """The censorship lab for ``scenarios``; ``with Lab() as lab:`` or ``up()``/``down()``."""

    def __init__(self, scenarios=S.SCENARIOS, *, suffix: str | None = None,
                 workdir: str | Path | None = None, keep_workdir: bool | None = None, deep: bool = False):
        self.scenarios = tuple(scenarios)
        S.check(self.scenarios)
        # the longer path (far, r1, r2, r3) and its sites: only when asked for
        self.deep = deep
        self.roles = ROLES if deep else tuple(r for r in ROLES if r not in S.DEEP_ROLES)
        if suffix is None:  # a fresh one, unused by any other lab on this machine
            existing = set(netns_list())
            while suffix is None or any(f"{NS_PREFIX}{suffix}-{r}" in existing for r in ROLES):
                suffix = secrets.token_hex(2)
        self.suffix = suffix
        self.ns = {r: f"{NS_PREFIX}{suffix}-{r}" for r in ROLES}
        # veth names (<= 15 chars): <where><towards><suffix>
        self.ifs = {
            "vol": f"vol{suffix}", "isp_vol": f"ispv{suffix}",
            "isp_net": f"ispn{suffix}", "net": f"net{suffix}",
            "isp_cen": f"ispc{suffix}", "cen": f"cen{suffix}",
        }
        for v in S.VANTAGES:  # e.g. slo1a2b (the vantage's end) and isps1a2b (the ISP's)
            self.ifs[v.name] = f"{v.name[:2]}{v.tag or v.name[2]}{suffix}"
            # abroad: neta1a2b, in net
            self.ifs[f"{v.upstream}_{v.name}"] = f"{v.upstream}{v.tag or v.name[0]}{suffix}"
            if v.second_net is not None:  # a second link, straight to the open internet
                self.ifs[f"{v.name}_b"] = f"{v.name[:2]}b{suffix}"
                self.ifs[f"net_{v.name}"] = f"net{v.name[0]}{suffix}"
        if deep:  # far1a2b | r1d1a2b r1u1a2b | r2d.. r2u.. | r3d.. r3u.. | netf1a2b (d: towards far)
            self.ifs["far"] = f"far{suffix}"
            for r in S.ROUTERS:
                self.ifs[f"{r.name}_down"] = f"{r.name}d{suffix}"
                self.ifs[f"{r.name}_up"] = f"{r.name}u{suffix}"
            self.ifs["net_far"] = f"netf{suffix}"
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else None
        # None: remove a workdir we made, unless something failed (logs are kept)
        self.keep_workdir = keep_workdir
        self.created_ns: list[str] = []
        self.etc_dirs: list[str] = []
        self.procs: list[dict] = []
        self._children: dict[int, subprocess.Popen] = {}
        self.is_up = False
        self.failed = False
        # left running on purpose (`python -m tests.lab up`): any `down` may take it down
        self.detached = False
        self.owner_pid = os.getpid()

    # ------------------------------------------------------------------ paths

    @property
    def dir(self) -> Path:
        """The work directory: the one given, or the one ``up`` made."""
        assert self.workdir is not None, "the lab has no work directory before up()"
        return self.workdir

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    @property
    def ca_file(self) -> Path:
        return self.dir / "lab-ca.pem"

    @property
    def targets_file(self) -> Path:
        return self.dir / "targets.txt"

    @property
    def deep_targets_file(self) -> Path:
        """The deep sites' URLs (a deep lab only)."""
        return self.dir / "deep-targets.txt"

    @property
    def router_addresses(self) -> dict[str, tuple[str, ...]]:
        """Every address of each router between far and net: {"r1": (towards far, towards
        net), ...}; r2 is the censor (``S.CENSOR_ROUTER``, hop ``S.CENSOR_HOP``)."""
        return {r.name: r.addresses for r in S.ROUTERS}

    @property
    def censor_addresses(self) -> tuple[str, ...]:
        return self.router_addresses[S.CENSOR_ROUTER]

    def enter_command(self, role: str = "vol") -> str:
        return f"ip netns exec {self.ns[role]} bash"

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt):
            self.failed = True  # keep the logs to look at
        self.down()

    # ------------------------------------------------------------------ state

    def _save_state(self) -> None:
        state = {
            "suffix": self.suffix,
            "namespaces": self.ns,
            "interfaces": self.ifs,
            "created_ns": self.created_ns,
            "etc_dirs": self.etc_dirs,
            "workdir": str(self.workdir),
            "own_workdir": self._own_workdir,
            "procs": self.procs,
            "scenarios": [s.name for s in self.scenarios],
            "deep": self.deep,
            "detached": self.detached,
            "owner_pid": self.owner_pid,
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_path)

    @classmethod
    def from_state(cls, path: str | Path) -> Lab:
        """The lab a state file describes (left running by ``up``), to take it down."""
        state = json.loads(Path(path).read_text())
        names = set(state.get("scenarios") or [])
        lab = cls([s for s in S.SCENARIOS if s.name in names] or S.SCENARIOS,
                  suffix=state["suffix"], workdir=state["workdir"], deep=bool(state.get("deep")))
        lab._own_workdir = state.get("own_workdir", False)
        lab.keep_workdir = False
        lab.created_ns = list(state.get("created_ns") or [])
        lab.etc_dirs = list(state.get("etc_dirs") or [])
        lab.procs = list(state.get("procs") or [])
        lab.ns = dict(state["namespaces"])
        lab.detached = bool(state.get("detached"))
        lab.owner_pid = int(state.get("owner_pid") or 0)
        return lab

    @classmethod
    def adopt(cls, suffix: str) -> Lab:
        """A lab known only by its namespaces (no state file), to take it down."""
        lab = cls(suffix=suffix)
        lab.created_ns = [ns for ns in lab.ns.values() if ns in set(netns_list())]
        lab.etc_dirs = [f"/etc/netns/{ns}" for ns in lab.ns.values()]
        return lab

    def orphaned(self) -> bool:
        """Left running on purpose, or whoever brought it up is gone (kill -9)."""
        return self.detached or not _alive(self.owner_pid)

    @staticmethod
    def leftovers() -> list[str]:
        """Lab namespaces that exist now (of any lab instance)."""
        return [ns for ns in netns_list() if NS_RE.match(ns)]

    @staticmethod
    def state_files() -> list[str]:
        return sorted(glob.glob(os.path.join(tempfile.gettempdir(), f"{NS_PREFIX}*", "state.json")))

    # ------------------------------------------------------------------ bring up

    def up(self) -> Lab:
        if self.is_up:
            return self
        t0 = time.monotonic()
        try:
            if self.workdir is None:
                self.workdir = Path(tempfile.mkdtemp(prefix=f"{NS_PREFIX}{self.suffix}-"))
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._save_state()
            self._namespaces()
            self._links()
            self._etc()
            self._firewall()
            self._shaping()
            self._pki()
            self._services()
            self._wait_ready()
            self.targets_file.write_text(S.targets_text(self.scenarios))
            if self.deep:
                self.deep_targets_file.write_text(S.deep_targets_text())
        except BaseException as exc:
            self.failed = not isinstance(exc, KeyboardInterrupt)
            self.down()
            if isinstance(exc, LabError) and self.workdir is not None and self.workdir.exists():
                exc.args = (f"{exc}\n(the lab is down; its logs are in {self.workdir})",)
            raise
        self.is_up = True
        self.up_seconds = round(time.monotonic() - t0, 2)
        return self

    def _ip_batch(self, role: str, commands: list[str]) -> None:
        _run(["ip", "-n", self.ns[role], "-batch", "-"], input="\n".join(commands) + "\n")

    def _sysctl(self, role: str, *settings: str) -> None:
        _run(["ip", "netns", "exec", self.ns[role], "sysctl", "-q", "-w", *settings])

    def _namespaces(self) -> None:
        for role in self.roles:
            ns = self.ns[role]
            _run(["ip", "netns", "add", ns])
            self.created_ns.append(ns)
            self._save_state()
            # IPv6 only where dual-stack sites need it (volunteer, ISP, open internet),
            # static (no router advertisements); no reverse-path filtering; lo up
            # (127.0.0.0/8 answers stay inside)
            v6 = "0" if role in ("vol", "isp", "net") else "1"
            self._sysctl(role, f"net.ipv6.conf.all.disable_ipv6={v6}", f"net.ipv6.conf.default.disable_ipv6={v6}",
                         "net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0",
                         "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
            self._ip_batch(role, ["link set lo up"])

    def _links(self) -> None:
        ns, i = self.ns, self.ifs
        # Both ends of every veth are created inside lab namespaces: nothing touches the host.
        for a, a_ns, b, b_ns in (
            (i["vol"], ns["vol"], i["isp_vol"], ns["isp"]),
            (i["net"], ns["net"], i["isp_net"], ns["isp"]),
            (i["cen"], ns["cen"], i["isp_cen"], ns["isp"]),
            *((i[v.name], ns[v.name], i[f"{v.upstream}_{v.name}"], ns[v.upstream]) for v in S.VANTAGES),
            *((i[f"{v.name}_b"], ns[v.name], i[f"net_{v.name}"], ns["net"]) for v in S.VANTAGES
              if v.second_net is not None),
        ):
            _run(["ip", "link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns", b_ns])

        self._ip_batch("vol", [
            f"addr add {S.VOL_IP}/24 dev {i['vol']}",
            f"link set {i['vol']} up",
            # the lab network only: no default route, so nothing can be sent elsewhere;
            # and TEST-NET-1, where the probe sends its sink query when it has no control
            # helper (the ISP's DPI sees it on the way; the ISP then drops it)
            f"route add {S.LAB_NETWORK} via {S.ISP_VOL_IP}",
            f"route add {S.TEST_NET} via {S.ISP_VOL_IP}",
            f"addr add {S.VOL_IP6}/64 dev {i['vol']} nodad",
            f"route add {S.LAB_NETWORK6} via {S.ISP_VOL_IP6}",
        ])
        self._ip_batch("isp", [
            f"addr add {S.ISP_VOL_IP}/24 dev {i['isp_vol']}",
            f"addr add {S.ISP_NET_IP}/24 dev {i['isp_net']}",
            f"addr add {S.ISP_CEN_IP}/24 dev {i['isp_cen']}",
            f"link set {i['isp_vol']} up",
            f"link set {i['isp_net']} up",
            f"link set {i['isp_cen']} up",
            f"route add 10.77.2.0/24 via {S.NET_IP}",
            # every other lab address (10.77.4.0/24, ...) vanishes silently: a timeout
            f"route add blackhole {S.LAB_NETWORK}",
            f"route add blackhole {S.TEST_NET}",
            f"addr add {S.ISP_VOL_IP6}/64 dev {i['isp_vol']} nodad",
            f"addr add {S.ISP_NET_IP6}/64 dev {i['isp_net']} nodad",
            f"route add fd77:0:0:2::/64 via {S.NET_IP6}",
        ])
        net_addrs = [S.AUTH_DNS_IP, S.CONTROL_IP, S.COLLECTOR_IP] + sorted(
            {x.ip for x in self._sites() if x.ip}, key=lambda a: tuple(map(int, a.split(".")))
        )
        net_addrs6 = [x.ip6 for x in self._sites() if x.ip6]
        self._ip_batch("net", [
            f"addr add {S.NET_IP}/24 dev {i['net']}",
            f"link set {i['net']} up",
            *[f"addr add {a}/32 dev lo" for a in net_addrs],
            f"route add {S.LAB_NETWORK} via {S.ISP_NET_IP}",
            f"addr add {S.NET_IP6}/64 dev {i['net']} nodad",
            *[f"addr add {a}/128 dev lo nodad" for a in net_addrs6],
            f"route add {S.LAB_NETWORK6} via {S.ISP_NET_IP6}",
        ])
        self._ip_batch("cen", [
            f"addr add {S.CEN_IP}/24 dev {i['cen']}",
            f"link set {i['cen']} up",
            *[f"addr add {a}/32 dev lo" for a in
              (S.CENSOR_DNS_IP, S.BLOCKPAGE_IP, S.REDIRECTOR_IP, S.DIFFPAGE_IP, S.MITM_IP, S.PROXY_IP)],
            f"route add {S.LAB_NETWORK} via {S.ISP_CEN_IP}",
        ])
        for v in S.VANTAGES:
            self._ip_batch(v.name, [
                f"addr add {v.ip}/24 dev {i[v.name]}",
                f"link set {i[v.name]} up",
                f"route add {S.LAB_NETWORK} via {v.isp_ip}",
                f"route add {S.TEST_NET} via {v.isp_ip}",
                *([f"addr add 10.77.{v.second_net}.2/24 dev {i[v.name + '_b']}", f"link set {i[v.name + '_b']} up"]
                  if v.second_net is not None else []),
            ])
            up_if = i[f"{v.upstream}_{v.name}"]  # the ISP's end (abroad: net's)
            self._ip_batch(v.upstream, [f"addr add {v.isp_ip}/24 dev {up_if}", f"link set {up_if} up"])
            if v.second_net is not None:
                self._ip_batch("net", [f"addr add 10.77.{v.second_net}.1/24 dev {i['net_' + v.name]}",
                                       f"link set {i['net_' + v.name]} up"])
        self._sysctl("isp", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0",
                     "net.ipv4.conf.default.send_redirects=0", "net.ipv6.conf.all.forwarding=1")
        # The open internet answers a query to a port where nothing listens (the sink
        # query to the control helper's :53) with ICMP port unreachable, every time.
        self._sysctl("net", "net.ipv4.icmp_ratelimit=0")
        if self.deep:
            self._deep_links()

    def _sites(self) -> list[S.Site]:
        """Every site net serves: the scenarios', the vantages' and the collector test's,
        and in a deep lab the deep sites."""
        return S.all_sites(self.scenarios) + ([d.site for d in S.DEEP_SITES] if self.deep else [])

    def _deep_links(self) -> None:
        """far -- r1 -- r2 -- r3 -- net, each link a /24 (S.ROUTERS); routes both ways.
        Nothing drops ICMP on the way, and the routers answer every expired packet
        (icmp_ratelimit=0: a hop search sends many, and must not lose answers to Linux's
        default of one per second per destination after a burst of six)."""
        ns, i = self.ns, self.ifs
        r1, r2, r3 = S.ROUTERS

        def subnet(ip: str) -> str:  # every link is a /24
            return str(ipaddress.ip_interface(f"{ip}/24").network)

        for a, a_ns, b, b_ns in (
            (i["far"], ns["far"], i["r1_down"], ns["r1"]),
            (i["r1_up"], ns["r1"], i["r2_down"], ns["r2"]),
            (i["r2_up"], ns["r2"], i["r3_down"], ns["r3"]),
            (i["r3_up"], ns["r3"], i["net_far"], ns["net"]),
        ):
            _run(["ip", "link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns", b_ns])
        far_side = S.FAR_SUBNET
        self._ip_batch("far", [
            f"addr add {S.FAR_IP}/24 dev {i['far']}", f"link set {i['far']} up",
            f"route add {S.LAB_NETWORK} via {r1.down_ip}", f"route add {S.TEST_NET} via {r1.down_ip}",
        ])
        self._ip_batch("r1", [
            f"addr add {r1.down_ip}/24 dev {i['r1_down']}", f"addr add {r1.up_ip}/24 dev {i['r1_up']}",
            f"link set {i['r1_down']} up", f"link set {i['r1_up']} up",
            f"route add {S.LAB_NETWORK} via {r2.down_ip}", f"route add {S.TEST_NET} via {r2.down_ip}",
        ])
        self._ip_batch("r2", [
            f"addr add {r2.down_ip}/24 dev {i['r2_down']}", f"addr add {r2.up_ip}/24 dev {i['r2_up']}",
            f"link set {i['r2_down']} up", f"link set {i['r2_up']} up",
            f"route add {far_side} via {r1.up_ip}",
            f"route add {S.LAB_NETWORK} via {r3.down_ip}", f"route add {S.TEST_NET} via {r3.down_ip}",
        ])
        self._ip_batch("r3", [
            f"addr add {r3.down_ip}/24 dev {i['r3_down']}", f"addr add {r3.up_ip}/24 dev {i['r3_up']}",
            f"link set {i['r3_down']} up", f"link set {i['r3_up']} up",
            f"route add {far_side} via {r2.up_ip}", f"route add {subnet(r1.up_ip)} via {r2.up_ip}",
            f"route add {S.LAB_NETWORK} via {S.NET_FAR_IP}",
            # the sink query without a control helper ends here, as at the ISP
            f"route add blackhole {S.TEST_NET}",
        ])
        back = [far_side, subnet(r1.up_ip), subnet(r2.up_ip)]
        self._ip_batch("net", [
            f"addr add {S.NET_FAR_IP}/24 dev {i['net_far']}", f"link set {i['net_far']} up",
            *(f"route add {n} via {r3.up_ip}" for n in back),
        ])
        for r in S.ROUTERS:
            self._sysctl(r.name, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0",
                         "net.ipv4.conf.default.send_redirects=0", "net.ipv4.icmp_ratelimit=0")

    def _etc(self) -> None:
        """/etc/netns/<ns>/{resolv.conf,hosts}: `ip netns exec` mounts them over /etc."""
        for role in self.roles:
            d = Path("/etc/netns") / self.ns[role]
            d.mkdir(parents=True, exist_ok=False)
            self.etc_dirs.append(str(d))
            self._save_state()
            vantage = next((v for v in S.VANTAGES if v.name == role), None)
            resolver = S.ISP_VOL_IP if role == "vol" else (vantage.resolver if vantage else S.AUTH_DNS_IP)
            (d / "resolv.conf").write_text(f"nameserver {resolver}\noptions timeout:1 attempts:2\n")
            (d / "hosts").write_text("127.0.0.1 localhost\n")

    def iptables_rules(self) -> str:
        """The ISP's ruleset (iptables-restore format)."""
        vol_if = self.ifs["isp_vol"]
        out = [
            "*filter",
            ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
            "# the router never answers with an ICMP error: a DROP stays a silent timeout",
            "-A OUTPUT -p icmp --icmp-type destination-unreachable -j DROP",
            "-A OUTPUT -p icmp --icmp-type time-exceeded -j DROP",
        ]
        nat = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
               ":POSTROUTING ACCEPT [0:0]"]
        censored = [vol_if, *(self.ifs["isp_" + v.name] for v in S.VANTAGES if v.censored)]
        for scenario, rule in S.rules(self.scenarios):
            target = out if rule.table == "filter" else nat
            target.append(f"# {scenario.name}")
            target += [f"-A {rule.chain} -i {dev} {rule.spec}" for dev in censored]
        for v in S.VANTAGES:
            if v.upstream != "isp":
                continue
            dev = self.ifs["isp_" + v.name]
            if v.loss:
                out += [f"# {v.name}: a lossy link", f"-A FORWARD -o {dev} -m statistic --mode random "
                                                       f"--probability {v.loss} -j DROP"]
            if v.portal:
                out += [f"# {v.name}: nothing gets through a captive portal before logging in",
                        f"-A FORWARD -i {dev} -j DROP"]
                nat += [f"# {v.name}: every plain-HTTP request goes to the portal",
                        f"-A PREROUTING -i {dev} -p tcp --dport 80 -j DNAT --to-destination {v.isp_ip}:80"]
        # the collector test's sites: each network's own censor (vol's by its interface,
        # the second ISP's by its subscribers' subnet)
        for site, role, rule in S.network_rules():
            target = out if rule.table == "filter" else nat
            target += [f"# {site.name} on {role}'s network", f"-A {rule.chain} {self.censor_scope(role)} {rule.spec}"]
        return "\n".join(out + ["COMMIT"] + nat + ["COMMIT"]) + "\n"

    def censor_scope(self, role: str) -> str:
        """The iptables match by which a network's censor picks its own subscribers'
        traffic: vol (and the vantages censored as vol is) by the ISP's interface towards
        them, a second ISP's subscribers (vol2) by their source subnet."""
        if role == "vol":
            return f"-i {self.ifs['isp_vol']}"
        v = next(x for x in S.VANTAGES if x.name == role)
        if v.second_isp:
            return f"-s {v.subnet}"
        if v.upstream != "isp":
            raise LabError(f"{role} is not behind the ISP: no censor can reach it")
        return f"-i {self.ifs['isp_' + v.name]}"

    def censor(self, role: str, rule: S.Rule, *, add: bool = True) -> None:
        """The censor of ``role``'s network adds (or deletes) one rule, now: a censor
        whose rules change between two runs."""
        table = [] if rule.table == "filter" else ["-t", rule.table]
        _run(["ip", "netns", "exec", self.ns["isp"], "iptables", *table, "-A" if add else "-D", rule.chain,
              *shlex.split(self.censor_scope(role)), *shlex.split(rule.spec)])

    def _firewall(self) -> None:
        path = self.dir / "isp.rules"
        path.write_text(self.iptables_rules())
        _run(["ip", "netns", "exec", self.ns["isp"], "iptables-restore", str(path)])
        if self.deep:
            path = self.dir / "r2.rules"
            path.write_text(self.deep_iptables_rules())
            _run(["ip", "netns", "exec", self.ns[S.CENSOR_ROUTER], "iptables-restore", str(path)])

    def deep_iptables_rules(self) -> str:
        """r2's ruleset (iptables-restore format): the censor of far's traffic. Nothing
        drops ICMP (the routers answer expired packets as Linux does)."""
        out = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
        for site, line in S.deep_rules():
            out += [f"# deep-{site.name}", line]
        return "\n".join(out + ["COMMIT"]) + "\n"

    def tc_commands(self) -> list[str]:
        """The ISP's traffic shaping (``tc -batch`` lines). Towards the volunteer: htb with
        no default class, so only the throttled sites' packets are held back. Towards a
        slow vantage: everything, behind the default (long) queue, as a bloated home link."""
        out = []
        ips = S.throttled(self.scenarios)
        if ips:
            dev = self.ifs["isp_vol"]
            out += [f"qdisc add dev {dev} root handle 1: htb",
                    f"class add dev {dev} parent 1: classid 1:20 htb rate {S.THROTTLE_RATE} ceil {S.THROTTLE_RATE}"]
            out += [f"filter add dev {dev} parent 1: protocol ip prio 1 u32 match ip src {ip}/32 flowid 1:20"
                    for ip in ips]
        for v in S.VANTAGES:
            if v.rate:
                dev = self.ifs["isp_" + v.name]
                out += [f"qdisc add dev {dev} root handle 1: htb default 10",
                        f"class add dev {dev} parent 1: classid 1:10 htb rate {v.rate} ceil {v.rate}"]
        return out

    def _shaping(self) -> None:
        commands = self.tc_commands()
        if commands:
            _run(["ip", "netns", "exec", self.ns["isp"], "tc", "-batch", "-"], input="\n".join(commands) + "\n")

    def _pki(self) -> None:
        from servers.tls import LabPKI

        pki = LabPKI()
        self.ca_file.write_bytes(pki.ca_pem)
        certs = self.dir / "certs"
        certs.mkdir(exist_ok=True)
        self._certs: dict[tuple[str, str], str] = {}
        hosts = [x for x in self._sites() if x.ip and x.serve]
        for site in hosts:
            for kind in (site.cert, "unknown_ca"):
                path = certs / f"{site.host}.{kind}.pem"
                pki.leaf(site.host, kind=kind).private_key_and_cert_chain_pem.write_to_path(str(path))
                self._certs[(site.host, kind)] = str(path)
        fallback = certs / "interception-default.pem"
        pki.leaf("interception.invalid", kind="unknown_ca").private_key_and_cert_chain_pem.write_to_path(
            str(fallback))
        self._certs[("*", "unknown_ca")] = str(fallback)

    # ------------------------------------------------------------------ processes

    def _spawn(self, role: str, name: str, argv: list[str]) -> subprocess.Popen:
        log = self.dir / f"{role}-{name}.log"
        with open(log, "ab") as fh:
            p = subprocess.Popen(
                ["ip", "netns", "exec", self.ns[role], *argv],
                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=str(REPO_ROOT), env=_clean_env(),
            )
        self._children[p.pid] = p
        self.procs.append({"role": role, "name": name, "pid": p.pid, "log": str(log)})
        self._save_state()
        return p

    def _dnsmasq(self, role: str, name: str, listen: str | list[str], lines: list[str]) -> None:
        conf = self.dir / f"{role}-{name}.conf"
        conf.write_text("\n".join([
            "keep-in-foreground", "log-facility=-", "log-queries",
            "no-resolv", "no-hosts", "no-poll", "bind-interfaces",
            *(f"listen-address={a}" for a in ([listen] if isinstance(listen, str) else listen)),
            "port=53", "cache-size=0", "user=root", "group=root",
            f"pid-file={self.dir / f'{role}-{name}.pid'}",
            *lines,
        ]) + "\n")
        self._spawn(role, name, ["dnsmasq", f"--conf-file={conf}"])

    def _labserver(self, role: str, name: str, apps: list[dict]) -> None:
        config = self.dir / f"{role}-{name}.json"
        ready = self.dir / f"{role}-{name}.ready"
        config.write_text(json.dumps({"ready_file": str(ready), "apps": apps}, indent=2, ensure_ascii=False))
        self._spawn(role, name, [sys.executable, str(HERE / "labserver.py"), str(config)])
        self._ready_files.append((name, ready))

    def _services(self) -> None:
        self._ready_files: list[tuple[str, Path]] = []
        # The open internet: authoritative DNS, the sites, the control helper.
        self._dnsmasq("net", "authdns", S.AUTH_DNS_IP,
                      S.auth_dns_lines(self.scenarios) + (S.deep_dns_lines() if self.deep else []))
        apps = []
        resetting = {d.host for d in S.DEEP_SITES if d.resets} if self.deep else set()
        for site in self._sites():
            if not (site.ip and site.serve) or site.host in resetting:
                continue
            apps.append({
                "kind": "site", "title": site.page_title, "body_size": site.body_size or S.SITE_BODY_SIZE,
                **({"challenge_for": site.challenge_for,
                    "challenge_page": S.CDN_CHALLENGE_PAGE.format(host=site.host)} if site.challenge_for else {}),
                "binds": [bind for ip in (site.ip, site.ip6) if ip
                          for bind in ({"ip": ip, "port": 80},
                                       {"ip": ip, "port": 443, "cert": self._certs[(site.host, site.cert)]})],
            })
        if resetting:  # the deep lab's server that resets every connection itself
            apps.append({"kind": "reset", "binds": [{"ip": x.ip, "port": port} for x in self._sites()
                                                    if x.host in resetting for port in (80, 443)]})
        self._labserver("net", "sites", apps)
        if self.deep:
            self._injector()
        self._spawn("net", "control", [
            sys.executable, "-m", "probe", "control", "serve",
            "--host", S.CONTROL_IP, "--port", str(S.CONTROL_PORT), "--allow-private",
            "--ca-file", str(self.ca_file), "--resolver", S.AUTH_DNS_IP, "--no-system-resolver",
        ])
        # The censor's hosts.
        self._dnsmasq("cen", "censordns", S.CENSOR_DNS_IP, S.censor_dns_lines(self.scenarios))
        forged = {h: p for (h, kind), p in self._certs.items() if kind == "unknown_ca" and h != "*"}
        censor_headers = {"Server": "nginx"}
        self._labserver("cen", "censor", [
            {"kind": "page", "body": S.BELTELECOM_BLOCKPAGE, "headers": censor_headers,
             "binds": [{"ip": S.BLOCKPAGE_IP, "port": 80}]},
            {"kind": "redirect", "location": S.BELTELECOM_REDIRECT, "headers": censor_headers,
             "binds": [{"ip": S.REDIRECTOR_IP, "port": 80}]},
            {"kind": "page", "body": S.DIFF_PAGE, "binds": [{"ip": S.DIFFPAGE_IP, "port": 80}]},
            {"kind": "page", "body": S.DIFF_PAGE, "headers": censor_headers,
             "binds": [{"ip": S.MITM_IP, "port": 443, "cert": self._certs[("*", "unknown_ca")],
                        "sni_certs": forged}]},
        ])
        # The hotels' captive portals: a resolver that answers every name with the
        # portal, and the portal's web server (the ISP sends their port 80 there).
        for v in S.VANTAGES:
            if v.portal:
                self._dnsmasq("isp", f"portaldns-{v.name}", v.isp_ip, [f"address=/#/{v.isp_ip}"])
                self._labserver("isp", f"portal-{v.name}", [
                    {"kind": "portal", "title": S.PORTAL_TITLE, "host": S.PORTAL_HOST,
                     "binds": [{"ip": v.isp_ip, "port": 80}]}])
        # The ISP's resolver, with the censor's lies.
        self._dnsmasq("isp", "resolver", [S.ISP_VOL_IP, *(v.isp_ip for v in S.VANTAGES if not v.portal
                                                            and not v.second_isp and v.upstream == "isp")],
                      [f"server={S.AUTH_DNS_IP}", *S.isp_dns_lines(self.scenarios), *S.network_dns_lines()])
        # A second ISP's resolver: it forwards, it does not lie.
        for v in S.VANTAGES:
            if v.second_isp:
                self._dnsmasq("isp", f"resolver-{v.name}", v.isp_ip, [f"server={S.AUTH_DNS_IP}"])

    def _injector(self) -> None:
        """The on-path injector in r2 (injector.py), sniffing r2's interface towards far."""
        page = self.dir / "deep-blockpage.html"
        page.write_text(S.BELTELECOM_BLOCKPAGE, encoding="utf-8")
        ready = self.dir / "r2-injector.ready"
        self._spawn(S.CENSOR_ROUTER, "injector", [
            sys.executable, "-m", "tests.lab.injector", "run",
            "--iface", self.ifs[f"{S.CENSOR_ROUTER}_down"], "--far-net", S.FAR_SUBNET,
            "--dns-match", S.DEEP_DNS_MATCH, "--dns-answer", S.DEEP_FORGED_IP,
            "--http-match", S.DEEP_PAGE_MATCH, "--page-file", str(page), "--ready-file", str(ready),
        ])
        self._ready_files.append(("injector", ready))

    def _check_children(self) -> None:
        for p in self._children.values():
            if p.poll() is not None:
                info = next((x for x in self.procs if x["pid"] == p.pid), {})
                raise LabError(f"{info.get('role')}/{info.get('name')} exited with {p.returncode}:\n"
                               + self.log_tail(info.get("log")))

    def log_tail(self, path: str | None, lines: int = 20) -> str:
        if not path or not os.path.exists(path):
            return ""
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])

    def _wait_ready(self, deadline: float = 30.0) -> None:
        end = time.monotonic() + deadline
        for name, ready in self._ready_files:
            while not ready.exists():
                self._check_children()
                if time.monotonic() > end:
                    raise LabError(f"{name} did not start within {deadline:g} s")
                time.sleep(0.05)
        site = next(x for x in S.all_sites(self.scenarios) if x.ip and x.serve)
        checks = [
            f"dns:{S.AUTH_DNS_IP}:53:{site.host}={site.ip}",
            f"dns:{S.ISP_VOL_IP}:53:{site.host}={site.ip}",  # ISP resolver -> authoritative
            f"dns:{S.CENSOR_DNS_IP}:53:probe-ready.{S.DOMAIN}",  # any answer (REFUSED)
            f"tcp:{site.ip}:443",
            f"tcp:{S.CONTROL_IP}:{S.CONTROL_PORT}",
            f"tcp:{S.BLOCKPAGE_IP}:80",
            f"tcp:{S.MITM_IP}:443",
        ]
        # From the volunteer's namespace: the whole path through the ISP works.
        p = self.exec("vol", [sys.executable, str(HERE / "netcheck.py"), "--deadline",
                              str(max(1.0, end - time.monotonic())), *checks], timeout=deadline + 10)
        if p.returncode != 0:
            self._check_children()
            raise LabError(f"the lab did not come up:\n{p.stderr.strip()}")
        for v in S.VANTAGES:  # and from each vantage, its own resolver and the helper
            vchecks = [f"dns:{v.resolver}:53:{site.host}" + ("" if v.portal else f"={site.ip}")]
            if not v.portal:
                vchecks.append(f"tcp:{S.CONTROL_IP}:{S.CONTROL_PORT}")
            p = self.exec(v.name, [sys.executable, str(HERE / "netcheck.py"), "--deadline",
                                   str(max(1.0, end - time.monotonic())), *vchecks], timeout=deadline + 10)
            if p.returncode != 0:
                self._check_children()
                raise LabError(f"the {v.name} network did not come up:\n{p.stderr.strip()}")
        if self.deep:  # far, through r1, r2, r3: its resolver, the helper, a deep site
            sni = S.DEEP_BY_NAME["sni"].site
            p = self.exec("far", [sys.executable, str(HERE / "netcheck.py"), "--deadline",
                                  str(max(1.0, end - time.monotonic())), f"dns:{S.AUTH_DNS_IP}:53:{sni.host}={sni.ip}",
                                  f"tcp:{S.CONTROL_IP}:{S.CONTROL_PORT}", f"tcp:{sni.ip}:443"], timeout=deadline + 10)
            if p.returncode != 0:
                self._check_children()
                raise LabError(f"the far network did not come up:\n{p.stderr.strip()}")
        self._check_children()

    def verify_deep(self, timeout: float = 90) -> list[dict]:
        """The deep lab's facts, checked from far before any probe runs (``python -m
        tests.lab.injector check`` in far): the hops, the resets and who sent them, the
        injected DNS answer and blockpage, the server's own reset. One dict per fact:
        {"fact", "ok", "expected", "observed"}; so a failing deep test says whether the lab
        or the probe is wrong."""
        p = self.exec("far", [sys.executable, "-m", "tests.lab.injector", "check", "--json"], timeout=timeout)
        try:
            facts = json.loads(p.stdout)
        except ValueError:
            facts = None
        if not isinstance(facts, list):
            return [{"fact": "the check ran", "ok": False, "expected": "a JSON list of facts",
                     "observed": f"exit {p.returncode}: {(p.stderr or p.stdout or '')[-3000:]}"}]
        return facts

    def exec(self, role: str, argv: list[str], *, timeout: float | None = 60, capture: bool = True,
             check: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a command inside a lab namespace and wait for it (``env``: variables added to
        the environment). It is killed (by pid) when it overruns ``timeout``, on Ctrl-C,
        and by ``down()``."""
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[role], *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None,
            text=True, start_new_session=True, cwd=str(REPO_ROOT), env={**_clean_env(), **(env or {})},
        )
        self._children[p.pid] = p
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_child(p)
            out, err = p.communicate()
            raise LabError(f"{' '.join(argv[:4])}... overran {timeout} s in {role}:\n{(err or '')[-2000:]}")  # noqa: B904 - the timeout is the message
        except BaseException:
            self._kill_child(p)
            raise
        finally:
            self._children.pop(p.pid, None)
        result = subprocess.CompletedProcess(p.args, p.returncode, out, err)
        if check and p.returncode != 0:
            raise LabError(f"{' '.join(argv)} in {role}: exit {p.returncode}\n{(err or '')[-2000:]}")
        return result

    @staticmethod
    def _kill_child(p: subprocess.Popen, grace: float = 3.0) -> None:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)  # its own session: pgid == pid
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()

    # ------------------------------------------------------------------ the probe

    def probe_argv(self, db: str | Path, *, targets: str | Path | None = None, control: bool = True,
                   extra: tuple[str, ...] = ()) -> list[str]:
        """`probe run` as a volunteer runs it: default concurrency, timeouts and DNS wait.
        The flags are what the lab's network needs (its CA, its private address space
        standing for the internet, no DoH or vantage lookup without an internet)."""
        return [
            sys.executable, "-m", "probe", "run",
            "--targets", str(targets or self.targets_file), "--db", str(db),
            *(["--control", S.CONTROL_URL] if control else ["--no-control"]),
            "--ca-file", str(self.ca_file),
            "--no-doh", "--no-vantage-lookup", "--cc", "ZZ", "--asn", "AS64500",
            "--lab-network", S.LAB_NETWORK, "--lab-network", S.LAB_NETWORK6, *extra,
        ]

    def move_to_second_link(self, role: str) -> None:
        """A vantage with a second link moves to it: its routes and its resolver (the
        open internet's DNS), as a laptop that changes networks."""
        v = next(x for x in S.VANTAGES if x.name == role)
        gateway, dev = f"10.77.{v.second_net}.1", self.ifs[f"{v.name}_b"]
        self._ip_batch(role, [f"route replace {S.LAB_NETWORK} via {gateway} dev {dev}",
                              f"route replace {S.TEST_NET} via {gateway} dev {dev}"])
        # written in place: `ip netns exec` bind-mounted this very file
        with open(Path("/etc/netns") / self.ns[role] / "resolv.conf", "r+") as fh:
            fh.truncate(0)
            fh.write(f"nameserver {S.AUTH_DNS_IP}\noptions timeout:1 attempts:2\n")

    def run_probe(self, db: str | Path, *, timeout: float = 300, capture: bool = True, role: str = "vol",
                  wrapper: tuple[str, ...] = (), env: dict[str, str] | None = None, **kw):
        """`probe run` inside a volunteer's namespace (by default over every scenario),
        behind ``wrapper`` (e.g. faketime) when given."""
        return self.exec(role, [*wrapper, *self.probe_argv(db, **kw)], timeout=timeout, capture=capture, env=env)

    def start(self, role: str, name: str, argv: list[str]) -> subprocess.Popen:
        """A server inside a lab namespace (the collector), in a session of its own, its
        output in <workdir>/<role>-<name>.log; ``down()`` stops it if nothing did before."""
        return self._spawn(role, name, argv)

    # ------------------------------------------------------------------ tear down

    def down(self) -> list[str]:
        """Kill every lab process, delete the namespaces and /etc/netns dirs. Idempotent;
        returns what could not be cleaned (empty when all went)."""
        problems: list[str] = []
        existing = set(netns_list())
        # only namespaces this lab created (or took over with from_state / adopt): a
        # namespace that was there before (a suffix clash) belongs to someone else
        mine = [ns for ns in dict.fromkeys(self.created_ns) if ns in existing]

        # 1. our own children, by pid (each leads its own process group)
        for p in list(self._children.values()):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        # 2. whatever else runs inside a lab namespace (a lab left by `up`, a shell)
        def inside() -> list[int]:
            return sorted({pid for ns in mine for pid in netns_pids(ns)} - {os.getpid()})

        for pid in inside():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        end = time.monotonic() + 5
        while time.monotonic() < end:
            for p in self._children.values():
                p.poll()
            if not inside() and all(p.returncode is not None for p in self._children.values()):
                break
            time.sleep(0.05)
        for pid in inside():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in list(self._children.values()):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                problems.append(f"process {p.pid} did not die")
        self._children.clear()
        end = time.monotonic() + 5
        while inside() and time.monotonic() < end:
            time.sleep(0.05)
        for pid in inside():
            problems.append(f"process {pid} still in a lab namespace")

        # 3. namespaces (their veths go with them), then /etc/netns/<ns>
        for ns in mine:
            p = _run(["ip", "netns", "del", ns], check=False)
            if p.returncode != 0:
                problems.append(f"ip netns del {ns}: {p.stderr.strip()}")
        for d in dict.fromkeys(self.etc_dirs):
            if os.path.isdir(d) and NS_RE.match(os.path.basename(d)):
                shutil.rmtree(d, ignore_errors=True)
                if os.path.exists(d):
                    problems.append(f"cannot remove {d}")
        self.is_up = False

        # 4. the work dir: ours and all went well -> remove; else keep the logs
        if self.workdir is not None and self.workdir.exists():
            keep = self.keep_workdir if self.keep_workdir is not None else (self.failed or bool(problems))
            if self._own_workdir and not keep:
                shutil.rmtree(self.workdir, ignore_errors=True)
            elif self.state_path.exists():
                self.state_path.unlink()
        return problems
