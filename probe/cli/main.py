"""The `probe` command: the root group, and every command attached explicitly.

Why explicit: a command that fails to import must fail loudly (in tests and CI), not
vanish from `probe --help`. The CLI is the one layer that sees every other one.
"""

from __future__ import annotations

import errno
import sqlite3
from typing import Any

import click

from probe import __version__, store
from probe.cli.analysis import analyze_cmd, fingerprints_group
from probe.cli.browse import browse_cmd
from probe.cli.collector import collector_group
from probe.cli.common import add_common_options, choose_language, fail
from probe.cli.config import config_group
from probe.cli.consent import notice_cmd
from probe.cli.control import control_group
from probe.cli.export import export_cmd
from probe.cli.ooni import export_ooni_cmd, import_ooni_cmd
from probe.cli.report import explain_cmd, report_cmd
from probe.cli.run import run, trace
from probe.cli.schedule import schedule_group
from probe.cli.show import show
from probe.cli.targets import targets_group
from probe.cli.upload import upload_cmd


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


for command in (run, show, targets_group, control_group, config_group, analyze_cmd, fingerprints_group,
                report_cmd, explain_cmd, import_ooni_cmd, export_ooni_cmd, browse_cmd, schedule_group,
                notice_cmd, upload_cmd, collector_group, export_cmd, trace):
    main.add_command(command)
add_common_options(main)
