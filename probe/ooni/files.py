"""Reading OONI files: JSONL, JSON or JSON(C), plain or gzip, streamed line by line so
that a large file is never held in memory."""

from __future__ import annotations

import gzip
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

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


def documents(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
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
    except (ValueError, RecursionError):  # RecursionError: nested too deep for json
        # a broken first record of a JSONL file, not a pretty-printed document or list
        jsonl = first.lstrip().startswith("{") and len(content) == 2 and buffered[content[1]].lstrip().startswith("{")
    if jsonl:
        for n, line in enumerate(itertools.chain(buffered, lines), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("//"):
                continue
            try:
                yield f"line {n}", json.loads(stripped)
            except (ValueError, RecursionError) as exc:
                yield f"line {n}", OoniFormatError(f"not valid JSON ({getattr(exc, 'msg', exc)})")
        return
    text = "".join("\n" if ln.lstrip().startswith("//") else ln for ln in [*buffered, *lines])
    start = f"line {content[0] + 1}"
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        where = f"line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else start
        yield where, OoniFormatError(f"not valid JSON ({getattr(exc, 'msg', exc)})")
        return
    if isinstance(doc, list):
        for i, item in enumerate(doc, 1):
            yield f"item {i}", item
    else:
        yield start, doc
