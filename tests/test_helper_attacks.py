"""The helper holds under hostile load: cheap attacks from a few addresses must not keep
a fresh client from another address from being served, nor `/health` from answering
within a second. Bounded counts and durations; the helper at its default limits.

Loopback has a whole /8, so "another address" is a socket bound to 127.0.0.N.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import subprocess
import sys
import time

import aiohttp
import pytest
from servers import WebServer, site_app, unused_port

from probe.helper.server import serve_helper
from probe.helper.service import HelperConfig
from probe.measure.url import ProbeConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config() -> HelperConfig:
    return HelperConfig(allow_private=True, probe=ProbeConfig(resolvers=[], system_resolver=False))


async def raw_connection(port: int, source: str):
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def fresh_client(port: int, source: str, site_port: int) -> tuple[float, int, float, int]:
    """(seconds for /health, its status, seconds for a measurement, its status), asked
    from ``source``."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as s:
        t0 = time.monotonic()
        async with s.get(f"http://127.0.0.1:{port}/health") as resp:
            health_status = resp.status
        t1 = time.monotonic()
        async with s.post(f"http://127.0.0.1:{port}/v1/measure",
                          json={"url": f"http://127.0.0.1:{site_port}/"}) as resp:
            measure_status = resp.status
            await resp.read()
        t2 = time.monotonic()
    return t1 - t0, health_status, t2 - t1, measure_status


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes | None:
    """What the helper sent before closing, or None if it kept the connection open."""
    try:
        async with asyncio.timeout(seconds):
            return await reader.read()
    except TimeoutError:
        return None
    except ConnectionError:
        return b""


async def test_slow_uploads_take_no_measurement_slot():
    """64 uploads that send their headers and one body byte, 4 from each of 16
    addresses: a slot is taken only once the whole body is in, so nobody else is
    refused; after the body timeout they are answered 408 and closed."""
    cfg = config()
    async with WebServer(site_app(title="Fresh")) as site, serve_helper(cfg) as helper:
        attackers = []
        for i in range(64):
            reader, writer = await raw_connection(helper.port, f"127.0.0.{10 + i // 4}")
            writer.write(b"POST /v1/measure HTTP/1.1\r\nHost: helper\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 200\r\n\r\n{")
            await writer.drain()
            attackers.append((reader, writer))
        await asyncio.sleep(0.5)
        health_s, health_status, measure_s, measure_status = await fresh_client(helper.port, "127.0.0.99", site.port)
        assert (health_status, measure_status) == (200, 200)
        assert health_s < 1.0 and measure_s < 10
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{helper.port}/health") as resp:
            assert (await resp.json())["in_flight"] == 0  # no slot held by the uploads
        answers = await asyncio.gather(*(closed_within(r, cfg.body_timeout + 3) for r, _ in attackers))
        for _, w in attackers:
            w.close()
    assert all(a is not None for a in answers), "a slow upload was kept open past the body timeout"
    assert sum(a.startswith(b"HTTP/1.1 408") for a in answers) == 64  # type: ignore[union-attr]  # none is None: asserted above


async def test_headers_that_never_finish_are_cut_off():
    """Requests whose headers trickle in a byte a second, 16 from each of 2 addresses:
    closed at the header timeout (an unguarded helper kept one over 200 s)."""
    cfg = config()
    async with WebServer(site_app(title="Fresh")) as site, serve_helper(cfg) as helper:
        attackers = []
        for i in range(32):
            reader, writer = await raw_connection(helper.port, f"127.0.0.{30 + i // 16}")
            writer.write(b"POST /v1/measure HTTP/1.1\r\nHost: helper\r\nX-Slow: ")
            await writer.drain()
            attackers.append((reader, writer))

        async def drip():
            for _ in range(int(cfg.header_timeout) + 4):
                for _, w in attackers:
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        w.write(b"a")
                await asyncio.sleep(1)

        dripping = asyncio.ensure_future(drip())
        t0 = time.monotonic()
        health_s, health_status, _, measure_status = await fresh_client(helper.port, "127.0.0.99", site.port)
        assert (health_status, measure_status) == (200, 200) and health_s < 1.0
        closed = await asyncio.gather(*(closed_within(r, cfg.header_timeout + 3) for r, _ in attackers))
        elapsed = time.monotonic() - t0
        dripping.cancel()
        for _, w in attackers:
            w.close()
        stats = helper.guard.stats()
    assert all(c is not None for c in closed), "a connection outlived the header timeout"
    assert elapsed < cfg.header_timeout + 4
    assert stats["timed_out"] >= 32


async def test_many_connections_from_one_address_leave_room_for_others():
    """About 1,020 connections from one address that never send a byte, against a
    helper whose file limit is 1,024: it keeps at most a few from that address, so
    /health from another address answers within a second and a measurement is served."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"this test opens about 1,100 sockets itself; the hard file limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))
    port = unused_port()

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    proc = subprocess.Popen(
        [sys.executable, "-m", "probe", "control", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--allow-private", "--no-system-resolver"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=limit_files,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert proc.stdout is not None  # stdout=PIPE
    try:
        line = ""
        while "listening" not in line:
            line = await asyncio.to_thread(proc.stdout.readline)
            assert line, "the helper exited"
        assert "file limit 1024" in line, line
        async with WebServer(site_app(title="Fresh")) as site:
            held = []

            async def connect():
                with contextlib.suppress(OSError):
                    held.append(await raw_connection(port, "127.0.0.5"))

            await asyncio.gather(*(connect() for _ in range(1020)))
            await asyncio.sleep(0.5)
            health_s, health_status, measure_s, measure_status = await fresh_client(port, "127.0.0.6", site.port)
            # and again while the attacker keeps knocking
            more = asyncio.gather(*(connect() for _ in range(300)))
            again = await fresh_client(port, "127.0.0.7", site.port)
            await more
            still_open = 0
            for reader, writer in held:
                if not reader.at_eof():
                    with contextlib.suppress(TimeoutError, ConnectionError):
                        async with asyncio.timeout(0.01):
                            await reader.read(1)
                    still_open += not reader.at_eof()
                writer.close()
        assert (health_status, measure_status) == (200, 200), (health_status, measure_status)
        assert health_s < 1.0, health_s
        assert again[1] == again[3] == 200 and again[0] < 1.0, again
        assert still_open <= HelperConfig.max_pending_per_address + 2
        assert proc.poll() is None, "the helper died"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
