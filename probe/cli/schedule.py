"""``probe schedule``: unattended runs, as a systemd user timer or a crontab line.

The texts (units, the crontab line) and reading them back are ``probe.core.schedule``;
here is what touches the machine: ``systemctl --user``, ``crontab``, the unit files.
Overlapping runs need nothing here: a run holds its database's run lock (a timer does
not even start a run while the last one is still going; under cron the second stops at
once, saying so, in the log).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import click

import probe
from probe.cli.common import DB_HELP, fail, resolve_db, say, shown_path
from probe.cli.run import run as run_command_cli
from probe.core import schedule as sched
from probe.core import units, userconfig
from probe.core.i18n import _
from probe.targets.lists import TargetError, load_targets

VIAS = ("auto", "systemd", "cron")
# `probe run` options a schedule sets itself, or that make no sense unattended.
_NOT_PASSED = {
    "targets_path": "--list", "db_path": "--db", "max_runtime": "--max-runtime", "max_bytes": "--max-bytes",
    "control_urls": "--control", "yes": None, "resume": None, "run_id": None, "list_only": None,
}
ENABLE = f"systemctl --user daemon-reload && systemctl --user enable --now {sched.TIMER_NAME}"


@click.group("schedule")
def schedule_group() -> None:
    """Run the probe on its own, every few hours (a systemd user timer, else cron).

    `probe schedule install --every 6h` installs it, `probe schedule show` says what is
    installed and when it runs next, `probe schedule remove` removes it.
    """


# --- the machine -------------------------------------------------------------------------

def _systemctl(*args: str) -> tuple[bool, str]:
    """Run ``systemctl --user ARGS``: (worked, its output or why not)."""
    try:
        p = subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return False, _("there is no systemctl command")
    except subprocess.TimeoutExpired:
        return False, _("systemctl did not answer within 30 s")
    text = (p.stdout if p.returncode == 0 else p.stderr or p.stdout).strip()
    return p.returncode == 0, " ".join(text.split()) if p.returncode else text


def systemd_usable() -> tuple[bool, str]:
    """Whether a systemd user manager answers for this user (and why not)."""
    return _systemctl("show-environment")


def unit_dir() -> Path:
    """Where systemd looks for this user's own units."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".config") / "systemd" / "user"


def _unit_paths() -> tuple[Path, Path, Path]:
    d = unit_dir()
    return d / sched.SERVICE_NAME, d / sched.TIMER_NAME, d / "timers.target.wants" / sched.TIMER_NAME


def _crontab_read() -> str | None:
    """The volunteer's crontab ("" when they have none), None without a crontab command;
    one line (exit 2) when it cannot be read: never write over a crontab we could not read."""
    if shutil.which("crontab") is None:
        return None
    p = subprocess.run(["crontab", "-l"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    if p.returncode == 0:
        return p.stdout
    if "no crontab for" in p.stderr:
        return ""
    fail(_("cannot read your crontab: {why}").format(why=" ".join(p.stderr.split()) or p.returncode))


def _crontab_write(text: str) -> None:
    p = subprocess.run(["crontab", "-"], input=text, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        fail(_("cannot write your crontab: {why}").format(why=" ".join(p.stderr.split()) or p.returncode))


def _python_path() -> str | None:
    """The folder to put on PYTHONPATH for a scheduled ``python -m probe``: None when
    this interpreter finds this probe from anywhere (installed, as `pip install -e .`
    does), else the folder it was found in (a checkout run without installing)."""
    ours = Path(probe.__file__).resolve()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        p = subprocess.run([sys.executable, "-c", "import probe; print(probe.__file__)"], capture_output=True,
                           text=True, timeout=60, cwd="/", env=env, stdin=subprocess.DEVNULL)
        found = Path(p.stdout.strip()).resolve() if p.returncode == 0 and p.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        found = None
    return None if found == ours else str(ours.parent.parent)


# --- reading back ------------------------------------------------------------------------

def installed_systemd() -> sched.Installed | None:
    service, timer, _wants = _unit_paths()
    if not service.exists() and not timer.exists():
        return None
    read = lambda p: p.read_text(encoding="utf-8", errors="replace") if p.exists() else ""  # noqa: E731
    return sched.parse_units(read(service), read(timer))


def installed_cron(crontab: str | None) -> sched.Installed | None:
    lines = sched.our_cron_lines(crontab or "")
    return sched.parse_cron_line(lines[-1]) if lines else None


def _next_cron(fields: str) -> str | None:
    try:
        when = sched.next_cron_time(fields, datetime.now())
    except ValueError:
        return None
    return when.strftime("%Y-%m-%d %H:%M") if when else None


def _systemd_next() -> tuple[str | None, str | None]:
    """(the timer's next run as systemd says it, its state), or Nones when systemd does
    not answer."""
    ok, out = _systemctl("show", sched.TIMER_NAME, "-p", "ActiveState", "-p", "NextElapseUSecRealtime")
    if not ok:
        return None, None
    values = dict(line.partition("=")[::2] for line in out.splitlines())
    return values.get("NextElapseUSecRealtime") or None, values.get("ActiveState") or None


def _every(found: sched.Installed) -> str:
    return sched.format_interval(found.slot.interval) if found.slot else _("(edited by hand)")


# --- removing ----------------------------------------------------------------------------

def _remove_systemd(usable: bool) -> list[str]:
    """Stop and delete the timer and service; the paths removed."""
    service, timer, wants = _unit_paths()
    existing = [p for p in (timer, service) if p.exists()] + ([wants] if wants.is_symlink() or wants.exists() else [])
    if not existing:
        return []
    if usable:
        _systemctl("disable", "--now", sched.TIMER_NAME)
        _systemctl("stop", sched.SERVICE_NAME)
    for p in existing:
        p.unlink(missing_ok=True)
    if usable:
        _systemctl("daemon-reload")
    return [shown_path(p) for p in existing if p != wants]


def _remove_cron(crontab: str | None) -> bool:
    if crontab is None or not sched.our_cron_lines(crontab):
        return False
    _crontab_write(sched.with_cron_line(crontab, None))
    return True


# --- install -----------------------------------------------------------------------------

def _run_options(args: tuple[str, ...]) -> list[str]:
    """The `probe run` options given after ``--``, checked as `probe run` would read them."""
    if not args:
        return []
    ctx = click.Context(run_command_cli, info_name="run")
    try:
        opts, positional, order = run_command_cli.make_parser(ctx).parse_args(list(args))
        if positional:
            raise click.UsageError(_("`probe run` takes no argument {arg!r}").format(arg=positional[0]))
        for param in dict.fromkeys(order):
            if param.name in _NOT_PASSED:
                own = _NOT_PASSED[param.name]
                raise click.UsageError(
                    _("give {option} to `probe schedule install` itself").format(option=own) if own
                    else _("{option} cannot be part of a schedule").format(option=param.opts[0]))
            param.type_cast_value(ctx, opts[param.name])
    except click.UsageError as exc:
        fail(_("after --, the options of `probe run`: {problem}").format(problem=exc.format_message()))
    return list(args)


def _choose_via(via: str, crontab: str | None) -> tuple[str, bool, str]:
    """(systemd or cron, whether systemd answers, why not)."""
    usable, why = systemd_usable()
    if via == "cron" and crontab is None:
        fail(_("there is no crontab command here (Debian, Ubuntu: sudo apt install cron), or use --via systemd"))
    if via == "auto":
        if usable:
            via = "systemd"
        elif crontab is not None:
            via = "cron"
        else:
            fail(_("cannot schedule here: systemd does not answer for your user ({why}) and there is no crontab "
                   "command; install cron (Debian, Ubuntu: sudo apt install cron), or write the timer with "
                   "--via systemd and start it in your desktop session").format(why=why))
    return via, usable, why


@schedule_group.command("install")
@click.option("--every", required=True, metavar="DURATION",
              help="How often: 1h, 2h, 3h, 4h, 6h, 8h, 12h, 1d or 7d (another interval is rounded to the "
                   "nearest of these, and you are told). Each install picks its own random minute and hour.")
@click.option("--list", "list_path", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Target list the scheduled runs measure. [default: what `probe run` measures then]")
@click.option("--db", "db_path", type=click.Path(path_type=Path), default=None, help=DB_HELP)
@click.option("--max-runtime", default=None, metavar="DURATION",
              help="Each scheduled run stops after this long (e.g. 30m).")
@click.option("--max-bytes", default=None, metavar="SIZE",
              help="Each scheduled run stops when it has downloaded this much (e.g. 200MB).")
@click.option("--control", "control_urls", multiple=True, metavar="URL",
              help="Control helper for the scheduled runs (repeatable). [default: what `probe run` uses then]")
@click.option("--via", type=click.Choice(VIAS), default="auto", show_default=True,
              help="A systemd user timer, a crontab line, or auto: systemd when it answers for you, else cron.")
@click.option("--yes", is_flag=True,
              help="Accept the notice of what a run does (`probe notice`): scheduled runs measure without asking.")
@click.argument("run_options", nargs=-1, type=click.UNPROCESSED, metavar="[-- RUN OPTIONS...]")
def install_cmd(every: str, list_path: Path | None, db_path: Path | None, max_runtime: str | None,
                max_bytes: str | None, control_urls: tuple[str, ...], via: str, yes: bool,
                run_options: tuple[str, ...]) -> None:
    """Run `probe run` every DURATION, quietly, on this computer; installing again
    replaces the schedule.

    Options of `probe run` after `--` are passed on: `probe schedule install --every 6h
    -- --concurrency 2`.
    """
    try:
        asked = units.parse_duration(every)
    except ValueError:
        fail(_("{value!r} is not a duration (use e.g. 6h, 1d)").format(value=every))
    try:
        interval = sched.round_interval(asked)
    except sched.ScheduleError as exc:
        fail(exc)
    targets = None
    if list_path is not None:
        if not list_path.is_file():
            fail(_("{path}: no such file").format(path=shown_path(list_path)))
        try:
            load_targets(list_path)
        except TargetError as exc:
            fail(str(exc))
        targets = os.path.abspath(list_path)
    for text, parse, hint in ((max_runtime, units.parse_duration, "30m"), (max_bytes, units.parse_size, "200MB")):
        if text is not None:
            try:
                parse(text)
            except ValueError:
                fail(_("{value!r} is not valid here (use e.g. {example})").format(value=text, example=hint))
    try:
        controls = [userconfig.check_control_url(u) for u in control_urls]
    except userconfig.ConfigError as exc:
        fail(exc)
    extra = _run_options(run_options)

    try:
        if not userconfig.consent_given():
            if not yes:
                fail(_("no schedule installed: scheduled runs measure without asking, so accept the notice first: "
                       "run `probe run` once by hand (it shows the notice), or add --yes (read it: probe notice)"))
            userconfig.record_consent(how="schedule --yes")
            say(_("The notice of what a run does was accepted with --yes (read it: probe notice)."), level=-1)
    except userconfig.ConfigError as exc:
        fail(exc)

    crontab = _crontab_read()
    via, usable, why = _choose_via(via, crontab)
    slot = sched.choose_slot(interval)
    db = os.path.abspath(resolve_db(db_path))
    command = sched.run_command(sys.executable, db, targets=targets, max_runtime=max_runtime, max_bytes=max_bytes,
                                controls=controls, extra=extra)
    environment = {sched.CONFIG_VARIABLE: os.path.abspath(userconfig.config_path())}
    python_path = _python_path()
    if python_path:
        environment["PYTHONPATH"] = python_path
    log = userconfig.data_dir() / sched.LOG_NAME
    try:  # every text before anything is written: a path a schedule cannot hold changes nothing
        if via == "systemd":
            texts = (sched.service_text(command, environment, units.parse_duration(max_runtime) if max_runtime else None),
                     sched.timer_text(slot))
        else:
            line = sched.cron_line(slot, command, environment, str(log))
    except sched.ScheduleError as exc:
        fail(exc)

    if interval != asked:
        say(_("every {asked} cannot be kept exactly; the runs are every {every} instead")
            .format(asked=every.strip(), every=sched.format_interval(interval)), level=-1)
    shown_every = sched.format_interval(interval)
    if via == "systemd":
        if _remove_cron(crontab):
            say(_("removed the line the schedule had in your crontab: it runs from the systemd timer now"))
        service, timer, _wants = _unit_paths()
        service.parent.mkdir(parents=True, exist_ok=True)
        for path, text in zip((service, timer), texts, strict=True):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        if usable:
            for args in (("daemon-reload",), ("enable", sched.TIMER_NAME), ("restart", sched.TIMER_NAME)):
                ok, out = _systemctl(*args)
                if not ok:
                    fail(_("wrote {timer}, but `systemctl --user {args}` failed: {why}")
                         .format(timer=shown_path(timer), args=" ".join(args), why=out))
            when, _state = _systemd_next()
            click.echo(_("installed: a systemd user timer, every {every}, next {when}")
                       .format(every=shown_every, when=when or _("unknown")))
        else:
            click.echo(_("wrote {timer} and {service}, but systemd does not answer here ({why}); to start the timer, "
                         "run this in your desktop or login session: {command}")
                       .format(timer=shown_path(timer), service=service.name, why=why, command=ENABLE))
        click.echo(_("  when: {schedule}").format(schedule=sched.on_calendar(slot)))
        output = f"journalctl --user -u {sched.SERVICE_NAME}"
    else:
        if _remove_systemd(usable):
            say(_("removed the systemd timer the schedule had: it runs from your crontab now"))
        log.parent.mkdir(parents=True, exist_ok=True)
        _crontab_write(sched.with_cron_line(crontab or "", line))
        fields = sched.cron_fields(slot)
        click.echo(_("installed: a line in your crontab, every {every}, next {when}")
                   .format(every=shown_every, when=_next_cron(fields) or _("unknown")))
        click.echo(_("  when: {schedule}").format(schedule=fields))
        output = shown_path(log)
    click.echo(_("  runs: {command}").format(command=shlex.join(command)))
    click.echo(_("  output: {where}").format(where=output))


@schedule_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
def show_cmd(as_json: bool) -> None:
    """What is installed, when it runs next, and what it runs."""
    found: list[tuple[sched.Installed, str, str | None, str | None]] = []
    systemd = installed_systemd()
    if systemd is not None:
        when, state = _systemd_next()
        found.append((systemd, str(_unit_paths()[1]), when, state))
    crontab = _crontab_read()
    cron = installed_cron(crontab)
    if cron is not None:
        found.append((cron, "crontab", _next_cron(cron.schedule), None))
    if as_json:
        click.echo(json.dumps({"installed": [
            {"via": f.via, "where": where, "every": sched.format_interval(f.slot.interval) if f.slot else None,
             "every_seconds": f.slot.interval if f.slot else None, "schedule": f.schedule, "next": when,
             "state": state, "command": f.command, "environment": f.environment,
             "output": f.log if f.via == "cron" else f"journalctl --user -u {sched.SERVICE_NAME}"}
            for f, where, when, state in found]}, indent=2, ensure_ascii=False))
        return
    if not found:
        click.echo(_("no schedule installed (`probe schedule install --every 6h` installs one)"))
        return
    for f, where, when, state in found:
        if f.via == "systemd":
            if state is None:
                when_text = _("unknown: systemd does not answer here (to start it: {command})").format(command=ENABLE)
            elif state != "active":
                when_text = _("none: the timer is {state} (to start it: {command})").format(state=state, command=ENABLE)
            else:
                when_text = when or _("unknown")
            click.echo(_("a systemd user timer ({path}): every {every}, next {when}")
                       .format(path=shown_path(Path(where)), every=_every(f), when=when_text))
            output = f"journalctl --user -u {sched.SERVICE_NAME}"
        else:
            click.echo(_("a line in your crontab: every {every}, next {when}")
                       .format(every=_every(f), when=when or _("unknown")))
            output = shown_path(Path(f.log)) if f.log else _("unknown")
        click.echo(_("  when: {schedule}").format(schedule=f.schedule))
        click.echo(_("  runs: {command}").format(command=shlex.join(f.command)))
        click.echo(_("  output: {where}").format(where=output))
    if len(found) > 1:
        say(_("warning: two schedules are installed; `probe schedule remove` removes both"), level=-1)


@schedule_group.command("remove")
def remove_cmd() -> None:
    """Stop the scheduled runs and remove what `probe schedule install` wrote (the
    results stay)."""
    usable, _why = systemd_usable()
    removed = _remove_systemd(usable)
    if removed:
        click.echo(_("removed the systemd user timer: {paths}").format(paths=", ".join(removed)))
    cron = _remove_cron(_crontab_read())
    if cron:
        click.echo(_("removed the line from your crontab"))
    if not removed and not cron:
        click.echo(_("no schedule was installed"))
