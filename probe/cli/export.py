"""`probe export`: a thin click shell over probe.report.export (the files) and
probe.store.export (the rows).

As everywhere in the probe, what a user can get wrong (no database, a file where the
folder should be, Parquet without pyarrow) ends as one line on stderr and exit code 2,
never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import click

from probe import store
from probe.cli.common import add_common_options, existing_db, fail, say, shown_path
from probe.core.i18n import ngettext
from probe.report.export import FORMATS, ExportedFile, ExportError, export_database, require_pyarrow
from probe.store import StoreError


def export_folder(db_path: Path, folder: Path, fmt: str) -> list[ExportedFile]:
    """Open the database read-only, write the files, close. pyarrow is checked first,
    so a missing extra writes nothing."""
    if fmt == "parquet":
        require_pyarrow()
    db = store.open_db(db_path, readonly=True)
    try:
        return export_database(db, folder, fmt)
    finally:
        store.close(db)


@click.command("export")
@click.option("--db", "db_path", type=click.Path(path_type=Path), default=None,
              help="Database to export. [default: as for `probe run`]")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="parquet", show_default=True,
              help="parquet (typed; needs pip install 'bynet-probe[parquet]'), csv or jsonl.")
@click.option("-o", "--output", "folder", type=click.Path(path_type=Path), required=True, metavar="DIR",
              help="Folder to write into (created if missing); files of the same names are replaced, others kept.")
def export_cmd(db_path: Path | None, fmt: str, folder: Path) -> None:
    """Export everything measured, for researchers: one file per table in DIR.

    measurements (one row per measurement, with its network and newest verdict), runs
    (never the volunteer's address), and every observation: dns_queries, dns_answers,
    tcp_connects, tls_handshakes, http_requests, control_results. schema.json says
    what each column holds. BigQuery, ClickHouse and pandas read the files as they are.
    """
    try:
        files = export_folder(existing_db(db_path), folder, fmt)
    except (ExportError, StoreError) as exc:
        fail(exc)
    for f in files:
        say(ngettext("{file}: {n} row", "{file}: {n} rows", f.rows).format(file=f.path.name, n=f.rows))
    count = next((f.rows for f in files if f.table == "measurements"), 0)
    say(ngettext("exported {n} measurement to {folder}", "exported {n} measurements to {folder}", count).format(
        n=count, folder=shown_path(folder)), level=-1)


# --lang, -q and -v here too (main adds them again to no effect), so the command
# behaves the same before and after it is attached to `probe`.
add_common_options(export_cmd)
