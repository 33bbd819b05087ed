"""OONI's test-helper protocol, both ways, against OONI's real code.

* Our probe with OONI's `oohelperd` as its control (`--control ooni+http://...`).
* OONI's own web_connectivity engine (`wcrun`, v0.4 and v0.5, built from probe-cli)
  with our helper as its test helper: OONI must reach the same conclusion for every
  URL as with `oohelperd`.

The binaries are tools of the workplace, not of the project (../shared/tools/ooni, see
its README): found through $OONI_TOOLS, a `shared/tools/ooni` beside the repository or
one of its parents, or /work/shared/tools/ooni; the tests skip, saying so, without them.
Everything runs on loopback (OONI_LAB_NONBOGON=127.0.0.0/8 lets OONI measure there).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import aiohttp
import pytest
from clirun import QUIET, probe, rows
from servers import Answer, DnsServer, WebServer, site_app, unused_port

from probe.core import failures as F
from probe.core.records import ControlResult, DnsQuery, HttpRequest, TcpConnect
from probe.helper.server import serve_helper
from probe.helper.service import HelperConfig
from probe.measure.url import ProbeConfig
from probe.ooni.th import THRequestError, parse_th_request, th_answer, th_request, th_response_to_control

ROOT = Path(__file__).resolve().parent.parent
LAB_ENV = {"OONI_LAB_NONBOGON": "127.0.0.0/8", "OOHELPERD_RESOLVER": "system"}


def ooni_tools() -> Path | None:
    candidates = [os.environ.get("OONI_TOOLS")]
    candidates += [str(p / "shared" / "tools" / "ooni") for p in ROOT.parents]
    candidates.append("/work/shared/tools/ooni")
    for c in candidates:
        if c and (Path(c) / "oohelperd").is_file() and (Path(c) / "wcrun").is_file():
            return Path(c)
    return None


TOOLS = ooni_tools()
needs_ooni = pytest.mark.skipif(TOOLS is None, reason="OONI's oohelperd and wcrun (../shared/tools/ooni, or "
                                                      "$OONI_TOOLS) are not on this machine")


@pytest.fixture
async def oohelperd():
    """OONI's test helper on loopback; its base URL."""
    assert TOOLS is not None  # needs_ooni
    port, pprof = unused_port(), unused_port()
    proc = subprocess.Popen([str(TOOLS / "oohelperd"), "-api-endpoint", f"127.0.0.1:{port}",
                             "-pprof-endpoint", f"127.0.0.1:{pprof}"],
                            env={**os.environ, **LAB_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(100):
                try:
                    async with s.get(base + "/") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("oohelperd did not start")
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
async def world():
    """A site on loopback, a DNS server that knows `localhost` (for our probe and our
    helper; oohelperd reads /etc/hosts), and a port where nothing listens."""
    async with DnsServer({"localhost": Answer(a=["127.0.0.1"])}) as dns, \
            WebServer(site_app(title="Interop site")) as web:
        yield {"dns": dns, "urls": {"ok": f"http://127.0.0.1:{web.port}/", "by_name": f"http://localhost:{web.port}/",
                                    "down": f"http://127.0.0.1:{unused_port()}/"}}


@needs_ooni
async def test_our_probe_with_oohelperd_as_its_control(tmp_path, world, oohelperd):
    urls = world["urls"]
    targets = tmp_path / "t.txt"
    targets.write_text("".join(u + "\n" for u in urls.values()))
    db = tmp_path / "p.db"
    rc, _, err = await probe("run", "--targets", str(targets), "--db", str(db), "--control", f"ooni+{oohelperd}/",
                             "--resolver", world["dns"].address, "--lab-network", "127.0.0.0/8", *QUIET)
    assert rc == 0, err
    assert "OONI's test-helper protocol" in err
    controls = rows(db, "select m.url, c.control_url, c.failure from control_results c join measurements m "
                        "using (measurement_id)")
    assert {(u, c, f) for u, c, f in controls} == {(u, f"ooni+{oohelperd}", None) for u in urls.values()}
    verdicts = dict(rows(db, "select m.url, v.verdict from verdicts v join measurements m using (measurement_id)"))
    assert verdicts == {urls["ok"]: "ok", urls["by_name"]: "ok", urls["down"]: "down"}
    # the control's records came from OONI's answer: its DNS for the name, its fetch
    dns_rows = rows(db, "select a.value from dns_answers a join measurements m using (measurement_id) "
                        "where a.side = 'control' and m.url = ?", [urls["by_name"]])
    assert ("127.0.0.1",) in dns_rows
    title = rows(db, "select h.title from http_requests h join measurements m using (measurement_id) "
                     "where h.side = 'control' and m.url = ?", [urls["ok"]])
    assert title == [("Interop site",)]


async def run_wcrun(helper: str, version: str, urls: list[str], out: Path) -> dict[str, dict]:
    assert TOOLS is not None  # needs_ooni
    proc = await asyncio.create_subprocess_exec(
        str(TOOLS / "wcrun"), "-th", helper + "/", "-exp", version, "-o", str(out), *urls,
        env={**os.environ, **LAB_ENV}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    text, _ = await asyncio.wait_for(proc.communicate(), 120)
    results = {}
    for line in text.decode().splitlines():
        if line.startswith("RESULT\t"):
            fields = line.split("\t")
            results[fields[1]] = dict(f.split("=", 1) for f in fields[2:] if "=" in f)
    assert len(results) == len(urls), text.decode()[-2000:]
    return results


@needs_ooni
@pytest.mark.parametrize("version", ["v0.4", "v0.5"])
async def test_ooni_probe_with_our_helper_concludes_as_with_its_own(tmp_path, world, oohelperd, version):
    urls = list(world["urls"].values())
    config = HelperConfig(allow_private=True, probe=ProbeConfig(resolvers=[world["dns"].address],
                                                                system_resolver=False))
    async with serve_helper(config) as ours:
        with_ours = await run_wcrun(f"http://127.0.0.1:{ours.port}", version, urls, tmp_path / "ours.jsonl")
    with_theirs = await run_wcrun(oohelperd, version, urls, tmp_path / "theirs.jsonl")
    keys = ("blocking", "accessible", "dns_consistency", "control_failure", "x_blocking_flags", "x_dns_flags")
    for url in urls:
        assert with_ours[url]["control_failure"] == "<nil>", with_ours[url]
        assert {k: with_ours[url].get(k) for k in keys} == {k: with_theirs[url].get(k) for k in keys}, url
    if version == "v0.4":
        assert with_ours[world["urls"]["ok"]]["accessible"] == "true"
    # OONI's measurement holds our answer as its control, in OONI's shape
    docs = [json.loads(line) for line in (tmp_path / "ours.jsonl").read_text().splitlines()]
    ok = next(d for d in docs if d["input"] == world["urls"]["ok"])
    assert ok["test_keys"]["control"]["http_request"]["title"] == "Interop site"


# --- the protocol, piece by piece -------------------------------------------------------------


def test_th_request_is_what_an_ooni_probe_posts():
    req = th_request("https://charter97.org/news", ["1.2.3.4", "2001:db8::1"])
    assert req["http_request"] == "https://charter97.org/news"
    assert req["tcp_connect"] == ["1.2.3.4:443", "[2001:db8::1]:443"]
    assert set(req["http_request_headers"]) == {"User-Agent", "Accept", "Accept-Language"}
    assert parse_th_request(json.dumps(req).encode())[:2] == ("https://charter97.org/news", ["1.2.3.4", "2001:db8::1"])


@pytest.mark.parametrize("body,fragment", [
    (b"not json", "not valid JSON"),
    (b"[]", "JSON object"),
    (b'{"tcp_connect": []}', "http_request"),
    (b'{"http_request": "http://x/", "tcp_connect": "1.2.3.4:80"}', "tcp_connect"),
    (b'{"http_request": "http://x/", "tcp_connect": ["example.com:80"]}', "ip:port"),
    (b'{"http_request": "http://x/", "http_request_headers": {"User-Agent": ["a\\nb"]}}', "header"),
    (json.dumps({"http_request": "http://x/", "tcp_connect": [f"1.2.3.{i}:80" for i in range(40)]}).encode(),
     "too many"),
])
def test_a_bad_th_request_is_refused_with_a_reason(body, fragment):
    with pytest.raises(THRequestError) as info:
        parse_th_request(body)
    assert fragment in str(info.value)


def test_unknown_th_request_keys_are_ignored_and_only_three_headers_forwarded():
    url, addresses, headers = parse_th_request(json.dumps({
        "http_request": "http://x.example/", "tcp_connect": ["1.2.3.4:80"], "x_quic_enabled": True,
        "x_future_key": {"a": 1}, "http_request_headers": {"user-agent": ["ooniprobe"], "Cookie": ["secret"]},
    }).encode())
    assert (url, addresses, headers) == ("http://x.example/", ["1.2.3.4"], {"User-Agent": "ooniprobe"})


def test_th_answer_uses_oohelperds_names_and_endpoints():
    t = "2026-12-01T00:00:00Z"
    c = ControlResult("", t, 0.0)
    c.dns = [DnsQuery("udp", "1.1.1.1:53", "x.example", "A", t, 1.0, failure=F.DNS_NXDOMAIN)]
    c.tcp = [TcpConnect("1.2.3.4", 80, t, 1.0, False, F.CONNECTION_REFUSED),
             TcpConnect("1.2.3.4", 443, t, 1.0, False, F.CONNECTION_RESET),
             TcpConnect("1.2.3.4", 8080, t, 1.0, False, F.GENERIC_TIMEOUT)]
    c.http = [HttpRequest("http://x.example/", "main", 0, t, 1.0, failure=F.NO_ADDRESSES)]
    answer = th_answer(c, "http://x.example/", {"1.2.3.4": {"resolved_by_probe": True, "public": True}})
    assert answer["dns"] == {"failure": "dns_name_error", "addrs": []}
    # http: 80 and 443 only; refused keeps its legacy name, anything else is connect_error
    assert answer["tcp_connect"] == {"1.2.3.4:80": {"status": False, "failure": "connection_refused_error"},
                                     "1.2.3.4:443": {"status": False, "failure": "connect_error"}}
    assert answer["http_request"]["failure"] == "dns_lookup_error" and answer["http_request"]["status_code"] == -1
    assert answer["ip_info"] == {"1.2.3.4": {"asn": 0, "flags": 1}}


def test_a_th_response_becomes_our_control():
    data = {"tcp_connect": {"1.2.3.4:443": {"status": True, "failure": None}},
            "tls_handshake": {"1.2.3.4:443": {"server_name": "x.example", "status": True, "failure": None}},
            "http_request": {"body_length": 10, "failure": None, "title": "X", "headers": {"Server": "s"},
                             "status_code": 200},
            "dns": {"failure": None, "addrs": ["1.2.3.4"]}}
    c = th_response_to_control(data, "https://x.example/", "ooni+https://th.example")
    assert c.failure is None and c.raw == data and c.control_url == "ooni+https://th.example"
    assert [a.value for q in c.dns for a in q.answers] == ["1.2.3.4"]
    assert c.tls[0].cert_valid and c.http[0].status == 200 and c.http[0].title == "X"
    with pytest.raises(ValueError):
        th_response_to_control({"hello": 1}, "https://x.example/", "ooni+https://th.example")


async def test_our_helper_answers_ooni_requests_and_health(world):
    config = HelperConfig(allow_private=True, probe=ProbeConfig(resolvers=[world["dns"].address],
                                                                system_resolver=False))
    async with serve_helper(config) as helper, aiohttp.ClientSession() as s:
        base = f"http://127.0.0.1:{helper.port}"
        async with s.get(base + "/") as resp:
            assert (await resp.json())["message"] == "Hello OONItarian!"
        async with s.post(base + "/", json=th_request(world["urls"]["by_name"], ["127.0.0.1"])) as resp:
            assert resp.status == 200
            answer = await resp.json()
        async with s.post(base + "/", data=b'{"tcp_connect": 3}') as resp:
            assert resp.status == 400 and "http_request" in (await resp.json())["error"]
    assert answer["dns"] == {"failure": None, "addrs": ["127.0.0.1"]}
    assert answer["http_request"]["title"] == "Interop site" and answer["http_request"]["status_code"] == 200
    assert set(answer) >= {"tcp_connect", "tls_handshake", "http_request", "dns", "ip_info"}

