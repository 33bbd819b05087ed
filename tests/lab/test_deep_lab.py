"""Issue 10's lab: a longer path, the censor on a known middle hop, an on-path injector.

The volunteer ``far`` reaches the open internet through three routers, r1, r2 and r3
(``scenarios.ROUTERS``); r2, hop 2, censors far's traffic to the six
``scenarios.DEEP_SITES`` in-path (iptables: RST on the SNI, RST on the Host, a dropped
address) and on-path (``injector.py``: a forged DNS answer and a forged blockpage, IP
TTL 64), and one site's server resets connections itself. ``probe run --deep`` in far
must say, for each, what triggers the block, whether the interfering packets were
injected (or sent by the server), and on which hop the censor sits (r2's address).

Before the probe runs, ``Lab.verify_deep()`` checks the lab's own facts from far (the
hops, each reset's IP TTL, the two DNS answers in order, the blockpage at any TTL, the
server's own reset), so a failing test says whether the lab or the probe is wrong: a
finding's test fails on a broken lab fact first.

Then two more ``--deep`` runs are interrupted with SIGINT (2 s after the start, and
while the probe captures packets): nothing of the probe may be left in far (no
process, no TCP or UDP socket, no AF_PACKET socket).

Needs root, the lab's commands and scapy, as test_lab.py; about two minutes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from . import scenarios as S
from .topology import Lab, assert_torn_down, netns_pids, probe_here, skip_or_fail_without_lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]
skip_or_fail_without_lab()
try:
    import scapy  # noqa: F401 - the injector and verify_deep need it
except ImportError:
    if os.environ.get("CI") and os.geteuid() == 0:
        pytest.fail("the deep lab needs scapy (CI is root: .ci/run should have installed it)", pytrace=False)
    pytest.skip("the deep lab needs scapy (pip install scapy)", allow_module_level=True)

PROBE_TIMEOUT = 480  # s: a --deep run of the six sites took ~60 s when written
R2 = S.ROUTERS[S.CENSOR_HOP - 1]
ROUTER_OF_HOP = {r.hop: r for r in S.ROUTERS}
TRIGGERS = {"sni", "host", "address", "dns_name", "not_isolated", None}
INJECTED = {"injected", "server", None}
CONTRACT_KEYS = ("trigger", "trigger_evidence", "injected", "injection_evidence", "censor_hop", "censor_address",
                 "where", "hops", "packets_sent", "skipped")
# which of verify_deep's facts each site's finding rests on (their names start so)
FACTS_OF = {"sni": ("hops", "deep-sni"), "host": ("hops", "deep-host"), "ip": ("deep-ip",),
            "dns": ("hops", "deep-dns"), "page": ("hops", "deep-page"), "rst": ("deep-rst",)}


_cli = probe_here


def _said(p: subprocess.CompletedProcess | None, tail: int = 4000) -> str:
    if p is None:
        return "(not run)"
    return f"exit {p.returncode}\n--- stdout\n{(p.stdout or '')[-tail:]}\n--- stderr\n{(p.stderr or '')[-tail:]}"


@dataclass
class DeepRun:
    lab: Lab
    db: str
    env: dict[str, str]  # BYNET_PROBE_CONFIG: this test's own config file
    facts: list[dict] = field(default_factory=list)
    help: subprocess.CompletedProcess | None = None
    probe: subprocess.CompletedProcess | None = None
    shown: dict[str, subprocess.CompletedProcess] = field(default_factory=dict)
    explain: subprocess.CompletedProcess | None = None
    interrupted: dict[str, dict] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)  # the lab's own processes (the injector among them)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def has_deep(self) -> bool:
        return self.help is not None and "--deep" in (self.help.stdout or "")

    def lab_problems(self, prefixes: tuple[str, ...] = ("",)) -> list[dict]:
        return [f for f in self.facts if not f["ok"] and f["fact"].startswith(prefixes)]

    def deep_of(self, site: S.DeepSite) -> tuple[dict | None, str]:
        """(``deep`` of the site's measurement, the whole ``probe show --json`` output)."""
        p = self.shown.get(site.url)
        if p is None or p.returncode != 0:
            return None, _said(p)
        try:
            m = json.loads(p.stdout)
        except ValueError:
            return None, _said(p)
        return (m.get("deep") if isinstance(m, dict) else None), p.stdout


def _facts_text(facts: list[dict]) -> str:
    return "\n".join(f"- {f['fact']}: expected {f['expected']}; seen {f['observed']}" for f in facts)


def _sessions(sid: int) -> list[str]:
    """Processes of session ``sid`` (the probe was started as a session leader)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":  # session id; not a zombie
                out.append(f"{d} {Path(f'/proc/{d}/cmdline').read_text().replace(chr(0), ' ')[:200]}")
        except (OSError, IndexError, ValueError):
            continue
    return out


def _packet_sockets(lab: Lab) -> list[str]:
    """AF_PACKET sockets in far's namespace (/proc/net/packet, without its header)."""
    p = lab.exec("far", ["cat", "/proc/net/packet"], timeout=10)
    return [line for line in (p.stdout or "").splitlines()[1:] if line.strip()]


def _interrupt(lab: Lab, run: DeepRun, name: str, when: str) -> dict:
    """A --deep run in far, sent SIGINT (as Ctrl-C: to its process group) ``when`` =
    "2s" after its start, or "capturing": once far has an AF_PACKET socket (the probe
    is sniffing its hop search; after 90 s without one, then). What is left afterwards."""
    db = lab.dir / f"{name}.db"
    argv = ["env", f"BYNET_PROBE_CONFIG={run.env['BYNET_PROBE_CONFIG']}",
            *lab.probe_argv(db, targets=lab.deep_targets_file, extra=("--deep", "--yes"))]
    t0 = time.monotonic()
    p = lab.start("far", name, argv)  # `ip netns exec` and `env` exec: p.pid is the probe
    out: dict = {"when": when}
    if when == "2s":
        time.sleep(2)
    else:
        end = time.monotonic() + 90
        while time.monotonic() < end and p.poll() is None and not _packet_sockets(lab):
            time.sleep(0.1)
        out["packet_sockets_seen"] = _packet_sockets(lab)
    out["signalled_after"] = round(time.monotonic() - t0, 1)
    out["exited_before_the_signal"] = p.poll() is not None
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    try:
        out["rc"] = p.wait(60)
    except subprocess.TimeoutExpired:
        out["rc"] = None  # still running a minute after Ctrl-C: down() kills it
    out["exit_after"] = round(time.monotonic() - t0, 1)
    time.sleep(0.5)
    out["far_pids"] = netns_pids(lab.ns["far"])
    out["session"] = _sessions(p.pid)
    out["ss_tcp"] = lab.exec("far", ["ss", "-tanp"], timeout=10).stdout
    out["ss_udp"] = lab.exec("far", ["ss", "-uanp"], timeout=10).stdout
    out["packet"] = _packet_sockets(lab)
    out["log"] = lab.log_tail(str(lab.dir / f"far-{name}.log"), 30)
    return out


@pytest.fixture(scope="module")
def deep_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("deeplab")
    # the scenarios' censorship is not needed here: the deep lab is far's path
    lab = Lab([S.BY_NAME["ok"]], workdir=workdir, deep=True)
    run = DeepRun(lab, str(workdir / "deep.db"), {"BYNET_PROBE_CONFIG": str(workdir / "deep.ini")})
    try:
        lab.up()
        run.timings["up"] = lab.up_seconds
        run.pids = [x["pid"] for x in lab.procs]
        t = time.monotonic()
        run.facts = lab.verify_deep()
        run.timings["verify_deep"] = round(time.monotonic() - t, 1)
        run.help = _cli("run", "--help", env=run.env)
        if run.has_deep:
            t = time.monotonic()
            run.probe = lab.run_probe(run.db, role="far", targets=lab.deep_targets_file,
                                      extra=("--deep", "--yes"), env=run.env, timeout=PROBE_TIMEOUT)
            run.timings["probe"] = round(time.monotonic() - t, 1)
            if run.probe.returncode == 0:
                for site in S.DEEP_SITES:
                    run.shown[site.url] = _cli("show", site.url, "--json", "--db", run.db, env=run.env)
                run.explain = _cli("explain", S.DEEP_BY_NAME["sni"].url, "--db", run.db, "--lang", "en",
                                   env=run.env)
            for name, when in (("interrupted-2s", "2s"), ("interrupted-capturing", "capturing")):
                run.interrupted[when] = _interrupt(lab, run, name, when)
        yield run
    finally:
        lab.down()


# --------------------------------------------------------------------------- the lab itself


def test_the_lab_is_as_described(deep_run):
    """verify_deep: the facts of the path, checked from far without the probe."""
    assert deep_run.facts, "verify_deep checked nothing"
    bad = deep_run.lab_problems()
    assert not bad, f"the LAB is wrong (not the probe):\n{_facts_text(bad)}"


def test_the_routers_addresses_are_exposed(deep_run):
    lab = deep_run.lab
    assert lab.router_addresses == {"r1": ("10.77.11.1", "10.77.12.1"), "r2": ("10.77.12.2", "10.77.13.1"),
                                    "r3": ("10.77.13.2", "10.77.14.1")}
    assert lab.censor_addresses == R2.addresses and S.CENSOR_HOP == 2


# --------------------------------------------------------------------------- probe run --deep


def _need_probe_run(deep_run) -> None:
    assert deep_run.has_deep, ("`probe run` has no --deep option yet (probe/measure/deep.py and the CLI):\n"
                               + _said(deep_run.help, 1500))
    assert deep_run.probe is not None and deep_run.probe.returncode == 0, (
        "`probe run --deep` in far failed:\n" + _said(deep_run.probe))


def test_probe_run_deep_measured_every_site(deep_run):
    _need_probe_run(deep_run)
    for site in S.DEEP_SITES:
        p = deep_run.shown.get(site.url)
        assert p is not None and p.returncode == 0, f"probe show {site.url} --json:\n{_said(p)}"
        assert json.loads(p.stdout)["url"] == site.url


@pytest.mark.parametrize("site", S.DEEP_SITES, ids=lambda d: d.name)
def test_deep_finding(deep_run, site):
    """What `probe show URL --json`'s "deep" says of the site, against what r2 does."""
    _need_probe_run(deep_run)
    broken = deep_run.lab_problems(FACTS_OF[site.name])
    assert not broken, f"the LAB is wrong for {site.host} (not the probe):\n{_facts_text(broken)}"
    deep, shown = deep_run.deep_of(site)
    where = f"{site.host} ({site.description});\nthe whole `probe show {site.url} --json`:\n{shown}"
    assert isinstance(deep, dict), f"no \"deep\" object: {where}"
    missing = [k for k in CONTRACT_KEYS if k not in deep]
    assert not missing, f"\"deep\" lacks {missing}: {where}"
    assert deep["trigger"] in TRIGGERS and deep["injected"] in INJECTED, where
    assert isinstance(deep["trigger_evidence"], list) and isinstance(deep["injection_evidence"], list), where
    assert isinstance(deep["packets_sent"], int) and isinstance(deep["skipped"], list), where
    assert deep["censor_hop"] is None or isinstance(deep["censor_hop"], int), where
    assert isinstance(deep["hops"], list) and all(
        isinstance(h, dict) and {"ttl", "icmp_from", "response"} <= set(h) for h in deep["hops"]), where
    # what each TTL's ICMP came from is the lab's router at that distance (verify_deep: hops)
    for h in deep["hops"]:
        router = ROUTER_OF_HOP.get(h["ttl"])
        if h.get("icmp_from") and router is not None:
            assert h["icmp_from"] == router.down_ip, f"TTL {h['ttl']}'s ICMP is {router.name}'s: {where}"

    if site.trigger is not None:
        assert deep["trigger"] == site.trigger, f"trigger {deep['trigger']!r}, expected {site.trigger!r}: {where}"
    if site.injected is not None:
        assert deep["injected"] == site.injected, (
            f"injected {deep['injected']!r}, expected {site.injected!r}: {where}")
    if site.resets:  # the server's own reset is never called injected
        assert deep["injected"] != "injected", where
    if site.censor_hop is not None:
        assert deep["censor_hop"] == site.censor_hop, (
            f"censor_hop {deep['censor_hop']!r}, expected {site.censor_hop} ({R2.name}): {where}")
        assert deep["censor_address"] in R2.addresses, (
            f"censor_address {deep['censor_address']!r}, expected one of {R2.name}'s {R2.addresses}: {where}")
        assert isinstance(deep["where"], str) and deep["where"], f"no \"where\" in words: {where}"


def test_explain_names_the_censors_hop(deep_run):
    _need_probe_run(deep_run)
    p = deep_run.explain
    assert p is not None and p.returncode == 0, _said(p)
    assert "2 hops" in p.stdout and any(a in p.stdout for a in R2.addresses), (
        f"`probe explain {S.DEEP_BY_NAME['sni'].url}` should say \"2 hops\" and name r2 "
        f"({' or '.join(R2.addresses)}):\n{p.stdout}")


@pytest.mark.parametrize("when", ["2s", "capturing"])
def test_an_interrupted_deep_run_leaves_nothing_running(deep_run, when):
    """Ctrl-C (SIGINT to the process group) during a --deep run: the probe exits (130)
    and leaves no process, no TCP/UDP socket and no AF_PACKET socket in far."""
    assert deep_run.has_deep, "`probe run` has no --deep option yet"
    r = deep_run.interrupted.get(when)
    assert r is not None, "the interrupted run was not made"
    said = json.dumps(r, indent=2)
    print(said)
    assert not r["exited_before_the_signal"], f"the run ended before SIGINT could interrupt it:\n{said}"
    if when == "capturing":
        assert r["packet_sockets_seen"], (
            f"the probe opened no AF_PACKET socket in far within 90 s: not interrupted while capturing:\n{said}")
    assert r["rc"] is not None, f"the probe was still running 60 s after SIGINT:\n{said}"
    assert r["far_pids"] == [] and r["session"] == [], f"processes left:\n{said}"
    sockets = [line for out in (r["ss_tcp"], r["ss_udp"]) for line in out.splitlines() if "users:" in line]
    assert sockets == [], f"sockets of a process left in far:\n{said}"
    assert r["packet"] == [], f"AF_PACKET sockets left in far:\n{said}"
    assert r["rc"] == 130, f"exit {r['rc']}, expected 130 (interrupted):\n{said}"


def test_the_deep_lab_is_quick(deep_run):
    assert deep_run.timings["up"] < 20 and deep_run.timings["verify_deep"] < 60, deep_run.timings


# --------------------------------------------------------------------------- teardown (last)


def test_teardown_leaves_nothing(deep_run):
    lab = deep_run.lab
    assert lab.is_up
    problems = lab.down()
    assert problems == []
    assert_torn_down(lab, deep_run.pids)
