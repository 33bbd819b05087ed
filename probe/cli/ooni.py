"""``probe import-ooni`` and ``probe export-ooni``: a thin click shell over probe.ooni.database.

Why a shell only: the mapping is tested as pure functions; these commands parse
arguments, call, and print. As everywhere in ``probe``, what a user can get wrong (a
missing file, a file with nothing usable, a database that is not ours, an unknown run)
ends as one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from probe import store
from probe.cli.common import existing_db, fail, resolve_db
from probe.core.i18n import _
from probe.measure.plan import LAB_NETWORK_HELP, PlanError, parse_lab_networks
from probe.ooni.database import (
    ImportSummary,
    OoniExportError,
    export_ooni,
    find_run,
    import_ooni,
)
from probe.ooni.files import OoniImportError, expand_inputs
from probe.ooni.pool import Decoder
from probe.store import StoreError

MAX_MESSAGES = 20  # per file: enough to find the bad lines without flooding the terminal


def _report(summary: ImportSummary, as_json: bool = False) -> None:
    if as_json:  # one object per file, every message: a script reads it all
        click.echo(json.dumps({"source": summary.source, "imported": summary.imported,
                               "duplicates": summary.duplicates, "skipped": summary.skipped,
                               "errors": summary.errors, "usable": summary.usable, "run_ids": summary.run_ids,
                               "messages": summary.messages}, ensure_ascii=False))
        return
    for message in summary.messages[:MAX_MESSAGES]:
        click.echo(_("warning: {source}: {message}").format(source=summary.source, message=message), err=True)
    if len(summary.messages) > MAX_MESSAGES:
        click.echo(_("warning: {source}: ... {n} more").format(source=summary.source,
                                                             n=len(summary.messages) - MAX_MESSAGES), err=True)
    click.echo(summary.line())


@click.command("import-ooni")
@click.argument("files", metavar="FILE-or-DIR...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--db", "db_path", type=click.Path(path_type=Path), default=None,
              help="Database to import into (created if missing). [default: as for `probe run`]")
@click.option("--lab-network", multiple=True, metavar="CIDR",
              help=LAB_NETWORK_HELP + " Recorded with the imported runs.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file on stdout, for scripts.")
def import_ooni_cmd(files: tuple[Path, ...], db_path: Path | None, lab_network: tuple[str, ...], as_json: bool) -> None:
    """Import OONI web_connectivity measurements (JSONL, JSON, or .jsonc test data; gzipped or not).

    A directory imports every such file inside it, at any depth, in path order. Each
    measurement becomes the same rows `probe run` writes, in one finished run per OONI
    report. Large inputs are decoded on every core. Importing a file again adds
    nothing, and an interrupted import can simply be run again. Exits 2 when a file
    cannot be read or holds no usable web_connectivity measurement.
    """
    try:
        nets = parse_lab_networks(lab_network)
        paths = expand_inputs(files)  # every file readable before anything is written
    except (PlanError, OoniImportError) as exc:
        fail(exc)
    try:
        db = store.open_db(resolve_db(db_path))
    except StoreError as exc:
        fail(exc)
    unusable: list[Path] = []
    with Decoder() as decoder:  # one for all files: many small files start the pool once
        for f in paths:
            try:
                summary = import_ooni(db, f, source=str(f), lab_networks=nets, decoder=decoder)
            except (OoniImportError, StoreError) as exc:
                fail(exc)
            except KeyboardInterrupt:
                fail(_("interrupted while importing {file}: every finished batch is stored; the same command "
                       "imports the rest").format(file=f), code=130)
            _report(summary, as_json)
            if summary.usable == 0:
                unusable.append(f)
    if unusable:
        fail(_("{file}: no usable web_connectivity measurement").format(file=unusable[0])
             + (_(" (and {n} more files)").format(n=len(unusable) - 1) if len(unusable) > 1 else ""))


@click.command("export-ooni")
@click.option("--db", "db_path", type=click.Path(path_type=Path), default=None,
              help="Database to export from. [default: as for `probe run`]")
@click.option("--run", "run_id", default=None, metavar="RUN_ID", help="Only this run (an id or its prefix).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default=None,
              help="Write JSONL here instead of to standard output.")
def export_ooni_cmd(db_path: Path | None, run_id: str | None, output: Path | None) -> None:
    """Export measurements as OONI web_connectivity JSONL, one per line.

    Observations only: OONI's verdict keys (blocking, accessible, ...) are null.
    """
    try:
        db = store.open_db(existing_db(db_path), readonly=True)
    except StoreError as exc:
        fail(exc)
    to_stdout = output is None or str(output) == "-"
    try:
        if run_id is not None:
            run_id = find_run(db, run_id)  # before an output file is created
        if to_stdout:
            count = export_ooni(db, sys.stdout, run_id=run_id)
        else:
            assert output is not None  # not to_stdout
            with output.open("w", encoding="utf-8", newline="\n") as fh:
                count = export_ooni(db, fh, run_id=run_id)
    except OoniExportError as exc:
        fail(exc)
    except OSError as exc:
        fail(f"{output}: cannot write ({exc.strerror or exc})")
    click.echo(f"exported {count} measurements to {'standard output' if to_stdout else output}", err=True)
