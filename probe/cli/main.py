"""The `probe` command: the root group, and every command attached explicitly.

Why explicit: a command that fails to import must fail loudly (in tests and CI), not
vanish from `probe --help`. Why by name: each command's module is imported only when
that command runs (or `probe --help` lists them all), so `probe run` does not pay for
the report, OONI, browse and schedule code at start-up (a volunteer's run starts
measuring sooner). ``COMMANDS`` is the one list: a name there whose module or object
is missing fails `probe --help` and the tests, never silently.
"""

from __future__ import annotations

import errno
import importlib
import sqlite3
from typing import Any

import click

from probe import __version__, store
from probe.cli.common import add_common_options, choose_language, fail

# command name -> "module:object", in the order `probe --help` used to show them.
COMMANDS = {
    "run": "probe.cli.run:run",
    "show": "probe.cli.show:show",
    "targets": "probe.cli.targets:targets_group",
    "control": "probe.cli.control:control_group",
    "config": "probe.cli.config:config_group",
    "analyze": "probe.cli.analysis:analyze_cmd",
    "fingerprints": "probe.cli.analysis:fingerprints_group",
    "report": "probe.cli.report:report_cmd",
    "explain": "probe.cli.report:explain_cmd",
    "import-ooni": "probe.cli.ooni:import_ooni_cmd",
    "export-ooni": "probe.cli.ooni:export_ooni_cmd",
    "browse": "probe.cli.browse:browse_cmd",
    "schedule": "probe.cli.schedule:schedule_group",
    "notice": "probe.cli.consent:notice_cmd",
    "upload": "probe.cli.upload:upload_cmd",
    "collector": "probe.cli.collector:collector_group",
    "export": "probe.cli.export:export_cmd",
    "trace": "probe.cli.run:trace",
}


def load_command(name: str) -> click.Command:
    """Import one command of ``COMMANDS`` and give it the common options."""
    module, _, attr = COMMANDS[name].partition(":")
    command = getattr(importlib.import_module(module), attr)
    add_common_options(command)
    return command


class ProbeGroup(click.Group):
    """The root group: a storage failure that reaches it (the database went read-only,
    the disk filled up, another program held the lock) ends in one line and exit code
    2 whichever command met it; each command says more where it knows more."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        # Before any option is parsed: the language of the volunteer's config or locale
        # (`--lang` on any command overrides it), so that even a usage error is in it.
        choose_language()
        return super().make_context(info_name, args, parent, **extra)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.add_command(load_command(cmd_name), cmd_name)
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except store.StoreError as exc:
            fail(str(exc))
        except sqlite3.Error as exc:
            fail(str(store.translate(exc, "the database")))
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
                fail(f"{exc.filename or 'a file'}: {exc.strerror}")
            raise


@click.group(cls=ProbeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="probe")
def main() -> None:
    """Measure whether, and exactly how, websites are blocked from your network.

    Start with `probe run --list` to see what would be measured, then `probe run`.
    """


add_common_options(main)
