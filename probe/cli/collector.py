"""`probe collector`: serve a collector, and manage who may upload to it and who is
told of blocking events. For a researcher's server, not a volunteer's machine."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from probe import store
from probe.cli.common import fail, open_db_or_fail, until_stopped
from probe.collector.service import CollectorConfig
from probe.core.i18n import _

DB_OPTION = click.option("--db", "db_path", type=click.Path(path_type=Path), required=True,
                         help="The collector's database (created when missing).")


@click.group("collector")
def collector_group() -> None:
    """Collect many volunteers' results in one database (for researchers)."""


@collector_group.command("serve")
@DB_OPTION
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8470, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--lab-network", "lab_networks", multiple=True, metavar="CIDR",
              help="Addresses that stand for the internet in a lab (added to those each run recorded).")
def serve_cmd(db_path: Path, host: str, port: int, lab_networks: tuple[str, ...]) -> None:
    """Serve the collector (POST /api/v1/batches, /api/v1/known; GET /events.json, /events.atom) until Ctrl-C."""
    from probe.collector.server import serve_collector

    db = open_db_or_fail(db_path)  # the schema, before serving: a bad file is one line here
    store.close(db)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = CollectorConfig(lab_networks=lab_networks)

    async def go() -> None:
        async with serve_collector(db_path, config, host, port) as running:
            if running.caught_up:
                click.echo(_("classified {n} measurements stored before a restart").format(n=running.caught_up),
                           err=True)
            click.echo(_("collector listening on {url} (Ctrl-C to stop); database {db}; no client addresses are "
                         "logged").format(url=running.url, db=db_path), err=True)
            sys.stderr.flush()
            await until_stopped()
            click.echo(_("collector stopping"), err=True)

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        fail(_("cannot listen on {host}:{port}: {reason}").format(host=host, port=port, reason=exc.strerror or exc))


@collector_group.group("token")
def token_group() -> None:
    """Tokens: one per volunteer; stored hashed, shown once."""


@token_group.command("add")
@click.argument("name")
@DB_OPTION
def token_add(name: str, db_path: Path) -> None:
    """Make a token for NAME (printed once, alone on stdout; give it to the volunteer)."""
    if not name.strip() or len(name) > 100:
        fail(_("a token name is 1 to 100 characters"))
    db = open_db_or_fail(db_path)
    try:
        token = store.add_token(db, name)
    except store.TokenError as exc:
        fail(exc)
    finally:
        store.close(db)
    click.echo(token)
    click.echo(_("token for {name}: shown this once, only its hash is kept. The volunteer runs: probe config set "
                 "collector URL && probe config set collector-token TOKEN").format(name=name), err=True)


@token_group.command("revoke")
@click.argument("name")
@DB_OPTION
def token_revoke(name: str, db_path: Path) -> None:
    """Revoke NAME's token: its uploads are refused from now on (what it sent stays)."""
    db = open_db_or_fail(db_path, create=False)
    try:
        if not store.revoke_token(db, name):
            fail(_("no live token named {name!r}").format(name=name))
    finally:
        store.close(db)
    click.echo(_("revoked the token of {name}").format(name=name), err=True)


@token_group.command("list")
@DB_OPTION
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
def token_list(db_path: Path, as_json: bool) -> None:
    """Every token: name, made, revoked, measurements sent, last upload (never the token)."""
    db = open_db_or_fail(db_path, create=False, readonly=True)
    try:
        rows = store.list_tokens(db)
    finally:
        store.close(db)
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table(_("name"), _("made"), _("revoked"), _("measurements"), _("last upload"))
    for r in rows:
        table.add_row(escape(r["name"]), r["created_at"][:16], (r["revoked_at"] or "")[:16], str(r["measurements"]),
                      (r["last_upload"] or "")[:16])
    Console().print(table)


@collector_group.group("webhook")
def webhook_group() -> None:
    """Webhooks: URLs told of every new blocking event (POST JSON, retried)."""


@webhook_group.command("add")
@click.argument("url")
@DB_OPTION
def webhook_add(url: str, db_path: Path) -> None:
    """Tell URL of every blocking event found from now on."""
    if not url.startswith(("http://", "https://")):
        fail(_("a webhook is an http(s):// URL"))
    db = open_db_or_fail(db_path)
    try:
        added = store.add_webhook(db, url)
    finally:
        store.close(db)
    click.echo(_("webhook added") if added else _("that webhook was already there"), err=True)


@webhook_group.command("remove")
@click.argument("url")
@DB_OPTION
def webhook_remove(url: str, db_path: Path) -> None:
    """Stop telling URL."""
    db = open_db_or_fail(db_path, create=False)
    try:
        if not store.remove_webhook(db, url):
            fail(_("no webhook {url}").format(url=url))
    finally:
        store.close(db)


@webhook_group.command("list")
@DB_OPTION
def webhook_list(db_path: Path) -> None:
    """Webhooks, with deliveries made, pending and given up."""
    db = open_db_or_fail(db_path, create=False, readonly=True)
    try:
        rows = store.list_webhooks(db)
    finally:
        store.close(db)
    click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
