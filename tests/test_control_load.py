"""The probe and the helper agree on load: the default probe against the default helper
never loses a control, at any --concurrency; refusals are retried; answers are read
whole on a slow link; what is still lost is asked again at the end of the run.

Real servers on loopback: the helper as `probe control serve` runs it (guarded,
default limits), a local DNS server and site; the CLI in a subprocess.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import dns.message
import dns.rrset
import pytest
from aiohttp import web
from clirun import probe, rows
from servers import Answer, DnsServer, WebServer, site_app

from probe.core import failures as F
from probe.helper.server import serve_helper
from probe.helper.service import HelperConfig, measure_for_control
from probe.measure.control import REASONS, ControlChain, ControlClient, Grant
from probe.measure.dns import resolve_doh
from probe.measure.http import FetchOptions, new_session
from probe.measure.tls import make_ssl_context
from probe.measure.url import Contexts, ProbeConfig

QUIET = ["--no-system-resolver", "--no-doh", "--no-vantage-lookup"]


def helper_config(dns: DnsServer, **overrides) -> HelperConfig:
    """The helper's defaults; only where it resolves names is the lab's."""
    probe_config = ProbeConfig(resolvers=[dns.address], system_resolver=False)
    return HelperConfig(allow_private=True, probe=probe_config, **overrides)


@pytest.fixture
async def many_sites():
    """120 names of one local site: more than the helper's burst, so pacing shows."""
    names = [f"site{i}.lab.test" for i in range(120)]
    async with DnsServer({n: Answer(a=["127.0.0.1"]) for n in names}) as dns, \
            WebServer(site_app(title="Load site")) as web:
        yield dns, web, names


# None: the probe's default (8). At 32, the 120 targets outrun the helper's burst, so
# the probe has to pace itself to the grant.
@pytest.mark.parametrize("concurrency,count", [(None, 40), (32, 120)])
async def test_default_probe_never_loses_a_control_to_the_default_helper(tmp_path, many_sites, concurrency, count):
    dns, web, names = many_sites
    names = names[:count]
    targets = tmp_path / "targets.txt"
    targets.write_text("".join(f"http://{n}:{web.port}/\n" for n in names))
    db = tmp_path / "p.db"
    async with serve_helper(helper_config(dns)) as helper:
        args = ["run", "--targets", str(targets), "--db", str(db), "--control", f"http://127.0.0.1:{helper.port}",
                "--resolver", dns.address, "--lab-network", "127.0.0.0/8", *QUIET]
        if concurrency:
            args += ["--concurrency", str(concurrency)]
        rc, out, err = await probe(*args, timeout=120)
    assert rc == 0, err
    assert f"{len(names)} measured" in err
    lost = rows(db, "select count(*) from measurements where control_failure is not null")
    assert lost == [(0,)], err
    # the probe kept within the grant: nothing had to be asked twice
    assert rows(db, "select max(attempts) from control_results") == [(1,)]
    assert "sites have no control answer" not in err
    assert f"{HelperConfig.per_client_concurrency} at once, {HelperConfig.rate_per_minute} a minute" in err


async def test_probe_keeps_within_a_smaller_grant(tmp_path, many_sites):
    """A maintainer who grants less than the probe's default: the probe waits, loses nothing."""
    dns, web, names = many_sites
    targets = tmp_path / "targets.txt"
    targets.write_text("".join(f"http://{n}:{web.port}/\n" for n in names[:30]))
    db = tmp_path / "p.db"
    async with serve_helper(helper_config(dns, per_client_concurrency=2, burst=5)) as helper:
        rc, out, err = await probe("run", "--targets", str(targets), "--db", str(db),
                                   "--control", f"http://127.0.0.1:{helper.port}", "--resolver", dns.address,
                                   "--lab-network", "127.0.0.0/8", *QUIET, timeout=120)
    assert rc == 0, err
    assert rows(db, "select count(*) from measurements where control_failure is not null") == [(0,)]
    assert "2 at once" in err


async def test_refusals_are_retried_with_backoff(many_sites):
    """A client that does not know the grant (no /health asked) is refused with 429 and
    retries within its budget until every answer comes."""
    dns, web, names = many_sites
    async with serve_helper(helper_config(dns, per_client_concurrency=1)) as helper:
        async with ControlClient(f"http://127.0.0.1:{helper.port}", timeout=20, concurrency=6) as client:
            assert client.grant == Grant()  # the modest default of a helper that said nothing
            results = await asyncio.gather(*(client.measure(f"http://{n}:{web.port}/", ["127.0.0.1"])
                                             for n in names[:6]))
    assert [r.failure for r in results] == [None] * 6
    assert max(r.attempts for r in results) > 1  # some were refused first
    assert client.grant.concurrency == 1  # learnt from the refusal's limits


async def test_a_dead_helper_does_not_hold_targets(many_sites):
    """Unreachable, and /health does not answer either: the circuit opens and targets
    fail at once (the end-of-run pass asks again), instead of a minute each."""
    from servers import unused_port

    async with ControlClient(f"http://127.0.0.1:{unused_port()}", timeout=5) as client:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        first = await client.measure("http://site0.lab.test/", [])
        t1 = loop.time()
        later = await asyncio.gather(*(client.measure(f"http://site{i}.lab.test/", []) for i in range(1, 9)))
        t2 = loop.time()
    assert first.reason == "unreachable" and first.attempts == 1
    assert t1 - t0 < 5
    assert all(r.reason == "unreachable" and r.attempts == 0 for r in later)
    assert t2 - t1 < 1


async def test_a_request_that_never_arrives_is_lost_not_the_helper(many_sites):
    """A filter that drops the request to the helper (it names the URL) while the helper
    itself answers: that request is "request_lost", and other targets go on as usual."""
    dns, web_site, names = many_sites
    async with serve_helper(helper_config(dns)) as helper:
        port = helper.port

        async def black_hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # forwards everything but a request naming "censored": that one vanishes
            up_r, up_w = await asyncio.open_connection("127.0.0.1", port)

            async def pipe(src, dst, check):
                while data := await src.read(65536):
                    if check and b"censored" in data:
                        continue
                    dst.write(data)
                dst.close()

            await asyncio.gather(pipe(reader, up_w, True), pipe(up_r, writer, False), return_exceptions=True)

        proxy = await asyncio.start_server(black_hole, "127.0.0.1", 0)
        try:
            base = f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}"
            async with ControlClient(base, timeout=20) as client:
                lost, fine = await asyncio.gather(
                    client.measure(f"http://censored.lab.test:{web_site.port}/", []),
                    client.measure(f"http://{names[0]}:{web_site.port}/", ["127.0.0.1"]))
                after = await client.measure(f"http://{names[1]}:{web_site.port}/", ["127.0.0.1"])
        finally:
            proxy.close()
    assert lost.reason == "request_lost" and lost.attempts == 1, lost.raw
    assert fine.failure is None and after.failure is None


def _drip_app(answer: dict, status: int = 200):
    """A server that sends its JSON answer in three pieces, 0.3 s apart: what a loaded
    slow link does to a reply."""
    body = json.dumps(answer).encode()

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
        resp.content_length = len(body)
        await resp.prepare(request)
        third = len(body) // 3
        for part in (body[:third], body[third:2 * third], body[2 * third:]):
            await resp.write(part)
            await asyncio.sleep(0.3)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def test_a_helper_answer_arriving_in_pieces_is_read_whole(many_sites):
    dns, web_site, names = many_sites
    config = helper_config(dns)
    url = f"http://{names[0]}:{web_site.port}/"
    answer = await measure_for_control(url, ["127.0.0.1"], config, Contexts.for_config(config.probe))
    assert len(json.dumps(answer)) > 1000
    async with WebServer(_drip_app(answer)) as slow:
        async with ControlClient(f"http://127.0.0.1:{slow.port}", timeout=10) as client:
            result = await client.measure(url, ["127.0.0.1"])
    assert result.failure is None, result.raw
    assert result.http[-1].title == "Load site"


async def test_a_doh_answer_arriving_in_pieces_is_read_whole():
    q = dns.message.make_query("example.org", "A")
    reply = dns.message.make_response(q)
    reply.answer.append(dns.rrset.from_text("example.org.", 60, "IN", "A", *(f"192.0.2.{i}" for i in range(1, 40))))
    wire = reply.to_wire()

    async def handler(request: web.Request) -> web.StreamResponse:
        asked = dns.message.from_wire(await request.read())
        data = bytearray(wire)
        data[0:2] = asked.id.to_bytes(2, "big")
        resp = web.StreamResponse(headers={"Content-Type": "application/dns-message"})
        await resp.prepare(request)
        for i in range(0, len(data), 100):
            await resp.write(bytes(data[i:i + 100]))
            await asyncio.sleep(0.1)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/dns-query", handler)
    async with WebServer(app) as doh:
        session = new_session({}, make_ssl_context(), FetchOptions())
        try:
            result = await resolve_doh("example.org", "A", f"http://127.0.0.1:{doh.port}/dns-query", session, timeout=10)
        finally:
            await session.close()
    assert result.failure is None
    assert len(result.addresses()) == 39


def _flaky_helper(config: HelperConfig, fail_first: int):
    """A helper that answers 504 (its measurement overran) to the first requests, then
    measures for real: what a site that is slow for a moment does."""
    contexts = Contexts.for_config(config.probe)
    seen = {"n": 0}

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": "test", "limits": config.limits()})

    async def measure(request: web.Request) -> web.Response:
        data = await request.json()
        seen["n"] += 1
        if seen["n"] <= fail_first:
            return web.json_response({"error": "measurement did not finish within 45 s"}, status=504)
        return web.json_response(await measure_for_control(data["url"], data.get("addresses", []), config, contexts))

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/v1/measure", measure)
    return app


async def run_with_flaky_helper(tmp_path, many_sites, count: int, fail_first: int, *extra: str):
    """`probe run` over ``count`` sites against a helper whose first answers are 504s."""
    dns, web_site, names = many_sites
    targets = tmp_path / "targets.txt"
    targets.write_text("".join(f"http://{n}:{web_site.port}/\n" for n in names[:count]))
    db = tmp_path / "p.db"
    async with WebServer(_flaky_helper(helper_config(dns), fail_first=fail_first)) as helper:
        rc, out, err = await probe("run", "--targets", str(targets), "--db", str(db),
                                   "--control", f"http://127.0.0.1:{helper.port}", "--resolver", dns.address,
                                   "--lab-network", "127.0.0.0/8", *extra, *QUIET, timeout=120)
    assert rc == 0, err
    return db, out, err


async def test_lost_controls_are_asked_again_at_the_end_of_the_run(tmp_path, many_sites):
    db, _, err = await run_with_flaky_helper(tmp_path, many_sites, 5, 3)
    assert "3 answers were lost at first and asked again at the end; 3 came back" in err
    assert rows(db, "select count(*) from measurements where control_failure is not null") == [(0,)]
    assert sorted(r[0] for r in rows(db, "select attempts from control_results")) == [1, 1, 2, 2, 2]
    # re-derived from the new answers: the sites work
    assert rows(db, "select distinct verdict from verdicts") == [("ok",)]


async def test_lost_controls_are_counted_by_reason(tmp_path, many_sites):
    _, out, _ = await run_with_flaky_helper(tmp_path, many_sites, 4, 1000, "--json")
    verdicts = [json.loads(line) for line in out.splitlines() if '"verdicts"' in line][-1]
    assert verdicts["controls"] == {"retried": 4, "recovered": 0, "lost": {"measurement_timeout": 4}}
    assert "measurement_timeout" in REASONS


async def test_chain_falls_back_to_the_next_helper(many_sites):
    dns, web_site, names = many_sites
    url = f"http://{names[0]}:{web_site.port}/"
    async with serve_helper(helper_config(dns)) as second:
        first = serve_helper(helper_config(dns))
        running = await first.__aenter__()
        clients = [ControlClient(f"http://127.0.0.1:{running.port}", timeout=10),
                   ControlClient(f"http://127.0.0.1:{second.port}", timeout=10)]
        switches = []
        async with ControlChain(clients, on_switch=lambda a, b: switches.append((a, b))) as chain:
            ok = await chain.measure(url, ["127.0.0.1"])
            assert ok.failure is None and ok.control_url == clients[0].url
            await first.__aexit__(None, None, None)  # the first helper goes away mid-run
            moved = await chain.measure(url, ["127.0.0.1"])
    assert moved.failure is None and moved.control_url == clients[1].url
    assert switches == [(clients[0].url, clients[1].url)]
    assert chain.url == clients[1].url


def test_every_reason_is_documented():
    assert set(REASONS) >= {"rate_limited", "overloaded", "unreachable", "timeout", "bad_answer"}
    assert F.CONTROL_UNAVAILABLE == "control_unavailable"


async def test_health_grant_and_clock(many_sites):
    dns, _, _ = many_sites
    async with serve_helper(helper_config(dns, per_client_concurrency=3, rate_per_minute=90, burst=7)) as helper:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{helper.port}/health") as resp:
            health = await resp.json()
        async with ControlClient(f"http://127.0.0.1:{helper.port}") as client:
            info = await client.health()
    assert health["limits"]["per_client_concurrency"] == 3
    assert (info.grant.concurrency, info.grant.rate_per_minute, info.grant.burst) == (3, 90, 7)
    assert info.clock_skew_s is not None
    assert abs(info.clock_skew_s) < 2


async def test_the_link_is_measured_against_the_helper(many_sites):
    dns, _, _ = many_sites
    async with serve_helper(helper_config(dns)) as helper:
        base = f"http://127.0.0.1:{helper.port}"
        async with ControlClient(base) as client:
            speed = await client.link_speed()
        async with aiohttp.ClientSession() as s:
            async with s.get(base + "/v1/bytes", params={"n": "100000"}) as resp:
                assert resp.status == 200 and len(await resp.read()) == 100000
            async with s.get(base + "/v1/bytes", params={"n": str(64 * 1024 * 1024)}) as resp:
                assert resp.status == 400 and "between" in (await resp.json())["error"]
            # calibration has a byte budget of its own (8 MiB a minute), apart from measurements
            statuses = []
            for _ in range(5):
                async with s.get(base + "/v1/bytes", params={"n": str(2 * 1024 * 1024)}) as resp:
                    statuses.append(resp.status)
                    await resp.read()
            assert statuses[-1] == 429 and "Retry-After" in resp.headers
            async with s.get(base + "/health") as resp:
                assert (await resp.json())["in_flight"] == 0
    assert speed is not None and speed > 1_000_000  # loopback: far beyond any home link
