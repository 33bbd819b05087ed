"""What every command shares: defaults, exit codes, the one-line failure, opening the
database, and option parsers that more than one command uses.

Why one module: every error a volunteer can cause or meet ends as one line on stderr
and exit code 2, never a traceback; written once, every command says it the same way."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from probe import store
from probe.core.addresses import parse_resolver
from probe.store import StoreError

DEFAULT_DB = Path("results") / "probe.db"
DEFAULT_TARGETS = Path("targets.txt")
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def fail(message: object, code: int = EXIT_BAD_INPUT) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def open_db_or_fail(path: Path, create: bool = True, readonly: bool = False):
    """The database, or one line and exit 2. ``readonly`` for commands that only read:
    they work on a database on a read-only disk too."""
    try:
        return store.open_db(path, create=create, readonly=readonly)
    except StoreError as exc:
        fail(str(exc))


def resolver_option(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    """A click callback for repeated ``--resolver IP[:PORT]``: the normalised list."""
    try:
        return [parse_resolver(v) for v in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
