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

from probe.core.constants import BODY_KEEP
from probe.core.pagetext import content_type_of, decode_html, extract_title
from probe.core.records import HttpRequest

LOCATIONS = ("dns", "body", "title", "response")  # plus header.<name>
PATTERN_TYPES = ("full", "prefix", "contains", "regexp")
CONFIRMING_SCOPES = {"isp", "nat", "prod", "inst", "injb", "prov"}


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


def _required_literal(pattern: str) -> tuple[str | None, bool]:
    """(a literal every match of ``pattern`` contains, whether the pattern is only that
    literal). Most Censored Planet "regexps" are escaped URLs: matched as literals they
    join the one-pass automaton; the rest run only when their literal is present."""
    try:
        parsed = re._parser.parse(pattern, re.DOTALL)  # type: ignore[attr-defined]  # the stdlib's own regex parser, not in typeshed
        literal = re._constants.LITERAL  # type: ignore[attr-defined]  # private, not in typeshed
    except Exception:
        return None, False
    if parsed.state.flags & re.IGNORECASE:
        return None, False
    runs, cur, pure = [], [], True
    for op, av in parsed:  # top-level literals are required; anything nested is not
        if op is literal:
            cur.append(chr(av))
            continue
        pure = False
        if cur:
            runs.append("".join(cur))
            cur = []
    if cur:
        runs.append("".join(cur))
    best = max(runs, key=len, default=None)
    return best, pure and len(runs) == 1


class _Location:
    """The fingerprints of one location, indexed so that a value is matched in one pass:
    ``full`` by a dict, ``contains`` (and literal regexps) by an Aho-Corasick automaton,
    other regexps only when a literal they require occurs. Matches keep file order."""

    def __init__(self) -> None:
        self.entries: list[tuple[Fingerprint, re.Pattern | None]] = []
        self.full: dict[str, list[int]] = defaultdict(list)
        self.scan: list[int] = []  # prefix, and regexps with no usable literal: always tried
        self.gated: dict[str, list[int]] = defaultdict(list)  # literal -> entries it gates
        self.literal: dict[str, list[int]] = defaultdict(list)  # literal -> entries it proves
        self._automaton = None

    def add(self, fp: Fingerprint, compiled: re.Pattern | None) -> None:
        i = len(self.entries)
        self.entries.append((fp, compiled))
        if fp.pattern_type == "full":
            self.full[fp.pattern].append(i)
        elif fp.pattern_type == "contains":
            self.literal[fp.pattern].append(i)
        elif fp.pattern_type == "regexp":
            lit, pure = _required_literal(fp.pattern)
            if lit and pure:
                self.literal[lit].append(i)
            elif lit and len(lit) >= 3:
                self.gated[lit].append(i)
            else:
                self.scan.append(i)
        else:
            self.scan.append(i)

    def _words(self):
        if self._automaton is None and (self.literal or self.gated):
            import ahocorasick

            a = ahocorasick.Automaton()
            for word in set(self.literal) | set(self.gated):
                a.add_word(word, word)
            a.make_automaton()
            self._automaton = a
        return self._automaton

    def match(self, value: str) -> list[int]:
        hits = set(self.full.get(value, ()))
        for i in self.scan:
            fp, compiled = self.entries[i]
            if _matches(fp, compiled, value):
                hits.add(i)
        automaton = self._words()
        if automaton is not None and value:
            found = {word for _, word in automaton.iter(value)}
            for word in found:
                hits.update(self.literal.get(word, ()))
                for i in self.gated.get(word, ()):
                    fp, compiled = self.entries[i]
                    if compiled is not None and compiled.search(value):
                        hits.add(i)
        return sorted(hits)


@dataclass
class FingerprintDB:
    fingerprints: list[Fingerprint]
    skipped: list[str] = field(default_factory=list)  # rows whose regexp Python cannot compile

    def __post_init__(self) -> None:
        self._by_location: dict[str, _Location] = defaultdict(_Location)
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
            self._by_location[fp.location.lower()].add(fp, compiled)
        self.fingerprints = kept

    def _match(self, location: str, value: str, where: str) -> list[Match]:
        loc = self._by_location.get(location)
        if loc is None:
            return []
        out = []
        for i in loc.match(value):
            fp, compiled = loc.entries[i]
            out.append(Match(fp, where, _short(value, fp, compiled)))
        return out

    def match_dns(self, answer: str) -> list[Match]:
        return self._match("dns", answer, "DNS answer")

    def match_http(self, h: HttpRequest, label: str | None = None) -> list[Match]:
        """Every fingerprint that matches one HTTP response (a hop or a fallback)."""
        if h.status is None:
            return []
        label = label or (f"hop {h.hop}" if h.kind == "main" else f"{h.kind} {h.url}")
        body = decode_html((h.body_head or b"")[:BODY_KEEP], content_type_of(h.headers))
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
        # bytes decoded as a whole: the same text as open(encoding="utf-8", newline=""), no newline translation
        text = resources.files("probe.analysis").joinpath("fingerprints.csv").read_bytes().decode("utf-8")
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


def saved_response(data: bytes, name: str) -> HttpRequest:
    """A page or a whole HTTP response saved to a file (``HTTP/1.1 403 ...`` first), as
    the record the probe would have made of it: what `probe fingerprints test` matches."""
    status, headers, body = 200, [], data
    if data.startswith(b"HTTP/"):
        head, _, body = data.partition(b"\r\n\r\n") if b"\r\n\r\n" in data else data.partition(b"\n\n")
        lines = head.decode("latin-1").splitlines()
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            status = 200
        headers = [[k.strip(), v.strip()] for k, _, v in (line.partition(":") for line in lines[1:]) if k]
    ctype = next((v for k, v in headers if k.lower() == "content-type"), None)
    kept = body[:BODY_KEEP]
    return HttpRequest(url=name, kind="main", hop=0, started_at="", duration_ms=0, status=status,
                       headers=headers, body_head=kept, title=extract_title(kept, ctype),
                       location=next((v for k, v in headers if k.lower() == "location"), None))
