"""Unattended runs: the systemd user timer and the crontab line `probe schedule` writes,
and how to read them back. Pure text in, text out; `probe/cli/schedule.py` does the I/O.

Why a fixed set of intervals (1h, 2h, 3h, 4h, 6h, 8h, 12h, 1d, 7d): cron can keep only
these exactly (an hour step that divides the day, a day, a week), and a timer and a
crontab line installed with the same ``--every`` should run alike. Another interval is
rounded to the nearest of them (the longer one on a tie: less load, not more), and the
volunteer is told. Less than an hour is refused: a run of the shipped list takes minutes,
and measuring more often adds load on the sites, the helper and the volunteer's link,
not knowledge. More than a week is refused too: a weekly run is the longest cron keeps.

Why random offsets: thousands of volunteers installing ``--every 6h`` must not all
start at 00:00, 06:00, ... Each install picks its own minute and its own hour within the
interval (``17 2-23/6 * * *``: 02:17, 08:17, 14:17, 20:17), and a timer also waits a
further random moment each time (``RandomizedDelaySec``).

Why a marker: the crontab is the volunteer's own. Our line ends with
``# bynet-probe schedule`` (the shell ignores it), and only lines that end so are ever
replaced or removed.
"""

from __future__ import annotations

import random
import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from probe.core.i18n import _

HOUR = 3600
DAY = 24 * HOUR
WEEK = 7 * DAY
# The intervals cron can keep exactly, shortest first.
INTERVALS = (HOUR, 2 * HOUR, 3 * HOUR, 4 * HOUR, 6 * HOUR, 8 * HOUR, 12 * HOUR, DAY, WEEK)
MIN_INTERVAL = INTERVALS[0]
MAX_INTERVAL = INTERVALS[-1]

UNIT = "bynet-probe"
SERVICE_NAME = f"{UNIT}.service"
TIMER_NAME = f"{UNIT}.timer"
CRON_MARKER = "# bynet-probe schedule"
LOG_NAME = "schedule.log"
# The variable that names the volunteer's config file: pinned in the schedule, so that a
# scheduled run reads the file (and the consent) the volunteer had when installing it.
CONFIG_VARIABLE = "BYNET_PROBE_CONFIG"
# A run's own --max-runtime stops it within seconds; systemd's hard stop comes this much
# later, for a run that hangs.
TIMEOUT_GRACE = 300
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class ScheduleError(ValueError):
    """An interval or a path a schedule cannot hold: one line for the volunteer."""


@dataclass(frozen=True)
class Slot:
    """When the runs happen: every ``interval`` seconds, at ``minute`` past the hour;
    ``hour`` is the first hour of the day (under a day: 0 to interval-1 hours) or the hour
    of the day (daily, weekly); ``weekday`` (0 Monday) for weekly runs."""

    interval: int
    minute: int = 0
    hour: int = 0
    weekday: int = 0


@dataclass
class Installed:
    """A schedule as read back: when (``slot`` is None when it was edited by hand into
    something we do not write), what runs, with which environment, and the raw schedule
    text (``OnCalendar=`` value, or the five cron fields)."""

    via: str
    schedule: str
    slot: Slot | None
    command: list[str]
    environment: dict[str, str] = field(default_factory=dict)
    log: str | None = None


# --- intervals ---------------------------------------------------------------------------

def round_interval(seconds: float) -> int:
    """The interval a schedule keeps for ``seconds``: one of INTERVALS, the nearest by
    ratio (the longer one on a tie). ScheduleError below an hour or above a week."""
    if seconds < MIN_INTERVAL:
        raise ScheduleError(_("runs more often than every hour would load the sites and your link; use --every 1h or more"))
    if seconds > MAX_INTERVAL:
        raise ScheduleError(_("the longest interval is a week (--every 7d)"))
    return min(INTERVALS, key=lambda i: (max(i, seconds) / min(i, seconds), -i))


def format_interval(seconds: int) -> str:
    """6h, 1d, 7d: how `--every` spells an interval of INTERVALS."""
    if seconds % DAY == 0:
        return f"{seconds // DAY}d"
    if seconds % HOUR == 0:
        return f"{seconds // HOUR}h"
    return f"{seconds // 60}m"


def choose_slot(interval: int, rng: random.Random | None = None) -> Slot:
    """A random slot for ``interval`` (one of INTERVALS): a minute, an hour within the
    interval, a weekday for weekly runs."""
    if interval not in INTERVALS:
        raise ValueError(f"not a schedulable interval: {interval}")
    rng = rng or random.SystemRandom()
    hours = interval // HOUR
    hour = rng.randrange(hours) if hours < 24 else rng.randrange(24)
    return Slot(interval, minute=rng.randrange(60), hour=hour, weekday=rng.randrange(7) if interval == WEEK else 0)


def jitter(interval: int) -> int:
    """Seconds a timer waits further at random each time: a quarter of the interval, at
    most half an hour."""
    return min(interval // 4, 30 * 60)


# --- cron --------------------------------------------------------------------------------

def cron_fields(slot: Slot) -> str:
    """The five fields of a crontab line: ``17 2-23/6 * * *``."""
    if slot.interval == HOUR:
        return f"{slot.minute} * * * *"
    if slot.interval < DAY:
        step = slot.interval // HOUR
        hours = f"*/{step}" if slot.hour == 0 else f"{slot.hour}-23/{step}"
        return f"{slot.minute} {hours} * * *"
    if slot.interval == DAY:
        return f"{slot.minute} {slot.hour} * * *"
    return f"{slot.minute} {slot.hour} * * {(slot.weekday + 1) % 7}"


_CRON_SLOT = re.compile(r"^(\d{1,2}) (\*|\*/(\d{1,2})|(\d{1,2})-23/(\d{1,2})|(\d{1,2})) \* \* (\*|[0-6])$")


def slot_from_cron(fields: str) -> Slot | None:
    """The slot of five cron fields we write; None for anything else."""
    m = _CRON_SLOT.match(" ".join(fields.split()))
    if not m:
        return None
    minute = int(m.group(1))
    dow = m.group(7)
    if m.group(2) == "*" and dow == "*":
        slot = Slot(HOUR, minute)
    elif m.group(3) and dow == "*":
        slot = Slot(int(m.group(3)) * HOUR, minute, 0)
    elif m.group(4) and dow == "*":
        slot = Slot(int(m.group(5)) * HOUR, minute, int(m.group(4)))
    elif m.group(6):
        hour = int(m.group(6))
        slot = Slot(DAY, minute, hour) if dow == "*" else Slot(WEEK, minute, hour, (int(dow) + 6) % 7)
    else:
        return None
    return slot if _valid(slot) and cron_fields(slot) == " ".join(fields.split()) else None


def _valid(slot: Slot) -> bool:
    if slot.interval not in INTERVALS or not 0 <= slot.minute < 60 or not 0 <= slot.weekday < 7:
        return False
    return 0 <= slot.hour < (slot.interval // HOUR if slot.interval < DAY else 24)


_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def cron_values(text: str, low: int, high: int) -> set[int]:
    """The values one cron field stands for (``*``, ``5``, ``1-5``, ``*/6``, ``2-23/6``,
    lists of these); ValueError for anything else or out of range."""
    values: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", part)
        if not m:
            raise ValueError(f"not a cron field: {text!r}")
        start, end = (low, high) if m.group(1) == "*" else (int(m.group(2)), int(m.group(3) or m.group(2)))
        if m.group(4) and m.group(1) != "*" and m.group(3) is None:
            end = high
        step = int(m.group(4) or 1)
        if not low <= start <= end <= high or step < 1:
            raise ValueError(f"cron field out of range: {text!r}")
        values.update(range(start, end + 1, step))
    return values


def next_cron_time(fields: str, after: datetime) -> datetime | None:
    """The first minute after ``after`` that five cron fields name (within eight days;
    cron's rule that a restricted day of month and day of week match either)."""
    parts = fields.split()
    if len(parts) != 5:
        raise ValueError(f"a cron schedule has five fields, not {len(parts)}: {fields!r}")
    minute, hour, dom, month, dow = (cron_values(p, lo, hi) for p, (lo, hi) in zip(parts, _CRON_RANGES, strict=True))
    dow = {d % 7 for d in dow}
    either = parts[2] != "*" and parts[4] != "*"
    t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _minute in range(8 * 24 * 60):
        day_ok = (t.day in dom, (t.weekday() + 1) % 7 in dow)
        if (t.minute in minute and t.hour in hour and t.month in month
                and (any(day_ok) if either else all(day_ok))):
            return t
        t += timedelta(minutes=1)
    return None


def _check_text(arg: str) -> None:
    if any(ord(c) < 32 or ord(c) == 127 for c in arg):
        raise ScheduleError(_("{path!r} holds a control character (a newline?), which a schedule cannot hold")
                            .format(path=arg))


def cron_line(slot: Slot, command: list[str], environment: dict[str, str], log: str) -> str:
    """One crontab line: the fields, the environment and the command (shell-quoted), its
    output appended to ``log``, and our marker."""
    words = [f"{name}={shlex.quote(value)}" for name, value in environment.items()]
    words += [shlex.quote(arg) for arg in command]
    for arg in [*environment.values(), *command, log]:
        _check_text(arg)
        if "%" in arg:
            # cron turns an unescaped % into a newline, and escaping it differs between crons
            raise ScheduleError(_("{path!r} holds a %, which a crontab line cannot hold; use another path")
                                .format(path=arg))
    return f"{cron_fields(slot)} {' '.join(words)} >> {shlex.quote(log)} 2>&1 {CRON_MARKER}"


def is_our_cron_line(line: str) -> bool:
    return not line.lstrip().startswith("#") and line.rstrip().endswith(CRON_MARKER)


def parse_cron_line(line: str) -> Installed:
    """A line of ours read back (is_our_cron_line): its schedule, command, environment
    and log; what cannot be parsed is left empty."""
    parts = line.split(None, 5)
    fields = " ".join(parts[:5])
    try:
        words = shlex.split(parts[5] if len(parts) > 5 else "", comments=True)
    except ValueError:
        words = []
    environment: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0], re.DOTALL):
        name, _sep, value = words.pop(0).partition("=")
        environment[name] = value
    log = None
    if len(words) >= 3 and words[-3] == ">>" and words[-1] == "2>&1":
        log = words[-2]
        words = words[:-3]
    return Installed("cron", fields, slot_from_cron(fields), words, environment, log)


def with_cron_line(crontab: str, line: str | None) -> str:
    """The crontab with every line of ours taken out and ``line`` (if any) added at the
    end; every other line kept as it was."""
    kept = [x for x in crontab.splitlines() if not is_our_cron_line(x)]
    if line is not None:
        kept.append(line)
    return "".join(x + "\n" for x in kept)


def our_cron_lines(crontab: str) -> list[str]:
    return [x for x in crontab.splitlines() if is_our_cron_line(x)]


# --- systemd -----------------------------------------------------------------------------

def on_calendar(slot: Slot) -> str:
    """The ``OnCalendar=`` value of a slot: ``*-*-* 02/6:17:00``."""
    if slot.interval == HOUR:
        return f"*-*-* *:{slot.minute:02d}:00"
    if slot.interval < DAY:
        return f"*-*-* {slot.hour:02d}/{slot.interval // HOUR}:{slot.minute:02d}:00"
    day = f"{_WEEKDAYS[slot.weekday]} " if slot.interval == WEEK else ""
    return f"{day}*-*-* {slot.hour:02d}:{slot.minute:02d}:00"


_CALENDAR_SLOT = re.compile(r"^(?:(Mon|Tue|Wed|Thu|Fri|Sat|Sun) )?\*-\*-\* (\*|\d\d)(?:/(\d{1,2}))?:(\d\d):00$")


def slot_from_calendar(text: str) -> Slot | None:
    """The slot of an ``OnCalendar=`` value we write; None for anything else."""
    m = _CALENDAR_SLOT.match(text.strip())
    if not m:
        return None
    day, hour, step, minute = m.group(1), m.group(2), m.group(3), int(m.group(4))
    if hour == "*":
        slot = Slot(HOUR, minute) if not (day or step) else None
    elif step:
        slot = Slot(int(step) * HOUR, minute, int(hour)) if not day else None
    else:
        slot = Slot(WEEK, minute, int(hour), _WEEKDAYS.index(day)) if day else Slot(DAY, minute, int(hour))
    return slot if slot is not None and _valid(slot) and on_calendar(slot) == text.strip() else None


_PLAIN = re.compile(r"^[A-Za-z0-9_@+=:,./-]+$")


def systemd_quote(arg: str, *, expand_variables: bool = True) -> str:
    """One word of ``ExecStart=`` (or ``Environment=``, where ``$`` is not special):
    plain when it can be, else in double quotes; ``%`` and ``$`` doubled, as systemd
    wants. A double quote or a backslash we do not write: ScheduleError."""
    _check_text(arg)
    if '"' in arg or "\\" in arg:
        raise ScheduleError(_("{path!r} holds a double quote or a backslash, which we do not write into a systemd "
                              "unit; use another path").format(path=arg))
    text = arg.replace("%", "%%")
    if expand_variables:
        text = text.replace("$", "$$")
    return text if _PLAIN.match(arg) else f'"{text}"'


def systemd_split(value: str, *, expand_variables: bool = True) -> list[str]:
    """The words of an ``ExecStart=``/``Environment=`` value we wrote (systemd_quote)."""
    words = shlex.split(value)
    words = [w.replace("%%", "%") for w in words]
    return [w.replace("$$", "$") for w in words] if expand_variables else words


def _systemd_executable(path: str) -> str:
    # systemd takes the program's path as it is written: no $$ for $, and a ' refused
    if "$" in path or "'" in path:
        raise ScheduleError(_("{path!r} holds a $ or a ', which systemd does not take in the path of a program; "
                              "use a Python installed elsewhere").format(path=path))
    return systemd_quote(path)


def service_text(command: list[str], environment: dict[str, str], max_runtime: float | None = None) -> str:
    """The ``bynet-probe.service`` unit: one run of the probe, output to the journal."""
    lines = [
        "# Written by `probe schedule install`; `probe schedule remove` removes it.",
        "[Unit]",
        "Description=bynet-probe: one scheduled censorship measurement (probe schedule)",
        "",
        "[Service]",
        "Type=oneshot",
        *(f"Environment={systemd_quote(f'{k}={v}', expand_variables=False)}" for k, v in environment.items()),
        "ExecStart=" + " ".join([_systemd_executable(command[0]), *(systemd_quote(a) for a in command[1:])]),
        # a measurement should not slow down what the volunteer is doing
        "Nice=10",
    ]
    if max_runtime:
        lines.append(f"TimeoutStartSec={int(max_runtime) + TIMEOUT_GRACE}")
    return "\n".join(lines) + "\n"


def timer_text(slot: Slot) -> str:
    """The ``bynet-probe.timer`` unit: when the service runs."""
    every = format_interval(slot.interval)
    return "\n".join([
        "# Written by `probe schedule install`; `probe schedule remove` removes it.",
        "[Unit]",
        f"Description=bynet-probe: a censorship measurement every {every} (probe schedule)",
        "",
        "[Timer]",
        f"OnCalendar={on_calendar(slot)}",
        # so that thousands of volunteers do not all start at once
        f"RandomizedDelaySec={jitter(slot.interval) // 60}min",
        # a run missed while the computer was off happens when it is back on
        "Persistent=true",
        "",
        "[Install]",
        "WantedBy=timers.target",
    ]) + "\n"


def unit_values(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file (all sections), in order."""
    values: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;[" or "=" not in line:
            continue
        key, _sep, value = line.partition("=")
        values.setdefault(key.strip(), []).append(value.strip())
    return values


def parse_units(service: str, timer: str) -> Installed:
    """The two unit files of ours read back."""
    s, t = unit_values(service), unit_values(timer)
    schedule = (t.get("OnCalendar") or [""])[-1]
    try:
        command = systemd_split((s.get("ExecStart") or [""])[-1])
    except ValueError:
        command = []
    environment: dict[str, str] = {}
    for value in s.get("Environment", []):
        try:
            words = systemd_split(value, expand_variables=False)
        except ValueError:
            continue
        for word in words:
            name, _sep, v = word.partition("=")
            environment[name] = v
    return Installed("systemd", schedule, slot_from_calendar(schedule), command, environment)


# --- the command a schedule runs ---------------------------------------------------------

def run_command(python: str, db: str, *, targets: str | None = None, max_runtime: str | None = None,
                max_bytes: str | None = None, controls: tuple[str, ...] | list[str] = (),
                extra: tuple[str, ...] | list[str] = ()) -> list[str]:
    """``python -m probe run`` as a scheduled run calls it: quiet (nobody watches), the
    database named (a timer starts in another folder than the volunteer did), and only
    the options the volunteer gave; the rest comes from their config file at run time."""
    command = [python, "-m", "probe", "run", "--quiet", "--db", db]
    if targets:
        command += ["--targets", targets]
    if max_runtime:
        command += ["--max-runtime", max_runtime]
    if max_bytes:
        command += ["--max-bytes", max_bytes]
    for url in controls:
        command += ["--control", url]
    return command + list(extra)
