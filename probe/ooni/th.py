"""OONI's web_connectivity test-helper protocol (oohelperd), both ways.

An OONI Probe user whose OONI helpers are blocked can point at ours
(``POST /`` with a THRequest), and our probe can use an OONI-protocol helper as its
control (``--control ooni+https://HOST/``). So this module turns:

* our records into OONI's THResponse (``th_response``) and back (``th_records``), as
  the codec does for imported and exported measurements;
* a URL and addresses into a THRequest (``th_request``), and a THRequest from a
  stranger into what our helper measures (``parse_th_request``, strictly validated).

Shapes follow OONI's ``internal/model/th.go`` (ooni.md 1.3). Pure; no network code.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any, Protocol

from yarl import URL

from probe.core import failures as F
from probe.core.addresses import format_hostport, is_ip, split_hostport
from probe.core.records import (
    ControlResult,
    DnsAnswer,
    DnsQuery,
    HttpRequest,
    TcpConnect,
    TlsHandshake,
)
from probe.ooni.names import failure_from_ooni, failure_to_ooni

# OONI's default request headers (internal/model/http.go); oohelperd forwards only these.
FORWARDED_HEADERS = ("User-Agent", "Accept", "Accept-Language")
MAX_HEADER_VALUE = 512
MAX_ENDPOINTS = 32
_NAMESPACE = uuid.UUID("9c1f3f55-4d0c-4a3e-9d0e-5a1f0b5b0c11")


class RecordContext(Protocol):
    """Where test-helper records belong: the measured host and URL, and stable ids."""

    @property
    def hostname(self) -> str: ...

    @property
    def url(self) -> str: ...

    def id(self, *parts: object) -> str: ...


class THRequestError(ValueError):
    """A THRequest we will not serve; the message is one line for the client."""


def endpoint(address: Any, default_port: int) -> tuple[str, int]:
    if not isinstance(address, str) or not address:
        return "", default_port
    host, port = split_hostport(address, default_port)
    return host, port

def cert_verdict(success: bool, failure: str | None, verified: bool) -> tuple[bool | None, str | None]:
    """(cert_valid, cert_failure) as the probe records them: a certificate failure says
    the chain did not validate; a success says it did (when it was checked); any other
    failure says nothing about the certificate."""
    if failure in F.CERT_FAILURES:
        return False, failure
    if success and verified:
        return True, None
    return None, None

def header_text(value: Any) -> str:
    """A header name or value: a string, or OONI's base64 object for non-UTF-8 bytes
    (decoded as latin-1, as the probe decodes raw headers)."""
    if isinstance(value, dict) and value.get("format") == "base64":
        try:
            return base64.b64decode(str(value.get("data") or "")).decode("latin-1")
        except (binascii.Error, ValueError):
            return ""
    return "" if value is None else str(value)

def headers_from_ooni(response: dict) -> list[list[str]]:
    pairs = response.get("headers_list")
    if isinstance(pairs, list):
        return [[header_text(p[0]), header_text(p[1])] for p in pairs if isinstance(p, list) and len(p) == 2]
    headers = response.get("headers")
    out: list[list[str]] = []
    for name, value in (headers.items() if isinstance(headers, dict) else []):
        for v in value if isinstance(value, list) else [value]:
            out.append([str(name), header_text(v)])
    return out

def header(headers: list[list[str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)

def th_records(
    control: dict, ctx: RecordContext, started_at: str
) -> tuple[list[DnsQuery], list[TcpConnect], list[TlsHandshake], list[HttpRequest]]:
    """The test helper's answer as records. It carries no timings: every record starts
    when the control did and lasts 0 ms."""
    dns: list[DnsQuery] = []
    d = control.get("dns")
    if isinstance(d, dict) and not is_ip(ctx.hostname):  # the TH skips DNS for IP literals
        answers = []
        for a in d.get("addrs") or []:
            a = str(a)
            if is_ip(a):
                answers.append(DnsAnswer("AAAA" if ":" in a else "A", a))
            else:
                answers.append(DnsAnswer("CNAME", a.rstrip(".")))
        failure = failure_from_ooni(d.get("failure"))
        if failure is None and not any(a.answer_type in ("A", "AAAA") for a in answers):
            failure = F.DNS_NO_ANSWER  # the TH reports "no answer" as null with no addrs
        q = DnsQuery("system", None, ctx.hostname, "ANY", started_at, 0.0, failure, answers=answers)
        q.query_id = ctx.id("control", "dns", 0)
        dns.append(q)
    tcp = []
    for key, v in (control.get("tcp_connect") or {}).items():
        v = v if isinstance(v, dict) else {}
        ip, port = endpoint(key, 0)
        tcp.append(TcpConnect(ip, port, started_at, 0.0, bool(v.get("status")), failure_from_ooni(v.get("failure"))))
    tls = []
    for key, v in (control.get("tls_handshake") or {}).items():
        v = v if isinstance(v, dict) else {}
        ip, port = endpoint(key, 443)
        failure = failure_from_ooni(v.get("failure"))
        success = bool(v.get("status")) and failure is None
        cert_valid, cert_failure = cert_verdict(success, failure, True)
        tls.append(
            TlsHandshake(ip, port, str(v.get("server_name") or ctx.hostname), started_at, 0.0, success, failure,
                         cert_valid=cert_valid, cert_failure=cert_failure)
        )
    http = []
    h = control.get("http_request")
    if isinstance(h, dict):
        headers = headers_from_ooni({"headers": h.get("headers")})
        code, length = h.get("status_code"), h.get("body_length")
        rec = HttpRequest(
            url=ctx.url,
            kind="main",
            hop=0,
            started_at=started_at,
            duration_ms=0.0,
            failure=failure_from_ooni(h.get("failure")),
            status=code if isinstance(code, int) and code > 0 else None,
            headers=headers,
            location=header(headers, "location"),
            body_length=length if isinstance(length, int) and length >= 0 else None,
            title=" ".join(str(h.get("title") or "").split()) or None,  # as extract_title gives it
        )
        rec.request_id = ctx.id("control", "http", 0)
        http.append(rec)
    return dns, tcp, tls, http

def th_response(c: ControlResult, ip_info: dict[str, dict] | None = None) -> dict:
    """Our control's records in the shape of OONI's THResponse (ooni.md 1.3), with our
    own failure strings (what the codec exports, and imports back unchanged)."""
    return _th_response(c, ip_info, None)


def th_answer(c: ControlResult, url: str, ip_info: dict[str, dict] | None) -> dict:
    """What oohelperd itself would answer an OONI probe: its legacy failure names, the
    endpoints it measures (the URL's explicit port, else 443 for https and 80 and 443
    for http; TLS on 443 or the https port), and ip_info (flags: 1 probe, 2 helper, 4
    bogon, 8 valid for the domain; no ASN database here, so asn 0). OONI Probe's
    analysis reads these strings."""
    u = URL(url)
    ports = {u.port} if u.explicit_port else ({443} if u.scheme == "https" else {80, 443})
    tls_port = u.port if u.scheme == "https" else 443
    kept = ControlResult(c.control_url, c.started_at, c.duration_ms, c.failure, c.dns,
                         [t for t in c.tcp if t.port in ports], [t for t in c.tls if t.port == tls_port], c.http)
    return _th_response(kept, ip_info, _LEGACY)


def _legacy_dns(failure: str | None) -> str | None:
    if failure in (None, F.DNS_NO_ANSWER):
        return None
    if failure == F.DNS_NXDOMAIN:
        return "dns_name_error"
    if failure in (F.DNS_SERVFAIL, F.DNS_REFUSED, F.DNS_TEMPORARY_FAILURE, F.DNS_BAD_RESPONSE):
        return "dns_server_failure"
    return "unknown_error"


def _legacy_tcp(failure: str | None) -> str | None:
    if failure is None:
        return None
    return {F.GENERIC_TIMEOUT: "generic_timeout_error", F.CONNECTION_REFUSED: "connection_refused_error"}.get(
        failure, "connect_error")


def _legacy_http(failure: str | None) -> str | None:
    if failure is None or failure == F.BODY_TOO_LARGE:
        return None
    if failure.startswith("dns_") or failure == F.NO_ADDRESSES:
        return "dns_lookup_error"
    return {F.GENERIC_TIMEOUT: "generic_timeout_error", F.CONNECTION_REFUSED: "connection_refused_error"}.get(
        failure, "unknown_error")


# oohelperd's names (ooni.md 1.3): per step, not netxlite's
_LEGACY = {"dns": _legacy_dns, "tcp": _legacy_tcp, "tls": failure_to_ooni, "http": _legacy_http}


def _th_response(c: ControlResult, ip_info: dict[str, dict] | None, names: dict | None) -> dict:
    def name(step: str, failure: str | None) -> str | None:
        return names[step](failure) if names else failure_to_ooni(failure)

    queries = [q for q in c.dns if q.engine == "system"] or c.dns
    addrs: list[str] = []
    for q in queries:
        addrs += [ip for ip in q.addresses() if ip not in addrs]
    dns_failure = None
    if not addrs and queries:
        dns_failure = name("dns", next((q.failure for q in queries if q.failure), F.DNS_NO_ANSWER))
    out: dict[str, Any] = {
        "tcp_connect": {
            format_hostport(t.ip, t.port): {"status": t.success, "failure": name("tcp", t.failure)} for t in c.tcp
        },
        "tls_handshake": {
            format_hostport(t.ip, t.port): {
                "server_name": t.server_name,
                "status": t.success,
                "failure": name("tls", t.failure),
            }
            for t in c.tls
            if t.sni_role == "target"
        },
        "quic_handshake": {},
        "http_request": None,
        "http3_request": None,
        "dns": {"failure": dns_failure, "addrs": addrs},
    }
    main = sorted((h for h in c.http if h.kind == "main"), key=lambda h: h.hop)
    if main:
        last = main[-1]  # the TH describes the final response after redirects
        out["http_request"] = {
            "body_length": last.body_length if last.body_length is not None else -1,
            "discovered_h3_endpoint": "",
            "failure": name("http", last.failure),
            "title": last.title or "",
            "headers": {k: v for k, v in reversed(last.headers)},
            "status_code": last.status if last.status is not None else -1,
        }
    if ip_info is not None:
        out["ip_info"] = {ip: {"asn": 0, "flags": _ip_flags(info)} for ip, info in ip_info.items()
                          if isinstance(info, dict)}
    return out


def _ip_flags(info: dict) -> int:
    return ((1 if info.get("resolved_by_probe") else 0) | (2 if info.get("resolved_by_control") else 0)
            | (4 if info.get("public") is False else 0) | (8 if info.get("valid_for_domain") else 0))



# --- the probe's side ------------------------------------------------------------------------


def th_request(url: str, addresses: list[str], headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The THRequest an OONI probe posts: the URL, its request headers, and the
    endpoints it resolved (``ip:port`` on the URL's port)."""
    u = URL(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    from probe.core.constants import BROWSER_HEADERS

    sent = headers or BROWSER_HEADERS
    return {
        "http_request": url,
        "http_request_headers": {k: [v] for k, v in sent.items() if k in FORWARDED_HEADERS},
        "tcp_connect": [format_hostport(ip, port) for ip in addresses],
        "x_quic_enabled": False,
    }


class _Where:
    def __init__(self, url: str, control_url: str):
        self.url = url
        self.hostname = (URL(url).host or "").strip("[]").lower()
        self._key = f"{control_url}|{url}"

    def id(self, *parts: object) -> str:
        return str(uuid.uuid5(_NAMESPACE, ":".join([self._key, *map(str, parts)])))


def th_response_to_control(data: Any, url: str, control_url: str) -> ControlResult:
    """An OONI test helper's THResponse as our ControlResult (raw: the answer itself).
    Raises ValueError/TypeError for an answer that is not a THResponse."""
    if not isinstance(data, dict) or not any(k in data for k in ("dns", "tcp_connect", "http_request")):
        raise ValueError("not a test-helper answer")
    c = ControlResult(control_url=control_url, started_at="", duration_ms=0.0, raw=data)
    from probe.core.records import utcnow

    c.dns, c.tcp, c.tls, c.http = th_records(data, _Where(url, control_url), utcnow())
    return c


# --- the helper's side ----------------------------------------------------------------------


def parse_th_request(body: bytes, max_endpoints: int = MAX_ENDPOINTS) -> tuple[str, list[str], dict[str, str]]:
    """(url, addresses, headers) of a THRequest body. OONI adds keys over time
    (``x_quic_enabled``, ...): unknown keys are ignored, known ones strictly checked.
    Raises THRequestError with a one-line reason."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise THRequestError("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise THRequestError("body must be a JSON object")
    url = data.get("http_request")
    if not isinstance(url, str) or not url:
        raise THRequestError("http_request must be a URL string")
    endpoints = data.get("tcp_connect") or []
    if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
        raise THRequestError("tcp_connect must be a list of \"ip:port\" strings")
    if len(endpoints) > max_endpoints:
        raise THRequestError(f"too many tcp_connect endpoints: {len(endpoints)} > {max_endpoints}")
    addresses: list[str] = []
    for e in endpoints:
        try:
            host, _ = split_hostport(e, 0)
        except ValueError:
            raise THRequestError(f"not an ip:port endpoint: {e[:60]!r}") from None
        if not is_ip(host):
            raise THRequestError(f"not an ip:port endpoint: {e[:60]!r}")
        if host not in addresses:
            addresses.append(host)
    raw_headers = data.get("http_request_headers") or {}
    if not isinstance(raw_headers, dict):
        raise THRequestError("http_request_headers must be an object")
    headers: dict[str, str] = {}
    for name, values in raw_headers.items():
        canonical = next((h for h in FORWARDED_HEADERS if h.lower() == str(name).lower()), None)
        if canonical is None:
            continue  # oohelperd forwards only these three
        value = values[0] if isinstance(values, list) and values else values
        if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE or any(ord(ch) < 0x20 for ch in value):
            raise THRequestError(f"bad value for header {canonical}")
        headers[canonical] = value
    return url, addresses, headers
