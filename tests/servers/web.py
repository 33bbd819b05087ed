"""A lab website (aiohttp) and a runner to serve it on loopback.

``site_app()`` is the stand-in for "a website": normal pages plus routes that
reproduce what the probe meets in the wild (redirect chains and loops, huge
and trickling bodies, slow servers, broken encodings, a national blockpage,
pages that change on every load, arbitrary status codes).
``WebServer`` serves any aiohttp app over HTTP or HTTPS on a loopback port.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import ipaddress
import itertools
import random
import ssl

from aiohttp import web

from .tcp import _require_loopback

__all__ = [
    "BLOCKPAGE_TEXT",
    "BLOCKPAGE_TITLE",
    "CP1251_TITLE",
    "DRIP_INTERVAL",
    "DRIP_MAX_SECONDS",
    "HUGE_CHUNK",
    "HUGE_SIZE",
    "WebServer",
    "site_app",
]

HUGE_SIZE = 100 * 1024 * 1024
HUGE_CHUNK = 64 * 1024
DRIP_INTERVAL = 0.2
DRIP_MAX_SECONDS = 120
DRIP_SIZE = int(DRIP_MAX_SECONDS / DRIP_INTERVAL)  # 600 bytes

BLOCKPAGE_TITLE = "Доступ ограничен"
BLOCKPAGE_TEXT = (
    "Доступ к информационному ресурсу ограничен на основании решения "
    "Министерства информации Республики Беларусь, принятого в соответствии "
    'с Законом Республики Беларусь "О средствах массовой информации"'
)

BADUTF8_BYTES = b"\xff\xfe\xc3\x28"

# The /cp1251 page's title as written in its HTML, and as a browser shows it.
CP1251_TITLE_HTML = "Хартыя&#39;97 &mdash; навіны &amp; аналітыка"
CP1251_TITLE = "Хартыя'97 — навіны & аналітыка"

_FILLER = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod "
    "tempor incididunt ut labore et dolore magna aliqua. "
)

# One 64 KiB block of deterministic "generated" bytes, reused for /huge.
_HUGE_BLOCK = bytes(range(256)) * (HUGE_CHUNK // 256)


def _page(title: str, body_size: int) -> bytes:
    """A deterministic HTML page of exactly ``body_size`` bytes when possible
    (never shorter than the bare markup)."""
    head = (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title></head>\n<body><h1>{html.escape(title)}</h1>\n<p>"
    ).encode()
    tail = b"</p>\n</body></html>\n"
    need = max(0, body_size - len(head) - len(tail))
    pad = (_FILLER * (need // len(_FILLER) + 1))[:need].encode()  # ASCII: bytes == chars
    return head + pad + tail


def _html(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    hdrs = {"Content-Type": "text/html; charset=utf-8"}
    if headers:
        hdrs.update(headers)
    return web.Response(body=body, status=status, headers=hdrs)


def _redirect(location: str, status: int = 302) -> web.Response:
    return web.Response(
        status=status,
        headers={"Location": location, "Content-Type": "text/html; charset=utf-8"},
        body=f'<a href="{html.escape(location)}">moved</a>\n'.encode(),
    )


def site_app(title: str = "Lab site", body_size: int = 2000) -> web.Application:
    """An aiohttp application standing in for an ordinary website.

    Routes:

    * ``/`` – the normal page: 200 ``text/html; charset=utf-8`` with
      ``<title>{title}</title>``, a deterministic body of ~``body_size`` bytes
      and header ``X-Lab-Site: 1`` (lets tests tell "the real site" apart).
    * ``/redirect/{n}`` – a chain of n+1 302s ending at ``/``.
    * ``/loop`` – an endless redirect loop (``/loop?i=k`` → ``/loop?i=k+1``).
    * ``/redirect-to?url=U&status=302`` – redirect with that status to ``U``
      (e.g. an ISP redirecting to a blockpage host).
    * ``/huge`` – a 100 MiB download streamed in 64 KiB chunks with a
      Content-Length (tests body-size limits).
    * ``/drip`` – headers, then one byte every 0.2 s for up to 120 s
      (throttling / tarpit).
    * ``/slow?delay=S`` – the normal page after S seconds (slow server).
    * ``/badutf8`` – claims UTF-8 but the ``<title>`` has invalid bytes.
    * ``/cp1251`` – a windows-1251 page that says so only in a ``<meta>`` tag (no
      charset in Content-Type), with HTML entities in its title, as older
      Belarusian sites serve them.
    * ``/blockpage`` – the Belarusian Ministry of Information blockpage.
    * ``/blockpage-cp1251`` – the same blockpage in windows-1251, declared in ``<meta>``.
    * ``/dynamic`` – title and length change on every request (a page whose
      content legitimately varies, e.g. news/ads).
    * ``/status/{code}`` – that status code with a small body.
    """
    page = _page(title, body_size)
    site_headers = {"X-Lab-Site": "1"}
    counter = itertools.count(1)
    rng = random.Random()
    last_len = [-1]

    async def index(request: web.Request) -> web.Response:
        return _html(page, headers=site_headers)

    async def redirect_n(request: web.Request) -> web.Response:
        try:
            n = int(request.match_info["n"])
        except ValueError:
            raise web.HTTPNotFound() from None
        return _redirect("/" if n <= 0 else f"/redirect/{n - 1}")

    async def loop(request: web.Request) -> web.Response:
        try:
            i = int(request.query.get("i", "0"))
        except ValueError:
            i = 0
        return _redirect(f"/loop?i={i + 1}")

    async def redirect_to(request: web.Request) -> web.Response:
        url = request.query.get("url")
        if url is None:
            return web.Response(status=400, text="missing url parameter\n")
        try:
            status = int(request.query.get("status", "302"))
        except ValueError:
            return web.Response(status=400, text="bad status parameter\n")
        return _redirect(url, status)

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            status=200, headers={"Content-Type": "application/octet-stream"}
        )
        resp.content_length = HUGE_SIZE
        await resp.prepare(request)
        sent = 0
        try:
            while sent < HUGE_SIZE:
                chunk = _HUGE_BLOCK[: min(HUGE_CHUNK, HUGE_SIZE - sent)]
                await resp.write(chunk)
                sent += len(chunk)
            await resp.write_eof()
        except (ConnectionError, OSError):
            pass  # client went away: stop quietly
        return resp

    async def drip(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        resp.content_length = DRIP_SIZE
        await resp.prepare(request)
        try:
            for i in range(DRIP_SIZE):
                if i:
                    await asyncio.sleep(DRIP_INTERVAL)
                if request.transport is None or request.transport.is_closing():
                    break
                await resp.write(b".")
            else:
                await resp.write_eof()
        except (ConnectionError, OSError):
            pass
        return resp

    async def slow(request: web.Request) -> web.Response:
        try:
            delay = float(request.query.get("delay", "1"))
        except ValueError:
            return web.Response(status=400, text="bad delay parameter\n")
        await asyncio.sleep(max(0.0, min(delay, 3600.0)))
        return _html(page, headers=site_headers)

    def windows_1251(page: str):
        """A page in windows-1251 that says so only in its <meta> (no charset in the header)."""
        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=page.encode("cp1251"), headers={"Content-Type": "text/html"})
        return handler

    cp1251 = windows_1251(
        '<!DOCTYPE html>\n<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1251">'
        f"<title>{CP1251_TITLE_HTML}</title></head>\n<body><p>Навіны Беларусі</p></body></html>\n")
    blockpage_cp1251 = windows_1251(
        '<html><head><meta charset="windows-1251"></head><body><div class="exactCenter">'
        f"{BLOCKPAGE_TEXT}</div></body></html>")

    async def badutf8(request: web.Request) -> web.Response:
        body = (
            b"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Broken "
            + BADUTF8_BYTES
            + b" title</title></head>\n<body><p>This part is valid UTF-8 text: "
            + "привет, hello.".encode()
            + b"</p></body></html>\n"
        )
        return _html(body)

    async def blockpage(request: web.Request) -> web.Response:
        body = (
            "<!DOCTYPE html>\n<html lang=\"ru\"><head><meta charset=\"utf-8\">"
            f"<title>{BLOCKPAGE_TITLE}</title></head>\n"
            f"<body><h1>{BLOCKPAGE_TITLE}</h1>\n<p>{html.escape(BLOCKPAGE_TEXT, quote=False)}</p>\n"
            "</body></html>\n"
        ).encode()
        return _html(body)

    async def dynamic(request: web.Request) -> web.Response:
        n = next(counter)
        pad_len = rng.randint(0, 2000)
        pad = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(pad_len))
        body = (
            f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Dynamic page #{n}</title>"
            f"</head>\n<body><p>request {n}</p>\n<p>{pad}</p></body></html>\n"
        ).encode()
        if len(body) == last_len[0]:  # guarantee the length changes every time
            body += b"\n"
        last_len[0] = len(body)
        return _html(body, headers={"Cache-Control": "no-store"})

    async def status(request: web.Request) -> web.Response:
        try:
            code = int(request.match_info["code"])
        except ValueError:
            raise web.HTTPNotFound() from None
        if not 200 <= code <= 599:
            return web.Response(status=400, text="status must be 200..599\n")
        if code in (204, 304):
            return web.Response(status=code)
        return web.Response(status=code, text=f"status {code}\n")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/redirect/{n}", redirect_n)
    app.router.add_get("/loop", loop)
    app.router.add_get("/redirect-to", redirect_to)
    app.router.add_get("/huge", huge)
    app.router.add_get("/drip", drip)
    app.router.add_get("/slow", slow)
    app.router.add_get("/badutf8", badutf8)
    app.router.add_get("/cp1251", cp1251)
    app.router.add_get("/blockpage-cp1251", blockpage_cp1251)
    app.router.add_get("/blockpage", blockpage)
    app.router.add_get("/dynamic", dynamic)
    app.router.add_get("/status/{code}", status)
    return app


class WebServer:
    """Serve an aiohttp app over HTTP (or HTTPS with ``ssl_context``) on a
    loopback port — the stand-in for a web server somewhere on the Internet.

    ``async with WebServer(site_app(), ssl_context=pki.server_context("site.lab.test")) as srv:``
    then ``srv.url("/x", hostname="site.lab.test")`` →
    ``"https://site.lab.test:PORT/x"``. Shutdown is fast: in-flight handlers
    (e.g. ``/huge``, ``/drip``) get ``shutdown_timeout`` seconds, then are
    cancelled and their connections closed.
    """

    def __init__(
        self,
        app: web.Application,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        *,
        shutdown_timeout: float = 0.25,
    ) -> None:
        _require_loopback(host)
        self.app = app
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None

    @property
    def scheme(self) -> str:
        """``"https"`` if serving TLS, else ``"http"``."""
        return "https" if self.ssl_context is not None else "http"

    @property
    def address(self) -> str:
        """``"HOST:PORT"`` of the running server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self, path: str = "/", hostname: str | None = None, scheme: str | None = None) -> str:
        """Absolute URL for ``path`` on this server, e.g.
        ``url("/a", hostname="site.lab.test")`` → ``http://site.lab.test:PORT/a``.
        ``hostname`` defaults to the bound host, ``scheme`` to this server's."""
        host = hostname or self.host
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        if not path.startswith("/"):
            path = "/" + path
        return f"{scheme or self.scheme}://{host}:{self.port}{path}"

    async def start(self) -> WebServer:
        """Start serving; ``self.port`` is the bound (ephemeral) port."""
        runner = web.AppRunner(
            self.app, shutdown_timeout=self.shutdown_timeout, access_log=None
        )
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, self.host, self.port, ssl_context=self.ssl_context)
            await site.start()
        except BaseException:
            await self.stop()
            raise
        self.port = runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Stop listening, cancel in-flight handlers, close connections."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> WebServer:
        return await self.start()

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()
