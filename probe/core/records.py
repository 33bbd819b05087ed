"""Plain records of what each network step observed.

These dataclasses are the probe's whole output: the store writes them as rows, the
control helper returns them as JSON, and analysis reads them back. They hold
observations only, never a verdict. Times are UTC ISO-8601 strings and durations are
milliseconds, so rows from many volunteers can be merged without conversion.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def utcnow() -> str:
    """Current UTC time, ISO-8601 with microseconds and a Z, as stored everywhere."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_id() -> str:
    return str(uuid.uuid4())


class Stopwatch:
    """Wall-clock start (for the record) plus a monotonic timer (for the duration)."""

    def __init__(self) -> None:
        self.started_at = utcnow()
        self._t0 = time.monotonic()

    def ms(self) -> float:
        return round((time.monotonic() - self._t0) * 1000, 3)


@dataclass
class DnsAnswer:
    answer_type: str  # A, AAAA, CNAME
    value: str
    ttl: int | None = None


@dataclass
class DnsReply:
    """A further reply to the same UDP query: two replies racing is evidence of injection."""

    responder: str
    delay_ms: float
    rcode: str | None
    answers: list[DnsAnswer] = field(default_factory=list)


@dataclass
class DnsQuery:
    engine: str  # "system" (getaddrinfo), "udp", "doh", "sink" (a non-resolver: any answer is injected)
    resolver: str | None  # "ip:port" for udp, the URL for doh, None for system
    hostname: str
    query_type: str  # A, AAAA; "ANY" for getaddrinfo (both families at once)
    started_at: str
    duration_ms: float
    failure: str | None = None
    rcode: str | None = None
    responder: str | None = None  # where the first reply actually came from
    answers: list[DnsAnswer] = field(default_factory=list)
    extra_replies: list[DnsReply] = field(default_factory=list)
    query_id: str = field(default_factory=new_id)

    def addresses(self) -> list[str]:
        return [a.value for a in self.answers if a.answer_type in ("A", "AAAA")]


@dataclass
class TcpConnect:
    ip: str
    port: int
    started_at: str
    duration_ms: float
    success: bool
    failure: str | None = None


@dataclass
class Certificate:
    subject: str
    issuer: str
    sans: list[str]
    not_before: str
    not_after: str
    serial: str
    sha256: str
    der_b64: str


@dataclass
class TlsHandshake:
    ip: str
    port: int
    server_name: str
    started_at: str
    duration_ms: float
    success: bool
    failure: str | None = None
    # "target" is the URL's own name; "control" is a benign SNI tried on the same
    # address after a failure, to tell SNI filtering from IP blocking.
    sni_role: str = "target"
    # tcp_connect | before_client_hello | after_client_hello | after_server_hello
    failure_stage: str | None = None
    bytes_sent: int = 0
    bytes_received: int = 0
    tls_version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    cert_valid: bool | None = None  # validates for server_name against the trust store
    cert_failure: str | None = None
    peer_certificates: list[Certificate] = field(default_factory=list)
    # when this computer's clock was off: the (control's) time cert_valid was judged at
    cert_checked_at: str | None = None


@dataclass
class HttpRequest:
    url: str
    kind: str  # "main" (the URL and its redirects) or "http_fallback" (http:// per address)
    hop: int
    started_at: str
    duration_ms: float
    method: str = "GET"
    address: str | None = None  # ip:port actually connected to, when known
    failure: str | None = None
    status: int | None = None
    reason: str | None = None
    http_version: str | None = None
    headers: list[list[str]] = field(default_factory=list)  # [[name, value], ...] in order
    location: str | None = None
    body_length: int | None = None
    body_truncated: bool = False
    body_sha256: str | None = None
    title: str | None = None
    body_head: bytes | None = None  # first bytes of the body, for fingerprinting
    request_id: str = field(default_factory=new_id)
    # False: never sent. Every address it would connect to had already timed out in the
    # TCP step, and the record stands for that timeout (measure.url.timed_out_fetch).
    attempted: bool = True


@dataclass
class ControlResult:
    """What the control helper said, or why it could not be asked."""

    control_url: str
    started_at: str
    duration_ms: float
    failure: str | None = None
    dns: list[DnsQuery] = field(default_factory=list)
    tcp: list[TcpConnect] = field(default_factory=list)
    tls: list[TlsHandshake] = field(default_factory=list)
    http: list[HttpRequest] = field(default_factory=list)
    raw: dict[str, Any] | None = None
    # how many requests it took (retries after 429/503 or a lost connection), and when
    # it failed, why, in one word (probe.measure.control.REASONS)
    attempts: int = 1
    reason: str | None = None


@dataclass
class Measurement:
    url: str
    hostname: str
    scheme: str
    port: int
    started_at: str
    category: str | None = None
    finished_at: str | None = None
    duration_ms: float | None = None
    dns: list[DnsQuery] = field(default_factory=list)
    tcp: list[TcpConnect] = field(default_factory=list)
    tls: list[TlsHandshake] = field(default_factory=list)
    http: list[HttpRequest] = field(default_factory=list)
    control: ControlResult | None = None
    addresses: list[str] = field(default_factory=list)  # what TCP/TLS/HTTP were tried on
    measurement_id: str = field(default_factory=new_id)
    # the run's n-th network this was measured on (probe.measure.netwatch), and whether the
    # network changed while it was in flight (it then mixes two networks)
    network_epoch: int | None = None
    network_changed: bool = False


def to_jsonable(obj: Any) -> Any:
    """Dataclasses to plain JSON types; bytes are dropped (bodies never travel as JSON)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_jsonable(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not isinstance(getattr(obj, f.name), bytes)
        }
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, bytes):
        return None
    return obj


def _build(cls: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def dns_query_from_dict(d: dict[str, Any]) -> DnsQuery:
    q = _build(DnsQuery, d)
    q.answers = [_build(DnsAnswer, a) for a in d.get("answers") or []]
    q.extra_replies = [
        DnsReply(
            responder=r["responder"],
            delay_ms=r["delay_ms"],
            rcode=r.get("rcode"),
            answers=[_build(DnsAnswer, a) for a in r.get("answers") or []],
        )
        for r in d.get("extra_replies") or []
    ]
    return q


def tls_from_dict(d: dict[str, Any]) -> TlsHandshake:
    t = _build(TlsHandshake, d)
    t.peer_certificates = [_build(Certificate, c) for c in d.get("peer_certificates") or []]
    return t


def tcp_from_dict(d: dict[str, Any]) -> TcpConnect:
    return _build(TcpConnect, d)


def http_from_dict(d: dict[str, Any]) -> HttpRequest:
    h = _build(HttpRequest, d)
    h.headers = [list(p) for p in d.get("headers") or []]
    return h


def answer_records(data: dict[str, Any]) -> tuple[list[DnsQuery], list[TcpConnect], list[TlsHandshake], list[HttpRequest]]:
    """The records of a control helper's answer (its JSON: lists under dns, tcp, tls,
    http). Raises TypeError/KeyError/ValueError for an answer that is not one."""

    def items(key: str) -> list[dict[str, Any]]:
        value = data.get(key) or []
        if not isinstance(value, list) or not all(isinstance(d, dict) for d in value):
            raise TypeError(f"{key!r} is not a list of objects")
        return value

    return ([dns_query_from_dict(d) for d in items("dns")], [tcp_from_dict(d) for d in items("tcp")],
            [tls_from_dict(d) for d in items("tls")], [http_from_dict(d) for d in items("http")])
