"""Deep measurement on this machine: real servers on loopback, the real sniffer and raw
sockets when root (else the trigger tests alone, and a line saying what was skipped).

The lab (tests/lab/test_deep_lab.py) has the routers, the censor on a middle hop and the
injector; here: a server that resets every connection by itself must never be called
injected, the records survive the database, and nothing is left running."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import threading

import pytest
from clirun import QUIET, ROOT, probe
from servers import RawTcpServer

from probe import store
from probe.analysis.deep import summarise
from probe.core.records import Measurement, TlsHandshake, utcnow
from probe.measure.deep import blocked_flow, client_hello, deep_measure, raw_sockets_allowed

ROOT_ONLY = pytest.mark.skipif(not raw_sockets_allowed(),
                               reason="packet capture needs root or CAP_NET_RAW (CI runs as root)")


def reset_measurement(port: int) -> Measurement:
    m = Measurement(url=f"https://reset.test:{port}/", hostname="reset.test", scheme="https", port=port,
                    started_at=utcnow())
    m.tls = [TlsHandshake("127.0.0.1", port, "reset.test", utcnow(), 1.0, False, "connection_reset",
                          failure_stage="after_client_hello")]
    return m


def test_the_client_hello_carries_the_name():
    hello = client_hello("charter97.org")
    assert hello[:1] == b"\x16" and b"charter97.org" in hello
    assert b"charter97.org" not in client_hello("")


def test_the_blocked_step_is_the_verdicts_layer():
    m = reset_measurement(443)
    flow = blocked_flow(m, "tls")
    assert flow is not None and (flow.layer, flow.ip, flow.port, flow.name) == ("tls", "127.0.0.1", 443, "reset.test")
    assert blocked_flow(m, "dns") is None  # no direct DNS query was recorded


async def test_without_raw_sockets_only_the_trigger_tests_run_and_it_says_so():
    async with RawTcpServer("reset_after_data") as server:
        r = await deep_measure(reset_measurement(server.port), "tls.reset", "tls", timeout=3, raw_allowed=False)
    assert [t.name for t in r.trigger_tests] == ["tls_sni", "tls_benign_sni", "tls_no_sni"]
    assert all(t.interfered for t in r.trigger_tests)  # this server resets every name
    assert r.packets == [] and r.hops == [] and r.packets_sent == 0
    assert any("root or CAP_NET_RAW" in s for s in r.skipped)
    assert summarise(r)["trigger"] == "not_isolated"


@ROOT_ONLY
async def test_a_server_that_resets_by_itself_is_not_called_injected(tmp_path):
    threads_before = len([t for t in threading.enumerate() if not t.name.startswith("asyncio_")])
    async with RawTcpServer("reset_after_data") as server:
        r = await deep_measure(reset_measurement(server.port), "tls.reset", "tls", timeout=3)
    kinds = {p.kind for p in r.packets}
    assert {"syn-ack", "rst"} <= kinds, r.packets
    s = summarise(r)
    assert s["injected"] == "server", s
    # the hop search: TTL 1 already reaches the server (loopback), whose own reset answers
    assert r.hops and r.hops[0].response == "server" and r.packets_sent == len(r.hops) == 1
    assert s["censor_hop"] is None
    # stored and read back whole
    db = store.open_db(tmp_path / "d.db")
    store.save_deep(db, r)
    assert store.load_deep(db, r.measurement_id) == r
    store.close(db)
    # no sniffer thread and no capture socket left behind (the event loop's own worker
    # threads, named asyncio_N, stay for the loop's life)
    def others() -> list[str]:
        return [t.name for t in threading.enumerate() if not t.name.startswith("asyncio_")]

    for _ in range(50):
        if len(others()) <= threads_before:
            break
        await asyncio.sleep(0.1)
    assert len(others()) <= threads_before, others()
    assert not packet_sockets(), "a capture socket is still open"


@ROOT_ONLY
async def test_probe_trace_measures_one_url_deeply_and_show_and_explain_say_it(tmp_path):
    config = tmp_path / "config.ini"
    config.write_text("[consent]\nversion = 1\n")
    env = {"BYNET_PROBE_CONFIG": str(config)}
    async with RawTcpServer("reset_after_data") as server:
        url = f"https://127.0.0.1:{server.port}/"
        db = tmp_path / "t.db"
        rc, _, err = await probe("trace", url, "--db", str(db), "--no-control", "--allow-private-targets", *QUIET,
                                 env=env, timeout=120)
        assert rc == 2 and "agree to deep measurement" in err  # its own consent, never assumed
        rc, _, err = await probe("trace", url, "--db", str(db), "--no-control", "--allow-private-targets", "--yes",
                                 *QUIET, env=env, timeout=120)
        assert rc == 0, err
    rc, out, err = await probe("show", url, "--db", str(db), "--json")
    assert rc == 0, err
    deep = json.loads(out)["deep"]
    assert deep["injected"] == "server" and deep["observed"]["trigger_tests"], deep
    rc, out, _ = await probe("explain", url, "--db", str(db))
    assert "Deep measurement:" in out and "from the site itself" in out
    rc, out, _ = await probe("show", url, "--db", str(db))
    assert "deep measurement" in out and "hop search" in out
    # the report's trigger and "where" columns, and OONI's export's extension field
    rc, out, _ = await probe("report", "--db", str(db), "--format", "json")
    (row,) = json.loads(out)
    assert row["injected"] == "server" and row["trigger"] == "not_isolated" and "where" in row
    rc, out, _ = await probe("report", "--db", str(db), "--format", "markdown")
    assert "trigger" in out and "not_isolated" in out
    rc, out, _ = await probe("export-ooni", "--db", str(db))
    ext = json.loads(out.splitlines()[0])["test_keys"]["x_bynet_deep"]
    assert ext["trigger_tests"] and ext["hops"] and ext["packets"]
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_probe(p, str(db))]


def packet_sockets() -> list[str]:
    """This process's AF_PACKET sockets (their inodes in /proc/net/packet, among its fds)."""
    with open("/proc/net/packet") as fh:
        inodes = {line.split()[-1] for line in fh.read().splitlines()[1:] if line.split()}
    mine = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            mine.append(target)
    return mine


def _is_probe(pid: str, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return marker.encode() in fh.read()
    except OSError:
        return False


@ROOT_ONLY
async def test_a_deep_measurement_cancelled_mid_way_leaves_nothing_behind():
    """A server that never answers: the hop search walks TTL after TTL; cancelled there
    (Ctrl-C), the sniffer, its capture socket and the connection are all gone."""
    before = {t.name for t in threading.enumerate()}
    async with RawTcpServer("silent") as server:
        task = asyncio.create_task(deep_measure(reset_measurement(server.port), "tls.timeout", "tls", timeout=1))
        await asyncio.sleep(3.5)  # past the trigger tests, inside the hop search
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    for _ in range(50):
        left = {t.name for t in threading.enumerate()} - before
        if not [n for n in left if not n.startswith("asyncio_")] and not packet_sockets():
            break
        await asyncio.sleep(0.1)
    assert not [n for n in left if not n.startswith("asyncio_")], left
    assert not packet_sockets()
    tcp = [line.split() for line in open("/proc/net/tcp").read().splitlines()[1:]]
    port_hex = f"{server.port:04X}"
    assert not [t for t in tcp if t[2].endswith(":" + port_hex) and t[3] == "01"]  # no connection still established


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="dropping CAP_NET_RAW from a root process needs root and setpriv (CI is root)")
async def test_without_cap_net_raw_the_run_says_in_one_line_what_it_skips(tmp_path):
    """As a volunteer without administrator rights: the packet parts are skipped with
    one line, the trigger tests still run, the run succeeds."""
    config = tmp_path / "config.ini"
    config.write_text("[consent]\nversion = 1\n[deep-consent]\nversion = 1\n")
    async with RawTcpServer("reset_after_data") as server:
        url = f"https://127.0.0.1:{server.port}/"
        db = tmp_path / "t.db"
        proc = await asyncio.create_subprocess_exec(
            "setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw", sys.executable, "-m", "probe", "trace", url,
            "--db", str(db), "--no-control", "--allow-private-targets", *QUIET, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "LANGUAGE": "en", "BYNET_PROBE_CONFIG": str(config)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err_b = await asyncio.wait_for(proc.communicate(), 120)
    err = err_b.decode()
    assert proc.returncode == 0, err
    skipped = [line for line in err.splitlines() if "need root or CAP_NET_RAW" in line]
    assert len(skipped) == 1 and "Traceback" not in err, err
    rc, out, _ = await probe("show", url, "--db", str(db), "--json")
    deep = json.loads(out)["deep"]
    assert deep["observed"]["trigger_tests"] and not deep["observed"]["packets"] and not deep["hops"]
