"""``probe targets ...``: check and convert target lists from the command line.

A thin shell over ``probe.targets.lists``: parse arguments, call, print. Exit codes are part of
the interface, because maintainers run ``probe targets lint`` in CI: 0 when the list is
usable (warnings alone do not fail), 2 when it is not or cannot be read.
"""

from __future__ import annotations

from pathlib import Path

import click

from probe.cli.common import EXIT_BAD_INPUT, fail
from probe.targets.lists import (
    TargetError,
    check_targets,
    format_targets,
    import_citizenlab,
    import_header,
)


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


@click.group("targets")
def targets_group() -> None:
    """Check and convert lists of URLs to measure."""


@targets_group.command("lint")
@click.argument("file", type=click.Path(path_type=Path))
def lint_command(file: Path) -> None:
    """Report every problem in FILE (text list or Citizen Lab CSV).

    Prints one line per problem and a summary; exits 2 if there is any error.
    """
    try:
        check = check_targets(file)
    except TargetError as exc:
        fail(exc)
    for problem in check.problems:
        click.echo(str(problem))
    click.echo(check.summary())
    if check.errors:
        raise click.exceptions.Exit(EXIT_BAD_INPUT)


@targets_group.command("import")
@click.argument("csv_file", metavar="CSV", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the list here instead of to standard output.",
)
@click.option(
    "--category",
    "categories",
    multiple=True,
    metavar="CODE",
    help="Keep only targets of this category code (repeatable; legacy codes accepted).",
)
def import_command(csv_file: Path, output: Path | None, categories: tuple[str, ...]) -> None:
    """Convert a Citizen Lab CSV test list into our text format."""
    try:
        targets = import_citizenlab(csv_file, categories=categories, warn=_warn)
    except ValueError as exc:  # TargetError, or an unknown --category code
        fail(exc)
    text = format_targets(targets, header=import_header(csv_file.name, categories))
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8", newline="\n")
    except OSError as exc:
        fail(f"{output}: cannot write ({exc.strerror or exc})")
    click.echo(f"wrote {len(targets)} targets to {output}", err=True)
