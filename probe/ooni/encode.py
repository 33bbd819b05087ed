"""Our records to an OONI web_connectivity document (``measurement_to_ooni``). Pure:
whatever an import would not get back the same is carried in ``bynet:`` tags."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from probe import __version__
from probe.core import failures as F
from probe.core.addresses import format_hostport, is_ip, split_hostport
from probe.core.records import (
    ControlResult,
    DnsAnswer,
    DnsQuery,
    HttpRequest,
    Measurement,
    TcpConnect,
    TlsHandshake,
    to_jsonable,
)
from probe.ooni.common import (
    ANNOTATION_PREFIX,
    EPOCH,
    EXPORT_TEST_VERSION,
    FAILURE_TOKEN,
    MEASUREMENT_FIELDS,
    SOFTWARE_NAME,
    TAG_PREFIX,
    Ctx,
    diff_tags,
    differences,
    failure_from_rcode,
    parse_iso,
    tag_json,
)
from probe.ooni.decode import (
    dns_from_ooni,
    http_list_from_ooni,
    ooni_to_measurement,
    reply_from_ooni,
    tcp_from_ooni,
    tls_from_ooni,
)
from probe.ooni.names import failure_to_ooni
from probe.ooni.th import (
    th_records,
    th_response,
)

_CONTROL_FIELDS = ("control_url", "started_at", "duration_ms", "failure")


def _answers_to_ooni(answers: list[DnsAnswer]) -> list[dict]:
    key = {"A": "ipv4", "AAAA": "ipv6", "CNAME": "hostname"}
    return [
        {"answer_type": a.answer_type, key.get(a.answer_type, "hostname"): a.value, "ttl": a.ttl}
        for a in answers
    ]


def _tagged(entry: dict, ours: Any, back: Any) -> dict:
    entry["tags"] = list(entry.get("tags") or []) + diff_tags(ours, back)
    return entry


def _dns_entry(q: DnsQuery, answers: list[DnsAnswer], failure: str | None, t0: float, t: float, tid: int) -> dict:
    """One OONI query entry: the query itself, or one more reply to it (a duplicate)."""
    return {
        "answers": _answers_to_ooni(answers) or None,
        "engine": q.engine,
        "failure": failure_to_ooni(failure),
        "hostname": q.hostname,
        "query_type": q.query_type,
        "resolver_hostname": None,
        "resolver_port": None,
        "resolver_address": q.resolver or "",
        "t0": t0,
        "t": t,
        "tags": [],
        "transaction_id": tid,
    }


def _dns_to_ooni(q: DnsQuery, ctx: Ctx, tid: int) -> tuple[dict, list[dict]]:
    t0, t = ctx.offsets(q.started_at, q.duration_ms)
    entry = _dns_entry(q, q.answers, q.failure, t0, t, tid)
    _tagged(entry, q, dns_from_ooni(entry, ctx))
    duplicates = []
    for reply in q.extra_replies:
        failure = failure_from_rcode(reply.rcode, q.query_type, reply.answers)
        late = (round(t0 * 1_000_000) + round(reply.delay_ms * 1000)) / 1_000_000
        dup = _dns_entry(q, reply.answers, failure, t0, late, tid)
        duplicates.append(_tagged(dup, reply, reply_from_ooni(dup, q, entry, ctx)))
    return entry, duplicates


def _tcp_to_ooni(c: TcpConnect, ctx: Ctx, tid: int) -> dict:
    t0, t = ctx.offsets(c.started_at, c.duration_ms)
    entry = {
        "ip": c.ip,
        "port": c.port,
        "status": {"failure": failure_to_ooni(c.failure), "success": c.success},
        "t0": t0,
        "t": t,
        "tags": [],
        "transaction_id": tid,
    }
    return _tagged(entry, c, tcp_from_ooni(entry, ctx))


def _tls_to_ooni(h: TlsHandshake, ctx: Ctx, tid: int) -> dict:
    t0, t = ctx.offsets(h.started_at, h.duration_ms)
    chain = [{"format": "base64", "data": c.der_b64} for c in h.peer_certificates if c.der_b64]
    entry = {
        "network": "tcp",
        "address": format_hostport(h.ip, h.port),
        "cipher_suite": h.cipher or "",
        "failure": failure_to_ooni(h.failure),
        "negotiated_protocol": h.alpn or "",
        "no_tls_verify": False,
        "peer_certificates": chain or None,
        "server_name": h.server_name,
        "t0": t0,
        "t": t,
        "tags": [],
        "tls_version": h.tls_version or "",
        "transaction_id": tid,
    }
    return _tagged(entry, h, tls_from_ooni(entry, ctx))


def _body_to_ooni(body: bytes | None) -> str | dict:
    data = body or b""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"format": "base64", "data": base64.b64encode(data).decode("ascii")}


def _http_to_ooni(r: HttpRequest, ctx: Ctx, tid: int) -> dict:
    t0, t = ctx.offsets(r.started_at, r.duration_ms)
    head = r.body_head or b""
    got_response = r.status is not None
    response: dict[str, Any] = {
        "body": _body_to_ooni(head) if (got_response or head) else "",
        "body_is_truncated": r.body_truncated or (r.body_length is not None and len(head) < r.body_length),
        "code": r.status or 0,
        "headers_list": [[k, v] for k, v in r.headers],
        "headers": {k: v for k, v in reversed(r.headers)},  # the first value of each name
    }
    if r.body_length is not None:
        response["body_length"] = r.body_length  # the body above may be only its head
    return {
        "network": "tcp",
        "address": r.address or "",
        "alpn": "",
        "failure": failure_to_ooni(r.failure),
        "request": {
            "body": "",
            "body_is_truncated": False,
            "headers_list": [],
            "headers": {},
            "method": r.method,
            "tor": {"exit_ip": None, "exit_name": None, "is_tor": False},
            "x_transport": "tcp",
            "url": r.url,
        },
        "response": response,
        "t0": t0,
        "t": t,
        "tags": [f"{TAG_PREFIX}kind={tag_json(r.kind)}"] if r.kind != "main" else [],
        "transaction_id": tid,
    }


def _requests_to_ooni(http: list[HttpRequest], ctx: Ctx) -> list[dict]:
    """The redirect chain last hop first (OONI's order), then other kinds, tagged."""
    main = sorted((r for r in http if r.kind == "main"), key=lambda r: r.hop)
    ordered = [*reversed(main), *(r for r in http if r.kind != "main")]
    entries = [_http_to_ooni(r, ctx, i) for i, r in enumerate(ordered, 1)]
    back = http_list_from_ooni(entries, ctx, "local")  # in our order: main by hop, then others
    ours_in_back_order = [*main, *(r for r in http if r.kind != "main")]
    index = {id(r): i for i, r in enumerate(ordered)}
    for r, b in zip(ours_in_back_order, back, strict=False):
        _tagged(entries[index[id(r)]], r, b)
    return entries


def _records_without_ids(*groups: list) -> Any:
    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("query_id", "request_id")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return strip(to_jsonable(list(groups)))


def _control_to_ooni(c: ControlResult | None, ctx: Ctx) -> tuple[dict | None, str | None]:
    """(control, control_failure). A control imported from OONI is written back as it
    came (ip_info, http3_request and all) when its records are still what it says."""
    if c is None:
        return None, None
    if c.failure is not None:
        error = c.raw.get("error") if isinstance(c.raw, dict) else None
        if not isinstance(error, str) or not error:
            theirs = failure_to_ooni(c.failure)
        elif FAILURE_TOKEN.match(error) or error.startswith(F.UNKNOWN_FAILURE):
            theirs = error  # already a failure string (OONI's control_failure, imported)
        else:
            theirs = F.unknown(error)  # our helper client's one-line reason
        return None, theirs
    if isinstance(c.raw, dict) and (isinstance(c.raw.get("dns"), dict) or isinstance(c.raw.get("tcp_connect"), dict)):
        try:
            again = th_records(c.raw, ctx, c.started_at)
        except (AttributeError, TypeError, ValueError):
            again = None
        if again is not None and _records_without_ids(*again) == _records_without_ids(c.dns, c.tcp, c.tls, c.http):
            return c.raw, None
    return th_response(c), None


def _second(dt: datetime) -> datetime:
    return dt.replace(microsecond=0)


def _report_id(run: dict, m: Measurement, cc: str, asn: str) -> str:
    """OONI's report id format, derived from our run so one run stays one report."""
    start = parse_iso(run.get("started_at")) or parse_iso(m.started_at) or EPOCH
    run_id = str(run.get("run_id") or m.measurement_id).replace("-", "")
    return f"{start:%Y%m%dT%H%M%SZ}_webconnectivity_{cc}_{asn.removeprefix('AS')}_n1_{run_id[:16]}"


def _first_resolver_ip(run: dict) -> str | None:
    try:
        resolvers = json.loads(run.get("resolvers") or "[]")
    except (TypeError, ValueError):
        return None
    for r in resolvers if isinstance(resolvers, list) else []:
        try:
            host, _ = split_hostport(str(r))
        except ValueError:
            continue
        if is_ip(host):
            return host
    return None


def measurement_to_ooni(m: Measurement, run: dict) -> dict:
    """Our measurement as an OONI web_connectivity 0.4.3 document (data format 0.2.0).

    Observations only: OONI's verdict keys are null. What OONI has no field for is kept
    in tags and annotations (see the module docstring), so ``ooni_to_measurement`` of
    the result gives the same records back, the control apart.
    """
    start = parse_iso(m.started_at) or EPOCH
    zero = _second(start)
    ctx = Ctx(zero, m.hostname, m.url, m.measurement_id)
    queries, duplicates = [], []
    for i, q in enumerate(m.dns, 1):
        entry, dups = _dns_to_ooni(q, ctx, i)
        queries.append(entry)
        duplicates += dups
    tcp = [_tcp_to_ooni(c, ctx, i) for i, c in enumerate(m.tcp, 1)]
    tls = [_tls_to_ooni(h, ctx, i) for i, h in enumerate(m.tls, 1)]
    requests = _requests_to_ooni(m.http, ctx)
    control, control_failure = _control_to_ooni(m.control, ctx)
    system = [q for q in m.dns if q.engine == "system"]
    dns_failure = system[0].failure if system else (m.dns[0].failure if m.dns and all(q.failure for q in m.dns) else None)
    main = sorted((r for r in m.http if r.kind == "main"), key=lambda r: r.hop)
    cc = run.get("cc") or "ZZ"
    asn = run.get("asn") or "AS0"
    resolver_ip = _first_resolver_ip(run)
    run_start = parse_iso(run.get("started_at")) or start
    test_keys: dict[str, Any] = {
        "agent": "redirect",
        "client_resolver": resolver_ip,
        "retries": None,
        "socksproxy": None,
        "queries": queries,
        "dns_experiment_failure": failure_to_ooni(dns_failure),
        "dns_consistency": None,
        "control_failure": control_failure,
        "control": control,
        "tcp_connect": tcp,
        "tls_handshakes": tls,
        "requests": requests,
        "http_experiment_failure": failure_to_ooni(main[-1].failure) if main else None,
        "body_length_match": None,
        "body_proportion": None,
        "status_code_match": None,
        "headers_match": None,
        "title_match": None,
        "accessible": None,
        "blocking": None,
    }
    if duplicates:
        test_keys["x_dns_duplicate_responses"] = duplicates
    if m.control is not None:
        test_keys["x_th_runtime"] = round(m.control.duration_ms * 1_000_000)
    doc: dict[str, Any] = {
        "annotations": {},
        "data_format_version": "0.2.0",
        "input": m.url,
        "measurement_start_time": f"{zero:%Y-%m-%d %H:%M:%S}",
        "probe_asn": asn,
        "probe_cc": cc,
        "probe_ip": "127.0.0.1",
        "probe_network_name": run.get("network_name") or "",
        "report_id": _report_id(run, m, cc, asn),
        "resolver_asn": "AS0",
        "resolver_ip": resolver_ip or "",
        "resolver_network_name": "",
        "software_name": SOFTWARE_NAME,
        "software_version": __version__,
        "test_helpers": {"backend": {"address": m.control.control_url, "type": "https"}} if m.control else {},
        "test_keys": test_keys,
        "test_name": "web_connectivity",
        "test_runtime": round(m.duration_ms / 1000, 6) if m.duration_ms is not None else 0.0,
        "test_start_time": f"{_second(run_start):%Y-%m-%d %H:%M:%S}",
        "test_version": EXPORT_TEST_VERSION,
    }
    # What an import would infer at the measurement and control level, and what differs.
    back, _ = ooni_to_measurement(doc)
    ann: dict[str, Any] = {"measurement_id": m.measurement_id}
    if run.get("run_id"):
        ann["run_id"] = run["run_id"]
    ann.update(differences(m, back, MEASUREMENT_FIELDS))
    if m.control is not None and back.control is not None:
        ann.update({f"control_{k}": v for k, v in differences(m.control, back.control, _CONTROL_FIELDS).items()})
        if m.control.failure is not None and to_jsonable(m.control.raw) != to_jsonable(back.control.raw):
            ann["control_raw"] = m.control.raw
    doc["annotations"] = {ANNOTATION_PREFIX + k: tag_json(v) for k, v in ann.items()}
    return doc
