"""TCP step: one connect to one address and port, timed, failure normalised."""

from __future__ import annotations

import asyncio

from probe.core import failures as F
from probe.core.records import Stopwatch, TcpConnect


async def tcp_connect(ip: str, port: int, *, timeout: float) -> TcpConnect:
    """Open and close one TCP connection. A refused, reset or silent address is data."""
    sw = Stopwatch()
    writer = None
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
        result = TcpConnect(ip, port, sw.started_at, sw.ms(), True)
    except Exception as exc:
        result = TcpConnect(ip, port, sw.started_at, sw.ms(), False, F.classify_exception(exc))
    finally:
        if writer is not None:
            writer.close()
    return result
