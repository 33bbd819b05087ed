"""Privacy in stored data: targets that are not public websites (``probe.targets.safety``)
are warned about and measured only with --allow-private-targets, and the volunteer's own
public address is replaced in everything page-derived before it is stored
(``probe.core.scrub``)."""

from __future__ import annotations

import gzip
import hashlib
import ipaddress
import json
import socket
import sqlite3
from pathlib import Path

import pytest
from aiohttp import web
from clirun import QUIET, probe, rows
from conftest import lab_config
from hypothesis import given
from hypothesis import strategies as st
from servers import Answer, Behaviour, DnsServer, Txt, WebServer, site_app

from probe import store
from probe.core.i18n import set_language
from probe.core.records import ControlResult, DnsAnswer, DnsQuery, HttpRequest, Measurement
from probe.core.scrub import PLACEHOLDER, Scrubber, scrub_measurement, spellings
from probe.measure.http import FetchOptions, fetch_http, new_session
from probe.measure.plan import config_from_json, config_to_json, next_run_after_change, plan_new_run, recall_own_address
from probe.measure.runner import run_targets
from probe.measure.tls import make_ssl_context
from probe.measure.url import ProbeConfig
from probe.measure.vantage import Vantage, lookup_vantage
from probe.targets import safety
from probe.targets.lists import load_targets, parse_url
from probe.targets.safety import (
    CODES,
    LINK_LOCAL,
    LOCAL_NAME,
    LOOPBACK,
    METADATA,
    MIXED_SCRIPT,
    PRIVATE,
    RESERVED,
    UNSPECIFIED,
    host_risks,
    inet_aton,
    label_scripts,
    risky_targets,
    target_risks,
)

# --- which targets are risky ------------------------------------------------------------

RISKY = [
    # loopback, in every spelling a URL parser or getaddrinfo accepts
    ("http://127.0.0.1/", LOOPBACK),
    ("http://127.0.0.1:8080/x?y#z", LOOPBACK),
    ("http://127.255.255.254/", LOOPBACK),
    ("http://[::1]/", LOOPBACK),
    ("http://[::1]:631/", LOOPBACK),
    ("http://[0:0:0:0:0:0:0:1]/", LOOPBACK),
    ("http://[::ffff:127.0.0.1]/", LOOPBACK),  # IPv4-mapped
    ("http://[::FFFF:7F00:1]/", LOOPBACK),
    ("http://[64:ff9b::7f00:1]/", LOOPBACK),  # NAT64
    ("http://[2002:7f00:1::1]/", LOOPBACK),  # 6to4
    ("http://localhost/", LOOPBACK),
    ("http://LOCALHOST:3000/", LOOPBACK),
    ("http://localhost./", LOOPBACK),
    ("http://app.localhost/", LOOPBACK),
    ("http://0x7f000001/", LOOPBACK),  # inet_aton's hex, decimal, octal and short forms
    ("http://0X7F.0.0.1/", LOOPBACK),
    ("http://2130706433/", LOOPBACK),
    ("http://0177.0.0.1/", LOOPBACK),
    ("http://127.1/", LOOPBACK),
    ("http://127.0.1/", LOOPBACK),
    ("http://127.0.0.1./", LOOPBACK),
    ("127.0.0.1:8080", LOOPBACK),  # a bare host[:port]
    # unspecified: reaches this computer too
    ("http://0.0.0.0/", UNSPECIFIED),
    ("http://0.1.2.3/", UNSPECIFIED),
    ("http://0/", UNSPECIFIED),
    ("http://[::]/", UNSPECIFIED),
    # private
    ("http://10.0.0.1/", PRIVATE),
    ("http://172.16.0.1/", PRIVATE),
    ("http://172.31.255.255/", PRIVATE),
    ("http://192.168.1.1/", PRIVATE),
    ("https://192.168.1.1:8443/admin", PRIVATE),
    ("http://[fd12:3456::1]/", PRIVATE),
    ("http://[fc00::1]/", PRIVATE),
    ("http://[fec0::1]/", PRIVATE),
    ("http://[::ffff:192.168.0.1]/", PRIVATE),
    ("http://100.64.0.1/", PRIVATE),  # the ISP's carrier-grade NAT
    ("http://100.127.255.254/", PRIVATE),
    ("http://0xc0a80001/", PRIVATE),
    # link-local
    ("http://169.254.1.1/", LINK_LOCAL),
    ("http://[fe80::1]/", LINK_LOCAL),
    ("http://[fe80::1%25eth0]/", LINK_LOCAL),
    ("http://[FE80::ABCD]:80/", LINK_LOCAL),
    # cloud metadata services, before their ranges
    ("http://169.254.169.254/latest/meta-data/", METADATA),
    ("http://169.254.170.2/v2/credentials", METADATA),
    ("http://[fd00:ec2::254]/", METADATA),
    ("http://100.100.100.200/latest/meta-data/", METADATA),
    ("http://192.0.0.192/", METADATA),
    ("http://metadata.google.internal/computeMetadata/v1/", METADATA),
    ("http://METADATA.GOOGLE.INTERNAL./", METADATA),
    ("http://metadata/", METADATA),
    ("http://[::ffff:169.254.169.254]/", METADATA),
    ("http://[::ffff:a9fe:a9fe]/", METADATA),
    ("http://0xa9fea9fe/", METADATA),
    ("http://2852039166/", METADATA),
    # other addresses that are no website on the open internet
    ("http://224.0.0.1/", RESERVED),
    ("http://255.255.255.255/", RESERVED),
    ("http://240.0.0.1/", RESERVED),
    ("http://192.0.2.1/", RESERVED),
    ("http://198.18.0.1/", RESERVED),
    ("http://[ff02::1]/", RESERVED),
    ("http://[2001:db8::1]/", RESERVED),
    # names only a local network answers
    ("http://printer.local/", LOCAL_NAME),
    ("http://nas.home.arpa/", LOCAL_NAME),
    ("http://git.corp.internal/", LOCAL_NAME),
    ("http://router.lan/", LOCAL_NAME),
    ("http://box.localdomain/", LOCAL_NAME),
    ("http://router/", LOCAL_NAME),
    ("http://Router./", LOCAL_NAME),
    # look-alike names: scripts mixed in one label
    ("https://xn--pple-43d.com/", MIXED_SCRIPT),  # Cyrillic а + "pple"
    ("https://раураl.com/", MIXED_SCRIPT),
    ("https://РАУРАL.COM/", MIXED_SCRIPT),
    ("https://charter97.xn--rg-qmc.by/", MIXED_SCRIPT),  # "οrg", a Greek omicron
    ("https://www.gοogle.com./", MIXED_SCRIPT),
]

PUBLIC = [
    "https://charter97.org/",
    "https://CHARTER97.ORG:443/",
    "https://www.svaboda.org./",
    "http://8.8.8.8/",
    "http://1.1.1.1:53/",
    "http://[2001:4860:4860::8888]/",
    "http://[::ffff:8.8.8.8]/",  # mapped, but a public address
    "http://[2002:808:808::1]/",  # 6to4 of a public address
    "https://наша-ніва.бел/",  # one script, Cyrillic: fine
    "https://xn--80aaxitdbjk.xn--90ais/",  # the same as punycode
    "https://xn----7sbbfclg3a1a.xn--90ais/",
    "https://ελληνικά.gr/",
    "https://日本語ひらがなカタカナ.jp/",  # Japanese: Han and kana together
    "https://한국어漢字.kr/",
    "https://abc日本.jp/",  # Latin with Han: Japanese and Chinese write so
    "https://a-1.example.org/",
    "https://blocked.lab.test/",  # the test suite's own names
    "http://127.0.0.1.nip.io/",  # a public name: what DNS answers is evidence, not the target
    "https://0x.org/",
    "https://1e100.net/",
    "https://xn--invalid-punycode-.com/",  # not decodable: the list parser refuses it, not us
]


@pytest.mark.parametrize(("url", "code"), RISKY)
def test_risky_targets_are_named_with_a_code_and_a_plain_reason(url, code):
    risks = target_risks(url)
    assert [r.code for r in risks] == [code], risks
    (risk,) = risks
    assert risk.why and "\n" not in risk.why and risk.host and "[" not in risk.host
    assert not risk.host.endswith(".") and risk.host == risk.host.lower()


@pytest.mark.parametrize("url", PUBLIC)
def test_public_websites_are_not(url):
    assert target_risks(url) == []


@pytest.mark.parametrize(("url", "code"), [(u, c) for u, c in RISKY if "://" in u])
def test_the_rule_holds_for_urls_as_the_list_parser_writes_them(url, code):
    try:
        normalised = parse_url(url)
    except ValueError:
        pytest.skip("the list parser refuses this spelling")
    assert [r.code for r in target_risks(normalised)] == [code], normalised


def test_numeric_spellings_say_which_address_they_are():
    (risk,) = target_risks("http://0x7f000001/")
    assert "0x7f000001 is 127.0.0.1" in risk.why
    (risk,) = target_risks("http://[::ffff:127.0.0.1]/")
    assert "IPv6" in risk.why


def test_hosts_in_a_lab_network_stand_for_the_open_internet():
    lab = ["10.77.0.0/16", "fd77::/48"]
    assert target_risks("http://10.77.1.2/", lab) == []
    assert target_risks("http://[fd77::2]/", lab) == []
    assert target_risks("http://[::ffff:10.77.1.2]/", lab) == []
    assert [r.code for r in target_risks("http://10.78.1.2/", lab)] == [PRIVATE]
    assert [r.code for r in target_risks("http://127.0.0.1/", lab)] == [LOOPBACK]
    assert target_risks("http://127.0.0.1/", ["127.0.0.0/8"]) == []
    assert target_risks("http://localhost:8080/", ["127.0.0.0/8"]) == []  # the loopback address by definition
    assert [r.code for r in target_risks("http://localhost:8080/", lab)] == [LOOPBACK]
    assert target_risks("http://127.0.0.1/", [ipaddress.ip_network("127.0.0.0/8")]) == []
    assert [r.code for r in target_risks("http://127.0.0.1/", ["not a cidr"])] == [LOOPBACK]


def test_no_host_no_risk():
    assert target_risks("") == [] and target_risks("http:///x") == [] and host_risks("  ") == []
    assert target_risks("http://[::1/") == []  # urlsplit refuses it; the list parser would have


@given(st.lists(st.one_of(st.integers(0, 0xFFFFFFFF).map(str),
                          st.integers(0, 0xFFFFFFFF).map(hex),
                          st.integers(0, 255).map(lambda n: f"0{n:o}"),
                          st.integers(0, 300).map(str)), min_size=1, max_size=4).map(".".join))
def test_inet_aton_reads_numbers_as_the_c_library_does(host):
    try:
        expected: ipaddress.IPv4Address | None = ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        expected = None
    assert inet_aton(host) == expected


def test_scripts_of_labels():
    assert label_scripts("раураl") == ["Cyrillic", "Latin"]
    assert label_scripts("наша-ніва") == ["Cyrillic"]
    assert label_scripts("charter97") == ["Latin"]
    assert label_scripts("日本語ひらがなカタカナー") == ["Han", "Hiragana", "Katakana"]
    assert label_scripts("ｆｕｌｌ") == ["Latin"]  # full-width letters are Latin letters
    assert label_scripts("12-3") == []


def test_every_code_has_short_words():
    assert set(safety.SHORT) == set(CODES)


def test_the_refusal_is_one_line_with_the_count_the_first_hosts_and_the_flag():
    urls = ["https://charter97.org/", "http://127.0.0.1:8080/", "http://192.168.1.1/", "https://раураl.com/",
            "http://printer.local/", "http://[::1]/"]
    risky = risky_targets(urls)
    assert [u for u, _ in risky] == urls[1:]
    line = safety.refusal(risky, listed_in="t.txt")
    assert "\n" not in line
    assert line.startswith("5 targets are not ordinary public websites: 127.0.0.1 (this computer), "
                           "192.168.1.1 (local network), раураl.com (look-alike name) and 2 more")
    assert "probe targets lint t.txt" in line and "--allow-private-targets" in line
    one = safety.refusal(risky[:1])
    assert one.startswith("1 target is not an ordinary public website: 127.0.0.1 (this computer).")


def test_warnings_are_one_per_target_then_a_count():
    risky = risky_targets([f"http://10.0.0.{i}/" for i in range(1, 26)])
    lines = safety.warnings(risky, limit=10)
    assert len(lines) == 11 and lines[0].startswith("http://10.0.0.1/ is not an ordinary public website: a private")
    assert lines[-1] == "15 more targets are not ordinary public websites (see `probe targets lint`)"


def test_the_messages_are_translatable():
    try:
        set_language("be")
        assert target_risks("http://127.0.0.1/")[0].code == LOOPBACK
        assert "--allow-private-targets" in safety.refusal(risky_targets(["http://127.0.0.1/"]))
    finally:
        set_language("en")


# --- the volunteer's address in what pages show ------------------------------------------

IP = "198.51.100.7"
ECHO = f"your address: {IP}"


def test_every_spelling_of_an_address():
    assert spellings(IP) == [IP, "198-51-100-7", "7.100.51.198", "7-100-51-198"]
    assert spellings("2001:db8::1") == ["2001:db8::1", "2001:db8:0:0:0:0:0:1",
                                        "2001:0db8:0000:0000:0000:0000:0000:0001"]
    assert spellings("[2001:DB8::1]")[0] == "2001:db8::1"
    assert spellings("example.org") == [] and spellings("") == []


@pytest.mark.parametrize(("text", "expected"), [
    (ECHO, f"your address: {PLACEHOLDER}"),
    (f"{IP}.", f"{PLACEHOLDER}."),
    (f"ip={IP}&x", f"ip={PLACEHOLDER}&x"),
    ("mm-7-100-51-198.mgts.dynamic.pppoe.byfly.by", f"mm-{PLACEHOLDER}.mgts.dynamic.pppoe.byfly.by"),
    ("host-198-51-100-7.example.net", f"host-{PLACEHOLDER}.example.net"),
    ("7.100.51.198.in-addr.arpa", f"{PLACEHOLDER}.in-addr.arpa"),
    (f"[{IP}]:80 and ::ffff:{IP}", f"[{PLACEHOLDER}]:80 and ::ffff:{PLACEHOLDER}"),
    (f"{IP}{IP}", f"{IP}{IP}"),  # "7198": a longer number, left alone
    # another address that contains it, or is contained in it: left alone
    ("198.51.100.70", "198.51.100.70"),
    ("1198.51.100.7", "1198.51.100.7"),
    ("8.198.51.100.7", "8.198.51.100.7"),
    ("198.51.100.7.5", "198.51.100.7.5"),
    ("198.51.100.71 198.51.100.17", "198.51.100.71 198.51.100.17"),
])
def test_an_ipv4_address_is_replaced_where_it_stands_alone(text, expected):
    assert Scrubber([IP]).text(text) == expected
    assert Scrubber([IP]).data(text.encode()) == expected.encode()


@pytest.mark.parametrize(("text", "expected"), [
    ("2001:db8::1", PLACEHOLDER),
    ("2001:DB8::1", PLACEHOLDER),
    ("[2001:db8::1]:443", f"[{PLACEHOLDER}]:443"),
    ("2001:0db8:0000:0000:0000:0000:0000:0001", PLACEHOLDER),
    ("2001:db8:0:0:0:0:0:1 is you", f"{PLACEHOLDER} is you"),
    ("2001:db8::10", "2001:db8::10"),
    ("2001:db8::1:5", "2001:db8::1:5"),
    ("12001:db8::1", "12001:db8::1"),
])
def test_an_ipv6_address_in_every_written_form(text, expected):
    assert Scrubber(["2001:db8::1"]).text(text) == expected


def test_without_an_address_nothing_changes():
    assert not Scrubber() and not Scrubber(["not an ip", ""])
    assert Scrubber().text(ECHO) == ECHO and Scrubber().data(ECHO.encode()) == ECHO.encode()
    stream = Scrubber().stream()
    assert stream.feed(b"abc") + stream.finish() == b"abc"
    assert Scrubber([IP]).text(None) is None
    assert Scrubber([IP, "2001:db8::1"]).text(f"{IP} 2001:db8::1") == f"{PLACEHOLDER} {PLACEHOLDER}"


_PIECES = st.sampled_from([IP, "198-51-100-7", "7.100.51.198", "198.51.100.70", "1", ".", "-", "x", " ", "9",
                           "2001:db8::1", ":", "a"])


@given(st.lists(_PIECES, max_size=40).map("".join), st.lists(st.integers(1, 17), min_size=1, max_size=60))
def test_a_body_scrubbed_as_it_streams_in_is_the_body_scrubbed_whole(body, cuts):
    scrubber = Scrubber([IP, "2001:db8::1"])
    data = body.encode()
    stream, out, pos, i = scrubber.stream(), [], 0, 0
    while pos < len(data):
        size = cuts[i % len(cuts)]
        out.append(stream.feed(data[pos:pos + size]))
        pos, i = pos + size, i + 1
    out.append(stream.finish())
    assert b"".join(out) == scrubber.data(data)


def _http(url: str, hop: int, kind: str = "main", **kw) -> HttpRequest:
    return HttpRequest(url, kind, hop, "2026-01-01T00:00:00Z", 1.0, **kw)


def test_every_page_derived_field_of_a_measurement_is_scrubbed_and_nothing_else():
    target = f"http://site.example/?as={IP}"  # a target is what the list says: kept
    m = Measurement(target, "site.example", "http", 80, "2026-01-01T00:00:00Z")
    m.dns = [DnsQuery("udp", "10.0.0.53:53", "site.example", "A", "t", 1.0,
                      answers=[DnsAnswer("A", IP)])]  # an answer is the network's evidence: kept
    m.http = [
        _http(target, 0, status=302, reason=f"Moved for {IP}", location=f"/next?ip={IP}",
              headers=[["Location", f"/next?ip={IP}"], ["X-Client-IP", IP], [f"X-{IP}", "1"]]),
        _http(f"http://site.example/next?ip={IP}", 1, status=200, title=f"You are {IP}",
              body_head=f"<title>You are {IP}</title>".encode()),
        _http(f"http://{IP}/", 0, "http_fallback"),  # a request of the probe's own: kept
    ]
    m.control = ControlResult("http://helper", "t", 1.0, http=[
        _http(target, 0, headers=[["X-Forwarded-For", IP]], body_head=ECHO.encode())],
        raw={"client": IP, IP: [IP, 1, None]})
    scrub_measurement(m, Scrubber([IP]))
    first, second, fallback = m.http
    assert first.url == target and first.reason == f"Moved for {PLACEHOLDER}"
    assert first.location == f"/next?ip={PLACEHOLDER}"
    assert first.headers == [["Location", f"/next?ip={PLACEHOLDER}"], ["X-Client-IP", PLACEHOLDER],
                             [f"X-{PLACEHOLDER}", "1"]]
    assert second.url == f"http://site.example/next?ip={PLACEHOLDER}" and second.title == f"You are {PLACEHOLDER}"
    assert second.body_head == f"<title>You are {PLACEHOLDER}</title>".encode()
    assert fallback.url == f"http://{IP}/"
    assert m.dns[0].answers[0].value == IP and m.url == target
    assert m.control.http[0].headers == [["X-Forwarded-For", PLACEHOLDER]]
    assert m.control.http[0].body_head == f"your address: {PLACEHOLDER}".encode()
    assert m.control.raw == {"client": PLACEHOLDER, PLACEHOLDER: [PLACEHOLDER, 1, None]}


def test_the_address_is_never_part_of_the_stored_configuration():
    config = ProbeConfig(resolvers=[], scrub_own_address=True, own_addresses=[IP])
    text = config_to_json(config)
    assert IP not in text and "own_addresses" not in text
    back = config_from_json(text)
    assert back.scrub_own_address is True and back.own_addresses == []
    assert config.fetch_options().scrubber and not back.fetch_options().scrubber
    assert not ProbeConfig(resolvers=[], own_addresses=[IP]).scrubber()  # off unless the run asked


def _echo_app(body_size: int = 200_000) -> web.Application:
    """Pages that echo the visitor's address the ways real ones do: the body (near its
    start, across read chunks, past the kept part), a header, the title, the reason
    phrase and a redirect."""

    async def echo(request: web.Request) -> web.Response:
        head = f"<html><head><title>Your IP: {IP}</title></head><body>{ECHO}<br>".encode()
        # one across the end of the kept part (64 KiB of the scrubbed body, where the two
        # placeholders before have made it 4 bytes shorter), and of the first read
        filler = b"x" * (64 * 1024 - (len(head) - 4) - 8) + f" {IP} ".encode()
        body = head + filler + b"y" * (body_size - len(head) - len(filler) - 20) + f" {IP}</body>".encode()
        return web.Response(body=body, content_type="text/html", reason=f"OK {IP}",
                            headers={"X-Your-Address": IP, "Set-Cookie": f"seen={IP.replace('.', '-')}"})

    async def start(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"/echo?from={IP}")

    async def tiny(request: web.Request) -> web.Response:
        return web.Response(text=IP)  # what ipify.org answers: a hash of it alone would give it away

    app = web.Application()
    app.router.add_get("/", start)
    app.router.add_get("/echo", echo)
    app.router.add_get("/tiny", tiny)
    return app


async def test_the_body_is_scrubbed_as_it_streams_so_its_hash_and_title_never_hold_the_address():
    async with WebServer(_echo_app()) as srv:
        opts = FetchOptions(timeout=5, scrubber=Scrubber([IP]))
        session = new_session({}, make_ssl_context(), opts)
        try:
            first, second = await fetch_http(session, srv.url("/"), opts)
            (tiny,) = await fetch_http(session, srv.url("/tiny"), opts)
        finally:
            await session.close()
    assert first.status == 302 and second.status == 200 and second.url.endswith(f"/echo?from={IP}")  # followed as sent
    assert second.title == f"Your IP: {PLACEHOLDER}"
    assert second.body_head is not None and IP.encode() not in second.body_head
    assert second.body_head.count(PLACEHOLDER.encode()) == 2 and len(second.body_head) == 64 * 1024
    assert second.body_head.endswith(b"x [probe-")  # no part of the address where the kept part ends
    assert second.body_length == 200_000  # the bytes that came
    assert tiny.body_head == PLACEHOLDER.encode()
    assert tiny.body_sha256 == hashlib.sha256(PLACEHOLDER.encode()).hexdigest()


NAMES = {"myip": "myip.lab.test", "origin": "origin.lab.test", "origin6": "origin6.lab.test", "asn": "asn.lab.test"}
ZONE: dict[str, Behaviour] = {
    "myip.lab.test": Answer(a=[IP]),
    "7.100.51.198.origin.lab.test": Txt(["6697 | 198.51.100.0/24 | BY | ripencc | 2008-01-01"]),
    "as6697.asn.lab.test": Txt(["6697 | BY | ripencc | 2002-08-20 | BELPAK-AS Beltelecom, BY"]),
    "echo.lab.test": Answer(a=["127.0.0.1"]),
}


class _Quiet:
    def started(self, total: int, already_done: int) -> None: ...
    def measured(self, m) -> None: ...
    def cancelled(self, url: str) -> None: ...
    def finished(self, summary) -> None: ...


def _everything_stored(db_path: Path) -> str:
    """Every text and blob of every table (gzip'd bodies unpacked), as one string."""
    conn = sqlite3.connect(db_path)
    parts = []
    try:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")]
        for table in tables:
            for row in conn.execute(f'select * from "{table}"'):
                for value in row:
                    if isinstance(value, bytes):
                        try:
                            value = gzip.decompress(value)
                        except OSError:
                            pass
                        parts.append(value.decode("utf-8", "replace"))
                    elif isinstance(value, str):
                        parts.append(value)
    finally:
        conn.close()
    return "\n".join(parts)


async def _run_once(tmp_path: Path, store_ip: bool) -> tuple[Path, dict]:
    async with DnsServer(ZONE) as dns, WebServer(_echo_app()) as srv:
        async def lookup() -> Vantage:
            return await lookup_vantage(myip_resolver=dns.address, cymru_resolvers=[dns.address], names=NAMES)

        targets = tmp_path / "t.txt"
        targets.write_text(f"{srv.url('/', hostname='echo.lab.test')}\n")
        config = lab_config(dns.address)
        plan = await plan_new_run(targets_path=targets, target_count=1, config=config, control_urls=[],
                                  doh_url=None, cc=None, asn=None, lookup=True, store_ip=store_ip,
                                  portal_check=False, lookup_fn=lookup)
        db_path = tmp_path / "p.db"
        db = store.open_db(db_path)
        store.create_run(db, plan.run, (store.RunTarget(t.url, t.category, t.note) for t in load_targets(targets)))
        summary = await run_targets(db, plan.run["run_id"], plan.config, control=None, concurrency=1,
                                    reporter=_Quiet(), install_signal_handlers=False)
        store.close(db)
    assert summary.measured == 1
    return db_path, plan.run


async def test_a_run_that_knows_the_address_stores_it_nowhere(tmp_path):
    db_path, run = await _run_once(tmp_path, store_ip=False)
    assert run["probe_ip"] is None and run["asn"] == "AS6697"
    assert json.loads(run["config"])["scrub_own_address"] is True
    everything = _everything_stored(db_path)
    for spelling in spellings(IP):
        assert spelling not in everything, spelling
    assert PLACEHOLDER in everything
    (first, second) = rows(db_path, "select url, location from http_requests order by hop")
    assert first[1] == f"/echo?from={PLACEHOLDER}" and second[0].endswith(f"/echo?from={PLACEHOLDER}")
    ((title, headers, reason),) = rows(db_path, "select title, headers, reason from http_requests where hop = 1")
    assert title == f"Your IP: {PLACEHOLDER}" and reason == f"OK {PLACEHOLDER}"
    assert ["X-Your-Address", PLACEHOLDER] in json.loads(headers)
    assert ["Set-Cookie", f"seen={PLACEHOLDER}"] in json.loads(headers)


async def test_with_store_ip_the_pages_are_kept_as_they_came(tmp_path):
    db_path, run = await _run_once(tmp_path, store_ip=True)
    assert run["probe_ip"] == IP and json.loads(run["config"])["scrub_own_address"] is False
    assert PLACEHOLDER not in _everything_stored(db_path)
    ((title,),) = rows(db_path, "select title from http_requests where hop = 1")
    assert title == f"Your IP: {IP}"


async def test_a_resumed_or_continued_run_learns_the_address_again():
    async def lookup() -> Vantage:
        return Vantage(ip="203.0.113.9")

    config = ProbeConfig(resolvers=[], scrub_own_address=True)
    await recall_own_address(config, lookup_fn=lookup)
    assert config.own_addresses == ["203.0.113.9"]
    for off in (ProbeConfig(resolvers=[], scrub_own_address=False),
                ProbeConfig(resolvers=[], scrub_own_address=True, vantage_lookup=False)):
        await recall_own_address(off, lookup_fn=lookup)
        assert off.own_addresses == []
    # after a network change, the new network's address joins the old one
    config = ProbeConfig(resolvers=[], scrub_own_address=True, own_addresses=[IP], resolvers_from_system=False)
    old = {"run_id": "r1", "probe_ip": None}
    new = await next_run_after_change(old, config, ["route"], lookup_fn=lookup)
    assert config.own_addresses == [IP, "203.0.113.9"]
    assert IP not in new["config"] and "203.0.113.9" not in new["config"]


# --- the command line --------------------------------------------------------------------


async def test_lint_warns_about_each_risky_target_and_still_exits_0(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("https://charter97.org/ NEWS\nhttp://127.0.0.1:8080/\n# comment\nhttp://192.168.1.1/ - router\n"
                    "https://xn--pple-43d.com/\nhttp://10.77.1.2/\n")
    rc, out, err = await probe("targets", "lint", str(path))
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == (f"{path}:2: warning: 127.0.0.1: a loopback address: this computer itself; "
                        "`probe run` measures it only with --allow-private-targets")
    assert lines[1].startswith(f"{path}:4: warning: 192.168.1.1: a private address")
    assert lines[2].startswith(f"{path}:5: warning: xn--pple-43d.com: its name mixes Cyrillic + Latin letters")
    assert lines[-1] == "5 targets, 0 errors, 4 warnings; 4 targets are not ordinary public websites"
    rc, out, err = await probe("targets", "lint", str(path), "--lab-network", "10.77.0.0/16", "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["counts"] == {"targets": 5, "errors": 0, "warnings": 3, "risky": 3}
    assert [(w["line"], w["code"], w["host"]) for w in report["warnings"]] == [
        (2, "loopback", "127.0.0.1"), (4, "private", "192.168.1.1"), (5, "mixed_script", "xn--pple-43d.com")]
    assert report["errors"] == [] and report["file"] == str(path)


async def test_lint_json_with_errors_and_with_an_unreadable_file_exits_2(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("ftp://x.org/\nhttp://[::1]/\n")
    rc, out, _ = await probe("targets", "lint", str(path), "--json")
    report = json.loads(out)
    assert rc == 2 and report["counts"] == {"targets": 1, "errors": 1, "warnings": 1, "risky": 1}
    assert report["errors"][0]["line"] == 1 and report["errors"][0]["code"] is None
    rc, out, _ = await probe("targets", "lint", str(tmp_path / "nope.txt"), "--json")
    report = json.loads(out)
    assert rc == 2 and report["errors"] == [{"line": None, "message": "no such file", "code": None, "host": None}]
    rc, _, err = await probe("targets", "lint", str(path), "--lab-network", "nonsense")
    assert rc == 2 and err.count("\n") == 1 and "--lab-network" in err


@pytest.fixture
async def local_site():
    async with WebServer(site_app(title="Router admin")) as web_server:
        yield web_server


async def test_a_run_refuses_risky_targets_in_one_line_and_measures_nothing(tmp_path, local_site):
    path = tmp_path / "t.txt"
    path.write_text(f"{local_site.url('/')}\nhttp://192.168.1.1/\nhttp://169.254.169.254/\nhttp://[::1]:1/\n"
                    "https://раураl.com/\n")
    db = tmp_path / "p.db"
    rc, out, err = await probe("run", "--targets", str(path), "--db", str(db), *QUIET)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("error: 5 targets are not ordinary public websites: 127.0.0.1 (this computer), "
                          "192.168.1.1 (local network), 169.254.169.254 (cloud metadata) and 2 more")
    assert "--allow-private-targets" in err and not db.exists()
    # --list shows them, and says why each is one
    rc, out, err = await probe("run", "--targets", str(path), "--list", "--json")
    assert rc == 0 and len(out.splitlines()) == 5
    assert f"warning: {local_site.url('/')} is not an ordinary public website: a loopback address" in err
    assert "`probe run` measures them only with --allow-private-targets" in err


async def test_with_the_flag_a_local_target_is_measured_with_a_warning(tmp_path, local_site):
    path = tmp_path / "t.txt"
    path.write_text(f"{local_site.url('/')}\n")
    db = tmp_path / "p.db"
    rc, _, err = await probe("run", "--targets", str(path), "--db", str(db), "--allow-private-targets", *QUIET)
    assert rc == 0, err
    assert f"warning: {local_site.url('/')} is not an ordinary public website: a loopback address" in err
    assert rows(db, "select title from http_requests") == [("Router admin",)]
    # a lab's range stands for the open internet: no flag, no warning
    rc, _, err = await probe("run", "--targets", str(path), "--db", str(db), "--lab-network", "127.0.0.0/8", *QUIET)
    assert rc == 0 and "not an ordinary public website" not in err, err


async def test_a_public_name_whose_dns_answer_is_private_is_measured_without_the_flag(tmp_path, local_site):
    async with DnsServer({"news.lab.test": Answer(a=["127.0.0.1"])}) as dns:
        path = tmp_path / "t.txt"
        path.write_text(f"{local_site.url('/', hostname='news.lab.test')}\n")
        db = tmp_path / "p.db"
        rc, _, err = await probe("run", "--targets", str(path), "--db", str(db), "--resolver", dns.address, *QUIET)
    assert rc == 0 and "not an ordinary public website" not in err, err
    assert rows(db, "select title from http_requests") == [("Router admin",)]
