"""OONI files into a database and out of it, through the store's functions only (the
store is the one place that writes SQL)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import sqlite_utils

from probe import store
from probe.core.i18n import _
from probe.core.records import (
    Measurement,
)
from probe.ooni.common import NAMESPACE, NotWebConnectivity, OoniFormatError
from probe.ooni.decode import ooni_to_measurement
from probe.ooni.encode import measurement_to_ooni
from probe.ooni.files import RawDocument, line_source, parse_document, raw_documents
from probe.ooni.pool import Decoder
from probe.store.observations import (
    MeasurementRows,
    existing_measurement_ids,
    measurement_rows,
    save_measurement_rows,
)


@dataclass
class ImportSummary:
    """What one import did; ``messages`` says which line was skipped or bad, and why."""

    source: str
    imported: int = 0
    duplicates: int = 0  # already in the database (same measurement id)
    skipped: int = 0  # not web_connectivity
    errors: int = 0
    messages: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)

    @property
    def usable(self) -> int:
        """Measurements of this input that are now in the database."""
        return self.imported + self.duplicates

    def line(self) -> str:
        """The one-line summary; "skipped" counts other tests and measurements already
        in the database (both fine), "errors" the documents that could not be read."""
        return _("imported {n} measurements from {source} ({skipped} skipped, {errors} errors)").format(
            n=self.imported, source=self.source, skipped=self.skipped + self.duplicates, errors=self.errors)


@dataclass
class _RunPlan:
    run_id: str
    meta: dict
    targets: dict[str, None] = field(default_factory=dict)  # in first-seen order; a set, for speed
    started_at: str | None = None
    finished_at: str | None = None
    any_time_unknown: bool = False
    created: bool | None = None  # by this import (None: not written yet)
    unwritten: list[str] = field(default_factory=list)  # targets not yet in run_targets, in order


def _convert(doc: Any, where: str, source: str) -> tuple[Measurement, dict]:
    """One document to records; any failure of the data is this document's error."""
    if isinstance(doc, OoniFormatError):
        raise doc
    try:
        m, meta = ooni_to_measurement(doc, fallback_key=f"{source}:{where}")
    except OoniFormatError:
        raise
    except Exception as exc:  # malformed data deep inside: an error of this line only
        raise OoniFormatError(f"malformed measurement ({type(exc).__name__}: {exc})") from None
    _check_storable(m)
    return m, meta


_SQLITE_INT = range(-(2**63), 2**63)
_FINE = (type(None), bool, float, bytes)  # values any row can hold
_FIELDS: dict[type, tuple[str, ...] | None] = {}  # a class's dataclass fields (None: not a dataclass)


def _fields(cls: type) -> tuple[str, ...] | None:
    if cls not in _FIELDS:
        _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else None
    return _FIELDS[cls]


def _needs_look(value: Any, in_raw: bool) -> bool:
    """Whether a value can be unstorable (or holds values that can): most are ASCII text,
    small numbers or None, and the walk below need not visit them one by one."""
    kind = type(value)
    if kind is str:
        return not value.isascii()
    if kind is int:
        return not in_raw and value not in _SQLITE_INT
    return kind not in _FINE


def _check_storable(m: Measurement) -> None:
    """OoniFormatError for a value no row can hold: an integer beyond SQLite's 64 bits
    (a port of 2**70), or text with a lone surrogate (JSON's "\\ud800"). Checked before
    any row is written, so that such a line is an error like any other bad line.
    Values are visited in a fixed order, so the same line always names the same value."""
    stack: list[tuple[Any, bool]] = [(m, False)]  # (value, inside control.raw: stored as JSON text)
    while stack:
        value, in_raw = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise OoniFormatError(f"malformed measurement (not Unicode text: {value[:40]!r})") from None
        elif isinstance(value, bool) or value is None or isinstance(value, (float, bytes)):
            continue
        elif isinstance(value, int):
            if not in_raw and value not in _SQLITE_INT:
                raise OoniFormatError(f"malformed measurement (integer of {value.bit_length()} bits)")
        elif isinstance(value, dict):
            stack.extend((x, in_raw) for pair in value.items() for x in pair if _needs_look(x, in_raw))
        elif isinstance(value, (list, tuple)):
            stack.extend((x, in_raw) for x in value if _needs_look(x, in_raw))
        else:
            names = _fields(type(value))
            if names is not None:
                stack.extend((x, inner) for name in names
                             if _needs_look(x := getattr(value, name), inner := in_raw or name == "raw"))


def _run_id(meta: dict, source: str) -> str:
    if meta.get("run_id"):
        return meta["run_id"]
    report = meta.get("report_id") or f"file:{source}"
    return str(uuid.uuid5(NAMESPACE, f"run:{report}|{meta.get('cc')}|{meta.get('asn')}"))


def _run_row(plan: _RunPlan, source: str, digest: str | None, lab_networks: list[str] | None = None) -> dict[str, Any]:
    meta = plan.meta
    notes = [
        f"imported from OONI data {source} ({meta.get('software') or 'unknown software'}, "
        f"web_connectivity {meta.get('test_version') or 'unknown version'}); observations only, "
        "OONI's verdict keys were not imported"
    ]
    if plan.any_time_unknown:
        notes.append("the measurement time is not in the OONI data; recorded as 1970-01-01")
    if meta.get("test_keys_only"):
        notes.append("the OONI data holds test_keys only: country and network unknown")
    return {
        "run_id": plan.run_id,
        "started_at": plan.started_at,
        "finished_at": plan.finished_at or plan.started_at,
        "status": "finished",
        "probe_version": f"ooni:{meta.get('software') or 'unknown'}",
        "targets_source": source,
        "targets_sha256": digest,
        "target_count": len(plan.targets),
        "cc": meta.get("cc"),
        "asn": meta.get("asn"),
        "network_name": meta.get("network_name"),
        "resolvers": json.dumps([meta["resolver_ip"]] if meta.get("resolver_ip") else []),
        "probe_ip": None,
        "control_url": meta.get("test_helper"),
        "doh_url": None,
        "config": json.dumps(
            {"imported_from": "ooni", "source": source, "report_id": meta.get("report_id"),
             "test_version": meta.get("test_version"), "lab_networks": list(lab_networks or [])}
        ),
        "notes": json.dumps(notes),
    }


def _write_run(db: sqlite_utils.Database, plan: _RunPlan, source: str, lab_networks: list[str]) -> None:
    """Before its measurements: the run (created from what is known of it so far, or
    found, as after a killed import), and the targets it gained since."""
    if plan.created is None:
        plan.created = not store.run_exists(db, plan.run_id)
        if plan.created:
            store.create_run(db, _run_row(plan, source, None, lab_networks), [store.RunTarget(u) for u in plan.targets])
            plan.unwritten.clear()
            return
    if plan.unwritten:
        store.add_run_targets(db, plan.run_id, plan.unwritten)
        plan.unwritten.clear()


def _finish_run(db: sqlite_utils.Database, plan: _RunPlan, source: str, digest: str, lab_networks: list[str]) -> None:
    """Once the whole input is read: what only all of it tells (first and last times,
    how many targets, the input's digest). A run an earlier import left unfinished
    (killed: no digest yet) is completed the same way; one an earlier import finished
    only widens to what this input adds."""
    stored = store.get_run(db, plan.run_id) or {}
    full = _run_row(plan, source, digest, lab_networks)
    fields: dict[str, Any] = {
        "started_at": min(filter(None, [stored.get("started_at"), full["started_at"]]), default=None),
        "finished_at": max(filter(None, [stored.get("finished_at"), full["finished_at"]]), default=None),
        "target_count": sum(store.count_targets(db, plan.run_id).values()),
    }
    if plan.created or not stored.get("targets_sha256"):
        fields.update(targets_sha256=digest, notes=full["notes"])
    store.update_run(db, plan.run_id, fields)


# What a worker sends back of one document: ("skipped" | "error", where, message), or
# ("ok", run id, run meta, url, started_at, finished_at, time unknown, its rows).
_Converted = tuple[Any, ...]


def _convert_chunk(chunk: list[tuple[str, RawDocument]], source: str) -> list[_Converted]:
    """In a worker: each document's rows, ready to write, with what it tells of its
    run; or why it is not imported."""
    out: list[_Converted] = []
    for where, raw in chunk:
        try:
            m, meta = _convert(parse_document(raw), where, source)
        except NotWebConnectivity as exc:
            out.append(("skipped", where, f"{where}: skipped: {exc}"))
            continue
        except OoniFormatError as exc:
            out.append(("error", where, f"{where}: {exc}"))
            continue
        rid = _run_id(meta, source)
        out.append(("ok", rid, meta, m.url, m.started_at, m.finished_at, meta["measured_at"] is None,
                    measurement_rows(rid, m)))
    return out


def _size(item: tuple[str, RawDocument]) -> int:
    is_text, payload = item[1]
    return len(payload) if is_text else 4096


def _add_to_plan(plans: dict[str, _RunPlan], converted: _Converted) -> _RunPlan:
    _, rid, meta, url, started_at, finished_at, time_unknown, _rows = converted
    plan = plans.setdefault(rid, _RunPlan(rid, meta))
    if url not in plan.targets:
        plan.targets[url] = None
        plan.unwritten.append(url)
    plan.started_at = min(filter(None, [plan.started_at, started_at]))
    plan.finished_at = max(filter(None, [plan.finished_at, finished_at, started_at]))
    plan.any_time_unknown |= time_unknown
    return plan


def _save_new(db: sqlite_utils.Database, batch: list[MeasurementRows], summary: ImportSummary) -> None:
    """Write the measurements of a batch not in the database yet (nor earlier in the
    batch), in one transaction; count the others as duplicates."""
    ids = [rows["measurement_id"] for rows in batch]
    seen = existing_measurement_ids(db, ids)
    new: list[MeasurementRows] = []
    for mid, rows in zip(ids, batch, strict=True):
        if mid in seen:
            summary.duplicates += 1
            continue
        seen.add(mid)
        new.append(rows)
    save_measurement_rows(db, new)
    summary.imported += len(new)


def import_ooni(
    db: sqlite_utils.Database, path_or_lines: str | Path | Iterable[str], *, source: str,
    lab_networks: list[str] | None = None, decoder: Decoder | None = None,
) -> ImportSummary:
    """Store every web_connectivity measurement of a JSONL or JSON(C) file (or lines).

    One run per (report_id, or the file when there is none; country; network), finished.
    Ids are derived from OONI's own, so importing the same data again adds nothing.
    A bad line or another test's measurement is counted and named in ``messages``; only
    an input that cannot be read at all raises (OoniImportError).

    The input is read once, as a stream, and converted in worker processes when large
    (``decoder``: one is made for this call when none is given; share one across the
    files of an import). A batch's runs and targets are written before its
    measurements, which go in one transaction, so a killed import keeps every finished
    batch and a second import adds the rest. What only the whole input tells of a run
    (first and last times, target count, the input's digest) is written at the end.
    """
    if decoder is None:
        with Decoder() as own:
            return import_ooni(db, path_or_lines, source=source, lab_networks=lab_networks, decoder=own)
    lines = line_source(path_or_lines)
    summary = ImportSummary(source=source)
    hasher = hashlib.sha256()
    networks = lab_networks or []

    def hashed(it: Iterator[str]) -> Iterator[str]:
        for line in it:
            hasher.update(line.encode("utf-8", "replace"))
            yield line

    plans: dict[str, _RunPlan] = {}
    for results in decoder.map_chunks(_convert_chunk, raw_documents(hashed(lines())), source, _size):
        batch: list[MeasurementRows] = []
        touched: dict[str, _RunPlan] = {}
        for converted in results:
            if converted[0] == "ok":
                plan = _add_to_plan(plans, converted)
                touched[plan.run_id] = plan
                batch.append(converted[7])
                continue
            if converted[0] == "skipped":
                summary.skipped += 1
            else:
                summary.errors += 1
            summary.messages.append(converted[2])
        for plan in touched.values():
            _write_run(db, plan, source, networks)
        _save_new(db, batch, summary)
    digest = hasher.hexdigest()
    for plan in plans.values():
        _finish_run(db, plan, source, digest, networks)
        summary.run_ids.append(plan.run_id)
    if summary.duplicates:
        summary.messages.append(f"{summary.duplicates} measurements were already in the database")
    return summary


class OoniExportError(Exception):
    """Nothing to export as asked (e.g. an unknown run id): a one-line reason."""


def find_run(db: sqlite_utils.Database, run_id: str) -> str:
    """The full id of a run given by id or unique prefix; OoniExportError if none."""
    run = store.get_run(db, run_id)
    if run is None:
        raise OoniExportError(f"no run {run_id!r} in this database (see `probe show`)")
    return run["run_id"]


DEEP_EXTENSION = "x_bynet_deep"


def export_ooni(db: sqlite_utils.Database, out: IO[str], *, run_id: str | None = None) -> int:
    """Write measurements (of one run, or all) as OONI JSONL, oldest first; returns how
    many. Measurements are loaded one at a time, so memory does not grow with the run."""
    wanted = find_run(db, run_id) if run_id is not None else None
    runs: dict[str, dict] = {}
    count = 0
    examined = store.deep_measurement_ids(db)
    for mid, rid in store.measurement_ids(db, wanted):
        m = store.load_measurement(db, mid)
        if m is None:
            continue
        if rid not in runs:
            runs[rid] = store.get_run(db, rid) or {"run_id": rid}
        doc = measurement_to_ooni(m, runs[rid])
        deep = store.load_deep(db, mid) if mid in examined else None
        if deep is not None and isinstance(doc.get("test_keys"), dict):
            # our extension (OONI's readers ignore unknown keys): the deep measurement's
            # raw observations, trigger tests, packets and hop search
            doc["test_keys"][DEEP_EXTENSION] = dataclasses.asdict(deep)
        out.write(json.dumps(doc, ensure_ascii=False) + "\n")
        count += 1
    return count
