"""Client for the control helper (``probe.helper``): the same URL, measured elsewhere.

``ControlClient.measure`` never raises for a network or protocol problem: a helper that
cannot be reached, times out, refuses, or answers nonsense gives a ``ControlResult``
whose ``failure`` is ``control_unavailable`` and whose ``raw`` says why, in one line,
under ``"error"``. A measurement without its control is still a measurement.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

import aiohttp

from . import __version__
from . import failures as F
from .records import (
    ControlResult,
    Stopwatch,
    dns_query_from_dict,
    http_from_dict,
    tcp_from_dict,
    tls_from_dict,
)

USER_AGENT = f"bynet-probe/{__version__}"
# A helper's answer carries headers and certificate chains, never bodies: a few
# hundred KiB at most. Anything far larger is not an answer we want in memory.
MAX_ANSWER_BYTES = 8 * 1024 * 1024


class ControlUnavailable(Exception):
    """The helper cannot be used; the message is a one-line reason."""


def _one_line(text: object, limit: int = 300) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timed out"
    text = str(exc)
    return _one_line(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


class _BadAnswer(Exception):
    """The helper answered, but not with something usable."""


class ControlClient:
    """Talks to one helper over one aiohttp session; use as ``async with``."""

    def __init__(
        self, base_url: str, *, timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ControlClient:
        self._ensure_session()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self.ssl_context if self.ssl_context is not None else True,
                limit=16,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                trust_env=False,
            )
        return self._session

    async def _request(self, method: str, path: str, payload: Any = None) -> Any:
        """One request; the decoded JSON of a 2xx answer, else _BadAnswer/transport error."""
        session = self._ensure_session()
        async with asyncio.timeout(self.timeout):
            async with session.request(
                method, self.base_url + path, json=payload, allow_redirects=False
            ) as resp:
                body = await resp.content.read(MAX_ANSWER_BYTES + 1)
                if len(body) > MAX_ANSWER_BYTES:
                    raise _BadAnswer(f"answer larger than {MAX_ANSWER_BYTES} bytes")
                try:
                    data = json.loads(body.decode("utf-8")) if body else None
                except (UnicodeDecodeError, ValueError, RecursionError):
                    data = None
                    if 200 <= resp.status < 300:
                        raise _BadAnswer(f"HTTP {resp.status} with a body that is not JSON") from None
                if not 200 <= resp.status < 300:
                    detail = data.get("error") if isinstance(data, dict) else None
                    msg = f"HTTP {resp.status} {resp.reason or ''}".strip()
                    raise _BadAnswer(f"{msg}: {detail}" if detail else msg)
                return data

    async def health(self) -> dict:
        """GET /health; raises ControlUnavailable with a one-line reason."""
        try:
            data = await self._request("GET", "/health")
        except asyncio.CancelledError:
            raise
        except _BadAnswer as exc:
            raise ControlUnavailable(_one_line(f"{self.base_url}: {exc}")) from None
        except Exception as exc:
            raise ControlUnavailable(_one_line(f"{self.base_url}: {_describe(exc)}")) from None
        if not isinstance(data, dict) or data.get("status") != "ok":
            raise ControlUnavailable(_one_line(f"{self.base_url}: unexpected health answer {data!r}"))
        return data

    async def measure(self, url: str, addresses: list[str]) -> ControlResult:
        """Ask the helper to measure ``url``; never raises for network/protocol errors."""
        sw = Stopwatch()
        result = ControlResult(control_url=self.base_url, started_at=sw.started_at, duration_ms=0.0)
        try:
            data = await self._request("POST", "/v1/measure", {"url": url, "addresses": list(addresses)})
            if not isinstance(data, dict):
                raise _BadAnswer("answer is not a JSON object")
            try:
                result.dns = [dns_query_from_dict(d) for d in _records(data, "dns")]
                result.tcp = [tcp_from_dict(d) for d in _records(data, "tcp")]
                result.tls = [tls_from_dict(d) for d in _records(data, "tls")]
                result.http = [http_from_dict(d) for d in _records(data, "http")]
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise _BadAnswer(f"malformed records: {_describe(exc)}") from None
            result.raw = data
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            result.dns, result.tcp, result.tls, result.http = [], [], [], []
            result.failure = F.CONTROL_UNAVAILABLE
            detail = str(exc) if isinstance(exc, _BadAnswer) else _describe(exc)
            result.raw = {"error": _one_line(detail)}
        result.duration_ms = sw.ms()
        return result


def _records(data: dict, key: str) -> list[dict]:
    items = data.get(key) or []
    if not isinstance(items, list) or not all(isinstance(d, dict) for d in items):
        raise TypeError(f"{key!r} is not a list of objects")
    return items
