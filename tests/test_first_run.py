"""A volunteer's first runs: the notice, accepted once; the settings file; the shipped
list and the data directory from any folder (and from an installed wheel); the data cap;
a run on another network than the last; -q and -v. The real CLI against real local
servers throughout."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import QUIET, ROOT, probe, rows
from servers import NXDOMAIN, Answer, DnsServer, WebServer, site_app

from probe.core import userconfig

NOTICE_START = "Before your first measurement, please read this."


def fresh_user(tmp_path: Path) -> dict[str, str]:
    """A volunteer who never ran the probe: no config, an empty home and data directory."""
    home = tmp_path / "home"
    home.mkdir()
    return {"BYNET_PROBE_CONFIG": str(home / ".config" / "bynet-probe" / "config.ini"), "HOME": str(home),
            "XDG_DATA_HOME": "", "XDG_CONFIG_HOME": ""}


@pytest.fixture
async def nx_dns():
    async with DnsServer({"gone.lab.test": NXDOMAIN}) as dns:
        yield dns


def one_target(tmp_path: Path) -> Path:
    path = tmp_path / "list.txt"
    path.write_text("https://gone.lab.test/ NEWS\n")
    return path


async def test_without_consent_nothing_is_measured_and_the_notice_says_why(tmp_path, nx_dns):
    env = fresh_user(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, out, err = await probe("run", "--targets", str(one_target(tmp_path)), "--resolver", nx_dns.address, *QUIET,
                               cwd=empty, env=env)
    assert rc == 2
    assert err.startswith(NOTICE_START)
    for words in ("What is stored", "Not your public IP address", "can see that this computer connects",
                  "personal and legal risk", "Ctrl-C stops a run"):
        assert words in err
    assert err.strip().splitlines()[-1].startswith("error: nothing measured: accept the notice")
    assert not (tmp_path / "home" / ".local").exists()  # no database was made
    assert not Path(env["BYNET_PROBE_CONFIG"]).exists()  # and nothing remembered


async def test_yes_accepts_once_and_results_go_to_the_data_directory(tmp_path, nx_dns):
    env = fresh_user(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ("run", "--targets", str(one_target(tmp_path)), "--resolver", nx_dns.address, *QUIET)
    rc, _, err = await probe(*args, "--yes", cwd=empty, env=env)
    assert rc == 0, err
    assert "accepted with --yes" in err and NOTICE_START not in err
    db = tmp_path / "home" / ".local" / "share" / "bynet-probe" / "probe.db"
    assert db.exists() and not (empty / "results").exists()
    assert "results go to: ~/.local/share/bynet-probe/probe.db" in err
    assert str(tmp_path / "home") not in err  # the home folder is never spelt out
    config = Path(env["BYNET_PROBE_CONFIG"]).read_text()
    assert "[consent]" in config and "how = --yes" in config
    # the second run asks nothing and says nothing about it
    rc, _, err = await probe(*args, cwd=empty, env=env)
    assert rc == 0, err
    assert NOTICE_START not in err and "accepted" not in err
    assert rows(db, "select count(*) from runs") == [(2,)]


def test_on_a_terminal_the_volunteer_types_yes_once(tmp_path):
    """The notice on a real terminal (a pty), answered by typing; then never again."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LANGUAGE": "en", **fresh_user(tmp_path)}
    targets = tmp_path / "list.txt"
    targets.write_text("https://gone.lab.test/\n")

    def session(answer: bytes) -> tuple[int, str]:
        pid, fd = pty.fork()
        if pid == 0:  # the child: the probe on a terminal, with nothing to measure but a dead resolver
            os.chdir(tmp_path)
            os.execve(sys.executable, [sys.executable, "-m", "probe", "run", "--targets", str(targets),
                                       "--resolver", "127.0.0.1:9", "--no-control", "--max-runtime", "20s", *QUIET],
                      env)
        seen = b""
        sent = False
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            seen += data
            if not sent and b"Type yes" in seen:
                os.write(fd, answer + b"\n")
                sent = True
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")

    rc, screen = session(b"no")
    assert rc == 2 and NOTICE_START in screen and "the notice was not accepted" in screen
    rc, screen = session(b"yes")
    assert rc == 0, screen
    assert NOTICE_START in screen and "This run measures 1 website" in screen
    rc, screen = session(b"")
    assert rc == 0, screen
    assert NOTICE_START not in screen


async def test_settings_file_holds_list_db_concurrency_caps_and_language(tmp_path, nx_dns):
    env = fresh_user(tmp_path)
    userconfig.record_consent(Path(env["BYNET_PROBE_CONFIG"]))
    targets = one_target(tmp_path)
    db = tmp_path / "mine.db"
    for key, value in (("list", str(targets)), ("db", str(db)), ("concurrency", "3"), ("max-bytes", "50MB"),
                       ("max-runtime", "1h"), ("lang", "ru")):
        rc, out, err = await probe("config", "set", key, value, env=env)
        assert rc == 0, err
    rc, out, err = await probe("config", "show", "--lang", "en", env=env)
    assert rc == 0 and "concurrency = 3" in out and "max-bytes = 50MB" in out and "lang = ru" in out
    for key, bad in (("concurrency", "0"), ("max-bytes", "lots"), ("lang", "de"), ("list", str(tmp_path / "no"))):
        rc, _, err = await probe("config", "set", key, bad, "--lang", "en", env=env)
        assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, (key, err)
    # a run with no flags uses them all
    rc, out, err = await probe("run", "--resolver", nx_dns.address, "--json", *QUIET, cwd=tmp_path, env=env)
    assert rc == 0, err
    assert rows(db, "select targets_source, target_count from runs") == [("list.txt", 1)]
    notice = json.loads(out.splitlines()[0])
    assert notice["event"] == "notice" and "Этот" in notice["text"] or "measures" not in notice["text"]
    rc, out, err = await probe("config", "unset", "lang", env=env)
    assert rc == 0


async def test_the_data_cap_holds_and_the_rest_resumes(tmp_path):
    """Twenty 400 kB pages against a 5 MB cap, eight at a time: the run stops at the cap
    (what is in flight then is cancelled, so it overshoots by at most one read per
    fetch), says so, and --resume measures the rest."""
    n = 20
    zone = {f"s{i}.lab.test": Answer(a=["127.0.0.1"]) for i in range(n)}
    async with DnsServer(zone) as dns, WebServer(site_app(body_size=400_000)) as web:
        targets = tmp_path / "big.txt"
        targets.write_text("".join(f"{web.url('/', hostname=f's{i}.lab.test')}\n" for i in range(n)))
        db = tmp_path / "p.db"
        rc, out, err = await probe("run", "--targets", str(targets), "--db", str(db), "--resolver", dns.address,
                                   "--no-control", "--max-bytes", "5MB", "--json", *QUIET)
        assert rc == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        finished = next(e for e in events if e["event"] == "run_finished")
        assert finished["status"] == "data_cap" and 8 <= finished["measured"] < n
        assert finished["bytes"] <= 5_000_000 + 8 * 65536
        assert rows(db, "select status from runs") == [("data_cap",)]
        stored = rows(db, "select coalesce(sum(body_length), 0) from http_requests")[0][0]
        assert stored <= 5_000_000
        rc, _, err = await probe("run", "--resume", "--db", str(db), "--no-control", "--max-bytes", "50MB")
        assert rc == 0, err
        assert "stopped at the data cap" not in err and "downloaded" in err
        assert rows(db, "select count(*) from measurements") == [(n,)]


async def test_a_run_on_another_network_than_the_last_says_so(tmp_path, nx_dns):
    db = tmp_path / "p.db"
    base = ("run", "--targets", str(one_target(tmp_path)), "--db", str(db), "--resolver", nx_dns.address, *QUIET)
    rc, _, err = await probe(*base, "--cc", "BY", "--asn", "AS6697")
    assert rc == 0 and "not the one of the last run" not in err
    rc, _, err = await probe(*base, "--cc", "BY", "--asn", "AS25106")
    assert rc == 0, err
    assert "this network is not the one of the last run" in err and "AS6697 -> AS25106" in err
    notes = [json.loads(n) for (n,) in rows(db, "select notes from runs order by started_at")]
    assert not any("last run" in n for n in notes[0])
    assert any("network AS6697 -> AS25106" in n for n in notes[1])


async def test_quiet_says_only_the_answer_and_verbose_every_site(tmp_path, nx_dns):
    base = ("run", "--targets", str(one_target(tmp_path)), "--resolver", nx_dns.address, *QUIET)
    rc, _, quiet = await probe(*base, "--db", str(tmp_path / "q.db"), "-q")
    rc2, _, normal = await probe(*base, "--db", str(tmp_path / "n.db"))
    assert rc == rc2 == 0
    assert "This run measures" in normal and "This run measures" not in quiet
    assert "[1/1]" in normal and "[1/1]" not in quiet
    assert "verdicts:" in quiet and "results go to:" in quiet
    for command in (("show",), ("report",), ("analyze",), ("explain", "gone.lab.test"), ("targets", "lint",
                    str(one_target(tmp_path))), ("config", "show")):
        rc, _, err = await probe(*command, *(["--db", str(tmp_path / "q.db")] if command[0] in
                                            ("show", "report", "analyze", "explain") else []), "-q")
        assert rc == 0, (command, err)


def test_an_installed_wheel_runs_the_shipped_list_from_any_folder(tmp_path):
    """`pip install` of the built wheel, then `probe` from an empty folder: the list that
    comes with the package is there, and results go to the data directory."""
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("bynet_probe-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(fresh_user(tmp_path), LANGUAGE="en")
    probe_bin = str(venv / "bin" / "probe")
    listed = subprocess.run([probe_bin, "run", "--list", "--json"], cwd=empty, env=env, capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    urls = [json.loads(line)["url"] for line in listed.stdout.splitlines()]
    assert len(urls) >= 150 and "https://charter97.org/" in urls
    # the installed copy is the one that runs, not the checkout's
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import probe; print(probe.__file__)"], cwd=empty,
                           env=env, capture_output=True, text=True, timeout=60)
    assert str(venv) in where.stdout
    notice = subprocess.run([probe_bin, "notice", "--lang", "be"], cwd=empty, env=env, capture_output=True, text=True,
                            timeout=60)
    assert notice.returncode == 0 and "Before your first" not in notice.stdout  # the catalogues came along
    rc = asyncio.run(_wheel_run(probe_bin, empty, env))
    assert rc[0] == 0, rc[1]
    err = rc[1]
    assert err.count(NOTICE_START) == 0 and "accepted with --yes" in err
    assert "results go to: ~/.local/share/bynet-probe/probe.db" in err
    db = tmp_path / "home" / ".local" / "share" / "bynet-probe" / "probe.db"
    assert rows(db, "select target_count from runs")[0][0] == len(urls)
    assert rows(db, "select count(*) from measurements")[0][0] > 0


async def _wheel_run(probe_bin: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """The shipped list on a network where no name resolves (a local DNS server that
    answers NXDOMAIN to everything): quick, and nothing leaves the machine."""
    async with DnsServer({}) as dns:
        proc = await asyncio.create_subprocess_exec(
            probe_bin, "run", "--yes", "--resolver", dns.address, "--max-runtime", "15s", *QUIET, cwd=cwd, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
        _, err = await asyncio.wait_for(proc.communicate(), 90)
    return proc.returncode or 0, err.decode(errors="replace")


async def test_a_hand_edited_config_file_with_a_bad_value_is_one_line(tmp_path, nx_dns):
    env = fresh_user(tmp_path)
    config = Path(env["BYNET_PROBE_CONFIG"])
    userconfig.record_consent(config)
    with config.open("a") as fh:
        fh.write("\n[probe]\nconcurrency = lots\n")
    rc, _, err = await probe("run", "--targets", str(one_target(tmp_path)), "--resolver", nx_dns.address, *QUIET,
                             env=env)
    assert rc == 2 and err.count("\n") == 1 and "concurrency must be a whole number" in err
