"""The captive-portal check, against real local servers: a portal's resolver answers
every name and its web server sends every request to its login page."""

from __future__ import annotations

import pytest
from aiohttp import web
from clirun import QUIET, probe
from conftest import lab_config
from servers import Answer, DnsServer, WebServer, site_app

from probe.measure.portal import check_portal

PORTAL_TITLE = "Hotel Wi-Fi: please log in"


def portal_app() -> web.Application:
    async def login(request: web.Request) -> web.Response:
        return web.Response(text=f"<html><title>{PORTAL_TITLE}</title></html>", content_type="text/html")

    async def anything(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://portal.hotel.test:{request.url.port}/login?from={request.host}")

    app = web.Application()
    app.router.add_get("/login", login)
    app.router.add_route("*", "/{tail:.*}", anything)
    return app


def probes_on(port: int, path_status_marker=(("/generate_204", 204, b""), ("/success.txt", 200, b"success"),
                                             ("/hotspot-detect.html", 200, b"Success"))):
    hosts = ("connectivitycheck.gstatic.test", "detectportal.firefox.test", "captive.apple.test")
    return tuple((f"http://{h}:{port}{p}", s, m) for h, (p, s, m) in zip(hosts, path_status_marker, strict=False))


async def test_a_portal_is_found():
    async with WebServer(portal_app()) as portal, DnsServer({"*": Answer(a=["127.0.0.1"])}) as dns:
        found = await check_portal(lab_config(dns.address), probes=probes_on(portal.port),
                                   random_parents=("example.test", "example.invalid"))
    assert found.login_url is not None
    assert found.portal and found.login_url.startswith("http://portal.hotel.test:")
    assert "login page" in found.reason and "names that cannot exist resolve too" in found.reason


def right_answers_app() -> web.Application:
    async def g204(request):
        return web.Response(status=204)

    async def success(request):
        return web.Response(text="success\n")

    async def apple(request):
        return web.Response(text="<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>",
                        content_type="text/html")

    app = web.Application()
    app.router.add_get("/generate_204", g204)
    app.router.add_get("/success.txt", success)
    app.router.add_get("/hotspot-detect.html", apple)
    return app


@pytest.mark.parametrize("case", ["open", "offline", "one_blocked"])
async def test_no_portal(case):
    """The right answers; no internet at all (nothing resolves); a blockpage for one of
    the URLs only (a censor's, not a portal)."""
    names = ("connectivitycheck.gstatic.test", "detectportal.firefox.test", "captive.apple.test")
    zone = {} if case == "offline" else {n: Answer(a=["127.0.0.1"]) for n in names}
    async with WebServer(right_answers_app()) as site, WebServer(site_app(title="blocked")) as censor, \
            DnsServer(zone) as dns:
        probes = probes_on(site.port)
        if case == "one_blocked":
            probes = ((f"http://{names[0]}:{censor.port}/blockpage", 204, b""), *probes[1:])
        found = await check_portal(lab_config(dns.address), probes=probes,
                                   random_parents=("example.test", "example.invalid"))
    assert not found.portal, found


async def test_a_network_where_the_portal_urls_do_not_resolve_is_measured(tmp_path):
    """The real CLI at its defaults, on a network where the portal-detection names do
    not resolve (no internet): nothing to decide, the run goes on. (The lab's hotel
    vantage checks that a real portal stops the run, port 80 and all.)"""
    targets = tmp_path / "t.txt"
    targets.write_text("http://site.lab.test/\n")
    async with DnsServer({"site.lab.test": Answer(a=["127.0.0.1"])}) as dns:
        rc, _, err = await probe("run", "--targets", str(targets), "--db", str(tmp_path / "p.db"),
                                 "--resolver", dns.address, *QUIET)
    assert rc == 0, err
    assert "captive portal" not in err
