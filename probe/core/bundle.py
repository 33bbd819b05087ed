"""One whole measurement, with its run and target, as plain JSON: what a volunteer's
probe will upload to a collector, and what the collector must read back exactly.

Why a codec of its own, and not ``records.to_jsonable``: that one drops bytes (body
heads are the blockpage evidence) and its readers trust their input. A bundle comes
from a stranger over the network, so reading one is strict: every field is checked
against the type written in ``probe.core.records`` (the one source of truth, so a field
added there travels without touching this file), sizes are bounded, and anything wrong
is one ``BundleError`` with a one-line reason. Unknown keys are ignored, so an older
collector can read a newer probe's additions of the same ``BUNDLE_VERSION``.

Pure: no SQLite, no network. ``probe.store.bundles`` reads and writes bundles.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import gzip
import json
import math
import types
import typing
import zlib
from dataclasses import dataclass
from typing import Any

from probe.core.constants import BODY_KEEP
from probe.core.records import HttpRequest, Measurement

# Bumped when a reader of this version could misread a newer bundle (a field changing
# meaning or type). Adding a field does not bump it: readers ignore unknown keys.
BUNDLE_VERSION = 1

# Limits on what one bundle may hold. A real measurement is far inside each: a few dozen
# DNS queries, connects and handshakes (4 addresses per family, 3 ports), 11 redirect
# hops plus an http:// fallback per address, a few dozen headers per response.
MAX_LIST_ITEMS = 1000  # any one list (queries, headers, certificates, answers, ...)
MAX_TEXT_CHARS = 256 * 1024  # any one string: a long redirect URL, a certificate's DER in base64
MAX_BODY_HEAD_BYTES = 2 * BODY_KEEP  # a body head is BODY_KEEP bytes; room for a larger peer's
MAX_NODES = 200_000  # values in the whole bundle: many lists each at their limit are refused too
MAX_DEPTH = 24  # nesting of the control helper's raw answer (the records themselves nest 5 deep)
# The JSON text of one bundle, uncompressed: 22 body heads of 64 KiB in base64 is 2 MiB.
MAX_BUNDLE_BYTES = 16 * 1024 * 1024

# The run's columns that travel (probe.store.bundles sends exactly these; the
# volunteer's address, ``probe_ip``, is not one of them) and their JSON types.
# Columns holding JSON text are checked to hold JSON of the stated kind, since
# analysis and reports parse them.
RUN_FIELDS: dict[str, Any] = {
    "run_id": str,
    "started_at": str,
    "finished_at": str | None,
    "status": str,
    "probe_version": str | None,
    "targets_source": str | None,
    "targets_sha256": str | None,
    "target_count": int | None,
    "cc": str | None,
    "asn": str | None,
    "network_name": str | None,
    "resolvers": str | None,  # JSON list
    "control_url": str | None,
    "doh_url": str | None,
    "config": str | None,  # JSON object
    "notes": str | None,  # JSON list
}
RUN_REQUIRED = ("run_id", "started_at", "status")
RUN_JSON_COLUMNS: dict[str, type] = {"resolvers": list, "config": dict, "notes": list}
TARGET_FIELDS: dict[str, Any] = {"url": str, "category": str | None, "note": str | None, "position": int | None}


class BundleError(ValueError):
    """A bundle that cannot be read: malformed, too large or from a newer probe.
    ``str(e)`` is one line saying where and what, never echoing the input's text."""


@dataclass
class Bundle:
    """A checked bundle: the run row (without the volunteer's address), the
    measurement and the target it measured."""

    run: dict[str, Any]
    measurement: Measurement
    target: dict[str, Any]


# --- writing ------------------------------------------------------------------------------


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    return value


def measurement_to_json(m: Measurement) -> dict[str, Any]:
    """Every field of the measurement and of each record in it (local and control),
    bytes as base64: ``json.dumps`` takes it as it is, ``measurement_from_json`` gives
    back an equal Measurement."""
    out = _to_json(m)
    assert isinstance(out, dict)
    return out


def make_bundle(run: dict[str, Any], m: Measurement, target: dict[str, Any]) -> dict[str, Any]:
    """The bundle of one measurement: only the run columns of RUN_FIELDS travel."""
    return {
        "bundle_version": BUNDLE_VERSION,
        "run": {k: run.get(k) for k in RUN_FIELDS},
        "measurement": measurement_to_json(m),
        "target": {k: target.get(k) for k in TARGET_FIELDS},
    }


def bundle_to_gzip(bundle: dict[str, Any]) -> bytes:
    """A bundle as it goes over the wire: compact UTF-8 JSON, gzipped."""
    text = json.dumps(bundle, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return gzip.compress(text.encode("utf-8"), mtime=0)


# --- reading ------------------------------------------------------------------------------


class _Reader:
    """One pass over untrusted JSON, counting what it has seen against MAX_NODES."""

    def __init__(self) -> None:
        self.nodes = 0

    def tick(self, where: str) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise BundleError(f"{where}: more than {MAX_NODES} values in one bundle")

    def value(self, value: Any, hint: Any, where: str) -> Any:
        self.tick(where)
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            args = typing.get_args(hint)
            if value is None and type(None) in args:
                return None
            (inner,) = [a for a in args if a is not type(None)]  # every union in records is X | None
            return self.value(value, inner, where)
        if value is None:
            raise BundleError(f"{where}: null where a value is required")
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            return self.record(hint, value, where)
        if origin is list:
            (item,) = typing.get_args(hint)
            items = self.list(value, where)
            return [self.value(v, item, f"{where}[{i}]") for i, v in enumerate(items)]
        if origin is dict or hint is dict:
            return self.json_object(value, where, 0)
        return self.scalar(value, hint, where)

    def list(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise BundleError(f"{where}: expected a list, got {_kind(value)}")
        if len(value) > MAX_LIST_ITEMS:
            raise BundleError(f"{where}: {len(value)} items, more than {MAX_LIST_ITEMS}")
        return value

    def scalar(self, value: Any, hint: Any, where: str) -> Any:
        if hint is bool:
            if isinstance(value, bool):
                return value
            raise BundleError(f"{where}: expected true or false, got {_kind(value)}")
        if hint is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            raise BundleError(f"{where}: expected an integer, got {_kind(value)}")
        if hint is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if not math.isfinite(value):
                    raise BundleError(f"{where}: not a finite number")
                return float(value)
            raise BundleError(f"{where}: expected a number, got {_kind(value)}")
        if hint is str:
            return self.text(value, where)
        if hint is bytes:
            text = self.text(value, where)
            if len(text) > (MAX_BODY_HEAD_BYTES + 2) // 3 * 4:
                raise BundleError(f"{where}: more than {MAX_BODY_HEAD_BYTES} bytes")
            try:
                return base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise BundleError(f"{where}: not base64") from None
        if hint is Any:
            return self.json_value(value, where, 0)
        raise TypeError(f"{where}: no reader for {hint!r}")  # a records.py type this codec does not know

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise BundleError(f"{where}: expected a string, got {_kind(value)}")
        if len(value) > MAX_TEXT_CHARS:
            raise BundleError(f"{where}: a string of {len(value)} characters, more than {MAX_TEXT_CHARS}")
        return value

    def json_object(self, value: Any, where: str, depth: int) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise BundleError(f"{where}: expected an object, got {_kind(value)}")
        out = self.json_value(value, where, depth)
        assert isinstance(out, dict)
        return out

    def json_value(self, value: Any, where: str, depth: int) -> Any:
        """Any JSON (the helper's verbatim answer), bounded in depth, size and strings."""
        if depth > MAX_DEPTH:
            raise BundleError(f"{where}: nested deeper than {MAX_DEPTH}")
        self.tick(where)
        if isinstance(value, dict):
            if len(value) > MAX_LIST_ITEMS:
                raise BundleError(f"{where}: {len(value)} keys, more than {MAX_LIST_ITEMS}")
            return {self.text(k, where): self.json_value(v, where, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self.json_value(v, where, depth + 1) for v in self.list(value, where)]
        if isinstance(value, str):
            return self.text(value, where)
        if isinstance(value, float) and not math.isfinite(value):
            raise BundleError(f"{where}: not a finite number")
        if value is None or isinstance(value, (bool, int, float)):
            return value
        raise BundleError(f"{where}: {_kind(value)} is not JSON")

    def record(self, cls: type, value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            raise BundleError(f"{where}: expected an object, got {_kind(value)}")
        hints = _hints(cls)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in value:
                kwargs[f.name] = self.value(value[f.name], hints[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise BundleError(f"{where}.{f.name}: missing")
        return cls(**kwargs)

    def columns(self, spec: dict[str, Any], required: tuple[str, ...], value: Any, where: str) -> dict[str, Any]:
        """A flat row (the run, the target): the columns of ``spec``, unknown ones ignored."""
        if not isinstance(value, dict):
            raise BundleError(f"{where}: expected an object, got {_kind(value)}")
        out: dict[str, Any] = {}
        for name, hint in spec.items():
            if name in value:
                out[name] = self.value(value[name], hint, f"{where}.{name}")
            elif name in required:
                raise BundleError(f"{where}.{name}: missing")
            else:
                out[name] = None
        return out


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for messages (the value itself is never echoed)."""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def _check_measurement(m: Measurement, where: str) -> None:
    """What the types cannot say but analysis and the store rely on: headers are
    [name, value] pairs, and the local records' ids (the store's keys) are distinct."""
    sides: list[tuple[str, list[HttpRequest]]] = [("http", m.http)]
    if m.control is not None:
        sides.append(("control.http", m.control.http))
    for name, requests in sides:
        for i, r in enumerate(requests):
            for j, pair in enumerate(r.headers):
                if len(pair) != 2:
                    raise BundleError(f"{where}.{name}[{i}].headers[{j}]: expected [name, value]")
    if len({q.query_id for q in m.dns}) != len(m.dns):
        raise BundleError(f"{where}.dns: two queries with the same query_id")
    if len({r.request_id for r in m.http}) != len(m.http):
        raise BundleError(f"{where}.http: two requests with the same request_id")


def measurement_from_json(d: Any) -> Measurement:
    """The Measurement of ``measurement_to_json``'s output, from untrusted JSON:
    BundleError, with a one-line reason, for anything that is not one."""
    m = _Reader().record(Measurement, d, "measurement")
    _check_measurement(m, "measurement")
    return m


def read_bundle(data: Any) -> Bundle:
    """A whole bundle from untrusted JSON, checked: its version, the run (columns of
    RUN_FIELDS; the JSON ones parse), the measurement and its target (the same URL)."""
    if not isinstance(data, dict):
        raise BundleError(f"bundle: expected an object, got {_kind(data)}")
    version = data.get("bundle_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BundleError("bundle.bundle_version: missing or not a positive integer")
    if version > BUNDLE_VERSION:
        raise BundleError(f"bundle version {version} is newer than this probe reads ({BUNDLE_VERSION}); "
                          "upgrade the probe")
    reader = _Reader()
    run = reader.columns(RUN_FIELDS, RUN_REQUIRED, data.get("run"), "bundle.run")
    for column, kind in RUN_JSON_COLUMNS.items():
        if run[column] is not None:
            try:
                parsed = json.loads(run[column])
            except (ValueError, RecursionError):
                raise BundleError(f"bundle.run.{column}: not JSON") from None
            if not isinstance(parsed, kind):
                raise BundleError(f"bundle.run.{column}: expected JSON {_kind(kind())}, got {_kind(parsed)}")
            reader.json_value(parsed, f"bundle.run.{column}", 0)
    if "measurement" not in data:
        raise BundleError("bundle.measurement: missing")
    m = reader.record(Measurement, data["measurement"], "bundle.measurement")
    _check_measurement(m, "bundle.measurement")
    target = reader.columns(TARGET_FIELDS, ("url",), data.get("target"), "bundle.target")
    if target["url"] != m.url:
        raise BundleError("bundle.target.url: not the measurement's URL")
    return Bundle(run=run, measurement=m, target=target)


def bundle_from_gzip(data: bytes, max_bytes: int = MAX_BUNDLE_BYTES) -> Any:
    """The JSON of ``bundle_to_gzip``'s bytes, decompressing at most ``max_bytes`` (a
    gzip bomb stops there). Still to be checked with ``read_bundle``."""
    try:
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        text = inflate.decompress(data, max_bytes)
        if inflate.unconsumed_tail:
            raise BundleError(f"bundle: more than {max_bytes} bytes uncompressed")
        if not inflate.eof:
            raise BundleError("bundle: truncated gzip")
        return json.loads(text.decode("utf-8"))
    except zlib.error:
        raise BundleError("bundle: not gzip") from None
    except UnicodeDecodeError:
        raise BundleError("bundle: not UTF-8") from None
    except RecursionError:
        raise BundleError("bundle: nested too deep") from None
    except ValueError as exc:
        if isinstance(exc, BundleError):
            raise
        raise BundleError("bundle: not JSON") from None
