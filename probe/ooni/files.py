"""Reading OONI files: JSONL, JSON or JSON(C), plain or gzip, streamed line by line so
that a large file is never held in memory."""

from __future__ import annotations

import gzip
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from probe.core.i18n import _
from probe.ooni.common import OoniFormatError


class OoniImportError(Exception):
    """The input as a whole cannot be read (missing, unreadable): a one-line reason."""


LineSource = Callable[[], Iterator[str]]


def line_source(path_or_lines: str | Path | Iterable[str]) -> LineSource:
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


# What a directory is searched for: OONI's own JSONL files (its S3 buckets hold
# .jsonl.gz), single measurements (.json, from its API) and its test data (.jsonc).
OONI_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".jsonc")


def expand_inputs(paths: Iterable[Path]) -> list[Path]:
    """The files to import: each file as given, and for a directory every OONI file
    inside it, at any depth, sorted by path so that the same tree always imports in the
    same order (and so gives the same run and measurement ids). OoniImportError for a
    path that does not exist or a directory without any such file."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted((p for p in path.rglob("*") if p.name.endswith(OONI_SUFFIXES) and p.is_file()),
                           key=lambda p: p.relative_to(path).parts)
            if not found:
                raise OoniImportError(_("{path}: no OONI file in this directory (.jsonl, .jsonl.gz, .json, "
                                        ".json.gz, .jsonc)").format(path=path))
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            message = _("{path}: no such file") if not path.exists() else _("{path}: not a file")
            raise OoniImportError(message.format(path=path))
    return out


# A document as it travels to the worker that decodes it: (is_text, payload). A JSONL
# line is sent as text, so that its json.loads runs in the worker too; a document of a
# JSON file was parsed whole already. The flag, not the type, says which: a JSON list
# may hold strings.
RawDocument = tuple[bool, Any]


def parse_document(raw: RawDocument) -> Any:
    """The parsed JSON of a raw document, or OoniFormatError for a JSONL line that is not JSON."""
    is_text, payload = raw
    if not is_text:
        return payload
    try:
        return json.loads(payload)
    except (ValueError, RecursionError) as exc:
        return OoniFormatError(f"not valid JSON ({getattr(exc, 'msg', exc)})")


def documents(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """(where, parsed JSON or OoniFormatError) for each document of the input."""
    for where, raw in raw_documents(lines):
        yield where, parse_document(raw)


def raw_documents(lines: Iterator[str]) -> Iterator[tuple[str, RawDocument]]:
    """(where, raw document) for each document of the input, JSONL lines left unparsed.

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
    except (ValueError, RecursionError):  # RecursionError: nested too deep for json
        # a broken first record of a JSONL file, not a pretty-printed document or list
        jsonl = first.lstrip().startswith("{") and len(content) == 2 and buffered[content[1]].lstrip().startswith("{")
    if jsonl:
        for n, line in enumerate(itertools.chain(buffered, lines), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("//"):
                continue
            yield f"line {n}", (True, stripped)
        return
    text = "".join("\n" if ln.lstrip().startswith("//") else ln for ln in [*buffered, *lines])
    start = f"line {content[0] + 1}"
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        where = f"line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else start
        yield where, (False, OoniFormatError(f"not valid JSON ({getattr(exc, 'msg', exc)})"))
        return
    if isinstance(doc, list):
        for i, item in enumerate(doc, 1):
            yield f"item {i}", (False, item)
    else:
        yield start, (False, doc)
