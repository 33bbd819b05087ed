"""`probe show`: list runs, or the raw evidence of one measurement."""


from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from probe import store
from probe.cli.common import DB_HELP, existing_db, fail, open_db_or_fail
from probe.core.i18n import _


@click.command()
@click.argument("ref", required=False)
@click.option("--db", "db_path", type=click.Path(path_type=Path), default=None, help=DB_HELP)
@click.option("--run", "run_id", default=None, help="Look in this run only.")
@click.option("--json", "as_json", is_flag=True, help="The raw evidence as JSON.")
def show(ref: str | None, db_path: Path | None, run_id: str | None, as_json: bool) -> None:
    """List runs, or show the raw evidence of one URL (its latest measurement) or measurement id;
    `probe show uploads` lists what was uploaded, when and where."""
    db_path = existing_db(db_path)
    db = open_db_or_fail(db_path, create=False, readonly=True)
    console = Console()
    if ref == "uploads":
        _show_uploads(db, as_json, console)
        return
    if ref is None:
        runs = store.list_runs(db)
        if as_json:
            click.echo(json.dumps(runs, indent=2, ensure_ascii=False))
        elif not runs:
            click.echo("no runs yet")
        else:
            from probe.report.show import runs_table

            console.print(runs_table(runs))
        return
    mid = store.find_measurement_id(db, ref, run_id)
    if mid is None:
        fail(f"no measurement of {ref!r} in {db_path}")
    m = store.read_measurement(db, mid)
    assert m is not None  # the id was just found
    deep = store.load_deep(db, mid)
    if deep is not None:
        import dataclasses

        from probe.analysis.deep import summarise

        m["deep"] = {**summarise(deep), "observed": dataclasses.asdict(deep)}
    if as_json:
        for side in ("local", "control"):
            for h in m[side]["http"]:
                h["body_head"] = store.body_head(h["body_head"]).decode("utf-8", "replace") if h["body_head"] else None
        click.echo(json.dumps(m, indent=2, ensure_ascii=False, default=str))
        return
    from probe.report.show import measurement_tree

    console.print(measurement_tree(m))




def _show_uploads(db, as_json: bool, console: Console) -> None:
    """What was sent, when and where: one line per batch the collector acknowledged."""
    rows = store.upload_history(db)
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo(_("nothing uploaded yet (probe upload)"))
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(_("uploaded"), _("collector"), _("measurements"), _("batch"))
    for r in rows:
        batch = _("already there") if r["batch_id"] == "known" else r["batch_id"][:8]
        table.add_row(r["uploaded_at"][:16].replace("T", " "), escape(r["collector"]), str(r["measurements"]), batch)
    console.print(table)
