"""OONI web_connectivity measurements in and out of our records.

Why: OONI has years of measurements from Belarus and elsewhere, and labelled simulated
ones (tests/data/ooni) that are ground truth for our classifier. Importing them turns
each into the same rows the probe writes, so ``analysis/`` judges OONI's observations
and ours with the same rules. Exporting ours as OONI documents lets OONI's tools (and
researchers used to them) read what our volunteers saw.

Only observations cross over. OONI's verdict keys (``blocking``, ``accessible``,
``dns_consistency``, ``*_match``) are analysis, not observation: they are neither
imported nor written (exported as null).

Mapping rules, in one place:

* Failure strings go through ``failures.OONI_NAMES`` both ways. Importing also knows the
  test helper's and MK-era legacy strings whose meaning is exactly one of ours
  (``dns_name_error`` is NXDOMAIN); any other string is kept as ``unknown_failure: <it>``
  rather than guessed.
* OONI times are seconds (``t0``, ``t``) since ``measurement_start_time``; ours are ISO
  instants and milliseconds. Both are converted through whole microseconds, so a round
  trip is exact.
* Export writes OONI's own fields, and then imports the result in memory: whatever an
  import would not get back the same (our TLS failure stage, a redirect hop's reason, a
  failure OONI's vocabulary merges, ...) is written into the record's ``tags`` as
  ``bynet:<field>=<JSON>`` (measurement-level ones into ``annotations`` as
  ``bynet_<field>``). OONI's tools ignore tags they do not know; our import reads them
  back, so our own exports round-trip without loss. The exception is the control:
  OONI's THResponse holds one DNS answer set, one result per endpoint and the final HTTP
  response, without timings, and we keep to that shape (our helper's own answer, kept in
  ``ControlResult.raw``, is not exported). A control imported from OONI is exported as
  it came.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import gzip
import hashlib
import itertools
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

import sqlite_utils
from yarl import URL

from probe import __version__
from probe.store import db as store
from probe.core import failures as F
from probe.measure.dns import format_hostport, is_ip, split_hostport
from probe.ooni.names import failure_from_ooni, failure_to_ooni
from probe.ooni.th import (
    cert_verdict,
    endpoint,
    header,
    headers_from_ooni,
    th_records,
    th_response,
)
from probe.core.pagetext import extract_title
from probe.measure.url import split_url
from probe.core.records import (
    ControlResult,
    DnsAnswer,
    DnsQuery,
    DnsReply,
    HttpRequest,
    Measurement,
    TcpConnect,
    TlsHandshake,
    to_jsonable,
)
from probe.measure.tls import describe_certificate

# Fixed namespace: the same OONI measurement always gets the same ids, in any database.
NAMESPACE = uuid.UUID("f5ea01af-9f11-4edc-828b-c5dddfbade0c")
BODY_KEEP = 64 * 1024  # what the probe keeps of a body (FetchOptions.body_keep)
TAG_PREFIX = "bynet:"
ANNOTATION_PREFIX = "bynet_"
EXPORT_TEST_VERSION = "0.4.3"
SOFTWARE_NAME = "bynet-probe"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)  # a measurement whose time OONI did not give

# --- failure strings (the maps are in ooni_names) ---------------------------------------

_RCODE_OF_FAILURE = {
    None: "NOERROR",
    F.DNS_NO_ANSWER: "NOERROR",
    F.DNS_NXDOMAIN: "NXDOMAIN",
    F.DNS_SERVFAIL: "SERVFAIL",
    F.DNS_REFUSED: "REFUSED",
}
_FAILURE_OF_RCODE = {"NXDOMAIN": F.DNS_NXDOMAIN, "SERVFAIL": F.DNS_SERVFAIL, "REFUSED": F.DNS_REFUSED}
_RCODE_DETAIL = F.UNKNOWN_FAILURE + ": rcode "
_FAILURE_TOKEN = re.compile(r"^[a-z0-9_]+$")


def _rcode_from_failure(failure: str | None) -> str | None:
    """The DNS rcode a UDP/DoH failure string implies (netxlite derives them from it)."""
    if failure in _RCODE_OF_FAILURE:
        return _RCODE_OF_FAILURE[failure]
    if failure and failure.startswith(_RCODE_DETAIL):
        return failure[len(_RCODE_DETAIL):] or None
    return None


def _failure_from_rcode(rcode: str | None, query_type: str, answers: list[DnsAnswer]) -> str | None:
    """What the probe records for a reply with this rcode (dns._fill_from_message)."""
    if rcode in _FAILURE_OF_RCODE:
        return _FAILURE_OF_RCODE[rcode]
    if rcode not in (None, "NOERROR"):
        return F.unknown(f"rcode {rcode}")
    if not any(a.answer_type == query_type for a in answers):
        return F.DNS_NO_ANSWER
    return None


# --- errors and results ------------------------------------------------------------------


class OoniFormatError(ValueError):
    """A document we cannot read as a web_connectivity measurement (one line's error)."""


class NotWebConnectivity(OoniFormatError):
    """A measurement of another OONI test: skipped with a warning, not an error."""


class OoniImportError(Exception):
    """The input as a whole cannot be read (missing, unreadable): a one-line reason."""


@dataclass
class ImportSummary:
    """What one import did; ``messages`` says which line was skipped or bad, and why."""

    source: str
    imported: int = 0
    duplicates: int = 0  # already in the database (same measurement id)
    skipped: int = 0  # not web_connectivity
    errors: int = 0
    messages: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)

    @property
    def usable(self) -> int:
        """Measurements of this input that are now in the database."""
        return self.imported + self.duplicates

    def line(self) -> str:
        """The one-line summary; "skipped" counts other tests and measurements already
        in the database (both fine), "errors" the documents that could not be read."""
        return (
            f"imported {self.imported} measurements from {self.source} "
            f"({self.skipped + self.duplicates} skipped, {self.errors} errors)"
        )


# --- time ---------------------------------------------------------------------------------


def _parse_ooni_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _iso(dt: datetime) -> str:
    """Our stored format (records.utcnow)."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _us(seconds: Any) -> int | None:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return None
    return round(seconds * 1_000_000)


@dataclass(frozen=True)
class _Ctx:
    """What mapping one record needs from its measurement."""

    zero: datetime  # measurement_start_time: OONI's t0/t count from here
    hostname: str
    url: str
    mid: str

    def times(self, entry: dict) -> tuple[str, float]:
        """(started_at, duration_ms) from an entry's t0/t; only t (MK, v0.4 events): a
        zero-length step at t."""
        t0, t = _us(entry.get("t0")), _us(entry.get("t"))
        start = t0 if t0 is not None else (t if t is not None else 0)
        end = t if (t0 is not None and t is not None) else start
        return _iso(self.zero + timedelta(microseconds=start)), (end - start) / 1000

    def offsets(self, started_at: str, duration_ms: float) -> tuple[float, float]:
        """(t0, t) in seconds for a record, through whole microseconds."""
        dt = _parse_iso(started_at)
        start = round((dt - self.zero) / timedelta(microseconds=1)) if dt else 0
        end = start + round((duration_ms or 0) * 1000)
        return start / 1_000_000, end / 1_000_000

    def id(self, *parts: object) -> str:
        return str(uuid.uuid5(NAMESPACE, ":".join([self.mid, *map(str, parts)])))


# --- tags: our fields that OONI has no place for --------------------------------------------

_NOT_CARRIED = {"query_id", "request_id", "answers", "extra_replies", "peer_certificates", "body_head"}
_SCALARS: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


def _type_ok(annotation: str, value: Any) -> bool:
    """Whether a tag's JSON value fits the dataclass field's annotation ("int | None",
    "list[list[str]]", ...): tags come from files, and rows must stay well-formed."""
    for part in str(annotation).split("|"):
        part = part.strip()
        if part == "None" and value is None:
            return True
        if part.startswith("list[") and part.endswith("]") and isinstance(value, list):
            if all(_type_ok(part[5:-1], v) for v in value):
                return True
        elif part in _SCALARS and isinstance(value, _SCALARS[part]):
            if not (isinstance(value, bool) and part != "bool"):
                return True
    return False


def _json(value: Any) -> str:
    return json.dumps(to_jsonable(value), ensure_ascii=False, separators=(",", ":"))


def _differences(ours: Any, back: Any, names: Iterable[str]) -> dict[str, Any]:
    return {n: getattr(ours, n) for n in names if to_jsonable(getattr(ours, n)) != to_jsonable(getattr(back, n))}


def _carried(rec: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(rec) if f.name not in _NOT_CARRIED]


def _diff_tags(ours: Any, back: Any) -> list[str]:
    """Tags for every field an import of the OONI entry would not give back."""
    return [f"{TAG_PREFIX}{n}={_json(v)}" for n, v in _differences(ours, back, _carried(ours)).items()]


def _read_tags(entry: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tags = entry.get("tags")
    for tag in tags if isinstance(tags, list) else []:
        if isinstance(tag, str) and tag.startswith(TAG_PREFIX):
            name, sep, value = tag[len(TAG_PREFIX):].partition("=")
            if sep:
                try:
                    out[name] = json.loads(value)
                except ValueError:
                    pass
    return out


def _apply(rec: Any, values: dict[str, Any]) -> Any:
    """Set carried fields from tags/annotations, ignoring unknown names and wrong types."""
    types = {f.name: f.type for f in dataclasses.fields(rec) if f.name not in _NOT_CARRIED}
    for name, value in values.items():
        if name in types and _type_ok(types[name], value):
            setattr(rec, name, value)
    return rec


# --- OONI -> ours: one record at a time ------------------------------------------------------


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
        value = {"A": a.get("ipv4"), "AAAA": a.get("ipv6"), "CNAME": a.get("hostname")}.get(kind)
        if not isinstance(value, str) or not value:
            continue
        if kind == "CNAME":
            value = value.rstrip(".")  # as the probe writes names
        ttl = a.get("ttl")
        out.append(DnsAnswer(kind, value, ttl if isinstance(ttl, int) and not isinstance(ttl, bool) else None))
    return out


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


def _dns_from_ooni(q: dict, ctx: _Ctx) -> DnsQuery:
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
        rec.rcode = _rcode_from_failure(failure)
        if engine == "udp" and rec.rcode is not None:
            rec.responder = resolver
    return _apply(rec, _read_tags(q))


def _reply_from_ooni(dup: dict, query: DnsQuery, query_entry: dict, ctx: _Ctx) -> DnsReply:
    """One of ``x_dns_duplicate_responses``: a later reply to an earlier query."""
    q0 = _us(query_entry.get("t0"))
    if q0 is None:
        q0 = _us(query_entry.get("t")) or 0
    arrived = _us(dup.get("t"))
    reply = DnsReply(
        responder=_resolver(dup, _engine(dup.get("engine"))) or query.resolver or "",
        delay_ms=((arrived - q0) / 1000) if arrived is not None else 0.0,
        rcode=_rcode_from_failure(failure_from_ooni(dup.get("failure"))),
        answers=_answers_from_ooni(dup.get("answers")),
    )
    return _apply(reply, _read_tags(dup))


def _dns_list_from_ooni(queries: Any, duplicates: Any, ctx: _Ctx, side: str) -> list[DnsQuery]:
    entries = [q for q in (queries if isinstance(queries, list) else []) if isinstance(q, dict)]
    out = [_dns_from_ooni(q, ctx) for q in entries]
    for i, rec in enumerate(out):
        rec.query_id = ctx.id(side, "dns", i)
    for dup in duplicates if isinstance(duplicates, list) else []:
        if not isinstance(dup, dict):
            continue
        match = _match_duplicate(dup, entries)
        if match is not None:
            out[match].extra_replies.append(_reply_from_ooni(dup, out[match], entries[match], ctx))
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


def _tcp_from_ooni(c: dict, ctx: _Ctx) -> TcpConnect:
    status = c.get("status") if isinstance(c.get("status"), dict) else {}
    started_at, duration_ms = ctx.times(c)
    rec = TcpConnect(
        ip=str(c.get("ip") or ""),
        port=int(c.get("port") or 0),
        started_at=started_at,
        duration_ms=duration_ms,
        success=bool(status.get("success")),
        failure=failure_from_ooni(status.get("failure")),
    )
    return _apply(rec, _read_tags(c))


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


def _tls_from_ooni(h: dict, ctx: _Ctx) -> TlsHandshake:
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
    return _apply(rec, _read_tags(h))


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


def _http_from_ooni(r: dict, ctx: _Ctx, hop: int, kind: str = "main") -> HttpRequest:
    request = r.get("request") if isinstance(r.get("request"), dict) else {}
    response = r.get("response") if isinstance(r.get("response"), dict) else {}
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
    kind = _read_tags(entry).get("kind")
    return kind if isinstance(kind, str) else "main"


def _http_list_from_ooni(requests: Any, ctx: _Ctx, side: str) -> list[HttpRequest]:
    """``requests[]`` lists the last hop first: reversed, hop 0 is the URL itself.
    Requests our export tagged with another kind (http_fallback) follow, in order."""
    entries = [r for r in (requests if isinstance(requests, list) else []) if isinstance(r, dict)]
    main = [r for r in entries if _kind(r) == "main"]
    other = [r for r in entries if _kind(r) != "main"]
    out = [_apply(_http_from_ooni(r, ctx, hop), _read_tags(r)) for hop, r in enumerate(reversed(main))]
    out += [_apply(_http_from_ooni(r, ctx, 0, _kind(r)), _read_tags(r)) for r in other]
    for i, rec in enumerate(out):
        rec.request_id = ctx.id(side, "http", i)
    return out


# --- the control: OONI's THResponse ----------------------------------------------------------


def _control_from_ooni(tk: dict, ctx: _Ctx, control_url: str, started_at: str, duration_ms: float) -> ControlResult | None:
    failure = tk.get("control_failure")
    control = tk.get("control")
    if failure:
        return ControlResult(control_url, started_at, duration_ms, failure=F.CONTROL_UNAVAILABLE, raw={"error": str(failure)})
    if not isinstance(control, dict) or not control:
        return None
    c = ControlResult(control_url, started_at, duration_ms, raw=control)
    c.dns, c.tcp, c.tls, c.http = th_records(control, ctx, started_at)
    return c


# --- OONI -> ours: a whole measurement ----------------------------------------------------------

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
    control_request = tk.get("x_control_request") if isinstance(tk.get("x_control_request"), dict) else {}
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


def _complete_chain(m: Measurement, tk: dict) -> None:
    """Make the redirect chain read as the browser saw it.

    OONI v0.5 records a redirect target that failed before any response (refused,
    reset, NXDOMAIN at depth 1, ...) only in ``http_experiment_failure``, with no
    request entry; and a body that failed midway may carry its failure only there.
    The failure becomes our last hop (or the failure of the final response)."""
    failure = failure_from_ooni(tk.get("http_experiment_failure"))
    if failure is None:
        return
    main = [h for h in m.http if h.kind == "main"]
    if main and main[-1].failure is not None:
        return
    if not main:
        m.http.insert(0, HttpRequest(m.url, "main", 0, m.started_at, 0.0, failure=failure))
        return
    last = main[-1]
    if last.status in (301, 302, 303, 307, 308) and last.location:
        try:
            nxt = str(URL(last.url).join(URL(last.location)))
        except (ValueError, TypeError):
            last.failure = failure
            return
        m.http.append(HttpRequest(nxt, "main", last.hop + 1, last.started_at, 0.0, failure=failure))
    else:
        last.failure = failure


def ooni_to_measurement(doc: dict, *, fallback_key: str | None = None) -> tuple[Measurement, dict]:
    """One OONI web_connectivity measurement (0.0.1 to 0.5.x, or its test_keys alone)
    as our records, plus what the run needs to know about where it was taken.

    ``fallback_key`` (e.g. "file:line") names a document that carries no id of its own,
    so that importing it again gives the same measurement id. Raises OoniFormatError
    (NotWebConnectivity for another test's measurement).
    """
    top, tk = _split_document(doc)
    url = _input_url(top, tk)
    try:
        scheme, hostname, port = split_url(url)
    except ValueError as exc:
        raise OoniFormatError(str(exc)) from None
    ours = _annotations(top)
    zero = _parse_ooni_time(top.get("measurement_start_time"))
    time_known = zero is not None
    zero = zero or EPOCH
    mid = ours.get("measurement_id")
    if not isinstance(mid, str) or not mid:
        mid = str(uuid.uuid5(NAMESPACE, "ooni:" + _measurement_key(top, url, fallback_key)))
    ctx = _Ctx(zero, hostname, url, mid)

    m = Measurement(url=url, hostname=hostname, scheme=scheme, port=port, started_at=_iso(zero), measurement_id=mid)
    runtime = top.get("test_runtime")
    if isinstance(runtime, (int, float)) and not isinstance(runtime, bool):
        m.duration_ms = round(runtime * 1000, 3)
        m.finished_at = _iso(zero + timedelta(microseconds=round(runtime * 1_000_000)))
    m.dns = _dns_list_from_ooni(tk.get("queries"), tk.get("x_dns_duplicate_responses"), ctx, "local")
    m.tcp = [_tcp_from_ooni(c, ctx) for c in tk.get("tcp_connect") or [] if isinstance(c, dict)]
    m.tls = [_tls_from_ooni(h, ctx) for h in tk.get("tls_handshakes") or [] if isinstance(h, dict)]
    m.http = _http_list_from_ooni(tk.get("requests"), ctx, "local")
    _complete_chain(m, tk)
    m.addresses = _addresses(m.dns, m.tcp, url, hostname)
    _apply(m, {k: v for k, v in ours.items() if k in _MEASUREMENT_FIELDS})

    helpers = top.get("test_helpers") if isinstance(top.get("test_helpers"), dict) else {}
    backend = helpers.get("backend") if isinstance(helpers.get("backend"), dict) else {}
    control_url = backend.get("address") if isinstance(backend.get("address"), str) else "ooni-test-helper"
    th_ns = tk.get("x_th_runtime")
    th_ms = round(th_ns / 1_000_000, 3) if isinstance(th_ns, (int, float)) and not isinstance(th_ns, bool) else 0.0
    control_fields = {k[len("control_"):]: v for k, v in ours.items() if k.startswith("control_")}
    c_url = control_fields.get("control_url", control_url)
    c_started = control_fields.get("started_at", _iso(zero))
    c_ms = control_fields.get("duration_ms", th_ms)
    m.control = _control_from_ooni(
        tk,
        ctx,
        c_url if isinstance(c_url, str) else control_url,
        c_started if isinstance(c_started, str) else _iso(zero),
        c_ms if isinstance(c_ms, (int, float)) else th_ms,
    )
    if m.control is not None:
        _apply(m.control, {k: v for k, v in control_fields.items() if k in ("failure",)})
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


_MEASUREMENT_FIELDS = ("hostname", "scheme", "port", "started_at", "finished_at", "duration_ms", "category", "addresses")
_CONTROL_FIELDS = ("control_url", "started_at", "duration_ms", "failure")


# --- ours -> OONI ------------------------------------------------------------------------------


def _answers_to_ooni(answers: list[DnsAnswer]) -> list[dict]:
    key = {"A": "ipv4", "AAAA": "ipv6", "CNAME": "hostname"}
    return [
        {"answer_type": a.answer_type, key.get(a.answer_type, "hostname"): a.value, "ttl": a.ttl}
        for a in answers
    ]


def _tagged(entry: dict, ours: Any, back: Any) -> dict:
    entry["tags"] = list(entry.get("tags") or []) + _diff_tags(ours, back)
    return entry


def _dns_to_ooni(q: DnsQuery, ctx: _Ctx, tid: int) -> tuple[dict, list[dict]]:
    t0, t = ctx.offsets(q.started_at, q.duration_ms)
    entry = {
        "answers": _answers_to_ooni(q.answers) or None,
        "engine": q.engine,
        "failure": failure_to_ooni(q.failure),
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
    back = _dns_from_ooni(entry, ctx)
    _tagged(entry, q, back)
    duplicates = []
    for reply in q.extra_replies:
        answers = reply.answers
        dup = {
            "answers": _answers_to_ooni(answers) or None,
            "engine": q.engine,
            "failure": failure_to_ooni(_failure_from_rcode(reply.rcode, q.query_type, answers)),
            "hostname": q.hostname,
            "query_type": q.query_type,
            "resolver_hostname": None,
            "resolver_port": None,
            "resolver_address": q.resolver or "",
            "t0": t0,
            "t": (round(t0 * 1_000_000) + round(reply.delay_ms * 1000)) / 1_000_000,
            "tags": [],
            "transaction_id": tid,
        }
        duplicates.append(_tagged(dup, reply, _reply_from_ooni(dup, q, entry, ctx)))
    return entry, duplicates


def _tcp_to_ooni(c: TcpConnect, ctx: _Ctx, tid: int) -> dict:
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
    return _tagged(entry, c, _tcp_from_ooni(entry, ctx))


def _tls_to_ooni(h: TlsHandshake, ctx: _Ctx, tid: int) -> dict:
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
    return _tagged(entry, h, _tls_from_ooni(entry, ctx))


def _body_to_ooni(body: bytes | None) -> str | dict:
    data = body or b""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"format": "base64", "data": base64.b64encode(data).decode("ascii")}


def _http_to_ooni(r: HttpRequest, ctx: _Ctx, tid: int) -> dict:
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
        "tags": [f"{TAG_PREFIX}kind={_json(r.kind)}"] if r.kind != "main" else [],
        "transaction_id": tid,
    }


def _requests_to_ooni(http: list[HttpRequest], ctx: _Ctx) -> list[dict]:
    """The redirect chain last hop first (OONI's order), then other kinds, tagged."""
    main = sorted((r for r in http if r.kind == "main"), key=lambda r: r.hop)
    ordered = [*reversed(main), *(r for r in http if r.kind != "main")]
    entries = [_http_to_ooni(r, ctx, i) for i, r in enumerate(ordered, 1)]
    back = _http_list_from_ooni(entries, ctx, "local")  # in our order: main by hop, then others
    ours_in_back_order = [*main, *(r for r in http if r.kind != "main")]
    index = {id(r): i for i, r in enumerate(ordered)}
    for r, b in zip(ours_in_back_order, back):
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


def _control_to_ooni(c: ControlResult | None, ctx: _Ctx) -> tuple[dict | None, str | None]:
    """(control, control_failure). A control imported from OONI is written back as it
    came (ip_info, http3_request and all) when its records are still what it says."""
    if c is None:
        return None, None
    if c.failure is not None:
        error = c.raw.get("error") if isinstance(c.raw, dict) else None
        if not isinstance(error, str) or not error:
            theirs = failure_to_ooni(c.failure)
        elif _FAILURE_TOKEN.match(error) or error.startswith(F.UNKNOWN_FAILURE):
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
    start = _parse_iso(run.get("started_at")) or _parse_iso(m.started_at) or EPOCH
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
    start = _parse_iso(m.started_at) or EPOCH
    zero = _second(start)
    ctx = _Ctx(zero, m.hostname, m.url, m.measurement_id)
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
    run_start = _parse_iso(run.get("started_at")) or start
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
    ann = {"measurement_id": m.measurement_id}
    if run.get("run_id"):
        ann["run_id"] = run["run_id"]
    ann.update(_differences(m, back, _MEASUREMENT_FIELDS))
    if m.control is not None and back.control is not None:
        ann.update({f"control_{k}": v for k, v in _differences(m.control, back.control, _CONTROL_FIELDS).items()})
        if m.control.failure is not None and to_jsonable(m.control.raw) != to_jsonable(back.control.raw):
            ann["control_raw"] = m.control.raw
    doc["annotations"] = {ANNOTATION_PREFIX + k: _json(v) for k, v in ann.items()}
    return doc


# --- reading files ------------------------------------------------------------------------------

LineSource = Callable[[], Iterator[str]]


def _line_source(path_or_lines: str | Path | Iterable[str]) -> LineSource:
    """A way to read the input's lines again: the import reads them twice, so that a
    large JSONL file is never held in memory."""
    if isinstance(path_or_lines, (str, Path)):
        path = Path(path_or_lines)
        if not path.exists():
            raise OoniImportError(f"{path}: no such file")
        if path.is_dir():
            raise OoniImportError(f"{path}: is a directory")
        opener: Callable[[], IO[str]]
        if path.suffix == ".gz":
            opener = lambda: gzip.open(path, "rt", encoding="utf-8", errors="replace")  # noqa: E731
        else:
            opener = lambda: path.open("r", encoding="utf-8", errors="replace")  # noqa: E731
        try:
            with opener() as fh:
                fh.read(1)
        except (OSError, EOFError) as exc:
            raise OoniImportError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None

        def lines() -> Iterator[str]:
            try:
                with opener() as fh:
                    yield from fh
            except (OSError, EOFError) as exc:
                raise OoniImportError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None

        return lines
    kept = list(path_or_lines)
    return lambda: iter(kept)


def _documents(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """(where, parsed JSON or OoniFormatError) for each document of the input.

    JSONL when the first line is a whole JSON value (or the second starts a new
    object); otherwise one JSON document, possibly pretty-printed, or a list of them.
    ``//`` comment lines (OONI's .jsonc test data) are ignored in both.
    """
    buffered: list[str] = []
    content: list[int] = []
    for line in lines:
        buffered.append(line)
        stripped = line.strip()
        if stripped and not stripped.startswith("//"):
            content.append(len(buffered) - 1)
            if len(content) == 2:
                break
    if not content:
        return
    first = buffered[content[0]]
    jsonl = False
    try:
        json.loads(first)
        jsonl = True
    except ValueError:
        # a broken first record of a JSONL file, not a pretty-printed document or list
        jsonl = first.lstrip().startswith("{") and len(content) == 2 and buffered[content[1]].lstrip().startswith("{")
    if jsonl:
        for n, line in enumerate(itertools.chain(buffered, lines), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("//"):
                continue
            try:
                yield f"line {n}", json.loads(stripped)
            except ValueError as exc:
                yield f"line {n}", OoniFormatError(f"not valid JSON ({getattr(exc, 'msg', exc)})")
        return
    text = "".join("\n" if ln.lstrip().startswith("//") else ln for ln in [*buffered, *lines])
    start = f"line {content[0] + 1}"
    try:
        doc = json.loads(text)
    except ValueError as exc:
        where = f"line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else start
        yield where, OoniFormatError(f"not valid JSON ({getattr(exc, 'msg', exc)})")
        return
    if isinstance(doc, list):
        for i, item in enumerate(doc, 1):
            yield f"item {i}", item
    else:
        yield start, doc


# --- import -------------------------------------------------------------------------------------


@dataclass
class _RunPlan:
    run_id: str
    meta: dict
    targets: list[str] = field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None
    any_time_unknown: bool = False


def _convert(doc: Any, where: str, source: str) -> tuple[Measurement, dict]:
    """One document to records; any failure of the data is this document's error."""
    if isinstance(doc, OoniFormatError):
        raise doc
    try:
        return ooni_to_measurement(doc, fallback_key=f"{source}:{where}")
    except OoniFormatError:
        raise
    except Exception as exc:  # malformed data deep inside: an error of this line only
        raise OoniFormatError(f"malformed measurement ({type(exc).__name__}: {exc})") from None


def _run_id(meta: dict, source: str) -> str:
    if meta.get("run_id"):
        return meta["run_id"]
    report = meta.get("report_id") or f"file:{source}"
    return str(uuid.uuid5(NAMESPACE, f"run:{report}|{meta.get('cc')}|{meta.get('asn')}"))


def _run_row(plan: _RunPlan, source: str, digest: str, lab_networks: list[str] | None = None) -> dict[str, Any]:
    meta = plan.meta
    notes = [
        f"imported from OONI data {source} ({meta.get('software') or 'unknown software'}, "
        f"web_connectivity {meta.get('test_version') or 'unknown version'}); observations only, "
        "OONI's verdict keys were not imported"
    ]
    if plan.any_time_unknown:
        notes.append("the measurement time is not in the OONI data; recorded as 1970-01-01")
    if meta.get("test_keys_only"):
        notes.append("the OONI data holds test_keys only: country and network unknown")
    return {
        "run_id": plan.run_id,
        "started_at": plan.started_at,
        "finished_at": plan.finished_at or plan.started_at,
        "status": "finished",
        "probe_version": f"ooni:{meta.get('software') or 'unknown'}",
        "targets_source": source,
        "targets_sha256": digest,
        "target_count": len(plan.targets),
        "cc": meta.get("cc"),
        "asn": meta.get("asn"),
        "network_name": meta.get("network_name"),
        "resolvers": json.dumps([meta["resolver_ip"]] if meta.get("resolver_ip") else []),
        "probe_ip": None,
        "control_url": meta.get("test_helper"),
        "doh_url": None,
        "config": json.dumps(
            {"imported_from": "ooni", "source": source, "report_id": meta.get("report_id"),
             "test_version": meta.get("test_version"), "lab_networks": list(lab_networks or [])}
        ),
        "notes": json.dumps(notes),
    }


def _ensure_run(db: sqlite_utils.Database, plan: _RunPlan, source: str, digest: str,
                lab_networks: list[str]) -> None:
    """Create the run with its targets, or add targets a longer file brought to it."""
    if not list(db.query("select 1 from runs where run_id = ?", [plan.run_id])):
        store.create_run(db, _run_row(plan, source, digest, lab_networks), [store.RunTarget(u) for u in plan.targets])
        return
    known = {r["url"] for r in db.query("select url from run_targets where run_id = ?", [plan.run_id])}
    missing = [u for u in plan.targets if u not in known]
    if missing:
        row = next(iter(db.query("select coalesce(max(position), -1) as p from run_targets where run_id = ?", [plan.run_id])))
        with db.atomic():
            db["run_targets"].insert_all(
                {"run_id": plan.run_id, "position": row["p"] + 1 + i, "url": u, "category": None, "note": None,
                 "status": "pending", "measurement_id": None}
                for i, u in enumerate(missing)
            )


def import_ooni(
    db: sqlite_utils.Database, path_or_lines: str | Path | Iterable[str], *, source: str,
    lab_networks: list[str] | None = None,
) -> ImportSummary:
    """Store every web_connectivity measurement of a JSONL or JSON(C) file (or lines).

    One run per (report_id, or the file when there is none; country; network), finished.
    Ids are derived from OONI's own, so importing the same data again adds nothing.
    A bad line or another test's measurement is counted and named in ``messages``; only
    an input that cannot be read at all raises (OoniImportError).
    """
    lines = _line_source(path_or_lines)
    summary = ImportSummary(source=source)
    hasher = hashlib.sha256()

    def hashed(it: Iterator[str]) -> Iterator[str]:
        for line in it:
            hasher.update(line.encode("utf-8", "replace"))
            yield line

    # Pass 1: which runs, with which targets; nothing kept of the measurements themselves.
    plans: dict[str, _RunPlan] = {}
    for where, doc in _documents(hashed(lines())):
        try:
            m, meta = _convert(doc, where, source)
        except NotWebConnectivity as exc:
            summary.skipped += 1
            summary.messages.append(f"{where}: skipped: {exc}")
            continue
        except OoniFormatError as exc:
            summary.errors += 1
            summary.messages.append(f"{where}: {exc}")
            continue
        rid = _run_id(meta, source)
        plan = plans.setdefault(rid, _RunPlan(rid, meta))
        if m.url not in plan.targets:
            plan.targets.append(m.url)
        plan.started_at = min(filter(None, [plan.started_at, m.started_at]))
        plan.finished_at = max(filter(None, [plan.finished_at, m.finished_at, m.started_at]))
        plan.any_time_unknown |= meta["measured_at"] is None
    digest = hasher.hexdigest()
    for plan in plans.values():
        _ensure_run(db, plan, source, digest, lab_networks or [])
        summary.run_ids.append(plan.run_id)

    # Pass 2: convert again (deterministic) and store what is not there yet.
    for where, doc in _documents(lines()):
        try:
            m, meta = _convert(doc, where, source)
        except OoniFormatError:
            continue  # counted in pass 1
        if list(db.query("select 1 from measurements where measurement_id = ?", [m.measurement_id])):
            summary.duplicates += 1
            continue
        store.save_measurement(db, _run_id(meta, source), m)
        summary.imported += 1
    if summary.duplicates:
        summary.messages.append(f"{summary.duplicates} measurements were already in the database")
    return summary


# --- export -------------------------------------------------------------------------------------


class OoniExportError(Exception):
    """Nothing to export as asked (e.g. an unknown run id): a one-line reason."""


def find_run(db: sqlite_utils.Database, run_id: str) -> str:
    """The full id of a run given by id or unique prefix; OoniExportError if none."""
    run = store.get_run(db, run_id)
    if run is None:
        raise OoniExportError(f"no run {run_id!r} in this database (see `probe show`)")
    return run["run_id"]


def export_ooni(db: sqlite_utils.Database, out: IO[str], *, run_id: str | None = None) -> int:
    """Write measurements (of one run, or all) as OONI JSONL, oldest first; returns how
    many. Measurements are loaded one at a time, so memory does not grow with the run."""
    if run_id is not None:
        where, params = "where run_id = ?", [find_run(db, run_id)]
    else:
        where, params = "", []
    runs: dict[str, dict] = {}
    count = 0
    sql = f"select measurement_id, run_id from measurements {where} order by started_at, measurement_id"
    for row in list(db.query(sql, params)):
        m = store.load_measurement(db, row["measurement_id"])
        if m is None:
            continue
        if row["run_id"] not in runs:
            runs[row["run_id"]] = store.get_run(db, row["run_id"]) or {"run_id": row["run_id"]}
        out.write(json.dumps(measurement_to_ooni(m, runs[row["run_id"]]), ensure_ascii=False) + "\n")
        count += 1
    return count
