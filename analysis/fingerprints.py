"""Blockpage fingerprints: the data file, and matching against observations.

`fingerprints.csv` (in this package) is the one list maintainers edit: a row per
fingerprint with where it matches (`dns` answer, `body`, `title`, `header.<name>`, or
the whole `response` as Censored Planet writes them), how (`full`, `prefix`,
`contains`, `regexp`), its scope (`isp`, `nat`, `prod`, `inst`: a censor's page;
`vbw`: a vague blocking word, which needs corroboration; `fp`: a known false positive,
whose match is evidence *against* blocking), countries, source and first-seen date.

Unlike OONI's fastpath, every pattern type is honoured at every location (the fastpath
ignores `contains` and `regexp` header rows, so e.g. `cl.isp_by_*_forward` never match).
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from probe.records import HttpRequest

LOCATIONS = ("dns", "body", "title", "response")  # plus header.<name>
PATTERN_TYPES = ("full", "prefix", "contains", "regexp")
CONFIRMING_SCOPES = {"isp", "nat", "prod", "inst", "injb", "prov"}
_BODY_SCAN = 64 * 1024  # what the probe keeps of a body


class FingerprintError(ValueError):
    """A fingerprint file row that cannot be used: one line naming file and row."""


@dataclass(frozen=True)
class Fingerprint:
    name: str
    location: str
    pattern_type: str
    pattern: str
    scope: str
    countries: tuple[str, ...]
    source: str = ""
    first_seen: str = ""
    notes: str = ""

    @property
    def is_false_positive(self) -> bool:
        return self.scope == "fp"

    @property
    def confirms(self) -> bool:
        """A match is proof on its own (a censor's own page), not just a hint."""
        return self.scope in CONFIRMING_SCOPES


@dataclass(frozen=True)
class Match:
    fingerprint: Fingerprint
    where: str  # e.g. "dns answer", "body of hop 0", "header location of hop 0"
    value: str  # what matched, shortened

    def describe(self) -> str:
        fp = self.fingerprint
        countries = f", {'/'.join(fp.countries)}" if fp.countries else ""
        return f"{fp.name} ({fp.scope}{countries}) in {self.where}: {self.value!r}"


@dataclass
class FingerprintDB:
    fingerprints: list[Fingerprint]
    skipped: list[str] = field(default_factory=list)  # rows whose regexp Python cannot compile

    def __post_init__(self) -> None:
        self._by_location: dict[str, list[tuple[Fingerprint, re.Pattern | None]]] = defaultdict(list)
        kept = []
        for fp in self.fingerprints:
            compiled = None
            if fp.pattern_type == "regexp":
                try:
                    # Censored Planet and OONI write RE2 patterns; dot matches newlines there
                    compiled = re.compile(fp.pattern, re.DOTALL)
                except re.error as exc:
                    self.skipped.append(f"{fp.name}: {exc}")
                    continue
            kept.append(fp)
            self._by_location[fp.location.lower()].append((fp, compiled))
        self.fingerprints = kept

    def _match(self, location: str, value: str, where: str) -> list[Match]:
        out = []
        for fp, compiled in self._by_location.get(location, ()):
            if _matches(fp, compiled, value):
                out.append(Match(fp, where, _short(value, fp, compiled)))
        return out

    def match_dns(self, answer: str) -> list[Match]:
        return self._match("dns", answer, "DNS answer")

    def match_http(self, h: HttpRequest, label: str | None = None) -> list[Match]:
        """Every fingerprint that matches one HTTP response (a hop or a fallback)."""
        if h.status is None:
            return []
        label = label or (f"hop {h.hop}" if h.kind == "main" else f"{h.kind} {h.url}")
        body = (h.body_head or b"")[:_BODY_SCAN].decode("utf-8", errors="replace")
        out = self._match("body", body, f"body of {label}") if body else []
        if h.title:
            out += self._match("title", h.title, f"title of {label}")
        for name, value in h.headers:
            out += self._match(f"header.{name.lower()}", value, f"header {name} of {label}")
        if self._by_location.get("response"):
            head = f"HTTP/{h.http_version or '1.1'} {h.status} {h.reason or ''}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in h.headers)
            out += self._match("response", head + "\r\n" + body, f"response of {label}")
        return out


def _matches(fp: Fingerprint, compiled: re.Pattern | None, value: str) -> bool:
    if fp.pattern_type == "full":
        return value == fp.pattern
    if fp.pattern_type == "prefix":
        return value.startswith(fp.pattern)
    if fp.pattern_type == "contains":
        return fp.pattern in value
    return compiled is not None and compiled.search(value) is not None


def _short(value: str, fp: Fingerprint, compiled: re.Pattern | None, width: int = 80) -> str:
    if fp.pattern_type == "contains":
        i = value.find(fp.pattern)
        return value[i : i + max(width, len(fp.pattern))]
    if compiled is not None:
        m = compiled.search(value)
        if m:
            return m.group(0)[:width]
    return value[:width]


def parse_rows(rows: list[dict[str, str]], origin: str) -> list[Fingerprint]:
    out = []
    for i, row in enumerate(rows, start=2):
        name = (row.get("name") or "").strip()
        location = (row.get("location") or "").strip().lower()
        ptype = (row.get("pattern_type") or "").strip().lower()
        pattern = row.get("pattern") or ""
        if not name or not pattern:
            raise FingerprintError(f"{origin}:{i}: a fingerprint needs a name and a pattern")
        if location not in LOCATIONS and not location.startswith("header."):
            raise FingerprintError(f"{origin}:{i}: unknown location {location!r} (dns, body, title, header.<name>, response)")
        if ptype not in PATTERN_TYPES:
            raise FingerprintError(f"{origin}:{i}: unknown pattern_type {ptype!r} ({', '.join(PATTERN_TYPES)})")
        countries = tuple(c.strip().upper() for c in (row.get("countries") or "").split(",") if c.strip())
        out.append(
            Fingerprint(name, location, ptype, pattern, (row.get("scope") or "").strip().lower(), countries,
                        row.get("source") or "", row.get("first_seen") or "", row.get("notes") or "")
        )
    return out


def load_fingerprints(path: str | Path | None = None) -> FingerprintDB:
    """The shipped list, or another file with the same columns."""
    if path is None:
        with resources.files("analysis").joinpath("fingerprints.csv").open("r", encoding="utf-8", newline="") as fh:
            text = fh.read()
        origin = "fingerprints.csv"
    else:
        try:
            with Path(path).open(encoding="utf-8", newline="") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise FingerprintError(f"{path}: cannot read ({exc})") from None
        origin = str(path)
    rows = list(csv.DictReader(io.StringIO(text, newline="")))  # patterns may hold newlines
    return FingerprintDB(parse_rows(rows, origin))


@lru_cache(maxsize=1)
def default_fingerprints() -> FingerprintDB:
    return load_fingerprints()
