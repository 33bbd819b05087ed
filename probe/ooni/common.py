"""What decoding and encoding OONI documents share: ids, tags for our own fields,
times, rcodes and the format errors. Pure."""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from probe.core import failures as F
from probe.core.records import (
    DnsAnswer,
    to_jsonable,
)

# Fixed namespace: the same OONI measurement always gets the same ids, in any database.
NAMESPACE = uuid.UUID("f5ea01af-9f11-4edc-828b-c5dddfbade0c")


TAG_PREFIX = "bynet:"


ANNOTATION_PREFIX = "bynet_"


EXPORT_TEST_VERSION = "0.4.3"


SOFTWARE_NAME = "bynet-probe"


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # a measurement whose time OONI did not give


_RCODE_OF_FAILURE = {
    None: "NOERROR",
    F.DNS_NO_ANSWER: "NOERROR",
    F.DNS_NXDOMAIN: "NXDOMAIN",
    F.DNS_SERVFAIL: "SERVFAIL",
    F.DNS_REFUSED: "REFUSED",
}


_FAILURE_OF_RCODE = {"NXDOMAIN": F.DNS_NXDOMAIN, "SERVFAIL": F.DNS_SERVFAIL, "REFUSED": F.DNS_REFUSED}


_RCODE_DETAIL = F.UNKNOWN_FAILURE + ": rcode "


FAILURE_TOKEN = re.compile(r"^[a-z0-9_]+$")


def rcode_from_failure(failure: str | None) -> str | None:
    """The DNS rcode a UDP/DoH failure string implies (netxlite derives them from it)."""
    if failure in _RCODE_OF_FAILURE:
        return _RCODE_OF_FAILURE[failure]
    if failure and failure.startswith(_RCODE_DETAIL):
        return failure[len(_RCODE_DETAIL):] or None
    return None


def failure_from_rcode(rcode: str | None, query_type: str, answers: list[DnsAnswer]) -> str | None:
    """What the probe records for a reply with this rcode (dns._fill_from_message)."""
    if rcode in _FAILURE_OF_RCODE:
        return _FAILURE_OF_RCODE[rcode]
    if rcode not in (None, "NOERROR"):
        return F.unknown(f"rcode {rcode}")
    if not any(a.answer_type == query_type for a in answers):
        return F.DNS_NO_ANSWER
    return None


class OoniFormatError(ValueError):
    """A document we cannot read as a web_connectivity measurement (one line's error)."""


class NotWebConnectivity(OoniFormatError):
    """A measurement of another OONI test: skipped with a warning, not an error."""


def parse_ooni_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def iso(dt: datetime) -> str:
    """Our stored format (records.utcnow)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def us(seconds: Any) -> int | None:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return None
    return round(seconds * 1_000_000)


@dataclass(frozen=True)
class Ctx:
    """What mapping one record needs from its measurement."""

    zero: datetime  # measurement_start_time: OONI's t0/t count from here
    hostname: str
    url: str
    mid: str

    def times(self, entry: dict) -> tuple[str, float]:
        """(started_at, duration_ms) from an entry's t0/t; only t (MK, v0.4 events): a
        zero-length step at t."""
        t0, t = us(entry.get("t0")), us(entry.get("t"))
        start = t0 if t0 is not None else (t if t is not None else 0)
        end = t if (t0 is not None and t is not None) else start
        return iso(self.zero + timedelta(microseconds=start)), (end - start) / 1000

    def offsets(self, started_at: str, duration_ms: float) -> tuple[float, float]:
        """(t0, t) in seconds for a record, through whole microseconds."""
        dt = parse_iso(started_at)
        start = round((dt - self.zero) / timedelta(microseconds=1)) if dt else 0
        end = start + round((duration_ms or 0) * 1000)
        return start / 1_000_000, end / 1_000_000

    def id(self, *parts: object) -> str:
        return str(uuid.uuid5(NAMESPACE, ":".join([self.mid, *map(str, parts)])))


_NOT_CARRIED = {"query_id", "request_id", "answers", "extra_replies", "peer_certificates", "body_head"}


_SCALARS: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


def _type_ok(annotation: object, value: Any) -> bool:
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


def tag_json(value: Any) -> str:
    return json.dumps(to_jsonable(value), ensure_ascii=False, separators=(",", ":"))


def differences(ours: Any, back: Any, names: Iterable[str]) -> dict[str, Any]:
    return {n: getattr(ours, n) for n in names if to_jsonable(getattr(ours, n)) != to_jsonable(getattr(back, n))}


def _carried(rec: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(rec) if f.name not in _NOT_CARRIED]


def diff_tags(ours: Any, back: Any) -> list[str]:
    """Tags for every field an import of the OONI entry would not give back."""
    return [f"{TAG_PREFIX}{n}={tag_json(v)}" for n, v in differences(ours, back, _carried(ours)).items()]


def read_tags(entry: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tags = entry.get("tags")
    for tag in tags if isinstance(tags, list) else []:
        if isinstance(tag, str) and tag.startswith(TAG_PREFIX):
            name, sep, value = tag[len(TAG_PREFIX):].partition("=")
            if sep:
                try:
                    out[name] = json.loads(value)
                except (ValueError, RecursionError):  # not JSON, or nested too deep
                    pass
    return out


def apply(rec: Any, values: dict[str, Any]) -> Any:
    """Set carried fields from tags/annotations, ignoring unknown names and wrong types."""
    types = {f.name: f.type for f in dataclasses.fields(rec) if f.name not in _NOT_CARRIED}
    for name, value in values.items():
        if name in types and _type_ok(types[name], value):
            setattr(rec, name, value)
    return rec


MEASUREMENT_FIELDS = ("hostname", "scheme", "port", "started_at", "finished_at", "duration_ms", "category", "addresses",
                      "network_epoch", "network_changed")
