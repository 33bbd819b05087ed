"""Raw TCP servers that misbehave the way censoring middleboxes do.

Each behaviour reproduces, on loopback, what a client sees when a filter
interferes at the TCP layer: resets (immediately, or once the request / TLS
ClientHello has been seen), silent closes, black holes, junk replies, and
dropped SYNs (connect timeouts).

Everything binds to a loopback address only and only ever talks to the peer
that connected to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import time

__all__ = ["RawTcpServer", "unused_port", "BEHAVIOURS"]

BEHAVIOURS = (
    "reset",
    "reset_after_data",
    "close_after_data",
    "silent",
    "garbage",
    "backlog_full",
)

GARBAGE_BYTES = b"this is not http nor tls\r\n\r\n"


def _require_loopback(host: str) -> None:
    """Refuse to bind anything that is not a loopback address (hard rule)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"test servers must bind to a loopback IP literal, got {host!r}") from None
    if not ip.is_loopback:
        raise ValueError(f"test servers must bind to loopback only, got {host!r}")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def unused_port(host: str = "127.0.0.1") -> int:
    """A loopback TCP port with nothing listening on it.

    Stands in for a server that is down or a firewall that actively rejects
    connections: connecting gets "connection refused" (RST in reply to SYN).
    Implemented with the bind-then-close trick, so in theory another process
    could grab the port in between; in practice the kernel does not reuse a
    just-released ephemeral port immediately.
    """
    _require_loopback(host)
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _rst_close(sock: socket.socket) -> None:
    """Close so that the kernel sends RST instead of FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _accept_queue(sock: socket.socket) -> tuple[int, int] | None:
    """(current, max) accept-queue length of a Linux listening socket.

    For LISTEN sockets Linux reports sk_ack_backlog in tcpi_unacked and
    sk_max_ack_backlog in tcpi_sacked. Returns None where unsupported.
    """
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError):
        return None
    if len(info) < 32:
        return None
    unacked, sacked = struct.unpack_from("II", info, 24)
    return unacked, sacked


class RawTcpServer:
    """A TCP listener on loopback with one scripted (mis)behaviour.

    Behaviours and what they stand in for:

    * ``"reset"`` – accept, then immediately RST: a filter that kills every
      connection to a blocked IP.
    * ``"reset_after_data"`` – accept, wait for the client's first bytes (HTTP
      request, TLS ClientHello), then RST: a keyword/Host/SNI filter (DPI).
    * ``"close_after_data"`` – accept, wait for the first bytes, then close
      with FIN without sending anything: the client sees a clean EOF (a
      filter that drops the session quietly / a broken proxy).
    * ``"silent"`` – accept, read and discard forever, never reply: a black
      hole after the handshake (DPI that drops the server's packets).
    * ``"garbage"`` – accept, wait for the first bytes, reply with bytes that
      are neither HTTP nor TLS, then close: a misbehaving middlebox.
    * ``"backlog_full"`` – never accepts and its accept queue is full, so new
      SYNs are dropped and clients' connect() times out: an IP black-holed at
      the SYN stage (or an overloaded server).

    ``srv.connections`` counts connections accepted (always 0 for
    ``"backlog_full"``).
    """

    def __init__(self, behaviour: str, host: str = "127.0.0.1") -> None:
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}; expected one of {BEHAVIOURS}")
        _require_loopback(host)
        self.behaviour = behaviour
        self.host = host
        self.port: int = 0
        self.connections: int = 0
        self._listener: socket.socket | None = None
        self._fillers: list[socket.socket] = []
        self._accept_task: asyncio.Task | None = None
        self._conn_tasks: set[asyncio.Task] = set()

    @property
    def address(self) -> str:
        """``"HOST:PORT"`` of the running server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> RawTcpServer:
        """Bind an ephemeral loopback port and start the behaviour."""
        lsock = socket.socket(_family(self.host), socket.SOCK_STREAM)
        try:
            lsock.setblocking(False)
            lsock.bind((self.host, 0))
            self.port = lsock.getsockname()[1]
            if self.behaviour == "backlog_full":
                lsock.listen(0)
                self._listener = lsock
                await self._fill_backlog()
            else:
                lsock.listen(128)
                self._listener = lsock
                self._accept_task = asyncio.get_running_loop().create_task(self._accept_loop())
        except BaseException:
            await self.stop()
            lsock.close()
            raise
        return self

    async def stop(self) -> None:
        """Stop accepting, abort every connection, close every socket."""
        tasks = [t for t in (self._accept_task, *self._conn_tasks) if t is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._accept_task = None
        self._conn_tasks.clear()
        for s in self._fillers:
            s.close()
        self._fillers.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def __aenter__(self) -> RawTcpServer:
        return await self.start()

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    # ---- backlog_full ------------------------------------------------------

    async def _fill_backlog(self) -> None:
        """Connect client sockets to our own never-accepting listener until
        the kernel considers its accept queue full (further SYNs dropped)."""
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        addr = (self.host, self.port)
        use_tcp_info = _accept_queue(self._listener) is not None
        for _ in range(16):
            if use_tcp_info:
                cur, mx = _accept_queue(self._listener)  # type: ignore[misc]
                if cur > mx:
                    return  # Linux: sk_acceptq_is_full() is now true
            s = socket.socket(_family(self.host), socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(s, addr), 0.5)
            except (TimeoutError, OSError):
                s.close()
                if use_tcp_info:
                    continue
                return  # fallback heuristic: a SYN was dropped → queue full
            except BaseException:
                s.close()
                raise
            self._fillers.append(s)
            if use_tcp_info:
                # The server side enqueues the connection when it processes the
                # final ACK, which may lag connect() returning by a moment.
                deadline = time.monotonic() + 1.0
                before = len(self._fillers) - 1
                while time.monotonic() < deadline:
                    cur, _mx = _accept_queue(self._listener)  # type: ignore[misc]
                    if cur > before:
                        break
                    await asyncio.sleep(0.005)
        raise RuntimeError("could not fill the accept queue of the backlog_full server")

    # ---- accepting behaviours -----------------------------------------------

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        while True:
            conn, _peer = await loop.sock_accept(self._listener)
            conn.setblocking(False)
            self.connections += 1
            task = loop.create_task(self._serve(conn))
            self._conn_tasks.add(task)
            task.add_done_callback(self._conn_tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        b = self.behaviour
        rst = b in ("reset", "reset_after_data")
        try:
            if b == "reset":
                return
            first = await loop.sock_recv(conn, 65536)
            if not first:
                return  # client went away before sending anything
            if b == "reset_after_data":
                return
            if b == "silent":
                while await loop.sock_recv(conn, 65536):
                    pass
                return
            if b == "garbage":
                await loop.sock_sendall(conn, GARBAGE_BYTES)
            # close_after_data / garbage: send FIN now, then keep draining what
            # the client sends so the final close() cannot turn into an RST
            # (closing with unread data makes Linux send RST).
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
            while await loop.sock_recv(conn, 65536):
                pass
        except OSError:
            pass
        finally:
            if rst:
                _rst_close(conn)
            else:
                conn.close()
