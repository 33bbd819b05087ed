"""Target lists: which URLs the probe measures, read from our text format or a Citizen Lab CSV.

A volunteer runs the probe once, often on a network where a second chance is costly, so a
bad line must be reported before any measurement starts, as ``FILE:LINE: reason`` on one
line, and not surface later as a confusing DNS or TLS failure. Everything here is pure
except reading the file, so the same checks serve ``load_targets`` (refuse to run),
``lint_targets`` (report everything, for maintainers) and ``probe targets import``.

Two formats are accepted and told apart by content, never by file name, because lists are
passed around renamed:

* text (``targets.txt``): ``URL [CODE|-] [note]`` per line, ``#`` comments, blank lines;
* Citizen Lab CSV, recognised by its exact header line ``CITIZENLAB_HEADER``, so that
  test lists from citizenlab/test-lists can be used as they are.

URLs are normalised (lower-case scheme and host, IDN host to punycode, empty path to
``/``) so that two spellings of one site are measured once. Category codes are Citizen
Lab's (``probe/targets/data/category_codes.csv``); legacy codes are mapped to the current ones,
because older lists and papers still use them.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import logging
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from importlib import resources

from probe.core.i18n import _, ngettext

log = logging.getLogger(__name__)

CITIZENLAB_HEADER = "url,category_code,category_description,date_added,source,notes"
"""First line of every Citizen Lab test list; its presence is how a CSV is recognised."""

_CSV_COLUMNS = len(CITIZENLAB_HEADER.split(","))
ERROR = "error"
WARNING = "warning"

# Limits on one list, so that a wrong file (a disk image, /dev/zero, a log) stops at
# once with one line instead of filling memory: the largest real lists (Citizen Lab's
# global list, a top-sites list) are a few MB and tens of thousands of lines.
MAX_LIST_BYTES = 32 * 1024 * 1024
MAX_TARGETS = 100_000
_READ_CHUNK = 1024 * 1024
# With --skip-invalid, this many skipped lines are named one by one; the rest are counted.
MAX_LISTED_PROBLEMS = 20


# --- category codes --------------------------------------------------------------------


def _read_legend(name: str) -> list[dict[str, str]]:
    """Rows of a legend shipped in ``probe.targets.data``; importlib.resources so it works installed."""
    text = resources.files("probe.targets.data").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text, newline="")))


def _load_legends() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(current code -> description, legacy code -> current code, legacy code -> name)."""
    current = _read_legend("category_codes.csv")
    codes = {row["New Code"].strip(): row["Category Description"] for row in current}
    legacy_to_new = {
        old: row["New Code"].strip()
        for row in current
        for old in row["Replaces old code(s)"].split()
        if old != "N/A" and old not in codes
    }
    legacy_names = {
        row["CategoryCode"].strip(): row["CategoryName"]
        for row in _read_legend("category_codes_legacy.csv")
    }
    return codes, legacy_to_new, legacy_names


CATEGORY_CODES: dict[str, str]
"""Current Citizen Lab code -> its "Category Description" (what a CSV row must repeat)."""
LEGACY_CATEGORY_CODES: dict[str, str]
"""Old Citizen Lab code -> the current code that replaces it (legend's third column)."""
LEGACY_CATEGORY_NAMES: dict[str, str]
"""Old Citizen Lab code -> its name in the legacy legend, for messages and CSV checks."""
CATEGORY_CODES, LEGACY_CATEGORY_CODES, LEGACY_CATEGORY_NAMES = _load_legends()


def canonical_category(code: str) -> str:
    """The current code for ``code`` (any case, legacy accepted), or ValueError.

    Legacy codes are mapped instead of refused because published lists and older
    reports still use them (FEXP for news media, for instance).
    """
    key = code.strip().upper()
    if key in CATEGORY_CODES:
        return key
    if key in LEGACY_CATEGORY_CODES:
        return LEGACY_CATEGORY_CODES[key]
    raise ValueError(_("unknown category code {code!r} (see probe/targets/data/category_codes.csv)").format(code=code))


# --- public records --------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One URL to measure, with where it came from so that results can point back to it."""

    url: str
    category: str | None
    note: str | None
    line: int


class TargetError(ValueError):
    """A target list that cannot be used; ``str(e)`` is one line, ``FILE:LINE: reason``."""

    def __init__(self, reason: str, path: str | None = None, line: int | None = None) -> None:
        self.reason = reason
        self.path = path
        self.line = line
        super().__init__(_located(path, line, reason))


@dataclass(frozen=True)
class Problem:
    """One finding of the linter; errors stop a run, warnings are advice."""

    path: str
    line: int
    level: str  # ERROR or WARNING
    message: str

    def __str__(self) -> str:
        level = _("error") if self.level == ERROR else _("warning")
        return f"{self.path}:{self.line}: {level}: {self.message}"


@dataclass(frozen=True)
class TargetCheck:
    """Everything known about one file: the usable targets and every problem, by line."""

    targets: list[Target]
    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level == WARNING]

    def summary(self) -> str:
        """One line for humans, e.g. ``12 targets, 1 error, 0 warnings``."""
        t, e, w = len(self.targets), len(self.errors), len(self.warnings)
        return ", ".join([ngettext("{n} target", "{n} targets", t).format(n=t),
                          ngettext("{n} error", "{n} errors", e).format(n=e),
                          ngettext("{n} warning", "{n} warnings", w).format(n=w)])


def _located(path: str | None, line: int | None, reason: str) -> str:
    where = "".join(f"{part}:" for part in (path, line) if part is not None)
    return f"{where} {reason}" if where else reason


# --- URLs ------------------------------------------------------------------------------

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
# A scheme without "//" ("mailto:x"), but not "host:port" ("example.org:8080/").
_SCHEME_NO_SLASHES = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(?![0-9])")
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")
# The IDNA label separators: "." and its ideographic and full-width look-alikes.
_DOTS = re.compile("[.\u3002\uff0e\uff61]")


def _invisible(char: str) -> str | None:
    """How to name ``char`` if it must not appear in a URL (whitespace, control, format)."""
    if char.isspace() or unicodedata.category(char) in ("Zs", "Zl", "Zp"):
        return _("whitespace")
    if unicodedata.category(char) in ("Cc", "Cf"):
        return _("control character")
    return None


def _first_invisible(text: str) -> str | None:
    """A one-line description of the first forbidden character, or None."""
    for char in text:
        kind = _invisible(char)
        if kind:
            return f"{kind} U+{ord(char):04X}"
    return None


@dataclass(frozen=True)
class _Url:
    url: str  # normalised
    had_path: bool  # False for "https://example.org": fine to measure, Citizen Lab lint objects


def _split_scheme(text: str) -> tuple[str, str]:
    """(lower-case scheme, rest after "://"); ValueError with a fix the user can apply."""
    match = _SCHEME.match(text)
    if match is None:
        other = _SCHEME_NO_SLASHES.match(text)
        if other and other.group(1).lower() not in ("http", "https"):
            raise ValueError(_("unsupported scheme {scheme!r} (only http and https)").format(scheme=other.group(1)))
        if other:
            raise ValueError(_("missing '//' after '{scheme}:' in {text!r}").format(scheme=other.group(1), text=text))
        # Refuse to guess http or https: the two are measured differently (blockpage
        # vs. TLS reset in Belarus), so the list must say which one is meant.
        raise ValueError(_("no scheme in {text!r}: write 'https://{fixed}'").format(text=text, fixed=text.lstrip("/:")))
    scheme = match.group(1).lower()
    if scheme not in ("http", "https"):
        raise ValueError(_("unsupported scheme {scheme!r} (only http and https)").format(scheme=match.group(1)))
    return scheme, text[match.end():]


def _split_host_port(authority: str) -> tuple[str, str | None]:
    """Host text (IPv6 still in brackets) and port text, if any."""
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise ValueError(_("unclosed '[' in host {authority!r}").format(authority=authority))
        host, after = authority[: close + 1], authority[close + 1 :]
        if after and not after.startswith(":"):
            raise ValueError(_("unexpected {after!r} after IPv6 address").format(after=after))
        return host, after[1:] if after else None
    host, colon, port = authority.partition(":")
    if ":" in port:
        raise ValueError(_("IPv6 address must be in [brackets]: {authority!r}").format(authority=authority))
    return host, port if colon else None


def _normalise_port(port: str) -> int:
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise ValueError(_("invalid port {port!r} (must be 1..65535)").format(port=port))
    return int(port)


def _normalise_label(label: str, host: str) -> str:
    """One domain label in its ASCII (punycode) form, checked against the LDH rule."""
    if not label:
        raise ValueError(_("empty label in host {host!r}").format(host=host))
    try:
        # str.encode("idna") is IDNA 2003 (nameprep + punycode): enough to turn a
        # Cyrillic name such as "пример.бел" into what DNS resolvers are asked for.
        ascii_label = label.lower().encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(_("invalid label {label!r} in host {host!r}").format(label=label, host=host)) from None
    if len(ascii_label) > 63 or not _LDH_LABEL.fullmatch(ascii_label):
        raise ValueError(_(
            "invalid label {label!r} in host {host!r} "
            "(letters, digits and inner hyphens only, at most 63 characters)").format(label=label, host=host))
    if ascii_label.startswith("xn--"):
        try:
            ascii_label.encode("ascii").decode("idna")
        except UnicodeError:
            raise ValueError(_("invalid punycode label {label!r} in host {host!r}").format(label=label, host=host)) from None
    return ascii_label


def _normalise_domain(host: str) -> str:
    if _DOTS.fullmatch(host[-1]):
        # A root-anchored name is valid DNS but a second spelling of the same site.
        raise ValueError(_("host {host!r} ends with a dot: remove it").format(host=host))
    labels = [_normalise_label(label, host) for label in _DOTS.split(host)]
    if labels[-1].isdigit():
        raise ValueError(_("invalid host {host!r} (numeric top-level label)").format(host=host))
    ascii_host = ".".join(labels)
    if len(ascii_host) > 253:
        raise ValueError(_("host name too long ({length} > 253 characters)").format(length=len(ascii_host)))
    return ascii_host


def _normalise_host(host: str) -> str:
    """Lower-case domain in punycode, canonical IPv4, or compressed [IPv6]."""
    if not host:
        raise ValueError(_("no host"))
    if host.startswith("["):
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(_("invalid IPv6 address {host!r}").format(host=host)) from None
        if address.scope_id:
            raise ValueError(_("IPv6 zone index not allowed in {host!r}").format(host=host))
        return f"[{address.compressed}]"
    if re.fullmatch(r"[0-9.]+", host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError(_("invalid IPv4 address {host!r}").format(host=host)) from None
    return _normalise_domain(host)


def _parse_url(text: str) -> _Url:
    if not text:
        raise ValueError(_("empty URL"))
    bad = _first_invisible(text)
    if bad:
        raise ValueError(_("{bad} in URL {text!r}").format(bad=bad, text=text))
    scheme, rest = _split_scheme(text)
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:
        # Credentials would end up in results shared with others; lists never need them.
        raise ValueError(_("user name or password in URL {text!r} (not supported)").format(text=text))
    host_text, port_text = _split_host_port(authority)
    host = _normalise_host(host_text)
    netloc = host if port_text is None else f"{host}:{_normalise_port(port_text)}"
    had_path = tail.startswith("/")
    return _Url(f"{scheme}://{netloc}{tail if had_path else '/' + tail}", had_path)


def parse_url(text: str) -> str:
    """Normalise one URL (lower-case scheme/host, punycode, "/" for no path) or ValueError."""
    return _parse_url(text).url


# --- reading entries from the two formats ----------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One line as written, before validation; CSV-only fields are None for text lines."""

    line: int
    url: str = ""
    category: str | None = None
    note: str | None = None
    description: str | None = None
    date_added: str | None = None
    error: str | None = None  # the line could not even be split into fields


def _one_line(text: str) -> str | None:
    """Free text squeezed onto one line: notes end up in one-line messages and reports."""
    return " ".join(text.split()) or None


_COMMENT = re.compile(r"(?:^|\s)#")
# Upper-case words are taken as category codes, so a typo ("NWES") is an error rather
# than silently becoming part of the note. "-" means "no category" before such a note.
_CODE_LIKE = re.compile(r"[A-Z][A-Z0-9]+")


def _text_entry(line: int, content: str) -> _Entry:
    """Fields of one non-empty, comment-free text line: ``URL [CODE|-] [note]``."""
    for char in content:
        if char != "\t" and unicodedata.category(char) == "Cc":
            return _Entry(line, error=_("control character U+{char:04X} in line").format(char=ord(char)))
    url, rest = _first_word(content)
    word, after = _first_word(rest)
    category = None
    if word == "-" or _CODE_LIKE.fullmatch(word):
        category = None if word == "-" else word
        rest = after
    return _Entry(line, url, category, _one_line(rest))


def _first_word(text: str) -> tuple[str, str]:
    """(first whitespace-separated word, the rest), both possibly empty."""
    parts = text.split(None, 1)
    return (parts[0] if parts else "", parts[1] if len(parts) > 1 else "")


def _text_entries(text: str) -> Iterator[_Entry]:
    # split("\n"), not splitlines(): the latter also breaks at \v, \f, U+2028 ... and
    # the line numbers would no longer match what an editor shows.
    for number, raw in enumerate(text.split("\n"), start=1):
        comment = _COMMENT.search(raw)
        content = (raw[: comment.start()] if comment else raw).strip()
        if content:
            yield _text_entry(number, content)


def _csv_entries(text: str) -> Iterator[_Entry]:
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)  # the header, already recognised
    last = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield _Entry(last + 1, error=_("unreadable CSV ({error})").format(error=exc))
            return
        line, last = last + 1, reader.line_num
        if not row:
            continue
        if len(row) != _CSV_COLUMNS:
            yield _Entry(
                line,
                error=_("expected {columns} columns ({header}), found {found}").format(
                    columns=_CSV_COLUMNS, header=CITIZENLAB_HEADER, found=len(row)),
            )
            continue
        url, code, description, date_added, _source, notes = row
        yield _Entry(line, url, code.strip() or None, _one_line(notes), description, date_added)


def is_citizenlab_csv(text: str) -> bool:
    """True if ``text`` starts with the Citizen Lab header (the only thing that decides)."""
    return text.split("\n", 1)[0].rstrip("\r") == CITIZENLAB_HEADER


def _entries(text: str) -> Iterator[_Entry]:
    if is_citizenlab_csv(text):
        yield from _csv_entries(text)
    elif text.lstrip().lower().startswith("url,"):
        # Read as text, every row would fail with a misleading "no scheme" error.
        yield _Entry(1, error=_("CSV header must be exactly {header!r}").format(header=CITIZENLAB_HEADER))
    else:
        yield from _text_entries(text)


# --- validation ------------------------------------------------------------------------


def _is_iso_date(text: str) -> bool:
    try:
        return date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


def _csv_advice(entry: _Entry, category: str | None) -> Iterator[str]:
    """Lint-only warnings for the CSV columns Citizen Lab's own lint checks."""
    if entry.category is None:
        yield _("no category_code")
    elif category is not None:
        code = entry.category.upper()
        expected = CATEGORY_CODES.get(code) or LEGACY_CATEGORY_NAMES.get(code)
        if expected is not None and entry.description != expected:
            yield _("category_description {description!r} is not {expected!r} for {code}").format(
                description=entry.description, expected=expected, code=code)
    if not _is_iso_date(entry.date_added or ""):
        yield _("date_added {date_added!r} is not YYYY-MM-DD").format(date_added=entry.date_added)


def _check_entry(entry: _Entry) -> tuple[Target | None, list[str], list[str]]:
    """(target or None, errors, lint-only warnings) for one entry."""
    if entry.error:
        return None, [entry.error], []
    errors: list[str] = []
    advice: list[str] = []
    url = None
    try:
        url = _parse_url(entry.url)
    except ValueError as exc:
        errors.append(str(exc))
    category = None
    if entry.category is not None:
        try:
            category = canonical_category(entry.category)
        except ValueError as exc:
            hint = "" if entry.description is not None else _(" (write '-' before a note)")
            errors.append(f"{exc}{hint}")
        else:
            if category != entry.category.upper():
                advice.append(_("legacy category code {old!r}, now {new!r}").format(old=entry.category, new=category))
    if url is not None and not url.had_path:
        advice.append(_("URL has no path: write {url!r} (Citizen Lab lint requires '/')").format(url=url.url))
    if entry.description is not None:
        advice.extend(_csv_advice(entry, category))
    if errors or url is None:
        return None, errors, advice
    return Target(url.url, category, entry.note, entry.line), [], advice


@dataclass
class _Scan:
    targets: list[Target]
    errors: list[Problem]  # lines that cannot be measured
    duplicates: list[Problem]  # warnings that load_targets reports too
    advice: list[Problem]  # warnings only the linter reports


def _scan(path: str, text: str) -> _Scan:
    scan = _Scan([], [], [], [])
    first_line: dict[str, int] = {}
    for entry in _entries(text):
        target, errors, advice = _check_entry(entry)
        scan.errors += [Problem(path, entry.line, ERROR, m) for m in errors]
        scan.advice += [Problem(path, entry.line, WARNING, m) for m in advice]
        if target is None:
            continue
        if target.url in first_line:
            message = _("duplicate of line {line} ({url}), ignored").format(line=first_line[target.url], url=target.url)
            scan.duplicates.append(Problem(path, entry.line, WARNING, message))
            continue
        first_line[target.url] = target.line
        scan.targets.append(target)
        if len(scan.targets) > MAX_TARGETS:
            raise _NotAList(_("more than {n} targets: too many for one run (split the list)").format(
                n=f"{MAX_TARGETS:,}"), path, entry.line)
    return scan


# --- files -----------------------------------------------------------------------------


class _NotAList(TargetError):
    """The file can be read, but is not a target list (binary, UTF-16, far too big):
    one error for the linter, the reason a run refuses it."""


def _too_big(name: str) -> TargetError:
    return _NotAList(_("larger than {size} MB: not a target list, or too big for one run (split it)").format(
        size=MAX_LIST_BYTES // (1024 * 1024)), name)


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The file's bytes, read a chunk at a time and stopped at the first sign that it is
    not a target list (a NUL byte, or more than MAX_LIST_BYTES), so that memory stays
    bounded whatever the file is (a device, a pipe, a disk image). TargetError (one
    line) for anything the user must fix first."""
    name = os.fspath(path)
    parts: list[bytes] = []
    total = 0
    try:
        with open(path, "rb") as fh:
            info = os.fstat(fh.fileno())
            if stat.S_ISREG(info.st_mode) and info.st_size > MAX_LIST_BYTES:
                raise _too_big(name)
            while chunk := fh.read(_READ_CHUNK):
                if total == 0 and chunk[:2] in (b"\xff\xfe", b"\xfe\xff"):
                    raise _NotAList(_("UTF-16 text; save the file as UTF-8"), name)
                nul = chunk.find(b"\0")
                if nul >= 0:
                    line = sum(p.count(b"\n") for p in parts) + chunk[:nul].count(b"\n") + 1
                    raise _NotAList(_("not a text file (it holds a NUL byte)"), name, line)
                total += len(chunk)
                if total > MAX_LIST_BYTES:
                    raise _too_big(name)
                parts.append(chunk)
    except FileNotFoundError:
        raise TargetError(_("no such file"), name) from None
    except IsADirectoryError:
        raise TargetError(_("is a directory, not a file"), name) from None
    except OSError as exc:
        raise TargetError(_("cannot read ({reason})").format(reason=exc.strerror or exc), name) from None
    return b"".join(parts)


def _decode(name: str, data: bytes) -> str:
    """UTF-8 text (a BOM, as spreadsheets write it, is dropped), or TargetError with line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        byte = data[exc.start]
        raise TargetError(_("not UTF-8 (byte 0x{byte:02x}); save the file as UTF-8").format(byte=byte), name, line) from None


def check_targets(path: str | os.PathLike[str]) -> TargetCheck:
    """Targets and every problem in one file; raises TargetError only if it cannot be read."""
    name = os.fspath(path)
    try:
        scan = _scan(name, _decode(name, _read_bytes(path)))
    except TargetError as exc:
        if exc.line is None and not isinstance(exc, _NotAList):  # cannot be read at all
            raise
        return TargetCheck([], [Problem(name, exc.line or 1, ERROR, exc.reason)])
    problems = sorted(scan.errors + scan.duplicates + scan.advice, key=lambda p: p.line)
    return TargetCheck(scan.targets, problems)


def lint_targets(path: str | os.PathLike[str]) -> list[Problem]:
    """Every problem, errors and warnings, in line order; bad content never raises."""
    return check_targets(path).problems


def _load(
    path: str | os.PathLike[str],
    skip_invalid: bool,
    warn: Callable[[str], None] | None,
    require_csv: bool = False,
) -> list[Target]:
    name = os.fspath(path)
    text = _decode(name, _read_bytes(path))
    if require_csv and not is_citizenlab_csv(text):
        raise TargetError(_("not a Citizen Lab CSV (first line must be {header!r})").format(header=CITIZENLAB_HEADER),
                          name, 1)
    scan = _scan(name, text)
    if scan.errors and not skip_invalid:
        first = scan.errors[0]
        raise TargetError(first.message, first.path, first.line)
    report = warn or log.warning
    for line in _warnings(scan):
        report(line)
    return scan.targets


def _warnings(scan: _Scan) -> list[str]:
    """What loading a list says about what it skipped, in a few lines however many
    lines were skipped: bad lines one by one up to MAX_LISTED_PROBLEMS, then a count;
    duplicates as one line with their count."""
    out = [_located(p.path, p.line, _("{problem}; line skipped").format(problem=p.message))
           for p in scan.errors[:MAX_LISTED_PROBLEMS]]
    more = len(scan.errors) - MAX_LISTED_PROBLEMS
    if more > 0:
        out.append(_("{path}: {n} more bad lines skipped (see `probe targets lint`)").format(
            path=scan.errors[0].path, n=f"{more:,}"))
    dups = scan.duplicates
    if len(dups) == 1:
        out.append(_located(dups[0].path, dups[0].line, dups[0].message))
    elif dups:
        first = dups[0].message.removesuffix(", ignored")
        out.append(_("{path}: {n} duplicate lines ignored; the first, line {line}, is a {first}").format(
            path=dups[0].path, n=f"{len(dups):,}", line=dups[0].line, first=first))
    return out


_CONTROL_HEADER = re.compile(r"^\s*#\s*control\s*:\s*(\S+)\s*$", re.IGNORECASE)


def control_header(text: str, name: str | None = None) -> list[str]:
    """Control helpers a list's maintainers name in its header: ``# control: URL``
    lines among the comments before the first target, in order. A bad URL there is a
    TargetError (a maintainer's typo would otherwise silently leave volunteers without
    a control)."""
    from probe.core.userconfig import ConfigError, check_control_url

    out: list[str] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("#"):
            break  # the header ends with the first target
        m = _CONTROL_HEADER.match(line)
        if m:
            try:
                url = check_control_url(m.group(1))
            except ConfigError as exc:
                raise TargetError(str(exc), name, number) from None
            if url not in out:
                out.append(url)
    return out


def read_control_header(path: str | os.PathLike[str]) -> list[str]:
    """``control_header`` of a target list file (a Citizen Lab CSV has none)."""
    name = os.fspath(path)
    text = _decode(name, _read_bytes(path))
    return [] if is_citizenlab_csv(text) else control_header(text, name)


def load_targets(
    path: str | os.PathLike[str],
    *,
    skip_invalid: bool = False,
    warn: Callable[[str], None] | None = None,
) -> list[Target]:
    """The targets of a text list or Citizen Lab CSV, in file order, duplicates dropped.

    Raises TargetError on the first bad line, unless ``skip_invalid``: then each bad line
    is reported through ``warn`` (one line each; default: this module's logger) and
    skipped, so that one typo does not cost a volunteer a whole run. Duplicates are
    always reported through ``warn``; the first occurrence wins.
    """
    return _load(path, skip_invalid, warn)


def filter_targets(
    targets: Iterable[Target],
    exclude_categories: Iterable[str] = (),
    *,
    include_categories: Iterable[str] | None = None,
) -> list[Target]:
    """Targets whose category is not excluded (and, if given, is one of the included).

    Codes are case-insensitive and legacy codes count as their replacement; an unknown
    code is a ValueError, because a typo would otherwise silently exclude nothing.
    Targets without a category are never excluded, but are dropped by an include list.
    """
    excluded = {canonical_category(code) for code in exclude_categories}
    included = None if include_categories is None else {canonical_category(c) for c in include_categories}
    return [
        t
        for t in targets
        if t.category not in excluded and (included is None or t.category in included)
    ]


# --- writing the text format -----------------------------------------------------------

# "#" after whitespace would start a comment when read back (Citizen Lab notes say
# "PR #1114"), so it is written as the look-alike full-width sign.
_NOTE_HASH = re.compile(r"(?:(?<=\s)|^)#")


def format_target(target: Target) -> str:
    """One line of our text format; reading it back gives the same url, category and note."""
    fields = [target.url]
    if target.category or target.note:
        fields.append(target.category or "-")
    if target.note:
        fields.append(_NOTE_HASH.sub("\uff03", target.note))
    return " ".join(fields)


def format_targets(targets: Iterable[Target], header: Sequence[str] = ()) -> str:
    """A whole text-format file: ``header`` lines as comments, then one target per line."""
    lines = [f"# {line}".rstrip() for line in header]
    lines += [format_target(t) for t in targets]
    return "".join(f"{line}\n" for line in lines)


def import_citizenlab(
    path: str | os.PathLike[str],
    *,
    categories: Iterable[str] = (),
    warn: Callable[[str], None] | None = None,
) -> list[Target]:
    """Targets of a Citizen Lab CSV, optionally only some categories; strict on bad rows.

    Strict because the output becomes a maintained list: a bad row should be fixed
    upstream or by hand, not silently dropped.
    """
    wanted = list(categories)
    targets = _load(path, skip_invalid=False, warn=warn, require_csv=True)
    return filter_targets(targets, include_categories=wanted) if wanted else targets


def import_header(source: str, categories: Sequence[str] = ()) -> list[str]:
    """Comment lines that say where an imported list came from and under which licence."""
    which = f" (categories {', '.join(c.upper() for c in categories)})" if categories else ""
    return [
        f"Converted by `probe targets import` from {source}{which}.",
        "Citizen Lab test lists, https://github.com/citizenlab/test-lists, CC BY-NC-SA 4.0.",
        "Format: URL [CATEGORY|-] [note]; see targets.txt at the repository root.",
        "",
    ]
