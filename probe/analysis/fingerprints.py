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
import hashlib
import io
import json
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from probe.core.constants import BODY_KEEP
from probe.core.pagetext import content_type_of, extract_title, sniff_html
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
    ``full`` by a dict, ``contains`` (and literal regexps) by one literal pass (Literals),
    other regexps only when a literal they require occurs. Matches keep file order."""

    def __init__(self) -> None:
        self.entries: list[tuple[Fingerprint, re.Pattern | None]] = []
        self.full: dict[str, list[int]] = defaultdict(list)
        self._full_lengths: frozenset[int] = frozenset()  # a page is never hashed to find it is no pattern
        self.scan: list[int] = []  # regexps with no usable literal: always tried
        self.prefix: dict[str, list[int]] = defaultdict(list)  # prefix -> entries
        self._prefix_lengths: list[int] = []
        self.gated: dict[str, list[int]] = defaultdict(list)  # literal -> entries it gates
        self.literal: dict[str, list[int]] = defaultdict(list)  # literal -> entries it proves
        self._automaton: Literals | None = None
        self._words: frozenset[str] | None = None

    def add(self, fp: Fingerprint, compiled: re.Pattern | None) -> None:
        self._words = None
        i = len(self.entries)
        self.entries.append((fp, compiled))
        if fp.pattern_type == "full":
            self.full[fp.pattern].append(i)
            self._full_lengths = self._full_lengths | {len(fp.pattern)}
        elif fp.pattern_type == "contains":
            self.literal[fp.pattern].append(i)
        elif fp.pattern_type == "prefix":
            self.prefix[fp.pattern].append(i)
            self._prefix_lengths = sorted({len(p) for p in self.prefix})
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

    def words(self) -> frozenset[str]:
        """The literals an automaton looks for in this location's values."""
        if self._words is None:
            self._words = frozenset(self.literal) | frozenset(self.gated)
        return self._words

    def match(self, value: str, found: set[str] | None = None) -> list[int]:
        """Entries matching ``value``; ``found`` are the literals of ``words()`` that
        occur in it, when the caller has scanned the text already (a page is scanned
        once for its body and its response fingerprints)."""
        hits = set(self.full.get(value, ())) if len(value) in self._full_lengths else set()
        for n in self._prefix_lengths:  # one lookup per prefix length, not one test per prefix
            if n > len(value):
                break
            hits.update(self.prefix.get(value[:n], ()))
        for i in self.scan:
            fp, compiled = self.entries[i]
            if _matches(fp, compiled, value):
                hits.add(i)
        if found is None:
            if self._automaton is None:
                self._automaton = Literals(self.words())
            found = self._automaton.found(value)
        for word in found:
            hits.update(self.literal.get(word, ()))
            for i in self.gated.get(word, ()):
                fp, compiled = self.entries[i]
                if compiled is not None and compiled.search(value):
                    hits.add(i)
        return sorted(hits)


class Literals:
    """Which of a set of literals occur in a text, in one pass over its UTF-8 bytes.
    UTF-8 is self-synchronising, so a literal's bytes occur exactly where it does.

    The pass is Hyperscan's (SIMD literal matching, the engine of Suricata and Snort:
    about 45 us for a 64 KiB page against the ~1,300 page literals) where its wheel
    installs, else an ahocorasick_rs DFA (about 130 us): the same set either way."""

    def __init__(self, words: frozenset[str] | set[str], engine: str | None = None) -> None:
        self.words = sorted(w for w in words if w)
        self.longest = max((len(w) for w in self.words), default=0)
        self.engine = engine
        self._scan: Callable[[bytes], Iterable[int]] | None = None

    def found(self, text: str, utf8: bytes | None = None) -> set[str]:
        """The literals in ``text``; ``utf8``, when given, is its UTF-8 (the body as
        received, when it was UTF-8: no second encoding of a 64 KiB page)."""
        if not text or not self.words:
            return set()
        if self._scan is None:
            patterns = [w.encode("utf-8", "surrogatepass") for w in self.words]
            self._scan, self.engine = _literal_scanner(patterns, self.engine)
        data = utf8 if utf8 is not None else text.encode("utf-8", "surrogatepass")
        return {self.words[i] for i in self._scan(data)}


LITERAL_ENGINES = ("hyperscan", "ahocorasick")


def _literal_scanner(patterns: list[bytes], engine: str | None) -> tuple[Callable[[bytes], Iterable[int]], str]:
    """A function from bytes to the indexes of ``patterns`` occurring in them, and the
    engine behind it: ``engine`` if given, else Hyperscan when it loads and compiles."""
    if engine == "hyperscan" or (engine is None and not any(b"\x00" in p for p in patterns)):
        try:  # (its Python binding passes patterns as C strings: a NUL would end one)
            return _hyperscan_scanner(patterns), "hyperscan"
        except Exception:  # no wheel for this platform, or a library too old for literals
            if engine == "hyperscan":
                raise
    import ahocorasick_rs

    automaton = ahocorasick_rs.BytesAhoCorasick(patterns, matchkind=ahocorasick_rs.MatchKind.Standard,
                                                implementation=ahocorasick_rs.Implementation.DFA)

    def scan(data: bytes) -> Iterable[int]:
        return {i for i, _, _ in automaton.find_matches_as_indexes(data, overlapping=True)}
    return scan, "ahocorasick"


def _hyperscan_scanner(patterns: list[bytes]) -> Callable[[bytes], Iterable[int]]:
    """Hyperscan in block mode, each literal reported once (SINGLEMATCH), with scratch
    space per thread (a scratch serves one scan at a time: the collector classifies in
    its database thread while the probe matches pages in its own)."""
    import hyperscan

    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(expressions=patterns, ids=list(range(len(patterns))), elements=len(patterns),
                     flags=hyperscan.HS_FLAG_SINGLEMATCH, literal=True)
    local = threading.local()

    def scan(data: bytes) -> Iterable[int]:
        scratch = getattr(local, "scratch", None)
        if scratch is None:
            scratch = local.scratch = hyperscan.Scratch(database)
        hits: set[int] = set()
        database.scan(data, match_event_handler=_collect, context=hits, scratch=scratch)
        return hits
    scan(b"")  # fail here, not on the first page, if this build cannot scan
    return scan


def _collect(index: int, start: int, end: int, flags: int, hits: Any) -> None:
    """Hyperscan's match callback: ``hits`` is the set passed as the scan's context."""
    hits.add(index)


@dataclass
class FingerprintDB:
    fingerprints: list[Fingerprint]
    skipped: list[str] = field(default_factory=list)  # rows whose regexp Python cannot compile

    def __post_init__(self) -> None:
        self._page: Literals | None = None
        self._digest: str | None = None
        self._response: Literals | None = None
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

    def digest(self) -> str:
        """What these fingerprints are, in 16 hex digits: verdicts derived with other
        fingerprints are not current (see analysis.analyze)."""
        if self._digest is None:
            text = json.dumps([[fp.name, fp.location, fp.pattern_type, fp.pattern, fp.scope, list(fp.countries)]
                               for fp in self.fingerprints], ensure_ascii=False)
            self._digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        return self._digest

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (to a worker process) as its fingerprints; indexes are rebuilt there."""
        return {"fingerprints": self.fingerprints, "skipped": self.skipped}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.fingerprints, self.skipped = state["fingerprints"], []
        self.__post_init__()
        self.skipped = state["skipped"]

    def _match(self, location: str, value: str, where: str, found: set[str] | None = None) -> list[Match]:
        loc = self._by_location.get(location)
        if loc is None:
            return []
        out = []
        for i in loc.match(value, found):
            fp, compiled = loc.entries[i]
            out.append(Match(fp, where, _short(value, fp, compiled)))
        return out

    def _page_literals(self) -> Literals:
        """One automaton for the literals of both page locations (body, response)."""
        if self._page is None:
            words: set[str] = set()
            for location in ("body", "response"):
                if location in self._by_location:
                    words |= self._by_location[location].words()
            self._page = Literals(words)
        return self._page

    def match_dns(self, answer: str) -> list[Match]:
        return self._match("dns", answer, "DNS answer")

    def match_http(self, h: HttpRequest, label: str | None = None) -> list[Match]:
        """Every fingerprint that matches one HTTP response (a hop or a fallback). The
        page is scanned once: the literals found in it serve the body fingerprints and
        the response ones (the response is the head, a blank line and the same body)."""
        if h.status is None:
            return []
        label = label or (f"hop {h.hop}" if h.kind == "main" else f"{h.kind} {h.url}")
        raw = (h.body_head or b"")[:BODY_KEEP]
        # undecodable bytes become U+FFFD; a UTF-8 literal occurs in the bytes exactly
        # where it occurs in the text (UTF-8 is self-synchronising)
        is_utf8, body = sniff_html(raw, content_type_of(h.headers))
        page = self._page_literals()
        in_body = page.found(body, raw if is_utf8 else None)
        out = self._match("body", body, f"body of {label}", in_body) if body else []
        if h.title:
            out += self._match("title", h.title, f"title of {label}")
        for name, value in h.headers:
            out += self._match(f"header.{name.lower()}", value, f"header {name} of {label}")
        response = self._by_location.get("response")
        if response:
            head = f"HTTP/{h.http_version or '1.1'} {h.status} {h.reason or ''}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in h.headers) + "\r\n"
            # a literal not wholly inside the body starts in the head: it ends within
            # the body's first (longest - 1) characters
            words = response.words()
            near_head = self._response_literals().found(head + body[:max(page.longest - 1, 0)])
            found = (in_body & words) | near_head
            out += self._match("response", head + body, f"response of {label}", found)
        return out

    def _response_literals(self) -> Literals:
        """The response location's own literals, for the short text around the head."""
        if self._response is None:
            self._response = Literals(self._by_location["response"].words())
        return self._response


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
