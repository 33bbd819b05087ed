"""Property-based tests (hypothesis) of the parsers that meet hostile input.

Four kinds of input come from strangers or from files passed around: target lists
(text and Citizen Lab CSV), OONI measurements, request bodies posted to the control
helper (ours and OONI's protocol), and DNS replies off the wire. For each, arbitrary
input must either parse or fail with the module's documented error, never another
exception; and what parses must round-trip where a round trip exists.

Everything is real: files in temporary directories, databases from ``store.open_db``,
the helper app on aiohttp's test server, a UDP DNS server on 127.0.0.1. No packet
leaves the machine (the helper is only sent bodies it refuses before measuring).
"""

from __future__ import annotations

import asyncio
import copy
import csv
import io
import ipaddress
import json
import re
import socket
import struct
import tempfile
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import dns.exception
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rrset
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, assume, example, given, note, settings
from hypothesis import strategies as st

from probe import store
from probe.core import failures as F
from probe.core.addresses import split_url
from probe.core.certs import describe_certificate
from probe.core.constants import BROWSER_HEADERS
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
from probe.core.userconfig import check_control_url
from probe.helper.service import HelperConfig, RequestRefused, _check_url, make_app, validate_request
from probe.measure.dns import _fill_from_message, resolve_udp
from probe.measure.url import ProbeConfig
from probe.ooni.common import Ctx, OoniFormatError, failure_from_rcode
from probe.ooni.database import import_ooni
from probe.ooni.decode import ooni_to_measurement
from probe.ooni.encode import measurement_to_ooni
from probe.ooni.files import documents
from probe.ooni.th import (
    FORWARDED_HEADERS,
    MAX_ENDPOINTS,
    MAX_HEADER_VALUE,
    THRequestError,
    parse_th_request,
    th_records,
    th_request,
)
from probe.targets.lists import (
    CATEGORY_CODES,
    CITIZENLAB_HEADER,
    ERROR,
    LEGACY_CATEGORY_CODES,
    WARNING,
    Target,
    TargetError,
    check_targets,
    control_header,
    format_targets,
    import_citizenlab,
    lint_targets,
    load_targets,
    parse_url,
    read_control_header,
)

# Modest example counts, no deadline (a 2-core CI machine has slow moments): the whole
# file runs in well under a minute. Raise max_examples locally to search harder.
settings.register_profile(
    "properties", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
PROPERTIES = settings.get_profile("properties")

OONI_DATA = Path(__file__).resolve().parent / "data" / "ooni"


def one_line(text: str) -> bool:
    return "\n" not in text and "\r" not in text


# --- shared strategies --------------------------------------------------------------------

# Characters that broke parsers somewhere once: controls, BOM, line and paragraph
# separators, zero-width and full-width look-alikes, quoting, brackets, IDNA oddities.
NASTY = st.sampled_from([
    "\x00", "\x1b", "\x7f", "\x85", "\t", "\r", "\n", "\x0b", "\x0c", "\ufeff", "\u2028", "\u200b", "\u00ad",
    "\uff03", "#", " #", "\"", "\"\"", ",", ";", "\\", "[", "]", "@", ":", "%", "%zz", "//", "xn--", "xn--80a",
    "\u3002", "\uff0e", "é", "ß", "İ", "ﬀ", "Ⅸ", "㎒", "\u0660", "-", "..", " ",
])
WORDS = st.sampled_from([
    "https://", "http://", "HTTPS://", "ftp://", "http:", "mailto:", "example.org", "пример.бел", "127.0.0.1",
    "[2001:db8::1]", "[::1]@", ":8080", ":99999", "/path", "?q=1", "#frag", "NEWS", "news", "HUMR", "FEXP", "NWES",
    "-", "note", "# control: ", "2020-01-01", CITIZENLAB_HEADER,
])
hostile_text = st.lists(st.one_of(st.text(max_size=6), NASTY, WORDS), max_size=12).map("".join)

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
hostnames = st.lists(label, min_size=1, max_size=3).map(lambda labels: ".".join(labels) + ".test")
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ips = ipv4 | ipv6
ports = st.integers(1, 65535)


@st.composite
def urls(draw: st.DrawFn) -> str:
    """A well-formed http(s) URL such as the probe measures."""
    scheme = draw(st.sampled_from(["http", "https"]))
    host = draw(hostnames | ipv4 | ipv6.map(lambda a: f"[{a}]"))
    port = draw(st.none() | ports)
    path = draw(st.from_regex(r"(/[a-z0-9._~%-]{0,8}){0,3}(\?[a-z0-9=&]{0,8})?", fullmatch=True))
    return f"{scheme}://{host}{'' if port is None else f':{port}'}{path or '/'}"


# --- 1. target lists ----------------------------------------------------------------------


@PROPERTIES
@given(st.one_of(st.text(), hostile_text, urls()))
def test_parse_url_normalises_once_or_refuses_with_a_value_error(text: str) -> None:
    try:
        url = parse_url(text)
    except ValueError as exc:
        assert one_line(str(exc))
        return
    assert url.startswith(("http://", "https://"))
    assert not any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in url)
    assert parse_url(url) == url


@st.composite
def csv_text(draw: st.DrawFn) -> str:
    """A Citizen Lab CSV: the header, then rows written by the csv module (valid quoting,
    fields with commas, quotes and line breaks) or raw lines (unbalanced quotes, ...)."""
    field = st.one_of(hostile_text, urls(), st.sampled_from(sorted(CATEGORY_CODES)), st.just("2020-01-01"))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.booleans()):
            writer.writerow(draw(st.lists(field, min_size=5, max_size=7)))
        else:
            out.write(draw(hostile_text) + "\n")
    return CITIZENLAB_HEADER + "\n" + out.getvalue()


@st.composite
def target_file(draw: st.DrawFn) -> bytes:
    """The bytes of a target list someone might hand a volunteer."""
    if draw(st.booleans()):
        text = draw(csv_text())
    else:
        lines = draw(st.lists(st.one_of(hostile_text, urls(), urls().map(lambda u: f"{u} NEWS a note # comment"),
                                        st.just("# control: https://control.example/")), max_size=8))
        text = draw(st.sampled_from(["\n", "\r\n", "\r"])).join(lines)
    if draw(st.integers(0, 9)) == 0:  # a very long line
        text += "\nhttps://example.org/" + "a" * draw(st.integers(1000, 200_000)) + " NEWS " + "n" * 5000
    data = text.encode("utf-8")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data  # a spreadsheet's BOM
    if draw(st.integers(0, 3)) == 0:  # bytes that are not UTF-8, somewhere
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\xfe\xff"])) + data[at:]
    return data


@PROPERTIES
@given(target_file())
def test_any_target_file_gives_targets_and_problems_never_another_exception(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "list.txt"
        path.write_bytes(data)
        name = str(path)
        lines = data.count(b"\n") + data.count(b"\r") + 1  # the csv module also breaks lines at a lone CR

        check = check_targets(path)
        for p in check.problems:
            assert p.path == name and p.level in (ERROR, WARNING) and 1 <= p.line <= lines, p
            assert one_line(str(p)) and str(p).startswith(f"{name}:{p.line}: ")
        assert [t.line for t in check.targets] == sorted({t.line for t in check.targets})
        assert len({t.url for t in check.targets}) == len(check.targets)
        for t in check.targets:
            assert parse_url(t.url) == t.url and (t.category is None or t.category in CATEGORY_CODES)
        assert lint_targets(path) == check.problems

        warnings: list[str] = []
        try:
            lenient = load_targets(path, skip_invalid=True, warn=warnings.append)
        except TargetError as exc:  # only a file that is no target list at all (not UTF-8, ...) stops it
            assert check.targets == [] and [(e.line, e.message) for e in check.errors] == [(exc.line or 1, exc.reason)]
            assert one_line(str(exc))
        else:
            assert lenient == check.targets
            assert all(one_line(w) for w in warnings)
        try:
            strict = load_targets(path, warn=warnings.append)
        except TargetError as exc:
            assert check.errors and (exc.path, exc.line or 1, exc.reason) == (name, check.errors[0].line,
                                                                              check.errors[0].message)
            assert one_line(str(exc))
        else:
            assert not check.errors and strict == check.targets
        try:
            imported = import_citizenlab(path, warn=warnings.append)
        except TargetError as exc:
            assert one_line(str(exc)) and exc.path == name
        else:
            assert imported == check.targets and not check.errors
        try:
            controls = read_control_header(path)
        except TargetError as exc:
            assert one_line(str(exc)) and exc.path == name
        else:
            assert all(check_control_url(u) == u for u in controls)


control_urls = st.builds(lambda prefix, rest: prefix + rest,
                         st.sampled_from(["http://", "https://", "ooni+https://", "ooni+http://", "ftp://", ""]),
                         st.one_of(hostile_text, urls().map(lambda u: u.split("://", 1)[1])))


@PROPERTIES
@given(st.lists(st.one_of(control_urls.map(lambda u: f"# control: {u}"), hostile_text), max_size=6))
@example(["# control: http://[::1]@/"])  # was an IndexError from yarl, through check_control_url
def test_control_header_gives_urls_or_a_target_error(lines: list[str]) -> None:
    text = "\n".join(lines)
    try:
        found = control_header(text, "list.txt")
    except TargetError as exc:
        assert exc.path == "list.txt" and exc.line is not None and 1 <= exc.line <= text.count("\n") + 1
        assert one_line(str(exc))
        return
    assert len(set(found)) == len(found)
    assert all(check_control_url(u) == u for u in found)


def _note(text: str) -> str | None:
    """A note as the text format reads it back: one line, single spaces."""
    return " ".join(text.split()) or None


# Notes as the text format can hold them: no control characters. (A Citizen Lab CSV can
# carry one, and `probe targets import` then writes a list that does not load again:
# see the report of the property tests.)
notes = st.text(st.characters(exclude_categories=["Cc", "Cs"]), max_size=30).map(_note)


@PROPERTIES
@given(
    st.lists(st.tuples(urls().map(parse_url), st.none() | st.sampled_from(sorted(CATEGORY_CODES)), notes),
             max_size=8, unique_by=lambda row: row[0]),
    st.lists(notes.map(lambda n: n or "").filter(lambda s: "control" not in s.lower()), max_size=3),
)
def test_formatted_targets_load_back_the_same(rows: list[tuple[str, str | None, str | None]], header: list[str]) -> None:
    targets = [Target(url, category, note, i) for i, (url, category, note) in enumerate(rows, 1)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "targets.txt"
        path.write_text(format_targets(targets, header), encoding="utf-8")
        back = load_targets(path, warn=lambda message: None)
        assert read_control_header(path) == []

    def written(note: str | None) -> str | None:
        # "#" that would start a comment is written as its full-width look-alike (lists.py)
        return None if note is None else re.sub(r"(?:(?<=\s)|^)#", "\uff03", note)

    assert back == [Target(t.url, t.category, written(t.note), len(header) + i) for i, t in enumerate(targets, 1)]


@PROPERTIES
@given(st.lists(st.tuples(urls(), st.sampled_from(sorted(CATEGORY_CODES) + sorted(LEGACY_CATEGORY_CODES) + ["news", " HUMR "]),
                          notes, st.booleans()), max_size=6, unique_by=lambda row: parse_url(row[0])))
def test_a_citizenlab_csv_imports_with_canonical_categories(rows: list[tuple[str, str, str | None, bool]]) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CITIZENLAB_HEADER.split(","))
    for url, code, text, _ in rows:
        writer.writerow([url, code, "whatever", "2020-01-01", "test", text or ""])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "by.csv"
        path.write_text(out.getvalue(), encoding="utf-8-sig" if rows and rows[0][3] else "utf-8")
        targets = import_citizenlab(path, warn=lambda message: None)
    assert [(t.url, t.note, t.line) for t in targets] == [(parse_url(u), n, i) for i, (u, _, n, _) in enumerate(rows, 2)]
    for t, (_, code, _, _) in zip(targets, rows, strict=True):
        key = code.strip().upper()
        assert t.category == LEGACY_CATEGORY_CODES.get(key, key)


# --- 2. OONI measurements -----------------------------------------------------------------


def _load_ooni(path: Path) -> dict:
    text = "\n".join(ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.lstrip().startswith("//"))
    return json.loads(text)


REAL_DOCS = [_load_ooni(p) for folder in ("real", "synthetic-qa") for p in sorted((OONI_DATA / folder).iterdir())
             if ".json" in p.name]

# Names of our fields, for tags (bynet:NAME=JSON) and annotations (bynet_NAME): the codec
# trusts neither.
OUR_FIELDS = ["port", "duration_ms", "ttl", "hop", "status", "body_length", "bytes_sent", "failure", "started_at", "url",
              "kind", "headers", "ip", "success", "cert_valid", "network_epoch", "network_changed", "addresses",
              "hostname", "category", "measurement_id", "control_raw", "control_failure", "run_id"]
json_texts = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", str(2**64), str(-(2**70)), "\"\\ud800\"", "null", "true",
                     "[]", "[[\"a\", \"b\"]]", "[\"\\udc00\"]", "1.5", "-1", "{}", "[" * 3000]),
    st.integers().map(str),
    st.text(max_size=6).map(json.dumps),
)
tags = st.builds(lambda name, value: f"bynet:{name}={value}", st.sampled_from(OUR_FIELDS), json_texts)
OONI_WORDS = st.sampled_from([
    "https://a.org/", "http://[::1]:8080/x", "http://[::1]@/", "1.2.3.4:443", "[::1]", "::1:53", "web_connectivity",
    "dnscheck", "2020-01-01 00:00:00", "A", "AAAA", "CNAME", "udp", "system", "doh", "base64", "%", "http://",
    "http://a.org:99999/", "\ud800", "a\udfffb", "dns_nxdomain_error", "unknown_failure: x", "bynet:", "bynet_",
])
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70), st.floats(),
                         st.text(max_size=10), OONI_WORDS, tags)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5) | OONI_WORDS, children, max_size=3),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_documents(draw: st.DrawFn) -> Any:
    """A real OONI measurement with a few values replaced, removed or tagged."""
    doc = copy.deepcopy(draw(st.sampled_from(REAL_DOCS)))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(doc)[1:]
        if not paths:
            break
        *parents, key = draw(st.sampled_from(paths))
        parent = doc
        for k in parents:
            parent = parent[k]
        action = draw(st.integers(0, 3))
        if action == 0 and isinstance(parent, dict):
            del parent[key]
        elif action == 1 and isinstance(parent, dict):
            parent["tags"] = draw(st.lists(tags, max_size=3))
        elif action == 2:
            doc["annotations"] = {f"bynet_{name}": draw(json_texts) for name in draw(st.lists(st.sampled_from(OUR_FIELDS),
                                                                                                max_size=3))}
        else:
            parent[key] = draw(json_values)
    return doc


ooni_documents = st.one_of(
    mutated_documents(),
    json_values,
    st.dictionaries(st.sampled_from(["test_keys", "input", "test_name", "queries", "requests", "control"]) | st.text(max_size=4),
                    json_values, max_size=5),
)


@PROPERTIES
@given(ooni_documents)
@example({"input": "http://a.test/", "test_keys": {"tcp_connect": 5}})  # was a TypeError
@example({"input": "http://a.test/", "test_keys": {"control": {"dns": {"addrs": True}}}})  # was a TypeError
@example({"input": "http://[::1]@/", "test_keys": {}})  # was an IndexError (yarl, in split_url)
def test_ooni_to_measurement_raises_only_ooni_format_errors(doc: Any) -> None:
    try:
        m, meta = ooni_to_measurement(doc, fallback_key="fuzz:1")
    except OoniFormatError:
        return
    assert split_url(m.url) and m.scheme in ("http", "https")
    assert meta["test_keys_only"] == ("test_keys" not in doc)
    assert isinstance(m.measurement_id, str) and m.measurement_id
    # deterministic, and JSON (what the store and the exporter do with it next)
    again, _ = ooni_to_measurement(doc, fallback_key="fuzz:1")
    assert again.measurement_id == m.measurement_id
    assert json.dumps(observations(again), default=repr) == json.dumps(observations(m), default=repr)  # NaN too


ooni_lines = st.one_of(
    mutated_documents().map(json.dumps),
    json_values.map(json.dumps),
    hostile_text,
    st.integers(1, 5000).map(lambda n: "[" * n),
    st.integers(1, 3000).map(lambda n: "{\"test_keys\": " * n + "{}" + "}" * n),
    st.sampled_from(["", "// a comment", "{not json", "[]", "null", "{\"test_name\": \"dnscheck\", \"test_keys\": {}}"]),
)


@settings(PROPERTIES, max_examples=60)
@given(st.lists(ooni_lines, min_size=1, max_size=4))
@example(["[" * 5000])  # was a RecursionError out of import_ooni
@example([json.dumps({"input": "http://a.test/", "annotations": {"bynet_started_at": "\"\""}, "test_keys": {}})])
@example([json.dumps({"input": "http://a.test/", "test_keys": {"tcp_connect": [{"ip": "1.2.3.4", "port": 2**70}]}})])
@example([json.dumps({"input": "http://a.test/", "test_keys": {"tcp_connect": [{"ip": "\udc00", "port": 1}]}})])
def test_import_ooni_counts_bad_lines_and_never_raises(lines: list[str]) -> None:
    lines = [line.replace("\n", " ") + "\n" for line in lines]
    docs = list(documents(iter(lines)))
    with tempfile.TemporaryDirectory() as tmp:
        db = store.open_db(Path(tmp) / "x.db")
        try:
            first = import_ooni(db, lines, source="fuzz.jsonl")
            assert first.imported + first.duplicates + first.skipped + first.errors == len(docs)
            assert len(first.messages) >= first.errors + first.skipped
            assert db.execute("select count(*) from measurements").fetchone()[0] == first.imported
            again = import_ooni(db, lines, source="fuzz.jsonl")
            assert (again.imported, again.duplicates, again.skipped, again.errors) == (
                0, first.usable, first.skipped, first.errors)
            assert again.run_ids == first.run_ids
        finally:
            db.conn.close()


# Our records, as the probe writes them: times in its stored format, durations in ms
# with microsecond precision, failure strings of the vocabulary.
T0 = datetime(2001, 1, 1, tzinfo=UTC)
times = st.integers(0, 100 * 365 * 86400 * 10**6).map(
    lambda us: (T0 + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
durations = st.integers(0, 10**9).map(lambda n: n / 1000)
texts = st.text(max_size=20)
failures = st.one_of(st.none(), st.sampled_from(sorted(F.FAILURES)), texts.map(F.unknown))
endpoints = st.builds(lambda ip, port: f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}", ips, ports)
rcodes = st.none() | st.sampled_from(["NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR", "NOTIMP"])


def answers(types: tuple[str, ...] = ("A", "AAAA", "CNAME")) -> st.SearchStrategy[list[DnsAnswer]]:
    def build(kind: str, v4: str, v6: str, name: str, ttl: int | None) -> DnsAnswer:
        return DnsAnswer(kind, {"A": v4, "AAAA": v6, "CNAME": name}[kind], ttl)

    return st.lists(st.builds(build, st.sampled_from(types), ipv4, ipv6, hostnames, st.none() | st.integers(0, 2**31 - 1)),
                    max_size=3)


dns_queries = st.builds(
    DnsQuery, engine=st.sampled_from(["system", "udp", "doh", "sink"]), resolver=st.none() | endpoints,
    hostname=hostnames, query_type=st.sampled_from(["A", "AAAA", "ANY"]), started_at=times, duration_ms=durations,
    failure=failures, rcode=rcodes, responder=st.none() | endpoints, answers=answers(),
    extra_replies=st.lists(st.builds(DnsReply, endpoints, durations, rcodes, answers()), max_size=2))
tcp_connects = st.builds(TcpConnect, ips, ports, times, durations, st.booleans(), failures)
tls_handshakes = st.builds(
    TlsHandshake, ip=ips, port=ports, server_name=hostnames, started_at=times, duration_ms=durations,
    success=st.booleans(), failure=failures, sni_role=st.sampled_from(["target", "control"]),
    failure_stage=st.none() | st.sampled_from(["tcp_connect", "before_client_hello", "after_client_hello",
                                               "after_server_hello"]),
    bytes_sent=st.integers(0, 10**6), bytes_received=st.integers(0, 10**6),
    tls_version=st.none() | st.sampled_from(["TLSv1.2", "TLSv1.3"]), cipher=st.none() | texts,
    alpn=st.none() | st.sampled_from(["h2", "http/1.1"]), cert_valid=st.none() | st.booleans(),
    cert_failure=st.none() | st.sampled_from(sorted(F.CERT_FAILURES)),
    peer_certificates=st.lists(st.binary(min_size=1, max_size=16).map(describe_certificate), max_size=2),
    cert_checked_at=st.none() | times)


@st.composite
def http_requests(draw: st.DrawFn, kind: str, hop: int) -> HttpRequest:
    return HttpRequest(
        url=draw(urls()), kind=kind, hop=hop, started_at=draw(times), duration_ms=draw(durations),
        method=draw(st.sampled_from(["GET", "HEAD"])), address=draw(st.none() | endpoints), failure=draw(failures),
        status=draw(st.none() | st.integers(100, 599)), reason=draw(st.none() | texts),
        http_version=draw(st.none() | st.sampled_from(["1.0", "1.1"])),
        headers=draw(st.lists(st.lists(st.text(max_size=8), min_size=2, max_size=2), max_size=3)),
        location=draw(st.none() | urls()), body_length=draw(st.none() | st.integers(0, 10**9)),
        body_truncated=draw(st.booleans()),
        body_sha256=draw(st.none() | st.text("0123456789abcdef", min_size=64, max_size=64)),
        title=draw(st.none() | texts),
        body_head=draw(st.none() | st.binary(min_size=1, max_size=40) | st.text(min_size=1, max_size=40).map(str.encode)),
    )


th_failures = st.none() | st.sampled_from(["dns_name_error", "connection_refused_error", "generic_timeout_error",
                                           "connect_error", "ssl_invalid_hostname", "unknown_error"])
th_responses = st.fixed_dictionaries({
    "dns": st.fixed_dictionaries({"failure": th_failures, "addrs": st.lists(ips | hostnames, max_size=3)}),
    "tcp_connect": st.dictionaries(endpoints, st.fixed_dictionaries({"status": st.booleans(), "failure": th_failures}),
                                   max_size=2),
    "tls_handshake": st.dictionaries(endpoints, st.fixed_dictionaries(
        {"server_name": hostnames, "status": st.booleans(), "failure": th_failures}), max_size=2),
    "http_request": st.none() | st.fixed_dictionaries({
        "body_length": st.integers(-1, 10**6), "failure": th_failures, "title": texts,
        "headers": st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=2),
        "status_code": st.integers(-1, 599)}),
})


@st.composite
def measurements(draw: st.DrawFn) -> Measurement:
    url = draw(urls())
    scheme, host, port = split_url(url)
    m = Measurement(url=url, hostname=host, scheme=scheme, port=port, started_at=draw(times),
                    category=draw(st.none() | st.sampled_from(sorted(CATEGORY_CODES))), finished_at=draw(st.none() | times),
                    duration_ms=draw(st.none() | durations), measurement_id=str(draw(st.uuids())),
                    network_epoch=draw(st.none() | st.integers(0, 100)), network_changed=draw(st.booleans()))
    m.dns = draw(st.lists(dns_queries, max_size=3))
    m.tcp = draw(st.lists(tcp_connects, max_size=3))
    m.tls = draw(st.lists(tls_handshakes, max_size=2))
    m.http = [draw(http_requests("main", hop)) for hop in range(draw(st.integers(0, 3)))]  # hop order, as stored
    m.http += [draw(http_requests("http_fallback", 0)) for _ in range(draw(st.integers(0, 2)))]
    m.addresses = draw(st.lists(ips, max_size=3, unique=True))
    control = draw(st.sampled_from(["none", "failed", "ooni"]))
    if control == "failed":
        m.control = ControlResult(draw(urls()), draw(times), draw(durations), F.CONTROL_UNAVAILABLE,
                                  raw={"error": draw(texts)})
    elif control == "ooni":  # a control imported from OONI: its records are what its THResponse says
        raw = draw(th_responses)
        started = draw(times)
        c = ControlResult(draw(urls()), started, draw(durations), raw=raw)
        c.dns, c.tcp, c.tls, c.http = th_records(raw, Ctx(T0, m.hostname, m.url, m.measurement_id), started)
        m.control = c
    return m


def observations(m: Measurement) -> dict:
    """Everything recorded, row ids aside (each database makes its own); bodies apart
    (to_jsonable drops bytes)."""

    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("query_id", "request_id", "body_head")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    out = strip(to_jsonable(m))
    out["bodies"] = [h.body_head or None for h in m.http]
    return out


@settings(PROPERTIES, max_examples=80)
@given(measurements(), st.fixed_dictionaries({"run_id": st.uuids().map(str), "cc": st.sampled_from(["BY", "ZZ", None]),
                                              "asn": st.sampled_from(["AS6697", None])}))
@example(Measurement("https://a.test/", "a.test", "https", 443, "2026-03-01T10:00:00.000000Z",
                     measurement_id="11111111-2222-4333-8444-555555555555", network_epoch=2, network_changed=True),
         {"run_id": "5d0c0ffe-0000-4000-8000-000000000002", "cc": "BY", "asn": None})  # the flags were lost
def test_ours_to_ooni_to_ours_gives_the_same_measurement(m: Measurement, run: dict) -> None:
    doc = json.loads(json.dumps(measurement_to_ooni(m, run)))  # through real JSON
    back, meta = ooni_to_measurement(doc)
    ours, theirs = observations(m), observations(back)
    note(repr({k: (ours[k], theirs.get(k)) for k in ours if ours[k] != theirs.get(k)}))
    assert theirs == ours
    assert back.measurement_id == m.measurement_id and meta["run_id"] == run["run_id"]
    assert (meta["cc"], meta["asn"]) == (None if run["cc"] == "ZZ" else run["cc"], run["asn"])  # ZZ: unknown


# --- 3. control-helper request bodies -----------------------------------------------------

URL_PIECES = st.sampled_from(list("abcxn-.0123456789[]:@%_/?#\\ ") + [
    "\u3002", "é", "ß", "\u200d", "ﬀ", "\u0130", "xn--", "\u00ad", "%zz", "%ff", "%00", "%2e", "[::1]", "[v1.x]",
    "[fe80::1%25eth0]", "0x7f", "127.1", "::ffff:1.2.3.4", "8.8.8.8", "1.1.1.1", "2606:4700::1111", ":99999", ":0", ":-1",
    ":+80", ":٨٠", "\x00", "\x7f", "\ud800", "example.org", "localhost",
])
hostile_urls = st.one_of(
    st.builds(lambda scheme, rest: scheme + rest,
              st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "", "http:", "//"]),
              st.lists(URL_PIECES, max_size=16).map("".join)),
    urls(),
    st.text(max_size=10),
    st.integers(1, 3000).map(lambda n: "http://example.org/" + "a" * n),
)
hostile_addresses = st.one_of(ips, st.lists(URL_PIECES, max_size=5).map("".join), st.text(max_size=8),
                              st.sampled_from(["fe80::1%eth0", "[2001:4860::1]", " 8.8.8.8 ", "::ffff:127.0.0.1"]))


def _body(value: Any) -> bytes:
    """JSON as a client may send it: lone surrogates too (invalid UTF-8 on the wire)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


measure_bodies = st.one_of(
    st.fixed_dictionaries({}, optional={
        "url": hostile_urls | json_scalars, "addresses": st.lists(hostile_addresses, max_size=4) | json_scalars,
        "extra": json_scalars}).map(_body),
    json_values.map(_body),
    st.binary(max_size=64),
    st.sampled_from([b"", b"[" * 5000, b"{\"url\": " * 3000, b"1e999999", b"\"\\ud800\"", b"NaN", b"\xef\xbb\xbf{}",
                     b"{\"url\": \"http://a.org/\", \"url\": 1}"]),
)
PUBLIC = HelperConfig()
LAB = HelperConfig(allow_private=True)


@PROPERTIES
@given(measure_bodies, st.sampled_from([PUBLIC, LAB]))
@example(b'{"url": "http://[::1]@/"}', PUBLIC)  # was an IndexError from yarl: a 500
def test_measure_request_bodies_are_accepted_or_refused_with_a_4xx(body: bytes, config: HelperConfig) -> None:
    try:
        url, addresses = validate_request(body, config)
    except RequestRefused as exc:
        assert 400 <= exc.status < 500 and exc.reason and one_line(exc.reason)
        return
    assert _check_url(url, config) == url and split_url(url)
    assert len(addresses) <= config.max_addresses and len(set(addresses)) == len(addresses)
    for a in addresses:
        assert str(ipaddress.ip_address(a)) == a
        assert config.allow_private or config.guard(a)


th_bodies = st.one_of(
    st.fixed_dictionaries({}, optional={
        "http_request": hostile_urls | json_scalars,
        "tcp_connect": st.lists(hostile_addresses | st.builds(lambda a, p: f"{a}:{p}", hostile_addresses, st.text(max_size=6)),
                                max_size=4) | json_scalars,
        "http_request_headers": st.dictionaries(st.sampled_from(["User-Agent", "accept", "ACCEPT-LANGUAGE", "Cookie"])
                                                | st.text(max_size=4),
                                                json_values | st.lists(st.text(max_size=8), max_size=2), max_size=3)
        | json_scalars,
        "x_quic_enabled": json_scalars}).map(_body),
    json_values.map(_body),
    st.binary(max_size=64),
    st.sampled_from([b"", b"[" * 5000, b"\"\\ud800\"", b"{\"http_request\": \"http://a.org/\", \"tcp_connect\": [\"[::1]:x\"]}"]),
)


@PROPERTIES
@given(th_bodies)
def test_th_request_bodies_parse_or_raise_th_request_error(body: bytes) -> None:
    try:
        url, addresses, headers = parse_th_request(body)
    except THRequestError as exc:
        assert str(exc) and one_line(str(exc))
        return
    assert isinstance(url, str) and url
    assert len(addresses) <= MAX_ENDPOINTS and len(set(addresses)) == len(addresses)
    assert all(ipaddress.ip_address(a) for a in addresses)
    assert set(headers) <= set(FORWARDED_HEADERS)
    assert all(isinstance(v, str) and len(v) <= MAX_HEADER_VALUE and min(v, default="\x20") >= "\x20"
               for v in headers.values())


header_values = st.text(st.characters(min_codepoint=0x20, exclude_categories=["Cs"]), max_size=40)


@PROPERTIES
@given(urls(), st.lists(ips, max_size=MAX_ENDPOINTS),
       st.dictionaries(st.sampled_from(FORWARDED_HEADERS), header_values, max_size=3))
def test_th_request_round_trips_through_parse_th_request(url: str, addresses: list[str], headers: dict[str, str]) -> None:
    body = json.dumps(th_request(url, addresses, headers)).encode()
    sent = headers or {k: v for k, v in BROWSER_HEADERS.items() if k in FORWARDED_HEADERS}
    assert parse_th_request(body) == (url, list(dict.fromkeys(addresses)), sent)


def _refusal(path: str, body: bytes, config: HelperConfig) -> RequestRefused | None:
    """What the helper's pure checks say of a body before any measurement: the refusal,
    or None for a body it would measure."""
    if len(body) > config.max_body:
        return RequestRefused(413, f"body larger than {config.max_body} bytes")
    try:
        if path == "/v1/measure":
            validate_request(body, config)
        else:
            try:
                url, _, _ = parse_th_request(body, config.max_addresses)
            except THRequestError as exc:
                return RequestRefused(400, str(exc))
            _check_url(url, config)
    except RequestRefused as exc:
        return exc
    return None


HELPER_CONFIG = HelperConfig(probe=ProbeConfig(resolvers=[], system_resolver=False, ports=()))


@settings(PROPERTIES, max_examples=60, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.sampled_from(["/v1/measure", "/"]), st.one_of(measure_bodies, th_bodies))
@example("/v1/measure", b'{"url": "http://[::1]@/"}')  # was a 500
@example("/", b'{"http_request": "http://[::1]@/"}')  # was a 500
@example("/v1/measure", b"{" * 20_000)  # larger than max_body
def test_the_helper_app_refuses_bad_bodies_with_a_4xx_json_error_never_a_500(path: str, body: bytes) -> None:
    refusal = _refusal(path, body, HELPER_CONFIG)
    assume(refusal is not None)  # a body the helper accepts would make it measure the internet
    assert refusal is not None

    async def post() -> tuple[int, Any]:
        async with TestServer(make_app(HELPER_CONFIG)) as server, aiohttp.ClientSession() as session:
            async with session.post(server.make_url(path), data=body,
                                    headers={"Content-Type": "application/json"}) as resp:
                return resp.status, await resp.json()

    status, answer = asyncio.run(post())
    assert (status, answer) == (refusal.status, {"error": refusal.reason})


# --- 4. DNS replies -----------------------------------------------------------------------

QUERY = dns.message.make_query("example.test", "A")
reply_bytes = st.one_of(
    st.binary(max_size=600),
    # the query's id, then anything: past the first check
    st.binary(max_size=300).map(lambda b: QUERY.to_wire()[:2] + b),
    # a response header and the query's question, then counts and records of anything
    st.builds(lambda flags, counts, tail: QUERY.to_wire()[:2] + struct.pack("!HHHHH", flags, 1, *counts)
              + QUERY.to_wire()[12:] + tail,
              st.integers(0, 0xFFFF) | st.just(0x8180), st.tuples(*[st.integers(0, 4)] * 3), st.binary(max_size=200)),
)


@settings(PROPERTIES, max_examples=300)
@given(reply_bytes)
def test_reply_bytes_parse_into_records_or_are_a_dns_exception(data: bytes) -> None:
    try:
        msg = dns.message.from_wire(data)
    except dns.exception.DNSException:
        return  # what resolve_udp records as dns_bad_response
    q = DnsQuery("udp", "127.0.0.1:53", "example.test", "A", "", 0.0)
    if msg.id != QUERY.id or not QUERY.is_response(msg):
        return  # also refused by resolve_udp, as a reply to something else
    _fill_from_message(q, msg)
    assert q.rcode == dns.rcode.to_text(msg.rcode()) and F.is_known(q.failure)
    assert q.failure == failure_from_rcode(q.rcode, "A", q.answers)
    for a in q.answers:
        assert a.answer_type in ("A", "AAAA", "CNAME") and isinstance(a.ttl, int)
        if a.answer_type != "CNAME":
            ipaddress.ip_address(a.value)


class _Replier(asyncio.DatagramProtocol):
    """A UDP DNS server on ``sock`` that answers each query with ``reply(query)``; it
    writes to the socket itself, as asyncio's sendto drops an empty datagram."""

    def __init__(self, sock: socket.socket, reply: Callable[[dns.message.Message], list[bytes]]) -> None:
        self.sock = sock
        self.reply = reply

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        for packet in self.reply(dns.message.from_wire(data)):
            self.sock.sendto(packet, addr)


def resolve_with(reply: Callable[[dns.message.Message], list[bytes]], hostname: str, qtype: str,
                 timeout: float) -> tuple[DnsQuery, str]:
    async def run() -> tuple[DnsQuery, str]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: _Replier(sock, reply), sock=sock)
        try:
            server = f"127.0.0.1:{sock.getsockname()[1]}"
            return await resolve_udp(hostname, qtype, server, timeout=timeout), server
        finally:
            transport.close()

    return asyncio.run(run())


@settings(PROPERTIES, max_examples=20)
@given(reply_bytes, st.booleans())
@example(b"", False)  # an empty datagram
def test_udp_query_answered_only_with_garbage_records_dns_bad_response(data: bytes, same_id: bool) -> None:
    def garbage(query: dns.message.Message) -> list[bytes]:
        return [struct.pack("!H", query.id) + data[2:] if same_id else data]

    q, server = resolve_with(garbage, "example.test", "A", timeout=0.25)
    if q.rcode is None:
        assert q.failure == F.DNS_BAD_RESPONSE and q.answers == []
    else:  # the bytes happened to be a valid answer to the query
        assert q.responder == server and q.failure == failure_from_rcode(q.rcode, "A", q.answers)


@st.composite
def rrsets(draw: st.DrawFn) -> list[tuple[str, str, int, list[str]]]:
    """(owner, type, ttl, values) with one rrset per owner and type, as a server sends them."""
    keys = draw(st.lists(st.tuples(hostnames, st.sampled_from(["A", "AAAA", "CNAME"])), max_size=4, unique=True))
    out = []
    for owner, kind in keys:
        values = {"A": st.lists(ipv4, min_size=1, max_size=3, unique=True),
                  "AAAA": st.lists(ipv6, min_size=1, max_size=3, unique=True),
                  "CNAME": st.lists(hostnames, min_size=1, max_size=1)}[kind]
        out.append((owner, kind, draw(st.integers(0, 2**31 - 1)), draw(values)))
    return out


@settings(PROPERTIES, max_examples=80)
@given(hostnames, st.sampled_from(["A", "AAAA"]), rrsets(),
       st.sampled_from([dns.rcode.NOERROR, dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL, dns.rcode.REFUSED,
                        dns.rcode.FORMERR, dns.rcode.NOTIMP]),
       st.lists(reply_bytes, max_size=2))
def test_udp_answers_round_trip_into_dns_answer_records(
    hostname: str, qtype: str, records: list[tuple[str, str, int, list[str]]], rcode: dns.rcode.Rcode,
    garbage_first: list[bytes],
) -> None:
    def answer(query: dns.message.Message) -> list[bytes]:
        response = dns.message.make_response(query)
        response.set_rcode(rcode)
        for owner, kind, ttl, values in records:
            response.answer.append(dns.rrset.from_text_list(owner + ".", ttl, dns.rdataclass.IN, kind,
                                                            [v + "." if kind == "CNAME" else v for v in values]))
        return [*garbage_first, response.to_wire()]  # garbage first: it must not hide the answer

    q, server = resolve_with(answer, hostname, qtype, timeout=2.0)

    def same(kind: str, value: str) -> str:
        # dnspython writes IPv4-mapped IPv6 as ::ffff:1.2.3.4, Python as ::ffff:102:304
        return value if kind == "CNAME" else str(ipaddress.ip_address(value))

    # a server may send an rrset's records in any order (dnspython shuffles them)
    sent = sorted((kind, same(kind, value), ttl) for _, kind, ttl, values in records for value in values)
    assert sorted((a.answer_type, same(a.answer_type, a.value), a.ttl) for a in q.answers) == sent
    assert (q.rcode, q.responder) == (dns.rcode.to_text(rcode), server)
    assert q.failure == failure_from_rcode(q.rcode, qtype, q.answers)
