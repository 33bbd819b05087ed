"""The control helper (probe.helper.service), its client (probe.measure.control) and CLI (probe.cli.control).

Everything runs for real on loopback: the helper app on 127.0.0.1:0, a tiny aiohttp
site for it to measure, a TCP server that never answers. No mocks, and no packet ever
leaves 127.0.0.1 (no DNS resolver is configured; only "localhost" is resolved, from
/etc/hosts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from click.testing import CliRunner

from probe import __version__
from probe.cli.control import control_group
from probe.core import failures as F
from probe.core.records import ControlResult, DnsQuery, HttpRequest, TcpConnect, TlsHandshake
from probe.helper.service import HelperConfig, is_public_address, make_app
from probe.measure.control import USER_AGENT, ControlClient, ControlUnavailable
from probe.measure.url import ProbeConfig

PAGE_TITLE = "Control Test Page"
REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- helpers


def lab_config(**overrides) -> ProbeConfig:
    """No DNS resolver, no extra ports, short timeouts: only what the test names is touched."""
    base: dict[str, Any] = dict(
        resolvers=[],
        system_resolver=False,
        ports=(),
        dns_timeout=2.0,
        tcp_timeout=2.0,
        tls_timeout=3.0,
        http_timeout=5.0,
    )
    base.update(overrides)
    return ProbeConfig(**base)


@contextlib.asynccontextmanager
async def serve(app: web.Application, ssl_context: ssl.SSLContext | None = None):
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port
    finally:
        await runner.cleanup()


def site_app() -> web.Application:
    async def index(request: web.Request) -> web.Response:
        return web.Response(
            text=f"<html><head><title>{PAGE_TITLE}</title></head><body>hello</body></html>",
            content_type="text/html",
        )

    async def start(request: web.Request) -> web.Response:
        raise web.HTTPFound("/")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/start", start)
    return app


@pytest.fixture
async def site():
    """Port of a tiny website on 127.0.0.1."""
    async with serve(site_app()) as port:
        yield port


@pytest.fixture
async def silent():
    """Port of a TCP server on 127.0.0.1 that accepts and never says a word."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(Exception):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for w in writers:
            w.close()


@pytest.fixture
async def start_helper():
    """start_helper(**HelperConfig fields) -> base URL of a running helper."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**kw) -> str:
            kw.setdefault("probe", lab_config())
            port = await stack.enter_async_context(serve(make_app(HelperConfig(**kw))))
            return f"http://127.0.0.1:{port}"

        yield start


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:
        yield s


async def post(http: aiohttp.ClientSession, base: str, payload=None, *, data=None, headers=None):
    kwargs = {"data": data, "headers": headers} if data is not None else {"json": payload}
    async with http.post(base + "/v1/measure", **kwargs) as resp:
        return resp.status, await resp.json(), resp.headers


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- is_public_address


@pytest.mark.parametrize(
    "ip,public",
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.1.1", False),
        ("172.16.0.1", False),
        ("100.64.0.1", False),
        ("169.254.1.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("224.0.0.1", False),
        ("0.0.0.0", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("::", False),
        ("255.255.255.255", False),
        ("240.0.0.1", False),
        ("192.0.2.1", False),  # documentation
        ("198.51.100.7", False),
        ("203.0.113.9", False),
        ("198.18.0.1", False),  # benchmarking
        ("2001:db8::1", False),
        ("ff02::1", False),
        ("2002:7f00:1::", False),  # 6to4 wrapping 127.0.0.1
        ("::7f00:1", False),  # IPv4-compatible 127.0.0.1
        ("fe80::1%eth0", False),
        ("not an ip", False),
        ("", False),
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("1.1.1.1", True),
        ("::ffff:8.8.8.8", True),
    ],
)
def test_is_public_address(ip: str, public: bool) -> None:
    assert is_public_address(ip) is public


# --------------------------------------------------------------------------- health and measure


async def test_health(start_helper, http) -> None:
    base = await start_helper(allow_private=True)
    async with http.get(base + "/health") as resp:
        assert resp.status == 200
        health = await resp.json()
    assert {k: health[k] for k in ("status", "version", "allow_private", "in_flight")} == {
        "status": "ok", "version": __version__, "allow_private": True, "in_flight": 0}
    # what it grants each client, for the probe to keep within
    assert health["limits"]["per_client_concurrency"] == HelperConfig.per_client_concurrency >= 8
    assert health["limits"]["rate_per_minute"] == HelperConfig.rate_per_minute
    assert health["limits"]["burst"] == HelperConfig.burst
    assert "bynet-v1" in health["protocols"]
    assert health["time"].endswith("Z")  # for the probe's clock check


async def test_full_measurement_of_loopback_site(start_helper, http, site) -> None:
    base = await start_helper(allow_private=True)
    url = f"http://127.0.0.1:{site}/"
    status, answer, _ = await post(http, base, {"url": url, "addresses": ["127.0.0.1"]})
    assert status == 200, answer
    assert answer["version"] == 1
    assert answer["url"] == url
    assert answer["measured_at"].endswith("Z")
    assert answer["dns"] == []  # an IP URL needs no DNS
    assert [(t["ip"], t["port"], t["success"], t["failure"]) for t in answer["tcp"]] == [
        ("127.0.0.1", site, True, None)
    ]
    assert answer["tls"] == []
    [hop] = answer["http"]
    assert hop["status"] == 200
    assert hop["title"] == PAGE_TITLE
    assert hop["failure"] is None
    assert hop["address"] == f"127.0.0.1:{site}"
    assert "body_head" not in hop  # bodies never travel as JSON
    assert answer["ip_info"] == {
        "127.0.0.1": {
            "resolved_by_probe": True,
            "resolved_by_control": True,
            "public": False,
            "valid_for_domain": False,
        }
    }


async def test_redirects_are_followed_hop_by_hop(start_helper, http, site) -> None:
    base = await start_helper(allow_private=True)
    status, answer, _ = await post(http, base, {"url": f"http://127.0.0.1:{site}/start"})
    assert status == 200, answer
    assert [(h["hop"], h["status"]) for h in answer["http"]] == [(0, 302), (1, 200)]
    assert answer["http"][1]["title"] == PAGE_TITLE
    assert answer["ip_info"]["127.0.0.1"]["resolved_by_probe"] is False


async def test_a_redirect_loop_is_reported_as_the_probe_reports_it(start_helper, http, tmp_path) -> None:
    """The helper stops where the probe stops (10 redirects) and says so, rather than
    answering with the last 302 as if it were the page."""
    from servers import WebServer
    from servers import site_app as lab_site

    base = await start_helper(allow_private=True)
    async with WebServer(lab_site(title="Loop")) as looping:
        status, answer, _ = await post(http, base, {"url": looping.url("/loop"), "addresses": ["127.0.0.1"]})
    assert status == 200, answer
    hops = [h for h in answer["http"] if h["kind"] == "main"]
    assert len(hops) == ProbeConfig().max_redirects + 1
    assert hops[-1]["status"] == 302 and hops[-1]["failure"] == F.HTTP_TOO_MANY_REDIRECTS


async def test_https_site_tls_and_valid_for_domain(start_helper, http, tmp_path) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with serve(site_app(), ssl_context=server_ctx) as port:
        base = await start_helper(allow_private=True, probe=lab_config(ca_file=str(ca_file)))
        status, answer, _ = await post(http, base, {"url": f"https://127.0.0.1:{port}/"})
    assert status == 200, answer
    [tls] = answer["tls"]
    assert (tls["ip"], tls["port"], tls["success"], tls["cert_valid"]) == ("127.0.0.1", port, True, True)
    assert tls["peer_certificates"]
    assert answer["http"][0]["status"] == 200
    assert answer["ip_info"]["127.0.0.1"]["valid_for_domain"] is True


async def test_name_resolving_to_loopback_is_never_connected(start_helper, http, site) -> None:
    """A public-looking name whose DNS answer is 127.0.0.1 (DNS rebinding) is refused."""
    hosts = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else ""
    if not any(line.split()[:2] == ["127.0.0.1", "localhost"] for line in hosts.splitlines()):
        pytest.skip("localhost is not in /etc/hosts; resolving it could leave the machine")
    base = await start_helper(allow_private=False, probe=lab_config(system_resolver=True))
    status, answer, _ = await post(http, base, {"url": f"http://localhost:{site}/"})
    assert status == 200, answer
    [q] = answer["dns"]
    assert q["engine"] == "system" and "127.0.0.1" in [a["value"] for a in q["answers"]]
    assert answer["tcp"] and all(t["failure"] == F.REFUSED_ADDRESS for t in answer["tcp"])
    assert [h["failure"] for h in answer["http"]] == [F.REFUSED_ADDRESS]
    info = answer["ip_info"]["127.0.0.1"]
    assert info["public"] is False and info["resolved_by_control"] is True


async def test_name_without_addresses_is_no_addresses(start_helper, http) -> None:
    # No resolver configured at all: the name resolves to nothing, nothing is contacted.
    base = await start_helper(allow_private=False)
    status, answer, _ = await post(http, base, {"url": "http://nothing.invalid/"})
    assert status == 200, answer
    assert answer["dns"] == [] and answer["tcp"] == [] and answer["ip_info"] == {}
    assert [h["failure"] for h in answer["http"]] == [F.NO_ADDRESSES]


# --------------------------------------------------------------------------- refusals


async def test_private_url_host_refused_without_allow_private(start_helper, http, site) -> None:
    base = await start_helper(allow_private=False)
    status, body, _ = await post(http, base, {"url": f"http://127.0.0.1:{site}/"})
    assert status == 403
    assert "127.0.0.1" in body["error"]


async def test_private_address_refused(start_helper, http) -> None:
    base = await start_helper(allow_private=False)
    status, body, _ = await post(
        http, base, {"url": "http://example.com/", "addresses": ["10.1.2.3"]}
    )
    assert status == 403
    assert "10.1.2.3" in body["error"]


@pytest.mark.parametrize(
    "raw,fragment",
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[" * 5000 + b"]" * 5000, "not valid JSON"),  # nesting bomb, not a crash
        (b'["http://example.com/"]', "JSON object"),
        (b'"http://example.com/"', "JSON object"),
        (b'{"url": "http://example.com/", "evil": 1}', "unknown key"),
        (b'{"url": 42}', "url must be a string"),
        (b"{}", "url must be a string"),
        (b'{"url": "http://example.com/", "addresses": "8.8.8.8"}', "addresses"),
        (b'{"url": "http://example.com/", "addresses": [1]}', "addresses"),
        (b'{"url": "ftp://example.com/"}', "http or https"),
        (b'{"url": "file:///etc/passwd"}', "http or https"),
        (b'{"url": "http:///path"}', "host"),
        (b'{"url": "http://user:pw@example.com/"}', "user information"),
        (b'{"url": "http://exa mple.com/"}', "whitespace"),
        (b'{"url": "http://127.1/"}', "numeric address"),
        (b'{"url": "http://2130706433/"}', "numeric address"),
        (b'{"url": "http://0x7f000001/"}', "numeric address"),
        (b'{"url": "http://exa_mple!.com/"}', "valid hostname"),
        (b'{"url": "http://example.com:0/"}', "port"),
        (b'{"url": "http://example.com/' + b"a" * 2100 + b'"}', "longer than"),
        (b'{"url": "http://example.com/", "addresses": ["8.8.8.8", "not-an-ip"]}', "not an IP"),
    ],
    ids=lambda v: repr(v)[:40] if isinstance(v, bytes) else "",
)
async def test_bad_requests_are_400(start_helper, http, raw: bytes, fragment: str) -> None:
    base = await start_helper(allow_private=True)
    status, body, headers = await post(
        http, base, data=raw, headers={"Content-Type": "application/json"}
    )
    assert status == 400, body
    assert fragment in body["error"]
    assert "\n" not in body["error"]
    assert headers["Content-Type"].startswith("application/json")


async def test_too_many_addresses(start_helper, http) -> None:
    base = await start_helper(allow_private=True, max_addresses=3)
    addrs = [f"127.0.0.{i}" for i in range(1, 5)]
    status, body, _ = await post(http, base, {"url": "http://127.0.0.1/", "addresses": addrs})
    assert status == 400
    assert "too many addresses" in body["error"]


async def test_oversized_body_is_413(start_helper, http) -> None:
    base = await start_helper(allow_private=True, max_body=1024)
    big = {"url": "http://127.0.0.1/" + "a" * 2000}
    status, body, _ = await post(http, base, big)
    assert status == 413
    assert "1024" in body["error"]

    async def chunks():  # no Content-Length: the limit holds while reading too
        for _ in range(10):
            yield b" " * 512

    status, body, _ = await post(http, base, data=chunks(), headers={"Content-Type": "application/json"})
    assert status == 413
    assert "error" in body


async def test_rate_limit_is_429_with_retry_after(start_helper, http, site) -> None:
    base = await start_helper(allow_private=True, rate_per_minute=2, burst=2)
    payload = {"url": f"http://127.0.0.1:{site}/"}
    assert (await post(http, base, payload))[0] == 200
    assert (await post(http, base, payload))[0] == 200
    status, body, headers = await post(http, base, payload)
    assert status == 429
    assert "rate" in body["error"]
    assert int(headers["Retry-After"]) >= 1
    # the refusal says what is granted and when to come back
    assert body["retry_after"] == int(headers["Retry-After"]) and body["limits"]["rate_per_minute"] == 2
    async with http.get(base + "/health") as resp:  # health is not rate limited
        assert resp.status == 200


async def test_per_client_concurrency_is_429(start_helper, http, silent) -> None:
    base = await start_helper(allow_private=True, per_client_concurrency=1, hard_timeout=1.5)
    slow = asyncio.ensure_future(post(http, base, {"url": f"http://127.0.0.1:{silent}/"}))
    try:
        await _wait_in_flight(http, base, 1)
        status, body, _ = await post(http, base, {"url": f"http://127.0.0.1:{silent}/"})
        assert status == 429
        assert "concurrent" in body["error"]
    finally:
        assert (await slow)[0] == 504


async def test_global_concurrency_is_503(start_helper, http, silent) -> None:
    base = await start_helper(allow_private=True, global_concurrency=1, hard_timeout=1.5)
    slow = asyncio.ensure_future(post(http, base, {"url": f"http://127.0.0.1:{silent}/"}))
    try:
        await _wait_in_flight(http, base, 1)
        status, body, headers = await post(http, base, {"url": "http://127.0.0.1/"})
        assert status == 503
        assert "overloaded" in body["error"]
        assert "Retry-After" in headers
    finally:
        assert (await slow)[0] == 504


async def _wait_in_flight(http: aiohttp.ClientSession, base: str, n: int) -> None:
    for _ in range(200):
        async with http.get(base + "/health") as resp:
            if (await resp.json())["in_flight"] >= n:
                return
        await asyncio.sleep(0.01)
    raise AssertionError("request never became in flight")


async def test_get_on_measure_is_405(start_helper, http) -> None:
    base = await start_helper()
    async with http.get(base + "/v1/measure") as resp:
        assert resp.status == 405
        assert "error" in await resp.json()
    async with http.get(base + "/nope") as resp:
        assert resp.status == 404
        assert "error" in await resp.json()


async def test_hard_timeout_is_504(start_helper, http, silent) -> None:
    base = await start_helper(allow_private=True, hard_timeout=0.5)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    status, body, _ = await post(http, base, {"url": f"http://127.0.0.1:{silent}/"})
    assert status == 504
    assert "did not finish" in body["error"]
    assert loop.time() - t0 < 3
    async with http.get(base + "/health") as resp:  # the slot was given back
        assert (await resp.json())["in_flight"] == 0


async def test_internal_error_is_500_without_traceback(start_helper, http, site, caplog) -> None:
    # A broken configuration (per_family=None) makes address collection raise.
    base = await start_helper(allow_private=True, probe=lab_config(system_resolver=True, per_family=None))
    with caplog.at_level("ERROR", logger="probe.helper.service.service"):
        status, body, _ = await post(http, base, {"url": f"http://localhost:{site}/"})
    assert status == 500
    assert body == {"error": "internal error"}
    assert any("internal error" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- the client


async def test_client_measure_returns_records(start_helper, site) -> None:
    base = await start_helper(allow_private=True)
    url = f"http://127.0.0.1:{site}/start"
    async with ControlClient(base + "/", timeout=10) as client:
        info = await client.health()
        assert info.raw["status"] == "ok" and info.version == __version__
        # the client keeps within what the helper grants
        assert client.grant.concurrency == HelperConfig.per_client_concurrency
        assert client.grant.rate_per_minute == HelperConfig.rate_per_minute
        assert info.clock_skew_s is not None and abs(info.clock_skew_s) < 5
        result = await client.measure(url, ["127.0.0.1"])
    assert isinstance(result, ControlResult)
    assert result.failure is None
    assert result.control_url == base
    assert result.duration_ms > 0 and result.started_at.endswith("Z")
    assert result.dns == [] and result.tls == []
    assert all(isinstance(t, TcpConnect) for t in result.tcp) and result.tcp[0].success
    assert all(isinstance(h, HttpRequest) for h in result.http)
    assert [h.status for h in result.http] == [302, 200]
    assert result.http[-1].title == PAGE_TITLE
    assert result.raw is not None
    assert result.raw["url"] == url and "ip_info" in result.raw


async def test_client_parses_dns_and_tls_records(start_helper, site) -> None:
    hosts = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else ""
    if not any(line.split()[:2] == ["127.0.0.1", "localhost"] for line in hosts.splitlines()):
        pytest.skip("localhost is not in /etc/hosts")
    base = await start_helper(allow_private=True, probe=lab_config(system_resolver=True, ports=(site,)))
    async with ControlClient(base, timeout=10) as client:
        result = await client.measure(f"https://localhost:{site}/", [])
    assert result.failure is None, result.raw
    assert [type(q) for q in result.dns] == [DnsQuery]
    assert "127.0.0.1" in result.dns[0].addresses()
    # a plain-HTTP server on a TLS port: the handshake fails, and that is data
    assert result.tls and all(isinstance(t, TlsHandshake) and not t.success for t in result.tls)


async def test_client_unreachable_helper() -> None:
    base = f"http://127.0.0.1:{closed_port()}"
    async with ControlClient(base, timeout=3) as client:
        result = await client.measure("http://example.com/", ["127.0.0.1"])
        assert result.failure == F.CONTROL_UNAVAILABLE
        assert result.control_url == base
        assert result.dns == result.tcp == result.tls == result.http == []
        assert result.raw is not None
        assert set(result.raw) == {"error", "reason", "attempts"} and result.raw["error"]
        assert result.reason == result.raw["reason"] == "unreachable"
        with pytest.raises(ControlUnavailable) as info:
            await client.health()
    assert "\n" not in str(info.value)


async def test_client_refused_request_is_unavailable(start_helper) -> None:
    base = await start_helper(allow_private=False)
    async with ControlClient(base, timeout=5) as client:
        result = await client.measure("http://127.0.0.1/", [])
    assert result.failure == F.CONTROL_UNAVAILABLE
    assert result.raw is not None
    assert "403" in result.raw["error"] and "127.0.0.1" in result.raw["error"]


async def test_client_timeout_and_garbage_answers(silent) -> None:
    async with ControlClient(f"http://127.0.0.1:{silent}", timeout=0.5) as client:
        result = await client.measure("http://example.com/", [])
    assert result.failure == F.CONTROL_UNAVAILABLE
    assert result.raw is not None
    assert "timed out" in result.raw["error"]

    seen: dict[str, str] = {}

    async def garbage(request: web.Request) -> web.Response:
        if request.method == "POST":
            seen["ua"] = request.headers.get("User-Agent", "")
            seen["body"] = await request.text()
        return web.Response(text="<html>not json</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/v1/measure", garbage)
    app.router.add_get("/health", garbage)
    async with serve(app) as port:
        async with ControlClient(f"http://127.0.0.1:{port}", timeout=5) as client:
            result = await client.measure("http://example.com/", ["8.8.8.8"])
            with pytest.raises(ControlUnavailable):
                await client.health()
    assert result.failure == F.CONTROL_UNAVAILABLE
    assert result.raw is not None
    assert "not JSON" in result.raw["error"]
    assert seen["ua"] == USER_AGENT == f"bynet-probe/{__version__}"
    assert json.loads(seen["body"]) == {"url": "http://example.com/", "addresses": ["8.8.8.8"]}


# --------------------------------------------------------------------------- the CLI


def test_cli_help_mentions_the_lab() -> None:
    result = CliRunner().invoke(control_group, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "--allow-private" in text
    assert "lab" in text
    assert "loopback" in text and "private" in text
    assert "Never use it on a public server" in text
    for opt in ("--host", "--port", "--ca-file", "--resolver", "--rate-per-minute", "--concurrency"):
        assert opt in text


def test_cli_rejects_bad_resolver() -> None:
    result = CliRunner().invoke(control_group, ["serve", "--resolver", "not-an-ip"])
    assert result.exit_code != 0
    assert "IP[:PORT]" in result.output


async def test_cli_serves_and_stops_on_sigterm() -> None:
    code = "from probe.cli.control import control_group; control_group()"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "serve", "--host", "127.0.0.1", "--port", "0", "--resolver", "127.0.0.1:9",
        cwd=str(REPO),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None  # stdout=PIPE
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        assert "listening on http://127.0.0.1:" in line
        url = line.split("listening on ")[1].split()[0]
        async with aiohttp.ClientSession() as s:
            async with s.get(url + "/health") as resp:
                assert (await resp.json())["allow_private"] is False
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_behind_a_proxy_limits_follow_the_forwarded_client(site) -> None:
    """Two volunteers through one reverse proxy (127.0.0.1) are two clients."""
    from probe.helper.server import serve_helper

    config = HelperConfig(allow_private=True, behind_proxy=True, burst=1, rate_per_minute=1, probe=lab_config())
    async with serve_helper(config) as helper, aiohttp.ClientSession() as s:
        base = f"http://127.0.0.1:{helper.port}/v1/measure"
        payload = {"url": f"http://127.0.0.1:{site}/"}
        statuses = []
        for forwarded in ("203.0.113.5", "198.51.100.7", "203.0.113.5"):
            async with s.post(base, json=payload, headers={"X-Forwarded-For": f"10.0.0.1, {forwarded}"}) as resp:
                statuses.append(resp.status)
    # one a minute each: the first request of each volunteer passes, the second of the first does not
    assert statuses == [200, 200, 429]
