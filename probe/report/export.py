"""Researchers' exports, the writing side: one file per table of
``probe.store.export.EXPORT_TABLES`` (Parquet, CSV or JSONL) in a folder, plus
``schema.json`` describing every file and column, so BigQuery, ClickHouse or pandas
read them without knowing the probe.

How each type is written:

=============  ==========================  ==========================================
type           Parquet                     CSV / JSONL
=============  ==========================  ==========================================
text, json     string                      text (json columns hold JSON text)
int / float    int64 / double              number
bool           bool (nullable)             true / false / empty (CSV), JSON bool/null
timestamp      timestamp[us, UTC]          the stored RFC 3339 text (``...Z``)
bytes          binary                      base64 (standard alphabet, padded)
list, struct   LIST / STRUCT               JSON text in CSV, JSON arrays/objects in JSONL
=============  ==========================  ==========================================

Streaming: rows come in chunks from the store, and each chunk is written before the
next is read (Parquet through one ``ParquetWriter`` per table with an explicit schema),
so memory stays flat for a collector's database of millions of rows. A file is
written beside its final name and renamed when complete: a crash never leaves half a
file under the real name. Files of other names in the folder are never touched.

pyarrow is imported only when Parquet is asked for (the ``parquet`` extra): CSV and
JSONL need nothing beyond the standard library.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import importlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import sqlite_utils

from probe.core.i18n import _
from probe.store.export import (
    CHUNK_ROWS,
    EXPORT_TABLES,
    EXPORT_VERSION,
    ExportTable,
    FieldType,
    ListOf,
    StructOf,
    column_doc,
    export_chunks,
    snapshot,
    type_name,
)

FORMATS = ("parquet", "csv", "jsonl")
SCHEMA_FILE = "schema.json"
PARQUET_COMPRESSION = "zstd"  # small files, and every reader named above decodes it


class ExportError(ValueError):
    """An export that cannot be made: ``str(e)`` is one line for the user."""


class ParquetUnavailable(ExportError):
    """Parquet was asked for and pyarrow is not installed."""


def parquet_missing_message() -> str:
    return _("Parquet needs pyarrow: pip install 'bynet-probe[parquet]'")


def require_pyarrow() -> Any:
    """The pyarrow module (with its parquet part), or ParquetUnavailable. Called before
    anything is created, so a missing extra costs one line and no half-made folder."""
    try:
        # by name, not an import statement: pyarrow ships no type information, and the
        # type check must pass the same with and without the extra installed
        pyarrow = importlib.import_module("pyarrow")
        importlib.import_module("pyarrow.parquet")  # a pyarrow built without Parquet is of no use here
    except ImportError:
        raise ParquetUnavailable(parquet_missing_message()) from None
    return pyarrow


@dataclass
class ExportedFile:
    table: str
    path: Path
    rows: int


# --- values ------------------------------------------------------------------------------


def parse_timestamp(text: Any) -> datetime | None:
    """Stored UTC text (``2024-05-01T10:00:00.000000Z``, or an imported ``+00:00``) as
    an aware datetime; None for none or for text that is not a time (CSV and JSONL
    keep such text as it was)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _arrow_value(value: Any, t: FieldType) -> Any:
    if value is None:
        return None
    if isinstance(t, ListOf):
        return [_arrow_value(v, t.item) for v in value]
    if isinstance(t, StructOf):
        return {name: _arrow_value(value.get(name), ft) for name, ft in t.fields}
    if t == "timestamp":
        return parse_timestamp(value)
    return value


def _needs_conversion(t: FieldType) -> bool:
    if isinstance(t, ListOf):
        return _needs_conversion(t.item)
    if isinstance(t, StructOf):
        return any(_needs_conversion(ft) for _, ft in t.fields)
    return t == "timestamp"


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _csv_value(value: Any, t: FieldType) -> Any:
    if value is None:
        return ""
    if isinstance(t, (ListOf, StructOf)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if t == "bool":
        return "true" if value else "false"
    if t == "bytes":
        return _b64(value)
    return value


def _jsonl_value(value: Any, t: FieldType) -> Any:
    if value is not None and t == "bytes":
        return _b64(value)
    return value


# --- Parquet -----------------------------------------------------------------------------


def arrow_type(pa: Any, t: FieldType) -> Any:
    if isinstance(t, ListOf):
        return pa.list_(arrow_type(pa, t.item))
    if isinstance(t, StructOf):
        return pa.struct([pa.field(name, arrow_type(pa, ft)) for name, ft in t.fields])
    scalars = {"text": pa.string(), "json": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
               "timestamp": pa.timestamp("us", tz="UTC"), "bytes": pa.binary()}
    return scalars[t]


def arrow_schema(pa: Any, spec: ExportTable) -> Any:
    """The table's Parquet schema, each field's description in its metadata."""
    fields = [pa.field(c.name, arrow_type(pa, c.type), nullable=True,
                       metadata={"description": column_doc(spec.name, c), "bynet_probe_type": type_name(c.type)})
              for c in spec.columns]
    return pa.schema(fields, metadata={"bynet_probe_table": spec.name, "bynet_probe_export_version": EXPORT_VERSION,
                                       "description": spec.description})


def _write_parquet(pa: Any, spec: ExportTable, chunks: Iterable[list[dict[str, Any]]], path: Path) -> int:
    pq = importlib.import_module("pyarrow.parquet")
    schema = arrow_schema(pa, spec)
    convert = [(c.name, c.type) for c in spec.columns if _needs_conversion(c.type)]
    rows = 0
    with pq.ParquetWriter(str(path), schema, compression=PARQUET_COMPRESSION) as writer:
        for chunk in chunks:
            if convert:
                chunk = [{**r, **{name: _arrow_value(r[name], t) for name, t in convert}} for r in chunk]
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
            rows += len(chunk)
    return rows


# --- CSV and JSONL -----------------------------------------------------------------------


def _write_csv(spec: ExportTable, chunks: Iterable[list[dict[str, Any]]], fh: IO[str]) -> int:
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(spec.column_names())
    types = [(c.name, c.type) for c in spec.columns]
    rows = 0
    for chunk in chunks:
        writer.writerows([_csv_value(r[name], t) for name, t in types] for r in chunk)
        rows += len(chunk)
    return rows


def _write_jsonl(spec: ExportTable, chunks: Iterable[list[dict[str, Any]]], fh: IO[str]) -> int:
    binary = [c.name for c in spec.columns if c.type == "bytes"]
    rows = 0
    for chunk in chunks:
        for r in chunk:
            out = {**r, **{name: _jsonl_value(r[name], "bytes") for name in binary}} if binary else r
            fh.write(json.dumps(out, ensure_ascii=False, separators=(",", ":"), allow_nan=False))
            fh.write("\n")
        rows += len(chunk)
    return rows


# --- the folder ----------------------------------------------------------------------------


def _prepare_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise ExportError(_("{path} is a file, not a folder: give another -o").format(path=folder))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(_("{path}: cannot write ({reason})").format(path=folder, reason=exc.strerror or exc)) from None


def _write_atomically(path: Path, write: Callable[[Path], int]) -> int:
    """Write to a hidden name beside ``path``, then rename over it: readers of the
    folder see the old file or the whole new one, never half of one."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        rows = write(partial)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    return rows


def _schema_document(fmt: str, files: list[ExportedFile]) -> dict[str, Any]:
    return {
        "export_version": EXPORT_VERSION,
        "format": fmt,
        "encoding": {"timestamp": "RFC 3339 UTC text in CSV and JSONL, timestamp[us, UTC] in Parquet",
                     "bytes": "base64 in CSV and JSONL, binary in Parquet",
                     "list/struct": "JSON text in CSV, JSON in JSONL, LIST/STRUCT in Parquet",
                     "bool": "true/false, empty or null when unknown"},
        "tables": {f.table: {"file": f.path.name, "rows": f.rows, "description": EXPORT_TABLES[f.table].description,
                             "columns": [{"name": c.name, "type": type_name(c.type),
                                          "description": column_doc(f.table, c)}
                                         for c in EXPORT_TABLES[f.table].columns]}
                   for f in files},
    }


def export_database(db: sqlite_utils.Database, folder: Path, fmt: str, *, tables: Iterable[str] | None = None,
                    chunk_rows: int = CHUNK_ROWS) -> list[ExportedFile]:
    """Write ``TABLE.<fmt>`` for each exported table (all by default) and ``schema.json``
    into ``folder`` (created if missing), overwriting files of those names only.
    Every file shows the database at one instant (``store.export.snapshot``).
    Raises ExportError (ParquetUnavailable without pyarrow) with one line; ValueError
    for a format or table that does not exist."""
    if fmt not in FORMATS:  # the CLI offers only these: a caller's mistake, not the user's
        raise ValueError(f"unknown export format {fmt!r}")
    names = list(EXPORT_TABLES) if tables is None else list(tables)
    unknown = [n for n in names if n not in EXPORT_TABLES]
    if unknown:
        raise ValueError(f"no exported table {unknown[0]!r}")
    pa = require_pyarrow() if fmt == "parquet" else None
    _prepare_folder(folder)
    written: list[ExportedFile] = []
    with snapshot(db):
        for name in names:
            spec = EXPORT_TABLES[name]
            chunks = export_chunks(db, name, chunk_rows=chunk_rows)
            path = folder / f"{name}.{fmt}"

            def write(target: Path, spec: ExportTable = spec, chunks: Iterable[list[dict[str, Any]]] = chunks) -> int:
                if pa is not None:
                    return _write_parquet(pa, spec, chunks, target)
                with target.open("w", encoding="utf-8", newline="") as fh:
                    return (_write_csv if fmt == "csv" else _write_jsonl)(spec, chunks, fh)

            try:
                rows = _write_atomically(path, write)
            except OSError as exc:
                raise ExportError(_("{path}: cannot write ({reason})").format(
                    path=path, reason=exc.strerror or exc)) from None
            written.append(ExportedFile(name, path, rows))
    document = json.dumps(_schema_document(fmt, written), ensure_ascii=False, indent=2) + "\n"
    try:
        _write_atomically(folder / SCHEMA_FILE, lambda p: p.write_text(document, encoding="utf-8"))
    except OSError as exc:
        raise ExportError(_("{path}: cannot write ({reason})").format(
            path=folder / SCHEMA_FILE, reason=exc.strerror or exc)) from None
    return written
