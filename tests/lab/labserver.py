"""The lab's web servers, run inside a lab namespace: ``python labserver.py CONFIG.json``.

One process serves many apps, each on its own addresses and ports (the
``servers.web.WebServer`` of the unit tests refuses anything but loopback, so the lab
serves ``site_app`` itself). CONFIG::

    {"ready_file": PATH,
     "apps": [{"kind": "site", "title": T, "body_size": N, ["challenge_for": IP, "challenge_page": HTML,]
               "binds": [{"ip": IP, "port": 80}, {"ip": IP, "port": 443, "cert": PEM}]},
              {"kind": "page", "status": 200, "body": TEXT, "binds": [...]},
              {"kind": "redirect", "location": "http://x/?url={host}", "binds": [...]},
              {"kind": "portal", "title": T, "host": H, "binds": [...]},  (a captive portal)
              {"kind": "reset", "binds": [...]},  (reads what the client sends first, then RST)
              ...]}

A bind with ``"cert"`` serves TLS with that PEM (key and chain); ``"sni_certs"``
({name: PEM}) picks the certificate by the SNI the client sent, as an interception box
forges one for any name. The ready file is written once every bind listens; SIGTERM or
SIGINT stops the process.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import ssl
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: `servers`

from aiohttp import web
from servers.web import site_app


def _tls_context(bind: dict) -> ssl.SSLContext | None:
    if "cert" not in bind:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(bind["cert"])
    ctx.set_alpn_protocols(["http/1.1"])
    forged = {}
    for name, pem in (bind.get("sni_certs") or {}).items():
        c = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        c.load_cert_chain(pem)
        c.set_alpn_protocols(["http/1.1"])
        forged[name.lower()] = c
    if forged:
        def pick(obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            if name and name.lower() in forged:
                obj.context = forged[name.lower()]

        ctx.sni_callback = pick
    return ctx


def _cdn_challenge(client_ip: str, page: str):
    """A CDN that distrusts one client address: 503 and a browser check for it, the site
    for everyone else (the control helper included)."""
    body = page.encode()

    @web.middleware
    async def challenge(request: web.Request, handler):
        if request.remote == client_ip:
            return web.Response(status=503, body=body, headers={
                "Content-Type": "text/html; charset=UTF-8", "Server": "cloudflare",
                "CF-RAY": "7d1a2b3c4d5e6f70-WAW", "Cache-Control": "private, max-age=0, no-store"})
        return await handler(request)

    return challenge


async def _reset_after_data(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A server that resets every connection itself (no censor): once the client has sent
    something (a ClientHello, a request), or after 10 s, it closes with SO_LINGER 0: RST."""
    try:
        await asyncio.wait_for(reader.read(4096), 10)
    except (TimeoutError, OSError):
        pass
    sock = writer.get_extra_info("socket")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


def _app(spec: dict) -> web.Application:
    kind = spec["kind"]
    if kind == "site":
        app = site_app(title=spec["title"], body_size=spec.get("body_size", 2000))
        if spec.get("challenge_for"):
            app.middlewares.append(_cdn_challenge(spec["challenge_for"], spec["challenge_page"]))
        return app
    headers = {"Content-Type": "text/html; charset=utf-8", **spec.get("headers", {})}

    if kind == "page":
        body = spec["body"].encode()

        async def page(request: web.Request) -> web.Response:
            return web.Response(status=spec.get("status", 200), body=body, headers=headers)

        handler = page
    elif kind == "portal":
        login = f"<!DOCTYPE html><html><head><title>{spec['title']}</title></head><body><form>room, name</form>" \
                "</body></html>"

        async def portal(request: web.Request) -> web.Response:
            if request.path == "/login":
                return web.Response(status=200, text=login, headers=headers)
            where = f"http://{spec['host']}/login?orig={request.host}"
            return web.Response(status=302, headers={**headers, "Location": where}, body=b"")

        handler = portal
    elif kind == "redirect":
        async def redirect(request: web.Request) -> web.Response:
            host = (request.host or "").split(":")[0]
            location = spec["location"].format(host=host)
            return web.Response(status=spec.get("status", 302), headers={**headers, "Location": location},
                                body=b"<html><body>moved</body></html>\n")

        handler = redirect
    else:
        raise SystemExit(f"labserver: unknown app kind {kind!r}")
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def main(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    runners: list[web.AppRunner] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    resetters: list[asyncio.Server] = []
    try:
        for spec in config["apps"]:
            if spec["kind"] == "reset":
                for bind in spec["binds"]:
                    resetters.append(await asyncio.start_server(_reset_after_data, bind["ip"], bind["port"],
                                                                reuse_address=True))
                    print(f"labserver: reset on {bind['ip']}:{bind['port']}", flush=True)
                continue
            runner = web.AppRunner(_app(spec), access_log=None, shutdown_timeout=0.5)
            await runner.setup()
            runners.append(runner)
            for bind in spec["binds"]:
                site = web.TCPSite(runner, bind["ip"], bind["port"], ssl_context=_tls_context(bind),
                                   reuse_address=True)
                await site.start()
                print(f"labserver: {spec['kind']} {spec.get('title', '')!r} on "
                      f"{'https' if 'cert' in bind else 'http'}://{bind['ip']}:{bind['port']}", flush=True)
        Path(config["ready_file"]).write_text("ready\n")
        await stop.wait()
    finally:
        for server in resetters:
            server.close()
        for runner in runners:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
