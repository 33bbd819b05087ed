"""Speed without harm: a run costs each target about its own time (no second timeout on a
blackhole, no slot held by the late-DNS window), and its speed never becomes a burst at
one server (a cap on connections per address, workers that start spread out).

Real local servers, the real CLI at its defaults where a run is measured."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import clirun
import pytest
from servers import Answer, Behaviour, Delayed, DnsServer, Race, RawTcpServer, unused_port

from probe import store
from probe.analysis.analyze import analyze_db
from probe.core import failures as F
from probe.core.records import HttpRequest, Measurement
from probe.measure.pacing import PER_HOST_CONNECTIONS, START_SPREAD_S
from probe.measure.url import ProbeConfig, measure_url

SITE = "site.lab.test"
# What a run in these tests needs besides its targets: the test's DNS server only,
# loopback standing for the internet, nothing sent anywhere else.
LOCAL = [*clirun.QUIET, "--no-control", "--no-portal-check", "--no-upload", "--yes",
         "--lab-network", "127.0.0.0/8"]


def _targets(tmp_path: Path, urls: list[str]) -> Path:
    path = tmp_path / "targets.txt"
    path.write_text("".join(f"{u} NEWS\n" for u in urls))
    return path


async def test_a_blackholed_address_costs_one_connect_timeout(tmp_path):
    """The TCP step's connect timed out: the fetch does not wait the same timeout again
    on the same silent address. The record still says the fetch would time out, and
    that it was never sent: in the record, the stored row, the records read back and
    the verdict's evidence (a researcher must not read it as a second observation)."""
    async with DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns, RawTcpServer("backlog_full") as srv:
        # the default timeouts and DNS window; only the lab's resolver, and no extra ports
        config = ProbeConfig(resolvers=[dns.address], system_resolver=False, ports=())
        t0 = time.monotonic()
        m = await measure_url(f"http://{SITE}:{srv.port}/", config)
        elapsed = time.monotonic() - t0
    connect, fetch = m.tcp[0], m.http[0]
    assert connect.failure == F.GENERIC_TIMEOUT
    assert (fetch.kind, fetch.failure, fetch.status) == ("main", F.GENERIC_TIMEOUT, None)
    timeout = config.tcp_timeout
    assert fetch.started_at == connect.started_at and fetch.duration_ms >= 900 * timeout  # the connect it stands for
    assert elapsed < 1.7 * timeout, f"{elapsed:.2f} s: two connect timeouts of {timeout} s"
    assert fetch.attempted is False

    db = store.open_db(tmp_path / "probe.db")
    store.create_run(db, {"run_id": "r1", "started_at": connect.started_at, "status": "finished"}, [])
    sent = HttpRequest(f"http://{SITE}/other", "main", 0, connect.started_at, 5.0, status=200)
    other = Measurement(f"http://{SITE}/other", SITE, "http", 80, connect.started_at, http=[sent])
    store.save_measurements(db, "r1", [m, other])
    rows = dict(db.execute("select request_id, attempted from http_requests").fetchall())
    assert (rows[fetch.request_id], rows[sent.request_id]) == (0, 1)
    again = store.load_measurement(db, m.measurement_id)
    assert again is not None and again.http[0].attempted is False
    assert store.load_measurement(db, other.measurement_id).http[0].attempted is True  # type: ignore[union-attr]
    analyze_db(db)
    (layers,) = db.execute("select layers from verdicts where measurement_id = ?", [m.measurement_id]).fetchone()
    assert f"no HTTP request was sent to http://{SITE}:{srv.port}/" in layers


class _TimedDns(DnsServer):
    """Notes when the first query for each name arrived."""

    def __init__(self, zone: dict) -> None:
        super().__init__(zone)
        self.first: dict[str, float] = {}

    def _handle(self, data: bytes, addr) -> None:
        n = len(self.queries)
        super()._handle(data, addr)
        if len(self.queries) > n:
            self.first.setdefault(self.queries[-1][0], time.monotonic())


async def test_the_late_dns_window_holds_no_worker(tmp_path):
    """At the defaults (8 workers, a 1 s window), 48 targets that fail at once: holding
    each worker for its target's window would take at least 48 / 8 = 6 s; the windows
    close in the background instead, and a late (racing) reply that comes within its
    window is still stored with its target."""
    names = [f"w{i}.lab.test" for i in range(48)]
    zone: dict[str, Behaviour] = {n: Answer(a=["127.0.0.1"]) for n in names[1:]}
    zone[names[0]] = Race(Answer(a=["127.0.0.1"]), Answer(a=["127.0.0.9"]), delay=0.5)
    db = tmp_path / "r.db"
    async with DnsServer(zone) as dns:
        urls = [f"http://{n}:{unused_port()}/" for n in names]
        code, _, err = await clirun.probe("run", "--targets", str(_targets(tmp_path, urls)), "--db", str(db),
                                          "--resolver", dns.address, *LOCAL)
    assert code == 0, err
    measuring = float(err.split("measured in ")[1].split("s")[0])
    assert measuring < 0.5 * len(names) / 8 * 1.0, err  # holding the slot: at least 6 s
    with sqlite3.connect(db) as conn:
        extra = conn.execute("select q.extra_replies from dns_queries q join measurements m using (measurement_id) "
                             "where m.hostname = ? and q.engine = 'udp' and q.query_type = 'A'", [names[0]]).fetchone()
        stored = conn.execute("select count(*) from measurements").fetchone()[0]
    assert stored == len(names)
    assert extra[0] and "127.0.0.9" in extra[0]


class _CountingServer:
    """An HTTP server that answers after 0.3 s and counts the requests it is serving
    at once (the page fetches: the TCP step's bare connects send nothing)."""

    def __init__(self) -> None:
        self.now = self.most = self.served = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> _CountingServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not await reader.readuntil(b"\r\n\r\n"):
                return
            self.now += 1
            self.most = max(self.most, self.now)
            try:
                await asyncio.sleep(0.3)
                body = b"<html><head><title>one host</title></head><body>page</body></html>"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                self.served += 1
            finally:
                self.now -= 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_connections_to_one_address_are_capped(tmp_path):
    """Sixteen URLs of one host measured by the default eight workers: the server never
    sees more than the cap of requests at once, and every page is still fetched."""
    async with _CountingServer() as web, DnsServer({SITE: Answer(a=["127.0.0.1"])}) as dns:
        urls = [f"http://{SITE}:{web.port}/page{i}" for i in range(16)]
        code, _, err = await clirun.probe("run", "--targets", str(_targets(tmp_path, urls)), "--db",
                                          str(tmp_path / "r.db"), "--resolver", dns.address, *LOCAL)
    assert code == 0, err
    assert web.served == 16
    assert 2 <= web.most <= PER_HOST_CONNECTIONS, web.most


async def test_workers_start_spread_over_a_bounded_moment(tmp_path):
    """The default eight workers do not send their first queries in one instant, nor
    wait long. Each answer takes longer than the spread, so that every worker is still
    waiting for its first target when the last one starts (with fast targets, the first
    worker to start would measure them all before the others woke)."""
    names = [f"j{i}.lab.test" for i in range(8)]
    dns = _TimedDns({n: Delayed(Answer(a=["127.0.0.1"]), START_SPREAD_S + 0.3) for n in names})
    async with dns:
        urls = [f"http://{n}:{unused_port()}/" for n in names]
        code, _, err = await clirun.probe("run", "--targets", str(_targets(tmp_path, urls)), "--db",
                                          str(tmp_path / "r.db"), "--resolver", dns.address, *LOCAL)
    assert code == 0, err
    starts = sorted(dns.first.values())
    assert len(starts) == 8
    spread = starts[-1] - starts[0]
    assert 0.02 < spread < START_SPREAD_S + 0.5, spread


async def test_the_benchmark_world_runs_and_cleans_up():
    """benchmarks/probe_benchmark.py on a small world: every target measured, each kind
    as built (pages only from the reachable ones), and no iptables rule left behind."""
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        pytest.skip("needs root for iptables")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from probe_benchmark import bench
    from world import CHAIN_PREFIX

    figures = await bench(40, 8)
    assert figures.measured == 40 and figures.pages == 40 - 4 - 2
    assert figures.run_s >= figures.bound_s > 5  # four blackholes: at least one connect timeout
    left = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert f"{CHAIN_PREFIX}{os.getpid()}" not in left
