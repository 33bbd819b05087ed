"""``probe config``: the volunteer's own defaults (``probe.core.userconfig``)."""

from __future__ import annotations

import click

from probe.cli.common import fail, shown_path
from probe.core import userconfig
from probe.core.i18n import _


@click.group("config")
def config_group() -> None:
    """Your defaults, kept in your config directory (see `probe config path`).

    `probe config set control https://helper.example.org` gives every `probe run`
    that names no control helper this one.
    """


@config_group.command("set")
@click.argument("key", type=click.Choice(sorted(userconfig.KEYS)))
@click.argument("values", nargs=-1, required=True)
def set_cmd(key: str, values: tuple[str, ...]) -> None:
    """Set KEY to VALUES (several control helpers are tried in order)."""
    try:
        path = userconfig.set_values(key, list(values))
    except userconfig.ConfigError as exc:
        fail(exc)
    click.echo(_("{key} = {values} (in {path})").format(key=key, values=", ".join(values), path=shown_path(path)))


@config_group.command("get")
@click.argument("key", type=click.Choice(sorted(userconfig.KEYS)))
def get_cmd(key: str) -> None:
    """Print KEY's values, one per line (nothing when unset)."""
    try:
        for v in userconfig.get(key):
            click.echo(v)
    except userconfig.ConfigError as exc:
        fail(exc)


@config_group.command("unset")
@click.argument("key", type=click.Choice(sorted(userconfig.KEYS)))
def unset_cmd(key: str) -> None:
    """Remove KEY."""
    try:
        userconfig.set_values(key, [])
    except userconfig.ConfigError as exc:
        fail(exc)
    click.echo(_("{key} unset").format(key=key))


@config_group.command("show")
def show_cmd() -> None:
    """Every setting and where the file is."""
    try:
        values = userconfig.show()
    except userconfig.ConfigError as exc:
        fail(exc)
    click.echo(f"# {shown_path(userconfig.config_path())}")
    unset = _("(unset)")
    for key, vals in values.items():
        shown = ", ".join(vals) if vals else unset
        about = _(userconfig.KEYS[key])
        click.echo(f"{key} = {shown}    # {about}")


@config_group.command("path")
def path_cmd() -> None:
    """Where the config file is (it may not exist yet)."""
    click.echo(str(userconfig.config_path()))
