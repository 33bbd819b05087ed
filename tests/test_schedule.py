"""`probe schedule`: what it installs, read back from where it installed it, and run.

No timer needs to fire: the systemd units are read from the files (and checked with
`systemd-analyze verify` where it exists), the crontab line from `crontab -l`; then the
exact command they hold is run the way systemd or cron would run it (a bare environment,
another folder), against a local list, and must leave a run in the database.

systemd: these tests point XDG_CONFIG_HOME at a temporary folder and make sure no user
manager answers (an empty XDG_RUNTIME_DIR, no session bus), so nothing reaches the
machine's own systemd. cron: `crontab` edits the real crontab of the user running the
tests (root in CI); it is saved before and restored after each test.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from clirun import probe_sync, rows

from probe.core import schedule as sched
from probe.core import userconfig
from probe.core.schedule import DAY, HOUR, WEEK, Slot

# What a scheduled run in a test passes after `--`: nothing leaves the machine, and the
# local list (a closed loopback port) is measured all the same.
OFFLINE_RUN = ["--no-portal-check", "--no-control", "--no-dns-sink", "--no-system-resolver", "--no-doh",
               "--no-vantage-lookup", "--allow-private-targets"]


def local_list(path: Path, n: int = 3) -> Path:
    """n URLs on a closed loopback port: each is measured (connection refused) in a few ms."""
    path.write_text("".join(f"http://127.0.0.1:9/page{i}\n" for i in range(n)))
    return path


@pytest.fixture
def home(tmp_path) -> dict[str, str]:
    """The environment of a volunteer whose systemd user manager does not answer (as in a
    container), with config and data folders of this test's own."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    return {
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "XDG_RUNTIME_DIR": str(runtime),
        "DBUS_SESSION_BUS_ADDRESS": f"unix:path={runtime}/no-bus",
    }


@pytest.fixture
def saved_crontab():
    """The real crontab, restored after the test (or removed, if there was none)."""
    if shutil.which("crontab") is None:
        yield None
        return
    before = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    saved = before.stdout if before.returncode == 0 else None
    try:
        yield saved
    finally:
        if saved is None:
            subprocess.run(["crontab", "-r"], capture_output=True)
        else:
            subprocess.run(["crontab", "-"], input=saved, text=True, check=True)


def interval_of(slot: Slot | None) -> int:
    assert slot is not None, "not a schedule we write"
    return slot.interval


def unit_dir(env: dict[str, str]) -> Path:
    return Path(env["XDG_CONFIG_HOME"]) / "systemd" / "user"


def run_as_scheduled(argv: list[str], environment: dict[str, str], shell: str | None = None,
                     timeout: float = 90) -> subprocess.CompletedProcess:
    """The scheduled command as systemd or cron starts it: a bare environment (PATH, HOME
    and what the schedule sets), in the root folder, no terminal."""
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANGUAGE": "en", **environment}
    args: list[str] = ["/bin/sh", "-c", shell] if shell is not None else argv
    return subprocess.run(args, env=env, cwd="/", capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


# --- (d) the pure conversions ------------------------------------------------------------

@pytest.mark.parametrize("every, kept", [
    ("1h", HOUR), ("6h", 6 * HOUR), ("5h", 6 * HOUR), ("90m", 2 * HOUR), ("10h", 12 * HOUR), ("7h", 8 * HOUR),
    ("1d", DAY), ("24h", DAY), ("2d", DAY), ("3d", WEEK), ("7d", WEEK), ("1.2h", HOUR),
])
def test_an_interval_is_kept_or_rounded_to_one_cron_can_keep(every, kept):
    from probe.core.units import parse_duration
    assert sched.round_interval(parse_duration(every)) == kept


@pytest.mark.parametrize("every", ["30m", "59m", "8d", "30d"])
def test_less_than_an_hour_or_more_than_a_week_is_refused(every):
    from probe.core.units import parse_duration
    with pytest.raises(sched.ScheduleError):
        sched.round_interval(parse_duration(every))


@pytest.mark.parametrize("slot, cron, calendar", [
    (Slot(HOUR, 17), "17 * * * *", "*-*-* *:17:00"),
    (Slot(6 * HOUR, 17, 0), "17 */6 * * *", "*-*-* 00/6:17:00"),
    (Slot(6 * HOUR, 17, 2), "17 2-23/6 * * *", "*-*-* 02/6:17:00"),
    (Slot(12 * HOUR, 5, 11), "5 11-23/12 * * *", "*-*-* 11/12:05:00"),
    (Slot(DAY, 0, 23), "0 23 * * *", "*-*-* 23:00:00"),
    (Slot(WEEK, 30, 4, 6), "30 4 * * 0", "Sun *-*-* 04:30:00"),
    (Slot(WEEK, 30, 4, 0), "30 4 * * 1", "Mon *-*-* 04:30:00"),
])
def test_a_slot_as_cron_fields_and_as_on_calendar_and_back(slot, cron, calendar):
    assert sched.cron_fields(slot) == cron
    assert sched.on_calendar(slot) == calendar
    assert sched.slot_from_cron(cron) == slot
    assert sched.slot_from_calendar(calendar) == slot


def test_random_slots_run_every_interval_and_read_back_the_same():
    rng = random.Random(8)
    start = datetime(2027, 3, 1, 12, 34)
    for interval in sched.INTERVALS:
        for _ in range(8):
            slot = sched.choose_slot(interval, rng)
            assert sched.slot_from_cron(sched.cron_fields(slot)) == slot
            assert sched.slot_from_calendar(sched.on_calendar(slot)) == slot
            times = [start]
            for _ in range(6):
                nxt = sched.next_cron_time(sched.cron_fields(slot), times[-1])
                assert nxt is not None
                times.append(nxt)
            assert times[1] - start <= timedelta(seconds=interval)
            assert {b - a for a, b in zip(times[1:], times[2:], strict=False)} == {timedelta(seconds=interval)}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_reads_our_calendar_as_cron_reads_our_fields():
    rng = random.Random(3)
    base = datetime(2027, 3, 1, 12, 34)
    for interval in sched.INTERVALS:
        slot = sched.choose_slot(interval, rng)
        p = subprocess.run(["systemd-analyze", "calendar", "--iterations=3", f"--base-time={base:%Y-%m-%d %H:%M:%S} UTC",
                            sched.on_calendar(slot)], capture_output=True, text=True, env={**os.environ, "TZ": "UTC"})
        assert p.returncode == 0, p.stderr
        assert f"Normalized form: {sched.on_calendar(slot)}" in p.stdout
        systemd = [datetime.strptime(m, "%Y-%m-%d %H:%M:%S")
                   for m in re.findall(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", p.stdout)][:3]
        ours: list[datetime] = []
        for _ in range(3):
            t = sched.next_cron_time(sched.cron_fields(slot), ours[-1] if ours else base)
            assert t is not None
            ours.append(t)
        assert systemd == ours, (slot, p.stdout)


def test_fields_we_do_not_write_are_not_read_as_ours():
    for fields in ("*/5 * * * *", "17 */5 * * *", "17 3-23/6 * * 1", "60 * * * *", "17 30 * * *", "17 2-23/6 1 * *"):
        assert sched.slot_from_cron(fields) is None, fields
    for calendar in ("daily", "*-*-* 07/6:17:00", "*-*-* *:17:30", "Mon *-*-* 02/6:00:00"):
        assert sched.slot_from_calendar(calendar) is None, calendar


def test_systemd_quoting_reads_back_and_refuses_what_it_cannot_hold():
    command = ["/opt/py thon/bin/python3", "-m", "probe", "run", "--db", "/home/Ўладзь/мае вынікі/p.db",
               "--targets", "/tmp/100%/$HOME's list;.txt", "--control", "https://h.example.org/x?a=b&c=d", ""]
    env = {"BYNET_PROBE_CONFIG": "/home/a b/50% $x/config.ini"}
    text = sched.service_text(command, env, max_runtime=600)
    assert "TimeoutStartSec=900" in text
    found = sched.parse_units(text, sched.timer_text(Slot(DAY, 3, 4)))
    assert found.command == command and found.environment == env
    assert found.slot == Slot(DAY, 3, 4) and found.schedule == "*-*-* 04:03:00"
    for bad in ('/tmp/say "hi"/p.db', "/tmp/back\\slash", "/tmp/new\nline"):
        with pytest.raises(sched.ScheduleError):
            sched.service_text([*command, bad], env)
    with pytest.raises(sched.ScheduleError):  # systemd refuses a $ in the program's path
        sched.service_text(["/opt/$py/python3", "-m", "probe"], env)


def test_a_cron_line_reads_back_and_refuses_a_percent():
    command = ["/opt/py thon/bin/python3", "-m", "probe", "run", "--db", "/home/Ўладзь/it's mine/p.db", "--x", "a;b"]
    env = {"BYNET_PROBE_CONFIG": "/home/a b/config.ini"}
    line = sched.cron_line(Slot(6 * HOUR, 7, 5), command, env, "/home/a b/schedule.log")
    assert line.startswith("7 5-23/6 * * * ") and line.endswith(" # bynet-probe schedule")
    found = sched.parse_cron_line(line)
    assert (found.command, found.environment, found.log) == (command, env, "/home/a b/schedule.log")
    assert found.slot == Slot(6 * HOUR, 7, 5)
    with pytest.raises(sched.ScheduleError):
        sched.cron_line(Slot(HOUR), [*command, "/tmp/100%.txt"], env, "/tmp/log")


def test_only_our_crontab_line_is_replaced_or_removed():
    theirs = 'MAILTO=""\n# backups\n0 3 * * * /usr/local/bin/backup\n#17 */6 * * * old one # bynet-probe schedule\n'
    ours = sched.cron_line(Slot(HOUR, 1), ["/usr/bin/python3", "-m", "probe", "run"], {}, "/tmp/log")
    once = sched.with_cron_line(theirs, ours)
    assert once == theirs + ours + "\n"
    newer = sched.cron_line(Slot(DAY, 2, 3), ["/usr/bin/python3", "-m", "probe", "run"], {}, "/tmp/log")
    assert sched.with_cron_line(once, newer) == theirs + newer + "\n"
    assert sched.with_cron_line(once, None) == theirs
    assert sched.our_cron_lines(once) == [ours]


# --- a valid cron schedule, checked without our own parser --------------------------------

CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")


def assert_valid_cron_schedule(fields: list[str]) -> None:
    assert len(fields) == 5, fields
    for text, (low, high) in zip(fields, [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)], strict=True):
        assert CRON_FIELD.match(text), text
        for number in re.findall(r"\d+", text.split("/")[0]):
            assert low <= int(number) <= high, text


# --- (a) a systemd user timer ------------------------------------------------------------

def test_systemd_timer_is_written_verified_and_its_command_runs(tmp_path, home, saved_crontab):
    targets = local_list(tmp_path / "my list.txt")
    db = tmp_path / "results" / "probe.db"
    rc, out, err = probe_sync("schedule", "install", "--via", "systemd", "--every", "6h", "--list", str(targets),
                              "--db", str(db), "--max-runtime", "2m", "--max-bytes", "50MB", "--", *OFFLINE_RUN,
                              env=home)
    assert rc == 0, err
    # no user manager answers here: the files are written, and the volunteer is told how to start them
    assert "systemd does not answer here" in out
    assert "systemctl --user daemon-reload && systemctl --user enable --now bynet-probe.timer" in out
    service = (unit_dir(home) / "bynet-probe.service").read_text()
    timer = (unit_dir(home) / "bynet-probe.timer").read_text()
    values = sched.unit_values(timer)
    assert values["Persistent"] == ["true"] and values["RandomizedDelaySec"] == ["30min"]
    assert values["WantedBy"] == ["timers.target"]
    assert interval_of(sched.slot_from_calendar(values["OnCalendar"][0])) == 6 * HOUR
    assert "bynet-probe" in sched.unit_values(service)["Description"][0]

    (exec_start,) = sched.unit_values(service)["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[:5] == [sys.executable, "-m", "probe", "run", "--quiet"]
    for option, value in (("--db", str(db)), ("--targets", str(targets)), ("--max-runtime", "2m"),
                          ("--max-bytes", "50MB")):
        assert argv[argv.index(option) + 1] == value
    assert "--yes" not in argv and argv[-len(OFFLINE_RUN):] == OFFLINE_RUN
    environment = dict(shlex.split(e)[0].split("=", 1) for e in sched.unit_values(service).get("Environment", []))
    assert environment["BYNET_PROBE_CONFIG"] == os.environ["BYNET_PROBE_CONFIG"]

    if shutil.which("systemd-analyze"):
        p = subprocess.run(["systemd-analyze", "verify", "--user", str(unit_dir(home) / "bynet-probe.timer"),
                            str(unit_dir(home) / "bynet-probe.service")], capture_output=True, text=True,
                           env={**os.environ, **home})
        assert p.returncode == 0 and "ignoring" not in p.stderr, p.stderr

    # what the timer would start, started the way systemd starts it
    done = run_as_scheduled(argv, environment)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert rows(db, "select status, target_count from runs") == [("finished", 3)]
    assert rows(db, "select count(*) from measurements") == [(3,)]

    rc, out, err = probe_sync("schedule", "show", "--json", env=home)
    assert rc == 0, err
    (found,) = json.loads(out)["installed"]
    assert found["via"] == "systemd" and found["every"] == "6h" and found["command"] == argv
    assert found["environment"] == environment and found["state"] is None

    # installing again replaces it: one timer, the new interval
    rc, out, err = probe_sync("schedule", "install", "--via", "systemd", "--every", "1d", "--db", str(db), env=home)
    assert rc == 0, err
    assert sorted(p.name for p in unit_dir(home).iterdir()) == ["bynet-probe.service", "bynet-probe.timer"]
    rc, out, err = probe_sync("schedule", "show", env=home)
    assert rc == 0 and out.startswith("a systemd user timer (") and "): every 1d, next unknown: " in out
    assert out.count("a systemd user timer") == 1 and "--targets" not in out

    rc, out, err = probe_sync("schedule", "remove", env=home)
    assert rc == 0 and out.startswith("removed the systemd user timer: "), err
    assert list(unit_dir(home).iterdir()) == []
    rc, out, _ = probe_sync("schedule", "show", env=home)
    assert rc == 0 and out.startswith("no schedule installed")


# --- (b) a crontab line ------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("crontab") is None, reason="no crontab command (Debian package cron)")
def test_crontab_line_keeps_the_volunteers_lines_and_its_command_runs(tmp_path, home, saved_crontab):
    theirs = ('MAILTO=""\n# the volunteer\'s own jobs\n0 3 * * * /bin/true backup\n'
              '#5 */6 * * * a line they turned off # bynet-probe schedule\n')
    subprocess.run(["crontab", "-"], input=theirs, text=True, check=True)
    targets = local_list(tmp_path / "list.txt")
    db = tmp_path / "p.db"

    rc, out, err = probe_sync("schedule", "install", "--via", "cron", "--every", "6h", "--list", str(targets),
                              "--db", str(db), "--max-runtime", "2m", "--", *OFFLINE_RUN, env=home)
    assert rc == 0, err
    assert out.startswith("installed: a line in your crontab, every 6h, next ")
    crontab = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=True).stdout
    assert crontab.startswith(theirs)
    (line,) = crontab[len(theirs):].splitlines()
    assert line.endswith(" # bynet-probe schedule")
    fields, command = line.split(None, 5)[:5], line.split(None, 5)[5]
    assert_valid_cron_schedule(fields)
    assert interval_of(sched.slot_from_cron(" ".join(fields))) == 6 * HOUR

    # what cron would start, started the way cron starts it (/bin/sh -c, a bare environment)
    done = run_as_scheduled([], {}, shell=command)
    assert done.returncode == 0, done.stderr
    assert rows(db, "select status, target_count from runs") == [("finished", 3)]
    log = Path(home["XDG_DATA_HOME"]) / "bynet-probe" / "schedule.log"
    assert log.exists() and "Traceback" not in log.read_text()

    # installing again leaves one line of ours, the volunteer's untouched
    rc, out, err = probe_sync("schedule", "install", "--via", "cron", "--every", "1d", env=home)
    assert rc == 0, err
    crontab = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=True).stdout
    assert crontab.startswith(theirs) and len(sched.our_cron_lines(crontab)) == 1
    (line,) = sched.our_cron_lines(crontab)
    assert_valid_cron_schedule(line.split()[:5])
    assert interval_of(sched.slot_from_cron(" ".join(line.split()[:5]))) == DAY

    rc, out, err = probe_sync("schedule", "show", env=home)
    assert rc == 0, err
    assert out.startswith("a line in your crontab: every 1d, next ") and "schedule.log" in out

    rc, out, err = probe_sync("schedule", "remove", env=home)
    assert rc == 0 and out.strip() == "removed the line from your crontab", err
    crontab = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=True).stdout
    assert crontab == theirs


# --- (c) consent, and refusals -----------------------------------------------------------

def test_no_schedule_without_the_notice_accepted_and_yes_accepts_it(tmp_path, home, saved_crontab):
    fresh = tmp_path / "fresh" / "config.ini"
    env = {**home, "BYNET_PROBE_CONFIG": str(fresh)}
    rc, out, err = probe_sync("schedule", "install", "--via", "systemd", "--every", "6h", env=env)
    assert rc == 2 and out == ""
    assert err.strip().splitlines() == [
        "error: no schedule installed: scheduled runs measure without asking, so accept the notice first: run "
        "`probe run` once by hand (it shows the notice), or add --yes (read it: probe notice)"]
    assert not unit_dir(home).exists() and not userconfig.consent_given(fresh)

    rc, out, err = probe_sync("schedule", "install", "--via", "systemd", "--every", "6h", "--yes", env=env)
    assert rc == 0, err
    assert "accepted with --yes" in err
    assert userconfig.consent_given(fresh)
    assert "how = schedule --yes" in fresh.read_text()
    service = (unit_dir(home) / "bynet-probe.service").read_text()
    assert f"Environment=BYNET_PROBE_CONFIG={fresh}" in service
    argv = shlex.split(sched.unit_values(service)["ExecStart"][0])
    assert "--yes" not in argv


@pytest.mark.parametrize("args, message", [
    (["--every", "30m"], "error: runs more often than every hour would load the sites and your link; "
                         "use --every 1h or more"),
    (["--every", "2w"], "error: '2w' is not a duration (use e.g. 6h, 1d)"),
    (["--every", "6h", "--max-bytes", "lots"], "error: 'lots' is not valid here (use e.g. 200MB)"),
    (["--every", "6h", "--", "--bogus"], "error: after --, the options of `probe run`: No such option '--bogus'."),
    (["--every", "6h", "--", "--yes"], "error: after --, the options of `probe run`: --yes cannot be part of "
                                       "a schedule"),
    (["--every", "6h", "--", "--db", "x.db"], "error: after --, the options of `probe run`: give --db to "
                                              "`probe schedule install` itself"),
    (["--every", "6h", "--", "--concurrency", "999"], "error: after --, the options of `probe run`: "),
    (["--every", "6h", "--db", '/tmp/say "hi"/p.db'], "error: '/tmp/say \"hi\"/p.db' holds a double quote"),
])
def test_bad_install_options_are_one_line_and_install_nothing(tmp_path, home, args, message):
    rc, out, err = probe_sync("schedule", "install", "--via", "systemd", *args, env=home)
    assert rc == 2, err
    (line,) = err.strip().splitlines()
    assert line.startswith(message)
    assert not unit_dir(home).exists()


def test_an_interval_cron_cannot_keep_is_rounded_and_said(tmp_path, home, saved_crontab):
    rc, out, err = probe_sync("schedule", "install", "--via", "systemd", "--every", "5h", env=home)
    assert rc == 0, err
    assert "every 5h cannot be kept exactly; the runs are every 6h instead" in err
    timer = (unit_dir(home) / "bynet-probe.timer").read_text()
    assert interval_of(sched.slot_from_calendar(sched.unit_values(timer)["OnCalendar"][0])) == 6 * HOUR
