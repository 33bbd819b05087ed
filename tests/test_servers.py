"""Self-tests for the local lab servers in tests/servers.

These talk to the servers with plain dnspython / aiohttp client / asyncio
streams / ssl (never the probe) to prove every behaviour does what the probe
tests will rely on.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from typing import cast

import aiohttp
import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from servers import (
    BLOCKPAGE_TEXT,
    BLOCKPAGE_TITLE,
    GARBAGE,
    GARBAGE_BYTES,
    HUGE_SIZE,
    NXDOMAIN,
    REFUSED,
    SERVFAIL,
    SILENT,
    WRONG_HOST,
    Answer,
    Behaviour,
    Delayed,
    DnsServer,
    LabPKI,
    Race,
    RawTcpServer,
    Txt,
    WebServer,
    site_app,
    unused_port,
)

# --------------------------------------------------------------------------
# helpers / fixtures
# --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
async def no_leaked_tasks():
    """Every test must leave no tasks behind once its servers are stopped."""
    yield
    me = asyncio.current_task()
    for _ in range(5):
        await asyncio.sleep(0)
    leaked = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    assert not leaked, f"leaked tasks: {leaked}"


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[float, bytes]] = []
        self.event = asyncio.Event()

    def datagram_received(self, data, addr) -> None:
        self.received.append((time.monotonic(), data))
        self.event.set()


async def udp_collect(port: int, wire: bytes, window: float) -> tuple[float, list[tuple[float, bytes]]]:
    """Send one datagram to 127.0.0.1:port and collect every reply for
    ``window`` seconds. Returns (send_time, [(recv_time, data), ...])."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        _Collector, remote_addr=("127.0.0.1", port)
    )
    try:
        sent = time.monotonic()
        transport.sendto(wire)
        await asyncio.sleep(window)
        return sent, list(proto.received)
    finally:
        transport.close()


async def ask(srv: DnsServer, name: str, rdtype: str = "A", timeout: float = 2.0) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    return await dns.asyncquery.udp(q, srv.host, port=srv.port, timeout=timeout)


def addresses(msg: dns.message.Message, rdtype: str) -> list[str]:
    want = dns.rdatatype.from_text(rdtype)
    return [rd.to_text() for rrset in msg.answer if rrset.rdtype == want for rd in rrset]


# --------------------------------------------------------------------------
# DNS
# --------------------------------------------------------------------------

ZONE: dict[str, Behaviour] = {
    "site.lab.test": Answer(a=["127.0.0.2", "127.0.0.3"], aaaa=["::1"], ttl=123),
    "v4only.lab.test": Answer(a=["127.0.0.4"]),
    "cdn.lab.test": Answer(a=["127.0.0.5"], cname="edge.cdn.example"),
    "nx.lab.test": NXDOMAIN,
    "servfail.lab.test": SERVFAIL,
    "refused.lab.test": REFUSED,
    "silent.lab.test": SILENT,
    "garbage.lab.test": GARBAGE,
    "race.lab.test": Race(first=Answer(a=["127.0.0.66"]), second=Answer(a=["127.0.0.7"]), delay=0.2),
    "slow.lab.test": Delayed(Answer(a=["127.0.0.8"]), 0.4),
    "slownx.lab.test": Delayed(NXDOMAIN, 0.2),
    "txt.lab.test": Txt(["hello world", 'with "quotes"']),
}


@pytest.fixture
async def dns_srv():
    async with DnsServer(ZONE) as srv:
        yield srv


async def test_dns_address_and_loopback(dns_srv):
    assert dns_srv.host == "127.0.0.1"
    assert dns_srv.port > 0
    assert dns_srv.address == f"127.0.0.1:{dns_srv.port}"


async def test_dns_answer_a(dns_srv):
    r = await ask(dns_srv, "site.lab.test", "A")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.QR
    assert sorted(addresses(r, "A")) == ["127.0.0.2", "127.0.0.3"]
    assert r.answer[0].ttl == 123


async def test_dns_answer_aaaa(dns_srv):
    r = await ask(dns_srv, "site.lab.test", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR
    assert addresses(r, "AAAA") == ["::1"]


async def test_dns_no_answer_for_missing_type(dns_srv):
    r = await ask(dns_srv, "v4only.lab.test", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.answer == []


async def test_dns_other_qtype_is_empty_noerror(dns_srv):
    for rdtype in ("TXT", "MX"):
        r = await ask(dns_srv, "site.lab.test", rdtype)
        assert r.rcode() == dns.rcode.NOERROR
        assert r.answer == []


async def test_dns_cname_first(dns_srv):
    r = await ask(dns_srv, "cdn.lab.test", "A")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.answer[0].rdtype == dns.rdatatype.CNAME
    assert r.answer[0].name.to_text() == "cdn.lab.test."
    assert r.answer[0][0].target.to_text() == "edge.cdn.example."
    assert r.answer[1].rdtype == dns.rdatatype.A
    assert r.answer[1].name.to_text() == "edge.cdn.example."
    assert addresses(r, "A") == ["127.0.0.5"]


async def test_dns_txt(dns_srv):
    r = await ask(dns_srv, "txt.lab.test", "TXT")
    assert r.rcode() == dns.rcode.NOERROR
    texts = sorted(b"".join(rd.strings).decode() for rd in r.answer[0])
    assert texts == sorted(["hello world", 'with "quotes"'])
    r = await ask(dns_srv, "txt.lab.test", "A")
    assert r.rcode() == dns.rcode.NOERROR and r.answer == []


async def test_dns_case_insensitive_exact_match_and_query_log(dns_srv):
    r = await ask(dns_srv, "SiTe.LaB.TeSt.", "A")
    assert r.rcode() == dns.rcode.NOERROR and addresses(r, "A")
    # exact match only: neither a subdomain nor a parent matches
    assert (await ask(dns_srv, "www.site.lab.test", "A")).rcode() == dns.rcode.NXDOMAIN
    assert (await ask(dns_srv, "lab.test", "A")).rcode() == dns.rcode.NXDOMAIN
    assert (await ask(dns_srv, "unknown.example", "AAAA")).rcode() == dns.rcode.NXDOMAIN
    assert dns_srv.queries == [
        ("site.lab.test", "A"),
        ("www.site.lab.test", "A"),
        ("lab.test", "A"),
        ("unknown.example", "AAAA"),
    ]


@pytest.mark.parametrize(
    "name,rcode",
    [
        ("nx.lab.test", dns.rcode.NXDOMAIN),
        ("servfail.lab.test", dns.rcode.SERVFAIL),
        ("refused.lab.test", dns.rcode.REFUSED),
    ],
)
async def test_dns_rcodes(dns_srv, name, rcode):
    r = await ask(dns_srv, name, "A")
    assert r.rcode() == rcode
    assert r.answer == []


async def test_dns_silent_sends_nothing(dns_srv):
    q = dns.message.make_query("silent.lab.test", "A")
    _, got = await udp_collect(dns_srv.port, q.to_wire(), 1.0)
    assert got == []
    assert dns_srv.queries == [("silent.lab.test", "A")]


async def test_dns_silent_times_out_dnspython(dns_srv):
    with pytest.raises(dns.exception.Timeout):
        await ask(dns_srv, "silent.lab.test", timeout=0.3)


async def test_dns_garbage(dns_srv):
    q = dns.message.make_query("garbage.lab.test", "A")
    _, got = await udp_collect(dns_srv.port, q.to_wire(), 0.3)
    assert len(got) == 1
    data = got[0][1]
    assert data[:2] == q.id.to_bytes(2, "big")
    with pytest.raises(dns.exception.DNSException):
        dns.message.from_wire(data)
    # and a regular stub resolver call fails with a parse error, not a timeout
    with pytest.raises(dns.exception.DNSException) as ei:
        await ask(dns_srv, "garbage.lab.test", timeout=1.0)
    assert not isinstance(ei.value, dns.exception.Timeout)


async def test_dns_race_two_replies_same_id(dns_srv):
    q = dns.message.make_query("race.lab.test", "A")
    sent, got = await udp_collect(dns_srv.port, q.to_wire(), 0.6)
    assert len(got) == 2
    (t1, d1), (t2, d2) = got
    m1, m2 = dns.message.from_wire(d1), dns.message.from_wire(d2)
    assert m1.id == m2.id == q.id
    assert q.is_response(m1) and q.is_response(m2)
    assert addresses(m1, "A") == ["127.0.0.66"]
    assert addresses(m2, "A") == ["127.0.0.7"]
    assert t1 - sent < 0.15
    assert t2 - t1 >= 0.18
    # a normal stub resolver takes the first (injected) reply
    r = await ask(dns_srv, "race.lab.test")
    assert addresses(r, "A") == ["127.0.0.66"]


async def test_dns_delayed(dns_srv):
    t0 = time.monotonic()
    r = await ask(dns_srv, "slow.lab.test")
    assert time.monotonic() - t0 >= 0.38
    assert addresses(r, "A") == ["127.0.0.8"]
    t0 = time.monotonic()
    r = await ask(dns_srv, "slownx.lab.test")
    assert time.monotonic() - t0 >= 0.18
    assert r.rcode() == dns.rcode.NXDOMAIN


async def test_dns_ignores_junk_queries_and_survives(dns_srv):
    _, got = await udp_collect(dns_srv.port, b"\x00\x01junk", 0.2)
    assert got == []
    assert (await ask(dns_srv, "site.lab.test")).rcode() == dns.rcode.NOERROR


async def test_dns_stop_with_pending_replies_is_clean():
    zone: dict[str, Behaviour] = {"a.test": Delayed(Answer(a=["127.0.0.1"]), 5),
                                  "b.test": Race(Answer(a=["127.0.0.1"]), NXDOMAIN, 5)}
    t0 = time.monotonic()
    async with DnsServer(zone, host="127.0.0.9") as srv:
        assert srv.address.startswith("127.0.0.9:")
        for name in zone:
            await udp_collect(srv.port, dns.message.make_query(name, "A").to_wire(), 0.05)
    assert time.monotonic() - t0 < 1


async def test_refuses_non_loopback_hosts():
    for bad in ("0.0.0.0", "10.0.0.1", "192.168.1.1", "8.8.8.8", "::", "localhost"):
        with pytest.raises(ValueError):
            DnsServer({}, host=bad)
        with pytest.raises(ValueError):
            RawTcpServer("reset", host=bad)
        with pytest.raises(ValueError):
            WebServer(site_app(), host=bad)


# --------------------------------------------------------------------------
# Web
# --------------------------------------------------------------------------


@pytest.fixture
async def web_srv():
    async with WebServer(site_app(title="Lab site", body_size=2000)) as srv:
        yield srv


@pytest.fixture
async def client():
    async with aiohttp.ClientSession() as session:
        yield session


async def test_web_index(web_srv, client):
    async with client.get(web_srv.url("/")) as r:
        body = await r.read()
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        assert r.headers["X-Lab-Site"] == "1"
    assert b"<title>Lab site</title>" in body
    assert abs(len(body) - 2000) <= 50
    async with client.get(web_srv.url("/")) as r:
        assert await r.read() == body  # deterministic


async def test_web_index_params():
    async with WebServer(site_app(title="Другой сайт", body_size=10_000)) as srv:
        async with aiohttp.ClientSession() as s, s.get(srv.url()) as r:
            text = await r.text()
            body = await r.read()
    assert "<title>Другой сайт</title>" in text
    assert abs(len(body) - 10_000) <= 50


async def test_web_url_builder(web_srv):
    p = web_srv.port
    assert web_srv.url() == f"http://127.0.0.1:{p}/"
    assert web_srv.url("x/y?z=1") == f"http://127.0.0.1:{p}/x/y?z=1"
    assert web_srv.url("/a", hostname="site.lab.test") == f"http://site.lab.test:{p}/a"
    assert web_srv.url("/a", hostname="site.lab.test", scheme="https") == f"https://site.lab.test:{p}/a"
    assert web_srv.address == f"127.0.0.1:{p}"


async def test_web_redirect_chain(web_srv, client):
    async with client.get(web_srv.url("/redirect/3"), allow_redirects=False) as r:
        assert r.status == 302
        assert r.headers["Location"] == "/redirect/2"
    async with client.get(web_srv.url("/redirect/0"), allow_redirects=False) as r:
        assert r.status == 302
        assert r.headers["Location"] == "/"
    async with client.get(web_srv.url("/redirect/3")) as r:
        assert r.status == 200
        assert len(r.history) == 4
        assert r.url.path == "/"
        assert r.headers["X-Lab-Site"] == "1"


async def test_web_loop(web_srv, client):
    async with client.get(web_srv.url("/loop"), allow_redirects=False) as r:
        assert r.status == 302
        assert r.headers["Location"] == "/loop?i=1"
    async with client.get(web_srv.url("/loop?i=41"), allow_redirects=False) as r:
        assert r.headers["Location"] == "/loop?i=42"
    with pytest.raises(aiohttp.TooManyRedirects):
        async with client.get(web_srv.url("/loop"), max_redirects=20):
            pass


async def test_web_redirect_to(web_srv, client):
    target = "http://blocked.lab.test:1234/page?x=1"
    async with client.get(web_srv.url("/redirect-to"), params={"url": target, "status": "301"}, allow_redirects=False) as r:
        assert r.status == 301
        assert r.headers["Location"] == target
    async with client.get(web_srv.url("/redirect-to"), params={"url": "/blockpage"}, allow_redirects=False) as r:
        assert r.status == 302
        assert r.headers["Location"] == "/blockpage"


async def test_web_huge_partial_read(web_srv, client):
    t0 = time.monotonic()
    async with client.get(web_srv.url("/huge")) as r:
        assert r.status == 200
        assert r.headers["Content-Length"] == str(HUGE_SIZE) == str(100 * 1024 * 1024)
        got = 0
        while got < 1024 * 1024:
            chunk = await r.content.read(64 * 1024)
            assert chunk
            got += len(chunk)
        r.close()  # drop the connection mid-body
    assert time.monotonic() - t0 < 3
    # the server is still healthy afterwards
    async with client.get(web_srv.url("/")) as r:
        assert r.status == 200


async def test_web_drip(web_srv, client):
    t0 = time.monotonic()
    async with client.get(web_srv.url("/drip")) as r:
        t_headers = time.monotonic() - t0
        assert r.status == 200
        assert t_headers < 0.5
        got = b""
        while len(got) < 4:
            got += await r.content.read(1)
        elapsed = time.monotonic() - t0
        r.close()
    assert got == b"...."
    # 4 bytes at one per 0.2 s: the first arrives at once, then 3 gaps
    assert 0.55 <= elapsed < 1.5


async def test_web_slow(web_srv, client):
    t0 = time.monotonic()
    async with client.get(web_srv.url("/slow"), params={"delay": "0.5"}) as r:
        body = await r.read()
    assert time.monotonic() - t0 >= 0.48
    assert r.status == 200 and b"<title>Lab site</title>" in body


async def test_web_badutf8(web_srv, client):
    async with client.get(web_srv.url("/badutf8")) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        body = await r.read()
    assert b"\xff\xfe\xc3\x28" in body
    start, end = body.index(b"<title>"), body.index(b"</title>")
    assert b"\xff\xfe\xc3\x28" in body[start:end]
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    assert "This part is valid UTF-8 text" in body.decode("utf-8", "replace")


async def test_web_blockpage(web_srv, client):
    async with client.get(web_srv.url("/blockpage")) as r:
        assert r.status == 200
        text = await r.text()
    assert "<title>Доступ ограничен</title>" in text
    assert BLOCKPAGE_TITLE == "Доступ ограничен"
    assert BLOCKPAGE_TEXT in text
    assert (
        "Доступ к информационному ресурсу ограничен на основании решения Министерства "
        "информации Республики Беларусь, принятого в соответствии с Законом Республики "
        'Беларусь "О средствах массовой информации"'
    ) in text


async def test_web_dynamic(web_srv, client):
    seen = []
    for _ in range(5):
        async with client.get(web_srv.url("/dynamic")) as r:
            assert r.status == 200
            text = await r.text()
        title = text[text.index("<title>") : text.index("</title>")]
        seen.append((title, len(text.encode())))
    for a, b in zip(seen, seen[1:], strict=False):
        assert a[0] != b[0]
        assert a[1] != b[1]


@pytest.mark.parametrize("code", [200, 204, 301, 403, 404, 451, 500, 503])
async def test_web_status(web_srv, client, code):
    async with client.get(web_srv.url(f"/status/{code}"), allow_redirects=False) as r:
        assert r.status == code
        body = await r.read()
    if code != 204:
        assert str(code).encode() in body


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_web_shutdown_fast_with_streams_in_flight(client, tls):
    pki = LabPKI() if tls else None
    srv = WebServer(site_app(), ssl_context=pki.server_context() if pki else None)
    await srv.start()
    cctx = pki.client_context() if pki else None
    responses = []
    try:
        for path in ("/huge", "/drip", "/slow?delay=30"):
            if path.startswith("/slow"):
                task = asyncio.create_task(client.get(srv.url(path), ssl=cctx))
                await asyncio.sleep(0.1)
                responses.append(task)
            else:
                r = await client.get(srv.url(path), ssl=cctx)
                await r.content.read(10)
                responses.append(r)
    finally:
        t0 = time.monotonic()
        await srv.stop()
        took = time.monotonic() - t0
    assert took < 1.5
    for r in responses:
        if isinstance(r, asyncio.Task):
            with pytest.raises(aiohttp.ClientError):
                await r
        else:
            r.close()


# --------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki():
    return LabPKI()


async def tls_connect(port: int, ctx: ssl.SSLContext, server_hostname: str):
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=server_hostname),
        5,
    )


async def test_tls_ca_bundle(pki, tmp_path):
    path = pki.ca_pem_path(tmp_path)
    assert path.exists() and path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    ctx = ssl.create_default_context(cafile=str(path))
    # typeshed types every value of the dict as str or nested tuples; "subject" is always the tuples
    subjects = [dict(x[0] for x in cast(tuple, c["subject"])) for c in ctx.get_ca_certs()]
    assert any(s.get("organizationName") == "Lab CA" for s in subjects)


async def test_tls_valid(pki, tmp_path):
    sctx = pki.server_context("site.lab.test", "127.0.0.1")
    async with WebServer(site_app(), ssl_context=sctx) as srv:
        assert srv.url("/", hostname="site.lab.test") == f"https://site.lab.test:{srv.port}/"
        cctx = ssl.create_default_context(cafile=str(pki.ca_pem_path(tmp_path)))
        cctx.set_alpn_protocols(["h2", "http/1.1"])
        reader, writer = await tls_connect(srv.port, cctx, "site.lab.test")
        try:
            sslobj = writer.get_extra_info("ssl_object")
            assert sslobj.selected_alpn_protocol() == "http/1.1"
            assert dict(x[0] for x in sslobj.getpeercert()["issuer"])["organizationName"] == "Lab CA"
        finally:
            writer.close()
            await writer.wait_closed()
        # and a full HTTPS request by IP (cert has an IP SAN too)
        async with aiohttp.ClientSession() as s:
            async with s.get(srv.url("/"), ssl=pki.client_context()) as r:
                assert r.status == 200 and r.headers["X-Lab-Site"] == "1"


@pytest.mark.parametrize(
    "kind,code",
    [
        ("expired", 10),  # X509_V_ERR_CERT_HAS_EXPIRED
        ("wrong_host", 62),  # X509_V_ERR_HOSTNAME_MISMATCH
        ("unknown_ca", 20),  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    ],
)
async def test_tls_bad_kinds(pki, kind, code):
    sctx = pki.server_context("site.lab.test", kind=kind)
    async with WebServer(site_app(), ssl_context=sctx) as srv:
        with pytest.raises(ssl.SSLCertVerificationError) as ei:
            await tls_connect(srv.port, pki.client_context(), "site.lab.test")
        assert ei.value.verify_code == code
        # without verification the handshake works and shows the certificate
        noverify = ssl.create_default_context()
        noverify.check_hostname = False
        noverify.verify_mode = ssl.CERT_NONE
        reader, writer = await tls_connect(srv.port, noverify, "site.lab.test")
        writer.close()
        await writer.wait_closed()


def test_tls_wrong_host_names(pki):
    from cryptography import x509

    leaf = pki.leaf("site.lab.test", kind="wrong_host")
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [WRONG_HOST]


def test_tls_unknown_kind(pki):
    with pytest.raises(ValueError):
        pki.server_context("x.test", kind="self_signed_maybe")


# --------------------------------------------------------------------------
# Raw TCP
# --------------------------------------------------------------------------

REQUEST = b"GET / HTTP/1.1\r\nHost: blocked.lab.test\r\n\r\n"


async def test_tcp_reset():
    async with RawTcpServer("reset") as srv:
        with pytest.raises(ConnectionResetError):
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            try:
                await asyncio.wait_for(reader.read(100), 2)
            finally:
                writer.close()
        assert srv.connections == 1


async def test_tcp_reset_after_data():
    async with RawTcpServer("reset_after_data") as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        try:
            # nothing happens until we send something
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(reader.read(100), 0.3)
            writer.write(REQUEST)
            await writer.drain()
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(100), 2)
        finally:
            writer.close()
        assert srv.connections == 1


async def test_tcp_reset_after_tls_clienthello():
    async with RawTcpServer("reset_after_data") as srv:
        with pytest.raises(ConnectionResetError):
            await tls_connect(srv.port, ssl.create_default_context(), "blocked.lab.test")


@pytest.mark.parametrize("payload", [REQUEST, b"x" * 300_000])
async def test_tcp_close_after_data(payload):
    async with RawTcpServer("close_after_data") as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        try:
            writer.write(payload)
            assert await asyncio.wait_for(reader.read(100), 2) == b""  # clean EOF, no RST
            await writer.drain()
        finally:
            writer.close()
        assert srv.connections == 1


async def test_tcp_silent():
    async with RawTcpServer("silent") as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        try:
            writer.write(REQUEST * 100)
            await writer.drain()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(reader.read(100), 0.5)
            assert not reader.at_eof()
        finally:
            writer.close()
        assert srv.connections == 1


async def test_tcp_garbage():
    async with RawTcpServer("garbage") as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        try:
            writer.write(REQUEST)
            data = await asyncio.wait_for(reader.read(), 2)  # until EOF
        finally:
            writer.close()
        assert data == GARBAGE_BYTES == b"this is not http nor tls\r\n\r\n"
        # the same for an HTTP client
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientResponseError):
                async with s.get(f"http://127.0.0.1:{srv.port}/"):
                    pass
        assert srv.connections == 2


async def test_tcp_backlog_full():
    async with RawTcpServer("backlog_full") as srv:
        for _ in range(2):
            t0 = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.open_connection("127.0.0.1", srv.port), 1.0)
            assert time.monotonic() - t0 >= 0.95
        assert srv.connections == 0


async def test_tcp_backlog_full_plain_socket_connect_timeout():
    """The same with a blocking-style socket connect and a 1 s timeout."""
    async with RawTcpServer("backlog_full") as srv:
        loop = asyncio.get_running_loop()
        s = socket.socket()
        s.setblocking(False)
        try:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(loop.sock_connect(s, ("127.0.0.1", srv.port)), 1.0)
        finally:
            s.close()


async def test_tcp_unused_port_refused():
    port = unused_port()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_tcp_stop_with_open_connections():
    t0 = time.monotonic()
    async with RawTcpServer("silent") as srv:
        conns = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(3)]
        for _, w in conns:
            w.write(b"hello")
        await asyncio.sleep(0.05)
    assert time.monotonic() - t0 < 1
    for reader, writer in conns:
        # the server closed its side: the client sees EOF or a reset
        try:
            assert await asyncio.wait_for(reader.read(10), 1) == b""
        except ConnectionResetError:
            pass
        writer.close()
    # and the port is really closed now
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", srv.port)


async def test_tcp_unknown_behaviour():
    with pytest.raises(ValueError):
        RawTcpServer("teleport")
