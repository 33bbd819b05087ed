"""`probe upload`, and the upload after a run: the volunteer's side of a collector.

Why a notice of its own: measuring keeps results on the volunteer's machine; uploading
sends them to someone else. The volunteer agrees to that separately, once, knowing
what is sent and to whom (the run notice already said nothing leaves unless shared).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import click

from probe import store
from probe.cli.common import DB_HELP, existing_db, fail, open_db_or_fail, say
from probe.cli.consent import agree_once
from probe.collector.client import UploadError, UploadResult, upload
from probe.core import userconfig
from probe.core.i18n import _, ngettext

TOKEN_ENV = "BYNET_PROBE_COLLECTOR_TOKEN"


def upload_notice(collector: str) -> str:
    return "\n".join([
        _("Uploading sends your results to the collector at {collector}.").format(collector=collector),
        _("What is sent: every measurement in your results file (the answers, connections, certificates and "
          "beginnings of pages the probe recorded), with your network's country and provider (ASN), the "
          "probe's version and settings. Not your IP address, and not the folders of your computer."),
        _("Who sees it: the collector's operator, and the researchers they share it with; reports made from "
          "it may be published. Your token tells the operator which uploads are yours. Your provider can "
          "see that this computer connects to the collector."),
        _("To stop: `probe config unset collector`. Nothing is sent without a collector and a token."),
    ])


def ensure_upload_consent(collector: str, yes: bool, *, interactive: bool = True) -> bool:
    """Whether uploading is agreed to: before, now on a terminal, or with --yes. With
    ``interactive`` False (after a run) it never asks: False when not agreed yet."""
    section = userconfig.UPLOAD_CONSENT_SECTION
    if not interactive and not yes:
        try:
            return userconfig.consent_given(section=section)
        except userconfig.ConfigError as exc:
            fail(exc)
    agree_once(section, yes, upload_notice(collector),
               yes_said=_("Uploading was agreed to with --yes (what is sent: probe upload --notice)."),
               no_terminal=_("nothing sent: agree to uploading first, by running `probe upload` once in a terminal, "
                             "or with --yes"),
               prompt=_("Type yes to agree and send, anything else to stop"),
               refused=_("nothing sent: uploading was not agreed to"))
    return True


def collector_settings(collector: str | None) -> tuple[str | None, str | None]:
    """(collector URL, token): the option, else the config; the token from the
    environment, else the config (never from the command line, where `ps` shows it)."""
    try:
        url = userconfig.check_collector_url(collector) if collector else userconfig.value("collector")
        token = os.environ.get(TOKEN_ENV) or userconfig.value("collector-token")
    except userconfig.ConfigError as exc:
        fail(exc)
    return url, token


def summary(result: UploadResult) -> str:
    parts = [ngettext("sent {n} measurement", "sent {n} measurements", result.sent).format(n=result.sent)]
    if result.duplicates or result.already:
        parts.append(_("{n} the collector already had").format(n=result.duplicates + result.already))
    return _("{what} to {collector}").format(what="; ".join(parts), collector=result.collector)


def send(db_path: Path, collector: str, token: str) -> UploadResult:
    """Upload now; UploadError says why it stopped (what was sent stays recorded)."""
    db = open_db_or_fail(db_path, create=False)
    try:
        def progress(r: UploadResult) -> None:
            say(_("  {sent} sent, {left} to go").format(sent=r.sent + r.duplicates, left=r.pending), level=1)

        return asyncio.run(upload(db, collector, token, progress=progress))
    finally:
        store.close(db)


def upload_after_run(db_path: Path, yes: bool) -> None:
    """After a run: upload when a collector and a token are set and uploading was
    agreed to; otherwise nothing (a run never asks). A failed upload is a warning:
    the run's results are safe, and `probe upload` sends them later."""
    try:
        url, token = userconfig.value("collector"), os.environ.get(TOKEN_ENV) or userconfig.value("collector-token")
    except userconfig.ConfigError as exc:
        say(_("warning: not uploaded: {reason}").format(reason=exc), level=-1)
        return
    if not url:
        return
    if not token:
        say(_("warning: not uploaded: no token for {collector} (probe config set collector-token TOKEN)").format(
            collector=url), level=-1)
        return
    if not ensure_upload_consent(url, yes, interactive=False):
        say(_("not uploaded: run `probe upload` once to read what is sent and agree"), level=-1)
        return
    try:
        result = send(db_path, url, token)
    except UploadError as exc:
        say(_("warning: not uploaded: {reason}").format(reason=exc), level=-1)
        return
    say(summary(result))


@click.command("upload")
@click.option("--db", "db_path", type=click.Path(path_type=Path), default=None, help=DB_HELP)
@click.option("--collector", default=None, metavar="URL",
              help="The collector (default: probe config set collector). The token comes from "
                   f"{TOKEN_ENV} or probe config set collector-token.")
@click.option("--yes", is_flag=True, help="Agree to uploading without being asked (for automation).")
@click.option("--notice", "show_notice", is_flag=True, help="Show what uploading sends, and to whom; send nothing.")
def upload_cmd(db_path: Path | None, collector: str | None, yes: bool, show_notice: bool) -> None:
    """Send your results to a collector: only what it does not have yet; an interrupted upload goes on
    where it stopped."""
    url, token = collector_settings(collector)
    if show_notice:
        click.echo(upload_notice(url or _("(no collector set)")))
        return
    if not url:
        fail(_("no collector: give --collector URL, or probe config set collector URL"))
    if not token:
        fail(_("no token for {collector}: set {env} or probe config set collector-token TOKEN (the collector's "
               "operator gives it)").format(collector=url, env=TOKEN_ENV))
    db_path = existing_db(db_path)
    ensure_upload_consent(url, yes)
    try:
        result = send(db_path, url, token)
    except UploadError as exc:
        fail(exc)
    if result.sent == result.duplicates == result.already == 0:
        say(_("nothing new to send to {collector}").format(collector=result.collector), level=-1)
        return
    say(summary(result), level=-1)
