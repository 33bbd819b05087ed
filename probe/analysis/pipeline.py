"""The classifier at scale: ``python3 -m probe.analysis.pipeline`` on Apache Beam.

Why Beam: Censored Planet classifies its measurements on Dataflow with Beam; the same
code runs on a laptop (DirectRunner), on Dataflow, Flink or Spark, and reads
``gs://`` or ``s3://`` through Beam's filesystems (with Beam's gcp or aws extra).
OONI publishes its measurements as JSONL on S3; our collectors' data comes out as
OONI JSONL (``probe export-ooni``) or as a ``probe export --format jsonl`` folder.

What it does, and why each step is shaped so:

1. **Read.** An OONI file (JSON, JSONL or JSONC, plain or gzip) is read whole by one
   worker with ``probe.ooni.files.documents`` and converted as ``probe import-ooni``
   converts it (``probe.ooni.database``'s ``_convert`` and ``_run_id``, not a copy), so
   measurement and run ids are the ones an import gives, and verdicts can be matched by
   measurement_id. Documents without any id of their own get ids from the file's path,
   as in an import: give both the same paths. A ``probe export --format jsonl`` folder is
   read table by table, each row numbered by its line (the order observations were
   stored in, which the classifier reads them in), and the tables are joined per
   measurement_id with CoGroupByKey.
2. **Deduplicate** by measurement_id, keeping the first read (an import keeps the first
   it stores and skips the rest).
3. **Group by run** and classify: the run's Context from its measurements
   (``probe.analysis.runctx``, the same Context ``probe analyze`` builds from SQL), then
   ``probe.analysis.classify.classify`` on each measurement. There is no second
   classifier: this module only moves records.
4. **Aggregate** per (domain, ASN, country, day, verdict): measurements, blocked, can't
   tell. Written as Parquet and CSV; the per-measurement verdicts optionally as JSONL.

Beam is the ``beam`` extra and is imported here only: ``probe`` itself works without it.
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import importlib
import io
import ipaddress
import json
import logging
import os
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, NoReturn

import pyarrow as pa

from probe.analysis.classify import classify
from probe.analysis.fingerprints import FingerprintDB, FingerprintError, default_fingerprints, load_fingerprints
from probe.analysis.runctx import context_from_measurements
from probe.analysis.view import norm_host
from probe.core import i18n
from probe.core.addresses import is_ip
from probe.core.i18n import _
from probe.core.records import DnsAnswer, Measurement
from probe.core.verdicts import CLASSIFIER_VERSION, Verdict
from probe.ooni.common import NotWebConnectivity, OoniFormatError

# The import's own conversion and run ids (private names: one definition of how an OONI
# document becomes records and which run it belongs to, or the ids would drift apart).
from probe.ooni.database import _convert, _run_id
from probe.ooni.decode import _addresses as ooni_addresses
from probe.ooni.files import documents
from probe.store import loading

log = logging.getLogger(__name__)


def _apitools_notice(record: logging.LogRecord) -> bool:
    return "apitools not found" not in record.getMessage()


def _import_beam(*names: str) -> list[Any]:
    """Beam's modules, imported without the warning Beam logs through the root logger
    when its gcp extra is absent ("apitools not found, ..."): it is noise on every run,
    and it would come before a bad input's one-line error."""
    root = logging.getLogger()
    root.addFilter(_apitools_notice)
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        root.removeFilter(_apitools_notice)


beam, fileio, filesystem, filesystems, pipeline_options = _import_beam(
    "apache_beam", "apache_beam.io.fileio", "apache_beam.io.filesystem", "apache_beam.io.filesystems",
    "apache_beam.options.pipeline_options")
CompressionTypes = filesystem.CompressionTypes
FileSystems = filesystems.FileSystems
PipelineOptions = pipeline_options.PipelineOptions
DoFn: Any = beam.DoFn  # Beam ships no type information: a base class mypy takes as it is

EXIT_BAD_INPUT = 2
METRICS = "bynet-probe"

# The tables of a `probe export --format jsonl` folder that make up a measurement.
OBSERVATION_TABLES = ("dns_queries", "dns_answers", "tcp_connects", "tls_handshakes", "http_requests",
                      "control_results")
EXPORT_TABLES = ("measurements", "runs", *OBSERVATION_TABLES)
# A measurement's addresses when the export does not say (probe.measure.url.ProbeConfig.per_family).
DEFAULT_PER_FAMILY = 4

AGGREGATE_KEY = ("domain", "asn", "cc", "day", "verdict")
AGGREGATE_COLUMNS = (*AGGREGATE_KEY, "measurements", "blocked", "cant_tell", "classifier_version")
AGGREGATE_SCHEMA = pa.schema([
    pa.field("domain", pa.string()), pa.field("asn", pa.string()), pa.field("cc", pa.string()),
    pa.field("day", pa.date32()), pa.field("verdict", pa.string()),
    pa.field("measurements", pa.int64(), nullable=False), pa.field("blocked", pa.int64(), nullable=False),
    pa.field("cant_tell", pa.int64(), nullable=False), pa.field("classifier_version", pa.string()),
])


class PipelineInputError(Exception):
    """An input that cannot be read as asked: one line for the user."""


@dataclass(frozen=True)
class RunMember:
    """One measurement on its way to its run: ``order`` says which copy of a measurement
    read twice is kept (the first file, the first line), ``run`` is its run's row
    (run_id, cc, asn, config) as ``run_context`` reads it."""

    order: tuple[str, int]
    run: dict[str, Any]
    measurement: Measurement


# --- reading OONI files ------------------------------------------------------------------


def source_name(path: str) -> str:
    """A file's name as `probe import-ooni` records it (``str(Path(arg))``: ``./a.json``
    is ``a.json``), so ids derived from it agree; object-store URLs stay as they are."""
    return path if "://" in path else str(PurePath(path))


def _lines(fh: Any) -> Iterator[str]:
    """Text lines of a Beam file handle (plain or decompressed), as ``open(..., "r",
    errors="replace")`` gives them to the import."""
    for raw in iter(fh.readline, b""):
        yield raw.decode("utf-8", "replace")


def ooni_members(path: str, lines: Iterable[str], lab_networks: Sequence[str]) -> Iterator[RunMember]:
    """The web_connectivity measurements of one OONI file, each with its run, converted
    exactly as ``probe import-ooni`` converts them. Other tests and bad documents are
    counted (Beam metrics) and logged with where they are, as the import names them."""
    source = source_name(path)
    for n, (where, doc) in enumerate(documents(iter(lines))):
        try:
            m, meta = _convert(doc, where, source)
        except NotWebConnectivity:
            beam.metrics.Metrics.counter(METRICS, "skipped").inc()
            continue
        except OoniFormatError as exc:
            beam.metrics.Metrics.counter(METRICS, "errors").inc()
            log.warning("%s: %s: %s", source, where, exc)
            continue
        run = {"run_id": _run_id(meta, source), "cc": meta.get("cc"), "asn": meta.get("asn"),
               "config": {"lab_networks": list(lab_networks)}}
        yield RunMember((source, n), run, m)


def _read_ooni_file(readable: Any, lab_networks: Sequence[str]) -> Iterator[RunMember]:
    """A file that breaks off (a truncated gzip, a vanished object) is counted and
    logged, not allowed to fail a whole job: the command exits 2 and names the count."""
    try:
        with readable.open(compression_type=CompressionTypes.AUTO) as fh:
            yield from ooni_members(readable.metadata.path, _lines(fh), lab_networks)
    except (OSError, EOFError, zlib.error) as exc:
        beam.metrics.Metrics.counter(METRICS, "unreadable_files").inc()
        log.warning("%s: cannot read (%s)", readable.metadata.path, exc)


# --- reading a `probe export --format jsonl` folder --------------------------------------------


def _export_rows(readable: Any, key: str) -> Iterator[tuple[str, tuple[int, dict[str, Any]]]]:
    """(the row's ``key``, (line number, row)) of one exported table: the line number is
    the order the store kept the rows in, which a shuffle would otherwise lose. A line
    that is not such a row is counted and logged, as a bad line of an OONI file is."""
    with readable.open(compression_type=CompressionTypes.AUTO) as fh:
        for n, line in enumerate(_lines(fh), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                yield row[key], (n, row)
            except (ValueError, KeyError, TypeError) as exc:
                beam.metrics.Metrics.counter(METRICS, "errors").inc()
                log.warning("%s: line %d: not a row of this table (%s)", readable.metadata.path, n, exc)


def _numbered_rows(readable: Any) -> Iterator[tuple[str, tuple[int, dict[str, Any]]]]:
    return _export_rows(readable, "measurement_id")


def _run_rows(readable: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    for run_id, (_line, row) in _export_rows(readable, "run_id"):
        yield run_id, row


def _side(tables: dict[str, list[dict[str, Any]]], side: str) -> tuple[list, list, list, list]:
    """One side's records from its exported rows, by the store's own row-to-record
    functions: only the export's encodings (headers as name/value pairs, bodies in
    base64, JSON already parsed) are decoded here."""
    def of(table: str) -> list[dict[str, Any]]:
        return [r for r in tables.get(table, []) if r.get("side") == side]

    answers: dict[str, list[DnsAnswer]] = {}
    for a in sorted(of("dns_answers"), key=lambda a: a.get("position") or 0):
        answers.setdefault(a["query_id"], []).append(DnsAnswer(a["answer_type"], a["value"], a["ttl"]))
    dns = [loading.dns_query(q, answers.get(q["query_id"], []), q.get("extra_replies") or [])
           for q in of("dns_queries")]
    tcp = [loading.tcp_connect(c) for c in sorted(of("tcp_connects"), key=lambda c: c["id"])]
    tls = [loading.tls_handshake(t, t.get("peer_certificates") or [])
           for t in sorted(of("tls_handshakes"), key=lambda t: t["id"])]
    # as the store reads them back: by kind, hop and time, then main requests first
    http = [loading.http_request(h, [[p["name"], p["value"]] for p in h.get("headers") or []],
                                 base64.b64decode(h["body_head"]) if h.get("body_head") else None)
            for h in sorted(of("http_requests"), key=lambda h: (h["kind"], h["hop"], h["started_at"] or ""))]
    return dns, tcp, tls, loading.main_hops_first(http)


def own_addresses(m: Measurement, run: dict[str, Any]) -> list[str]:
    """A measurement's ``addresses`` (what TCP, TLS and HTTP were tried on), which an
    export's ``measurements`` table does not hold: rebuilt the way they were made. An
    imported OONI measurement's as the import derives them; ours as the probe picks
    them (``probe.measure.dns.collect_addresses`` over the URL's own name: system, then
    UDP, then DoH answers, at most ``per_family`` of each family)."""
    if str(run.get("probe_version") or "").startswith("ooni:"):
        return ooni_addresses(m.dns, m.tcp, m.url, m.hostname)
    if is_ip(m.hostname):
        return [m.hostname]
    config = run.get("config")
    try:
        per_family = int((json.loads(config) if isinstance(config, str) else config or {}).get("per_family") or 0)
    except (TypeError, ValueError, AttributeError):
        per_family = 0
    per_family = per_family or DEFAULT_PER_FAMILY
    own = norm_host(m.hostname)
    order = {"system": 0, "udp": 1, "doh": 2}
    v4: list[str] = []
    v6: list[str] = []
    for q in sorted((q for q in m.dns if q.engine != "sink" and norm_host(q.hostname) == own),
                    key=lambda q: order.get(q.engine, 3)):
        for ip in q.addresses():
            bucket = v6 if ":" in ip else v4
            if ip not in bucket and len(bucket) < per_family:
                bucket.append(ip)
    return v4 + v6


def export_member(joined: tuple[str, dict[str, list[tuple[int, dict[str, Any]]]]], runs: dict[str, dict[str, Any]],
                  lab_networks: Sequence[str], folder: str) -> Iterator[RunMember]:
    """One measurement of an export folder, rebuilt from its rows of every table (as
    ``store.load_measurement`` rebuilds it from the database's rows)."""
    mid, grouped = joined
    rows = grouped.get("measurements") or []
    if not rows:  # observations of a measurement the folder does not list
        beam.metrics.Metrics.counter(METRICS, "errors").inc()
        return
    line, row = min(rows, key=lambda r: r[0])
    tables = {name: [r for _line, r in sorted(grouped.get(name) or [], key=lambda r: r[0])] for name in OBSERVATION_TABLES}
    m = loading.measurement_record(row, row["domain"], [])
    m.dns, m.tcp, m.tls, m.http = _side(tables, "local")
    controls = tables["control_results"]
    if controls:
        cr = controls[0]
        m.control = loading.control_result(cr, json.loads(cr["raw"]) if cr.get("raw") else None)
        m.control.dns, m.control.tcp, m.control.tls, m.control.http = _side(tables, "control")
    run_row = runs.get(row["run_id"]) or {"run_id": row["run_id"], "cc": row.get("cc"), "asn": row.get("asn")}
    m.addresses = row["addresses"] if isinstance(row.get("addresses"), list) else own_addresses(m, run_row)
    config = run_row.get("config")
    config = json.loads(config) if isinstance(config, str) and config else (config or {})
    config = {**config, "lab_networks": [*(config.get("lab_networks") or []), *lab_networks]}
    yield RunMember((folder, line), {**run_row, "config": config}, m)


# --- classifying ---------------------------------------------------------------------------


def verdict_row(run: dict[str, Any], m: Measurement, v: Verdict) -> dict[str, Any]:
    """A measurement's verdict as plain data: the JSONL line, and what is aggregated."""
    return {
        "measurement_id": m.measurement_id, "run_id": run.get("run_id"), "url": m.url, "domain": m.hostname,
        "cc": run.get("cc"), "asn": run.get("asn"), "day": (m.started_at or "")[:10] or None,
        "classifier_version": v.classifier_version, "verdict": v.verdict, "blocked": v.blocked,
        "confidence": round(v.confidence, 3), "layer": v.layer, "rule_id": v.rule_id, "tags": list(v.tags),
        "evidence": [e.text for e in v.evidence],
    }


class ClassifyRun(DoFn):
    """One run's measurements in, their verdicts out: the Context first (one pass over
    the group), then each measurement (a second pass; Beam's grouped values can be
    iterated again without being held in memory)."""

    def __init__(self, fingerprints: FingerprintDB | None) -> None:
        self._given = fingerprints
        self._fingerprints: FingerprintDB | None = None

    def setup(self) -> None:
        # the shipped list is loaded on the worker, not shipped inside the pipeline
        self._fingerprints = self._given or default_fingerprints()

    def process(self, element: tuple[str, Iterable[RunMember]]) -> Iterator[dict[str, Any]]:
        members = element[1]
        run = next(iter(members)).run
        assert self._fingerprints is not None  # setup
        ctx = context_from_measurements(run, (x.measurement for x in members), self._fingerprints)
        counted = beam.metrics.Metrics.counter(METRICS, "measurements")
        for x in members:
            counted.inc()
            yield verdict_row(run, x.measurement, classify(x.measurement, ctx))


def first_read(members: Iterable[RunMember]) -> RunMember:
    """Of copies of one measurement, the one read first (an associative choice, so Beam
    can combine before it shuffles)."""
    return min(members, key=lambda x: x.order)


# --- aggregating and writing ---------------------------------------------------------------


def aggregate_key(row: dict[str, Any]) -> tuple[tuple, tuple[int, int, int]]:
    return (tuple(row[k] for k in AGGREGATE_KEY),
            (1, int(row["blocked"] is True), int(row["blocked"] is None)))


def add_counts(counts: Iterable[tuple[int, int, int]]) -> tuple[int, int, int]:
    total = blocked = cant_tell = 0
    for n, b, c in counts:
        total, blocked, cant_tell = total + n, blocked + b, cant_tell + c
    return total, blocked, cant_tell


def aggregate_row(item: tuple[tuple, tuple[int, int, int]]) -> dict[str, Any]:
    key, (n, blocked, cant_tell) = item
    return {**dict(zip(AGGREGATE_KEY, key, strict=True)), "measurements": n, "blocked": blocked,
            "cant_tell": cant_tell, "classifier_version": CLASSIFIER_VERSION}


def parquet_row(row: dict[str, Any]) -> dict[str, Any]:
    day = row["day"]
    try:
        date = dt.date.fromisoformat(day) if day else None
    except ValueError:
        date = None
    return {**row, "day": date}


def csv_line(row: dict[str, Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(["" if row[c] is None else row[c] for c in AGGREGATE_COLUMNS])
    return out.getvalue()


# --- the pipeline ------------------------------------------------------------------------------


@dataclass
class Inputs:
    """What the command line names, sorted by kind: OONI file patterns, export folders."""

    ooni: list[str]
    exports: list[str]


def _join(folder: str, name: str) -> str:
    return FileSystems.join(folder.rstrip("/"), name) if folder.rstrip("/") else name


def classify_inputs(patterns: Sequence[str]) -> Inputs:
    """Each --input as an OONI file pattern or a `probe export --format jsonl` folder (a
    folder holding measurements.jsonl). PipelineInputError for one that matches nothing,
    a folder of another kind, or an export folder missing a table: checked before the
    pipeline starts, so a typo costs one line, not a runner's start-up."""
    out = Inputs([], [])
    for pattern in patterns:
        if FileSystems.exists(_join(pattern, "measurements.jsonl")):
            missing = [t for t in EXPORT_TABLES if not FileSystems.exists(_join(pattern, f"{t}.jsonl"))]
            if missing:
                raise PipelineInputError(_("{path}: not a whole `probe export --format jsonl` folder (no {file})").format(
                    path=pattern, file=f"{missing[0]}.jsonl"))
            out.exports.append(pattern.rstrip("/"))
            continue
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except Exception as exc:  # BeamIOError and the object stores' own errors
            raise PipelineInputError(_("{path}: cannot read ({reason})").format(path=pattern, reason=exc)) from None
        if not matched:
            raise PipelineInputError(_("{path}: no such file").format(path=pattern))
        local = [m.path for m in matched if "://" not in m.path]
        if local and all(os.path.isdir(f) for f in local) and len(local) == len(matched):
            raise PipelineInputError(_("{path}: is a folder (give a pattern such as {example}, or a "
                                       "`probe export --format jsonl` folder)").format(
                path=pattern, example=_join(pattern, "*.jsonl.gz")))
        # local files are checked now (a remote store's permissions show when read)
        unreadable = next((f for f in local if not os.path.isdir(f) and not os.access(f, os.R_OK)), None)
        if unreadable is not None:
            raise PipelineInputError(_("{path}: cannot read (permission denied)").format(path=unreadable))
        out.ooni.append(pattern)
    return out


def build(p: Any, inputs: Inputs, output: str, *, fingerprints: FingerprintDB | None = None,
          lab_networks: Sequence[str] = (), write_verdicts: bool = False) -> list[Any]:
    """The whole pipeline on ``p``: read, deduplicate, classify per run, aggregate, write
    ``OUTPUT-aggregates-*.parquet``, ``OUTPUT-aggregates-*.csv`` and, when asked,
    ``OUTPUT-verdicts-*.jsonl``; returns the writes' results."""
    nets = list(lab_networks)
    read: list[Any] = []
    if inputs.ooni:
        read.append(
            p
            | "OONI patterns" >> beam.Create(inputs.ooni)
            | "Match OONI files" >> fileio.MatchAll()
            | "Open OONI files" >> fileio.ReadMatches(skip_directories=True)
            | "OONI to records" >> beam.FlatMap(_read_ooni_file, nets)
        )
    for i, folder in enumerate(inputs.exports):
        runs = (
            p
            | f"runs {i}" >> beam.Create([_join(folder, "runs.jsonl")])
            | f"Match runs {i}" >> fileio.MatchAll()
            | f"Open runs {i}" >> fileio.ReadMatches()
            | f"Read runs {i}" >> beam.FlatMap(_run_rows)
        )
        tables = {
            name: (
                p
                | f"{name} {i}" >> beam.Create([_join(folder, f"{name}.jsonl")])
                | f"Match {name} {i}" >> fileio.MatchAll()
                | f"Open {name} {i}" >> fileio.ReadMatches()
                | f"Read {name} {i}" >> beam.FlatMap(_numbered_rows)
            )
            for name in ("measurements", *OBSERVATION_TABLES)
        }
        read.append(
            tables
            | f"Join tables {i}" >> beam.CoGroupByKey()
            | f"Rows to records {i}" >> beam.FlatMap(export_member, beam.pvalue.AsDict(runs), nets, folder)
        )
    members = read | "All inputs" >> beam.Flatten()
    verdicts = (
        members
        | "By measurement" >> beam.Map(lambda x: (x.measurement.measurement_id, x))
        | "First copy" >> beam.CombinePerKey(first_read)
        | "By run" >> beam.Map(lambda kv: (kv[1].run["run_id"], kv[1]))
        | "Group runs" >> beam.GroupByKey()
        | "Classify" >> beam.ParDo(ClassifyRun(fingerprints))
    )
    aggregates = (
        verdicts
        | "Aggregate key" >> beam.Map(aggregate_key)
        | "Count" >> beam.CombinePerKey(add_counts)
        | "Aggregate rows" >> beam.Map(aggregate_row)
    )
    written = [
        aggregates
        | "Parquet rows" >> beam.Map(parquet_row)
        | "Write Parquet" >> beam.io.WriteToParquet(f"{output}-aggregates", AGGREGATE_SCHEMA, file_name_suffix=".parquet"),
        aggregates
        | "CSV lines" >> beam.Map(csv_line)
        | "Write CSV" >> beam.io.WriteToText(f"{output}-aggregates", file_name_suffix=".csv",
                                             header=",".join(AGGREGATE_COLUMNS)),
    ]
    if write_verdicts:
        written.append(
            verdicts
            | "JSON lines" >> beam.Map(lambda row: json.dumps(row, ensure_ascii=False, sort_keys=True))
            | "Write verdicts" >> beam.io.WriteToText(f"{output}-verdicts", file_name_suffix=".jsonl"))
    return written


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m probe.analysis.pipeline",
        description="Classify OONI web_connectivity files (also `probe export-ooni` output) or `probe export "
                    "--format jsonl` folders on Apache Beam, with the classifier of `probe analyze`. "
                    "Options not listed here go to Beam (--runner, --project, --region, ...).")
    parser.add_argument("--input", action="append", required=True, metavar="PATH_OR_GLOB",
                        help="An OONI file or pattern (JSON, JSONL, JSONC; .gz too; gs:// and s3:// with Beam's "
                             "gcp or aws extra), or a `probe export --format jsonl` folder. Repeatable.")
    parser.add_argument("--output", required=True, metavar="PREFIX",
                        help="Write PREFIX-aggregates-*.parquet and PREFIX-aggregates-*.csv (and "
                             "PREFIX-verdicts-*.jsonl with --verdicts).")
    parser.add_argument("--verdicts", action="store_true", help="Also write every measurement's verdict as JSONL.")
    parser.add_argument("--fingerprints", metavar="CSV", default=None,
                        help="Another fingerprint file (same columns as probe/analysis/fingerprints.csv).")
    parser.add_argument("--lab-network", action="append", default=[], metavar="CIDR",
                        help="A private range standing for the open internet (as `probe analyze --lab-network`).")
    return parser


def _fail(message: object) -> NoReturn:
    print(_("error: {message}").format(message=message), file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def main(argv: Sequence[str] | None = None) -> int:
    i18n.set_language(i18n.from_environment())
    args, beam_args = _parser().parse_known_args(argv)
    nets: list[str] = []
    for text in args.lab_network:
        try:
            nets.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            _fail(_("invalid --lab-network {value!r} (use CIDR, e.g. 10.77.0.0/16)").format(value=text))
    try:
        fingerprints = load_fingerprints(args.fingerprints) if args.fingerprints else None
        inputs = classify_inputs(args.input)
    except (FingerprintError, PipelineInputError) as exc:
        _fail(exc)
    p = beam.Pipeline(options=PipelineOptions(beam_args))
    build(p, inputs, args.output, fingerprints=fingerprints, lab_networks=nets, write_verdicts=args.verdicts)
    result = p.run()
    result.wait_until_finish()
    counts = {name: _counter(result, name) for name in ("measurements", "skipped", "errors", "unreadable_files")}
    print(_("classified {n} measurements ({skipped} of other tests skipped, {errors} errors); wrote {output}-aggregates-*")
          .format(n=counts["measurements"], skipped=counts["skipped"], errors=counts["errors"], output=args.output),
          file=sys.stderr)
    if counts["unreadable_files"]:
        _fail(_("{n} input files could not be read (see the log); the output leaves them out").format(
            n=counts["unreadable_files"]))
    if not counts["measurements"]:
        _fail(_("no usable web_connectivity measurement in {inputs}").format(inputs=", ".join(args.input)))
    return 0


def _counter(result: Any, name: str) -> int:
    """A counter's committed total (attempted where the runner commits none)."""
    try:
        found = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(METRICS).with_name(name))
    except Exception:  # a runner without metrics support: say nothing rather than fail
        return 0
    total = 0
    for c in found["counters"]:
        total += c.committed if c.committed is not None else c.attempted
    return total


if __name__ == "__main__":
    # Run the module under its importable name: what a remote worker unpickles (RunMember,
    # ClassifyRun, the functions) must be probe.analysis.pipeline's, not __main__'s.
    from probe.analysis import pipeline as importable

    sys.exit(importable.main())
