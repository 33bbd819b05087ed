"""`probe report` and `probe explain`: thin click shells over probe.report.model/explain.

As everywhere in the probe, whatever a volunteer can get wrong (a missing, corrupt or
foreign database, nothing classified yet) ends as one line on stderr and exit code 2,
never a traceback. The callbacks only parse options and print; the work is in plain
functions below, which raise ReportError with that line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import sqlite_utils

from probe import store
from probe.cli.common import db_flag, default_db, fail, resolve_db
from probe.report import html, markdown, tables, terminal
from probe.report import model as rep
from probe.report.explain import NothingToExplain, explain_json, explain_measurement
from probe.store import StoreError

FORMATS = ("table", "json", "csv", "markdown", "html")


class ReportError(Exception):
    """One line for the volunteer; exit code 2."""


def open_databases(paths: Sequence[Path]) -> list[sqlite_utils.Database]:
    """Open every database read-mostly (never create one); the first bad one stops."""
    dbs = []
    try:
        for path in dict.fromkeys(paths):  # the same --db twice is one database
            dbs.append(store.open_db(path, readonly=True))
    except StoreError as exc:
        close_all(dbs)
        raise ReportError(str(exc)) from None
    return dbs


def close_all(dbs: Sequence[sqlite_utils.Database]) -> None:
    for db in dbs:
        store.close(db)


def _db_flag(path: Path) -> str:
    return db_flag(Path(path))


def load_rows(
    dbs: Sequence[sqlite_utils.Database], paths: Sequence[Path], classifier_version: str | None
) -> tuple[list[rep.Row], list[str]]:
    """The merged rows, and warnings for databases that contributed nothing. With no
    verdicts anywhere, raises ReportError saying to run `probe analyze`."""
    unique_paths = list(dict.fromkeys(paths))
    warnings = []
    for db, path in zip(dbs, unique_paths, strict=False):
        versions = store.classifier_versions(db)
        if not versions:
            warnings.append(f"{path} has no verdicts yet (run `probe analyze{_db_flag(path)}`); left out")
        elif classifier_version is not None and classifier_version not in versions:
            warnings.append(f"{path} has no verdicts of classifier {classifier_version} "
                            f"(it has {', '.join(versions)}); left out")
    rows = rep.collect(dbs, classifier_version)
    if not rows:
        where = ", ".join(str(p) for p in unique_paths)
        flag = _db_flag(unique_paths[0]) if len(unique_paths) == 1 else ""
        if classifier_version is not None:
            raise ReportError(f"no verdicts of classifier {classifier_version} in {where}: "
                              f"run `probe analyze{flag}` with that classifier first")
        raise ReportError(f"no verdicts yet in {where}: run `probe analyze{flag}` first")
    return rows, warnings


def render_text(fmt: str, rows: list[rep.Row], sources: Sequence[str]) -> str:
    """Every format but the terminal table is plain text from the rows."""
    if fmt == "json":
        return tables.render_json(rows)
    if fmt == "csv":
        return tables.render_csv(rows)
    report = rep.build_report(rows, sources)
    if fmt == "markdown":
        return markdown.render_markdown(report)
    if fmt == "html":
        return html.render_html(report)
    raise ReportError(f"unknown format {fmt}")


def table_width(tty: bool, to_file: bool, environ: Mapping[str, str]) -> int | None:
    """The width to fit the table to: the terminal's own (None: rich asks it); for a
    pipe, COLUMNS when set (a pager, `watch`, a test at 80 columns), else 200; a file
    is not read on a terminal, so 200."""
    if tty:
        return None
    columns = environ.get("COLUMNS", "")
    return int(columns) if not to_file and columns.isdigit() and int(columns) > 0 else 200


def render_table(rows: list[rep.Row], sources: Sequence[str], file: Any | None) -> None:
    """Rich tables, coloured on a terminal and fitted to its width; plain in a file or pipe."""
    from rich.console import Console

    target = file if file is not None else sys.stdout
    tty = hasattr(target, "isatty") and target.isatty()
    console = Console(file=target, width=table_width(tty, file is not None, os.environ),
                      force_terminal=None if tty else False, no_color=not tty)
    terminal.render_terminal(rep.build_report(rows, sources), console)


def write_report(paths: Sequence[Path], fmt: str, output: Path | None, classifier_version: str | None,
                 events: bool = False) -> list[str]:
    """The whole `probe report`: returns the lines to say on stderr."""
    dbs = open_databases(paths)
    try:
        rows, notes = load_rows(dbs, paths, classifier_version)
        if events:
            if fmt == "html":
                raise ReportError("--events comes as table, json, csv or markdown")
            from probe.report.eventlist import events_of, render_events

            text = render_events(events_of(rows), fmt)
            if output is None:
                click.echo(text, nl=False)
            else:
                with _open_output(output) as fh:
                    fh.write(text)
            return notes
        # file names only: a report is mailed and published, a path names the account
        sources = [rep.db_name(str(p)) for p in dict.fromkeys(paths)]
        if fmt == "table":
            if output is None:
                render_table(rows, sources, None)
            else:
                with _open_output(output) as fh:
                    render_table(rows, sources, fh)
        else:
            text = render_text(fmt, rows, sources)
            if output is None:
                click.echo(text, nl=False)
            else:
                with _open_output(output) as fh:
                    fh.write(text)
    finally:
        close_all(dbs)
    if output is not None:
        notes.append(f"wrote {output} ({len(rows)} measurements)")
    return notes


def _open_output(path: Path):
    try:
        return path.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise ReportError(f"{path}: cannot write ({exc.strerror})") from None


@click.command("report")
@click.option("--db", "db_paths", multiple=True, type=click.Path(path_type=Path), default=(),
              help="Database to report on; repeat to merge several volunteers' databases. [default: as for `probe run`]")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="table (terminal), json (one object per measurement), csv, markdown, or html "
                   "(one self-contained file with a chart of sites x networks).")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write to this file instead of the screen.")
@click.option("--classifier-version", default=None, metavar="VERSION",
              help="Use this classifier's verdicts. [default: the newest in each database]")
@click.option("--events", is_flag=True,
              help="List blocking events instead: a site newly blocked, unblocked, or blocked another way on a "
                   "network, each confirmed by 2 agreeing measurements.")
def report_cmd(db_paths: tuple[Path, ...], fmt: str, output: Path | None, classifier_version: str | None,
               events: bool) -> None:
    """Which sites are blocked on which network, how, and since when.

    Reads the verdicts written by `probe analyze`; several --db are merged, and each
    measurement is judged with the other networks' measurements of the same site.
    """
    try:
        notes = write_report(db_paths or (default_db(),), fmt, output, classifier_version, events)
    except ReportError as exc:
        fail(str(exc))
    for note in notes:
        click.echo(note, err=True)


@click.command("explain")
@click.argument("url")
@click.option("--db", "db_path", type=click.Path(path_type=Path), default=None,
              help="Database the measurement is in. [default: as for `probe run`]")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object (url, verdict, blocked, confidence, evidence, measurement id, network, ...) "
                   "instead of words.")
@click.option("--network", default=None, metavar="CC/ASN",
              help="The latest measurement on this network (BY/AS6697, or BY, or AS6697): a collector's database "
                   "holds many.")
def explain_cmd(url: str, db_path: Path | None, as_json: bool = False, network: str | None = None) -> None:
    """Explain in plain words the latest verdict for URL (a URL, host name or measurement id), with what
    the other networks that measured it saw."""
    try:
        text = explain_text(resolve_db(db_path), url, as_json=as_json, network=network)
    except ReportError as exc:
        fail(str(exc))
    click.echo(text, nl=False)


def explain_text(db_path: Path, ref: str, as_json: bool = False, network: str | None = None) -> str:
    """Open, explain (in words, or as JSON), close; "nothing to explain" becomes a
    one-line error."""
    (db,) = open_databases([db_path])
    try:
        if as_json:
            return explain_json(db, ref, network=network)
        option = db_flag(Path(db_path)).removeprefix(" --db ") or None
        return explain_measurement(db, ref, db_option=option, network=network)
    except NothingToExplain as exc:
        raise ReportError(str(exc)) from None
    finally:
        store.close(db)
