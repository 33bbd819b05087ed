"""An OONI web_connectivity document to our records (``ooni_to_measurement``). Pure:
no network and no database; malformed input raises OoniFormatError."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from datetime import timedelta
from typing import Any

from yarl import URL

from probe.core import failures as F
from probe.core.addresses import format_hostport, is_ip, split_url, url_of
from probe.core.certs import describe_certificate
from probe.core.constants import BODY_KEEP
from probe.core.pagetext import extract_title
from probe.core.records import (
    ControlResult,
    DnsAnswer,
    DnsQuery,
    DnsReply,
    HttpRequest,
    Measurement,
    TcpConnect,
    TlsHandshake,
)
from probe.ooni.common import (
    ANNOTATION_PREFIX,
    EPOCH,
    MEASUREMENT_FIELDS,
    NAMESPACE,
    Ctx,
    NotWebConnectivity,
    OoniFormatError,
    apply,
    iso,
    parse_iso,
    parse_ooni_time,
    rcode_from_failure,
    read_tags,
    us,
)
from probe.ooni.names import failure_from_ooni
from probe.ooni.th import (
    cert_verdict,
    endpoint,
    header,
    headers_from_ooni,
    th_records,
)


def _engine(raw: Any) -> str:
    if raw in (None, "", "system", "getaddrinfo"):  # MK-era queries have no engine: getaddrinfo
        return "system"
    return str(raw)


def _answers_from_ooni(answers: Any) -> list[DnsAnswer]:
    out: list[DnsAnswer] = []
    for a in answers if isinstance(answers, list) else []:
        if not isinstance(a, dict):
            continue
        kind = a.get("answer_type")
        if not isinstance(kind, str):
            continue
        value = {"A": a.get("ipv4"), "AAAA": a.get("ipv6"), "CNAME": a.get("hostname")}.get(kind)
        if not isinstance(value, str) or not value:
            continue
        if kind == "CNAME":
            value = value.rstrip(".")  # as the probe writes names
        ttl = a.get("ttl")
        out.append(DnsAnswer(kind, value, ttl if isinstance(ttl, int) and not isinstance(ttl, bool) else None))
    return out


def _as_dict(value: Any) -> dict:
    """``value`` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def _resolver(q: dict, engine: str) -> str | None:
    if engine == "system":
        return None
    address = q.get("resolver_address")
    if isinstance(address, str) and address:
        return address
    host, port = q.get("resolver_hostname"), q.get("resolver_port")
    if isinstance(host, str) and host:
        return f"{format_hostport(host, int(port))}" if port else host
    return None


def dns_from_ooni(q: dict, ctx: Ctx) -> DnsQuery:
    engine = _engine(q.get("engine"))
    resolver = _resolver(q, engine)
    started_at, duration_ms = ctx.times(q)
    failure = failure_from_ooni(q.get("failure"))
    rec = DnsQuery(
        engine=engine,
        resolver=resolver,
        hostname=str(q.get("hostname") or ctx.hostname),
        query_type=str(q.get("query_type") or "ANY"),
        started_at=started_at,
        duration_ms=duration_ms,
        failure=failure,
        answers=_answers_from_ooni(q.get("answers")),
    )
    if engine in ("udp", "doh"):
        # The rcode is implied by the failure string; a UDP reply (netxlite's socket is
        # connected) can only have come from the resolver itself.
        rec.rcode = rcode_from_failure(failure)
        if engine == "udp" and rec.rcode is not None:
            rec.responder = resolver
    return apply(rec, read_tags(q))


def reply_from_ooni(dup: dict, query: DnsQuery, query_entry: dict, ctx: Ctx) -> DnsReply:
    """One of ``x_dns_duplicate_responses``: a later reply to an earlier query."""
    q0 = us(query_entry.get("t0"))
    if q0 is None:
        q0 = us(query_entry.get("t")) or 0
    arrived = us(dup.get("t"))
    reply = DnsReply(
        responder=_resolver(dup, _engine(dup.get("engine"))) or query.resolver or "",
        delay_ms=((arrived - q0) / 1000) if arrived is not None else 0.0,
        rcode=rcode_from_failure(failure_from_ooni(dup.get("failure"))),
        answers=_answers_from_ooni(dup.get("answers")),
    )
    return apply(reply, read_tags(dup))


def _dns_list_from_ooni(queries: Any, duplicates: Any, ctx: Ctx, side: str) -> list[DnsQuery]:
    entries = [q for q in (queries if isinstance(queries, list) else []) if isinstance(q, dict)]
    out = [dns_from_ooni(q, ctx) for q in entries]
    for i, rec in enumerate(out):
        rec.query_id = ctx.id(side, "dns", i)
    for dup in duplicates if isinstance(duplicates, list) else []:
        if not isinstance(dup, dict):
            continue
        match = _match_duplicate(dup, entries)
        if match is not None:
            out[match].extra_replies.append(reply_from_ooni(dup, out[match], entries[match], ctx))
    return out


def _match_duplicate(dup: dict, entries: list[dict]) -> int | None:
    """The query a duplicate reply answers: same transaction, else same resolver/name/type."""
    tid = dup.get("transaction_id")
    key = (_engine(dup.get("engine")), dup.get("resolver_address"), dup.get("hostname"), dup.get("query_type"))
    if tid is not None:
        for i, e in enumerate(entries):
            if e.get("transaction_id") == tid and e.get("query_type") == dup.get("query_type"):
                return i
    for i, e in enumerate(entries):
        if (_engine(e.get("engine")), e.get("resolver_address"), e.get("hostname"), e.get("query_type")) == key:
            return i
    return None


def tcp_from_ooni(c: dict, ctx: Ctx) -> TcpConnect:
    status = _as_dict(c.get("status"))
    started_at, duration_ms = ctx.times(c)
    rec = TcpConnect(
        ip=str(c.get("ip") or ""),
        port=int(c.get("port") or 0),
        started_at=started_at,
        duration_ms=duration_ms,
        success=bool(status.get("success")),
        failure=failure_from_ooni(status.get("failure")),
    )
    return apply(rec, read_tags(c))


def _certificates(chain: Any) -> list:
    out = []
    for c in chain if isinstance(chain, list) else []:
        data = c.get("data") if isinstance(c, dict) else None
        if isinstance(data, str) and data:
            try:
                out.append(describe_certificate(base64.b64decode(data, validate=True)))
            except (binascii.Error, ValueError):
                continue
    return out


def tls_from_ooni(h: dict, ctx: Ctx) -> TlsHandshake:
    ip, port = endpoint(h.get("address"), 443)
    started_at, duration_ms = ctx.times(h)
    failure = failure_from_ooni(h.get("failure"))
    success = failure is None
    cert_valid, cert_failure = cert_verdict(success, failure, not h.get("no_tls_verify"))
    rec = TlsHandshake(
        ip=ip,
        port=port,
        server_name=str(h.get("server_name") or ""),
        started_at=started_at,
        duration_ms=duration_ms,
        success=success,
        failure=failure,
        tls_version=h.get("tls_version") or None,
        cipher=h.get("cipher_suite") or None,
        alpn=h.get("negotiated_protocol") or None,
        cert_valid=cert_valid,
        cert_failure=cert_failure,
        peer_certificates=_certificates(h.get("peer_certificates")),
    )
    return apply(rec, read_tags(h))


def _body_from_ooni(body: Any) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, dict):
        if body.get("format") != "base64":
            return None
        try:
            return base64.b64decode(str(body.get("data") or ""))
        except (binascii.Error, ValueError):
            return None
    return str(body).encode("utf-8")


def _http_from_ooni(r: dict, ctx: Ctx, hop: int, kind: str = "main") -> HttpRequest:
    request = _as_dict(r.get("request"))
    response = _as_dict(r.get("response"))
    started_at, duration_ms = ctx.times(r)
    code = response.get("code")
    status = code if isinstance(code, int) and not isinstance(code, bool) and code > 0 else None
    headers = headers_from_ooni(response)
    body = _body_from_ooni(response.get("body"))
    if status is None and not body:
        body = None  # no response: OONI still writes an empty body
    rec = HttpRequest(
        url=str(request.get("url") or ""),
        kind=kind,
        hop=hop,
        started_at=started_at,
        duration_ms=duration_ms,
        method=str(request.get("method") or "GET"),
        address=str(r["address"]) if r.get("address") else None,
        failure=failure_from_ooni(r.get("failure")),
        status=status,
        headers=headers,
        location=header(headers, "location"),
        body_truncated=bool(response.get("body_is_truncated")),
    )
    line = response.get("response_line")  # MK-era: "HTTP/1.1 307 Temporary Redirect"
    if isinstance(line, str) and line.startswith("HTTP/"):
        parts = line.split(" ", 2)
        rec.http_version = parts[0][len("HTTP/"):] or None
        rec.reason = parts[2] if len(parts) == 3 else None
    if body is not None:
        rec.body_head = body[:BODY_KEEP] or None
        rec.body_length = len(body)
        rec.body_sha256 = hashlib.sha256(body).hexdigest()
        rec.title = extract_title(body[:BODY_KEEP], header(headers, "content-type"))
    length = response.get("body_length")
    if isinstance(length, int) and not isinstance(length, bool):
        rec.body_length = length
    return rec


def _kind(entry: dict) -> str:
    kind = read_tags(entry).get("kind")
    return kind if isinstance(kind, str) else "main"


def http_list_from_ooni(requests: Any, ctx: Ctx, side: str) -> list[HttpRequest]:
    """``requests[]`` lists the last hop first: reversed, hop 0 is the URL itself.
    Requests our export tagged with another kind (http_fallback) follow, in order."""
    entries = [r for r in (requests if isinstance(requests, list) else []) if isinstance(r, dict)]
    main = [r for r in entries if _kind(r) == "main"]
    other = [r for r in entries if _kind(r) != "main"]
    out = [apply(_http_from_ooni(r, ctx, hop), read_tags(r)) for hop, r in enumerate(reversed(main))]
    out += [apply(_http_from_ooni(r, ctx, 0, _kind(r)), read_tags(r)) for r in other]
    for i, rec in enumerate(out):
        rec.request_id = ctx.id(side, "http", i)
    return out


def _control_from_ooni(tk: dict, ctx: Ctx, control_url: str, started_at: str, duration_ms: float) -> ControlResult | None:
    failure = tk.get("control_failure")
    control = tk.get("control")
    if failure:
        return ControlResult(control_url, started_at, duration_ms, failure=F.CONTROL_UNAVAILABLE, raw={"error": str(failure)})
    if not isinstance(control, dict) or not control:
        return None
    c = ControlResult(control_url, started_at, duration_ms, raw=control)
    c.dns, c.tcp, c.tls, c.http = th_records(control, ctx, started_at)
    return c


_TEST_KEYS_HINTS = {"queries", "tcp_connect", "requests", "control", "tls_handshakes"}


def _split_document(doc: Any) -> tuple[dict, dict]:
    """(top level, test_keys). A document of test_keys alone has an empty top level."""
    if not isinstance(doc, dict):
        raise OoniFormatError("not a JSON object")
    if "test_keys" in doc:
        # null test_keys (a probe that failed before measuring): a measurement from which
        # nothing can be learned, imported as such (classified `error`), as `{}` is
        tk = {} if doc["test_keys"] is None else doc["test_keys"]
        if not isinstance(tk, dict):
            raise OoniFormatError("test_keys is not an object")
        top = doc
    elif _TEST_KEYS_HINTS & set(doc):
        top, tk = {}, doc
    else:
        raise OoniFormatError("not an OONI measurement (no test_keys)")
    name = top.get("test_name")
    if name is not None and name != "web_connectivity":
        raise NotWebConnectivity(f"not web_connectivity but {name!r}")
    return top, tk


def _input_url(top: dict, tk: dict) -> str:
    """The measured URL: ``input``; for test_keys alone, what was asked of the control,
    or the first request."""
    control_request = _as_dict(tk.get("x_control_request"))
    requests = tk.get("requests") if isinstance(tk.get("requests"), list) else []
    first = requests[-1].get("request", {}).get("url") if requests and isinstance(requests[-1], dict) else None
    for candidate in (top.get("input"), tk.get("input"), control_request.get("http_request"), first):
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    raise OoniFormatError("no input URL")


def _annotations(top: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ann = top.get("annotations")
    for key, value in (ann.items() if isinstance(ann, dict) else []):
        if isinstance(key, str) and key.startswith(ANNOTATION_PREFIX) and isinstance(value, str):
            try:
                out[key[len(ANNOTATION_PREFIX):]] = json.loads(value)
            except ValueError:
                pass
    return out


def _none_if(value: Any, *unknown: str) -> str | None:
    return value if isinstance(value, str) and value and value not in unknown else None


def _measurement_key(top: dict, url: str, fallback_key: str | None) -> str:
    """What identifies one OONI measurement: its backend uid, MK's per-measurement id,
    or its report, URL and time; for a document with none of them, where it was read."""
    if isinstance(top.get("measurement_uid"), str) and top["measurement_uid"]:
        return "uid:" + top["measurement_uid"]
    if isinstance(top.get("id"), str) and top["id"]:
        return "id:" + top["id"]
    start = top.get("measurement_start_time")
    if isinstance(top.get("report_id"), str) and top["report_id"]:
        return f"report:{top['report_id']}|{url}|{start}"
    return f"file:{fallback_key}|{url}|{start}"


def _addresses(dns: list[DnsQuery], tcp: list[TcpConnect], url: str, hostname: str) -> list[str]:
    """What the probe tried for the URL's host: its resolvers' answers for that name
    (system first, as the probe orders them; OONI 0.5 also resolves redirect targets),
    else the addresses it connected to."""
    names = {hostname, (URL(url).raw_host or hostname).lower()}
    own = [q for q in dns if q.engine != "sink" and q.hostname.lower().rstrip(".") in names] or dns
    order = {"system": 0, "udp": 1, "doh": 2}
    out: list[str] = []
    for q in sorted((q for q in own if q.engine != "sink"), key=lambda q: order.get(q.engine, 3)):
        out += [ip for ip in q.addresses() if ip not in out]
    if not out:
        for c in tcp:
            if c.ip and c.ip not in out:
                out.append(c.ip)
    if not out and is_ip(hostname):
        out = [hostname]
    return out


def _complete_chain(m: Measurement, tk: dict, ctx: Ctx) -> None:
    """Make the redirect chain read as the browser saw it.

    OONI v0.5 records a redirect target that failed before any response (refused,
    reset, NXDOMAIN at depth 1, ...) only in ``http_experiment_failure``, with no
    request entry; and a body that failed midway may carry its failure only there.
    The failure becomes our last hop (or the failure of the final response); a hop
    added has an id derived like the others', so an import is the same every time."""
    failure = failure_from_ooni(tk.get("http_experiment_failure"))
    if failure is None:
        return
    main = [h for h in m.http if h.kind == "main"]
    if main and main[-1].failure is not None:
        return
    if not main:
        m.http.insert(0, HttpRequest(m.url, "main", 0, m.started_at, 0.0, failure=failure,
                                     request_id=ctx.id("local", "http", "chain", 0)))
        return
    last = main[-1]
    if last.status in (301, 302, 303, 307, 308) and last.location:
        try:
            nxt = str(url_of(last.url).join(url_of(last.location)))
        except ValueError:
            last.failure = failure
            return
        m.http.append(HttpRequest(nxt, "main", last.hop + 1, last.started_at, 0.0, failure=failure,
                                  request_id=ctx.id("local", "http", "chain", last.hop + 1)))
    else:
        last.failure = failure


def ooni_to_measurement(doc: dict, *, fallback_key: str | None = None) -> tuple[Measurement, dict]:
    """One OONI web_connectivity measurement (0.0.1 to 0.5.x, or its test_keys alone)
    as our records, plus what the run needs to know about where it was taken.

    ``fallback_key`` (e.g. "file:line") names a document that carries no id of its own,
    so that importing it again gives the same measurement id. Raises OoniFormatError
    (NotWebConnectivity for another test's measurement).
    """
    try:
        return _to_measurement(doc, fallback_key)
    except OoniFormatError:
        raise
    except Exception as exc:  # malformed data deep inside (a list where an object belongs, ...)
        raise OoniFormatError(f"malformed measurement ({type(exc).__name__}: {exc})") from None


def _to_measurement(doc: Any, fallback_key: str | None) -> tuple[Measurement, dict]:
    top, tk = _split_document(doc)
    url = _input_url(top, tk)
    try:
        scheme, hostname, port = split_url(url)
    except ValueError as exc:
        raise OoniFormatError(str(exc)) from None
    ours = _annotations(top)
    zero = parse_ooni_time(top.get("measurement_start_time"))
    time_known = zero is not None
    zero = zero or EPOCH
    mid = ours.get("measurement_id")
    if not isinstance(mid, str) or not mid:
        mid = str(uuid.uuid5(NAMESPACE, "ooni:" + _measurement_key(top, url, fallback_key)))
    ctx = Ctx(zero, hostname, url, mid)

    m = Measurement(url=url, hostname=hostname, scheme=scheme, port=port, started_at=iso(zero), measurement_id=mid)
    runtime = top.get("test_runtime")
    if isinstance(runtime, (int, float)) and not isinstance(runtime, bool):
        m.duration_ms = round(runtime * 1000, 3)
        m.finished_at = iso(zero + timedelta(microseconds=round(runtime * 1_000_000)))
    m.dns = _dns_list_from_ooni(tk.get("queries"), tk.get("x_dns_duplicate_responses"), ctx, "local")
    m.tcp = [tcp_from_ooni(c, ctx) for c in tk.get("tcp_connect") or [] if isinstance(c, dict)]
    m.tls = [tls_from_ooni(h, ctx) for h in tk.get("tls_handshakes") or [] if isinstance(h, dict)]
    m.http = http_list_from_ooni(tk.get("requests"), ctx, "local")
    _complete_chain(m, tk, ctx)
    m.addresses = _addresses(m.dns, m.tcp, url, hostname)
    # a time that is no time ("") is ignored like a value of the wrong type: runs are ordered by it
    apply(m, {k: v for k, v in ours.items() if k in MEASUREMENT_FIELDS
              and (k not in ("started_at", "finished_at") or v is None or parse_iso(v) is not None)})

    backend = _as_dict(_as_dict(top.get("test_helpers")).get("backend"))
    address = backend.get("address")
    control_url = address if isinstance(address, str) else "ooni-test-helper"
    th_ns = tk.get("x_th_runtime")
    th_ms = round(th_ns / 1_000_000, 3) if isinstance(th_ns, (int, float)) and not isinstance(th_ns, bool) else 0.0
    control_fields = {k[len("control_"):]: v for k, v in ours.items() if k.startswith("control_")}
    c_url = control_fields.get("control_url", control_url)
    c_started = control_fields.get("started_at", iso(zero))
    c_ms = control_fields.get("duration_ms", th_ms)
    m.control = _control_from_ooni(
        tk,
        ctx,
        c_url if isinstance(c_url, str) else control_url,
        c_started if isinstance(c_started, str) else iso(zero),
        c_ms if isinstance(c_ms, (int, float)) else th_ms,
    )
    if m.control is not None:
        apply(m.control, {k: v for k, v in control_fields.items() if k in ("failure",)})
        raw = control_fields.get("raw")
        if m.control.failure is not None and isinstance(raw, dict):
            m.control.raw = raw

    software = "/".join(str(top[k]) for k in ("software_name", "software_version") if top.get(k)) or None
    meta = {
        "cc": _none_if(top.get("probe_cc"), "ZZ"),
        "asn": _none_if(top.get("probe_asn"), "AS0"),
        "network_name": _none_if(top.get("probe_network_name")),
        "measured_at": m.started_at if time_known else None,
        "finished_at": m.finished_at,
        "software": software,
        "test_version": _none_if(top.get("test_version")),
        "report_id": _none_if(top.get("report_id")),
        "resolver_ip": _none_if(top.get("resolver_ip")) or _none_if(tk.get("client_resolver")),
        "measurement_uid": _none_if(top.get("measurement_uid")),
        "test_helper": control_url if backend else None,
        "run_id": ours.get("run_id") if isinstance(ours.get("run_id"), str) else None,
        "test_keys_only": not top,
    }
    return m, meta
