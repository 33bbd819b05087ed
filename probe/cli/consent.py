"""The notice a volunteer reads, and accepts, before the first measurement.

Why: running a censorship probe can be risky (in Belarus, visiting or even measuring
"extremist"-listed media can be prosecuted), and a censor can see the probe's traffic.
OONI Probe asks for informed consent before the first run; so do we, in the volunteer's
language, once, and remember it (``userconfig.record_consent``) so that scheduled
runs, which nobody watches, run as the volunteer agreed. ``--yes`` accepts it for
automation (and says so).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from probe.cli.common import fail, shown_path
from probe.core import userconfig
from probe.core.i18n import _


def notice_text(db_path: Path | None = None) -> str:
    """The notice, in the volunteer's language."""
    where = shown_path(db_path) if db_path is not None else _("your data directory")
    return "\n".join([
        _("Before your first measurement, please read this."),
        "",
        _("What the probe does: it connects to every website on its list (by default, Belarus' independent "
          "media, several of them blocked there), the way a browser would, and records what happened: DNS "
          "answers, connections, certificates and the beginning of each page. If you set a control helper, it "
          "also asks that server, on an open network, to do the same."),
        _("What is stored: the results, on this computer only, in {where}. Not your public IP address (unless "
          "you ask with --store-ip); where a page shows your address, it is replaced before storing. Nothing is "
          "sent anywhere unless you share it.").format(where=where),
        _("Who can see it: your internet provider, and anyone who watches your network (in some countries, the "
          "state), can see that this computer connects to these sites, and may tell that it runs a measurement "
          "tool. In some countries, Belarus among them, visiting blocked or \"extremist\"-listed sites, or "
          "measuring them, can carry personal and legal risk. Run the probe only if you understand and accept "
          "that risk; if in doubt, ask the people who gave you the probe, or do not run it."),
        _("Deep measurement (--deep, probe trace) is off unless you ask for it: it sends unusual packets that make "
          "the probe easier to recognise, and it asks for your agreement separately."),
        _("How to stop: Ctrl-C stops a run at any moment. `probe schedule remove` removes scheduled runs. "
          "Deleting the results file removes everything that was stored."),
    ])


def agree_once(section: str, yes: bool, notice: str, *, yes_said: str | None, no_terminal: str, prompt: str,
               refused: str) -> None:
    """The one way the probe asks before doing something: agreed before (remembered in
    ``section`` of the config file), now with --yes (saying ``yes_said``), or now on a
    terminal after reading ``notice``; otherwise one line and exit 2. Used for the run
    notice, uploading and deep measurement, which are agreed to separately."""
    try:
        if userconfig.consent_given(section=section):
            return
        if yes:
            userconfig.record_consent(how="--yes", section=section)
            if yes_said:
                click.echo(yes_said, err=True)
            return
    except userconfig.ConfigError as exc:
        fail(exc)
    click.echo(notice, err=True)
    click.echo("", err=True)
    if not sys.stdin.isatty():
        fail(no_terminal)
    answer = click.prompt(prompt, default="", show_default=False, err=True)
    if answer.strip().lower() not in {"yes", "y", _("yes").lower()}:
        fail(refused)
    try:
        userconfig.record_consent(how="asked", section=section)
    except userconfig.ConfigError as exc:
        fail(exc)


def ensure_consent(yes: bool, db_path: Path, json_logs: bool = False) -> None:
    """Go on only when the volunteer has accepted the notice: before, now on a
    terminal, or with --yes. Otherwise show it and stop with one line (exit 2)."""
    agree_once(userconfig.CONSENT_SECTION, yes, notice_text(db_path),
               yes_said=None if json_logs else _(
                   "The notice of what a run does was accepted with --yes (read it: probe notice)."),
               no_terminal=_("nothing measured: accept the notice above first, by running `probe run` once in a "
                             "terminal, or with --yes"),
               prompt=_("Type yes to agree and start, anything else to stop"),
               refused=_("nothing measured: the notice was not accepted"))


@click.command("notice")
def notice_cmd() -> None:
    """Show the notice of what a run does and its risks (accepted before the first run)."""
    click.echo(notice_text(None))
    try:
        accepted = userconfig.consent_given()
    except userconfig.ConfigError as exc:
        fail(exc)
    click.echo("")
    click.echo(_("You accepted it.") if accepted else _("Not accepted yet: `probe run` asks before it measures."))
