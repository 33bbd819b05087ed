"""What every command shares: defaults, exit codes, the one-line failure, opening the
database, and option parsers that more than one command uses.

Why one module: every error a volunteer can cause or meet ends as one line on stderr
and exit code 2, never a traceback; written once, every command says it the same way."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from probe import store
from probe.core import i18n, userconfig
from probe.core.addresses import parse_resolver
from probe.core.i18n import _
from probe.store import StoreError

# Inside a checkout of the project, results go where they always did (``results/``);
# elsewhere into the volunteer's data directory (``default_db``).
CHECKOUT_DB = Path("results") / "probe.db"
# The list installed with the package (the repository's targets.txt is a link to it).
SHIPPED_LIST = Path(__file__).resolve().parent.parent / "targets" / "data" / "targets.txt"
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
DB_HELP = ("SQLite database of results. [default: `probe config set db`, else results/probe.db in a checkout, "
           "else your data directory]")

# -q / -v, set by every command's options (``add_common_options``): 0 normal, -1 quiet
# (errors and the final answer only), 1 verbose (every step).
_verbosity = {"level": 0}


def fail(message: object, code: int = EXIT_BAD_INPUT) -> NoReturn:
    click.echo(_("error: {message}").format(message=message), err=True)
    sys.exit(code)


def verbosity() -> int:
    return _verbosity["level"]


def say(message: str, *, level: int = 0, err: bool = True) -> None:
    """A line for the volunteer on stderr: level 0 is shown unless -q, level 1 only
    with -v, level -1 (the final answer, warnings) always."""
    if _verbosity["level"] >= level:
        click.echo(message, err=err)


def in_checkout(cwd: Path | None = None) -> bool:
    """Whether the command runs in a checkout of this project (its setup.cfg and the
    ``probe`` package side by side)."""
    cwd = cwd or Path.cwd()
    try:
        cfg = (cwd / "setup.cfg").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "name = bynet-probe" in cfg and (cwd / "probe").is_dir()


def default_db() -> Path:
    """``probe config set db``, else ``results/probe.db`` in a checkout, else the
    volunteer's data directory (never wherever the command happened to start)."""
    configured = config_value("db")
    if configured:
        return Path(configured)
    if in_checkout():
        return CHECKOUT_DB
    return userconfig.data_dir() / "probe.db"


def resolve_db(path: Path | None) -> Path:
    return path if path is not None else default_db()


def existing_db(path: Path | None) -> Path:
    """The database a reading command works on, or one line when there is none yet."""
    db_path = resolve_db(path)
    if not db_path.exists():
        fail(_("{path}: no such database (run `probe run` first, or give --db)").format(path=shown_path(db_path)))
    return db_path


def db_flag(path: Path) -> str:
    """' --db PATH' for the hints a command prints, or '' for the default database."""
    return "" if Path(path) == default_db() else f" --db {shown_path(path)}"


def default_targets() -> tuple[Path, str]:
    """The list a run measures when it names none, and how to name it to the volunteer."""
    configured = config_value("list")
    if configured:
        return Path(configured), shown_path(Path(configured))
    return SHIPPED_LIST, _("{name}, the list that comes with the probe").format(name=SHIPPED_LIST.name)


def config_value(key: str) -> str | None:
    try:
        return userconfig.value(key)
    except userconfig.ConfigError as exc:
        fail(exc)


def shown_path(path: Path) -> str:
    """A path as the volunteer recognises it, without spelling out the home folder:
    relative to the current folder when inside it, else with ``~``."""
    p = Path(os.path.abspath(path))
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        pass
    home = Path.home()
    try:
        return str(Path("~") / p.relative_to(home))
    except ValueError:
        return str(p)


F = TypeVar("F", bound=Callable[..., Any])


def _set_lang(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        if i18n.normalise(value) is None:
            raise click.BadParameter(_("use be, ru or en"))
        i18n.set_language(value)


def _set_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        _verbosity["level"] = -1


def _set_verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    if value and _verbosity["level"] >= 0:
        _verbosity["level"] = value


COMMON_OPTIONS = (
    click.Option(["--lang"], metavar="be|ru|en", expose_value=False, is_eager=True, callback=_set_lang,
                 help="Language of messages. [default: `probe config set lang`, else your locale]"),
    click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, is_eager=True, callback=_set_quiet,
                 help="Say only errors, warnings and the final answer."),
    click.Option(["-v", "--verbose"], count=True, expose_value=False, callback=_set_verbose,
                 help="Say more: every step."),
)


def add_common_options(command: click.Command) -> None:
    """Give a command (and every subcommand of a group) --lang, -q and -v, so that a
    volunteer can put them anywhere: ``probe run -q``, ``probe -q run``."""
    names = {n for p in command.params for n in getattr(p, "opts", [])}
    for option in COMMON_OPTIONS:
        if not names & set(option.opts):
            command.params.append(option)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_common_options(sub)


def choose_language() -> None:
    """The language before any option is read: ``probe config set lang``, else the
    locale (LANGUAGE, LC_ALL, LC_MESSAGES, LANG), else English."""
    try:
        configured = userconfig.value("lang")
    except userconfig.ConfigError:
        configured = None
    i18n.set_language(configured or i18n.from_environment())


def open_db_or_fail(path: Path | None, create: bool = True, readonly: bool = False):
    """The database, or one line and exit 2. ``readonly`` for commands that only read:
    they work on a database on a read-only disk too."""
    try:
        return store.open_db(resolve_db(path), create=create, readonly=readonly)
    except StoreError as exc:
        fail(str(exc))


def resolver_option(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    """A click callback for repeated ``--resolver IP[:PORT]``: the normalised list."""
    try:
        return [parse_resolver(v) for v in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


async def until_stopped() -> None:
    """Wait for Ctrl-C or SIGTERM (the servers' way to end: `control serve`, `collector serve`)."""
    import asyncio
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows
            pass
    await stop.wait()
