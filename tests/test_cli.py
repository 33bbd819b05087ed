"""The `probe` command end to end: the real CLI in a subprocess against real local
servers, and the SQLite it leaves behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest
from clirun import QUIET, ROOT, probe, rows
from servers import NXDOMAIN, Answer, Behaviour, DnsServer, RawTcpServer, WebServer, site_app

from probe import store


@pytest.fixture
async def world(pki):
    """Three lab sites: one fine over HTTPS, one whose name does not exist, one whose
    TLS handshake is reset after the ClientHello (SNI filtering)."""
    zone: dict[str, Behaviour] = {
        "ok.lab.test": Answer(a=["127.0.0.1"]),
        "gone.lab.test": NXDOMAIN,
        "reset.lab.test": Answer(a=["127.0.0.1"]),
        "slow.lab.test": Answer(a=["127.0.0.1"]),
    }
    async with DnsServer(zone) as dns, WebServer(site_app(title="OK site"), ssl_context=pki.server_context(
        "ok.lab.test", "slow.lab.test"
    )) as web, RawTcpServer("reset_after_data") as reset:
        yield {"dns": dns, "web": web, "reset": reset}


def write_targets(tmp_path: Path, world) -> Path:
    web, reset = world["web"], world["reset"]
    path = tmp_path / "targets.txt"
    path.write_text(
        "# lab targets\n"
        f"{web.url('/', hostname='ok.lab.test')} NEWS fine site\n"
        "https://gone.lab.test/ NEWS name removed\n"
        f"https://reset.lab.test:{reset.port}/ HUMR SNI filtered\n"
    )
    return path


def lab_args(world, ca_file: str, db: Path, scale: float = 0.3) -> list[str]:
    return ["--db", str(db), "--resolver", world["dns"].address, "--ca-file", ca_file,
            "--timeout-scale", str(scale), *QUIET]


async def test_run_stores_every_target_and_says_what_it_does(tmp_path, world, ca_file):
    db = tmp_path / "results" / "probe.db"
    targets = write_targets(tmp_path, world)
    rc, out, err = await probe("run", "--targets", str(targets), "--cc", "BY", "--asn", "6697",
                               "--lab-network", "127.0.0.0/8", *lab_args(world, ca_file, db))
    assert rc == 0, err
    assert "This run measures 3 websites" in err and "Your public IP address is not stored" in err
    assert "no control helper" in err
    assert "3 measured" in err
    (run,) = rows(db, "select status, cc, asn, probe_ip, target_count from runs")
    assert run == ("finished", "BY", "AS6697", None, 3)
    by_url = dict(rows(db, "select url, measurement_id from measurements"))
    assert len(by_url) == 3
    failures = rows(db, "select m.url, q.failure from dns_queries q join measurements m using (measurement_id) "
                        "where q.query_type = 'A'")
    assert ("https://gone.lab.test/", "dns_nxdomain") in failures
    tls = rows(db, "select failure, failure_stage from tls_handshakes t join measurements m using (measurement_id) "
                   "where m.url like 'https://reset%' and sni_role = 'target'")
    assert tls == [("connection_reset", "after_client_hello")]
    ok = rows(db, "select status, title from http_requests h join measurements m using (measurement_id) "
                  "where m.url like 'https://ok%'")
    assert ok == [(200, "OK site")]
    assert rows(db, "select count(*) from run_targets where status = 'done'") == [(3,)]
    # the run ends classified, and says so in one line; without a control, low confidence
    verdicts = dict(rows(db, "select m.url, v.verdict from verdicts v join measurements m using (measurement_id)"))
    assert verdicts["https://gone.lab.test/"] == "dns.nxdomain"
    # that server resets whatever is sent, the harmless-SNI hello too: the address, not the name
    assert verdicts[f"https://reset.lab.test:{world['reset'].port}/"] == "tcp.reset"
    # without a control, a name that does not exist and a server that resets everything
    # could be sites that are down for everyone: named, but not called blocked
    assert dict(rows(db, "select verdict, blocked from verdicts")) == {"dns.nxdomain": None, "tcp.reset": None,
                                                                       "ok": 0}
    assert "verdicts: 0 of 3 sites look blocked, 2 can't tell (" in err and "1 ok" in err
    assert "can't tell: 2 sites failed in ways censors use" in err
    assert "--control URL" in err and "probe report --db" in err


async def test_a_run_also_classifies_older_runs_an_older_probe_left_behind(tmp_path, world, ca_file):
    from probe.core.verdicts import CLASSIFIER_VERSION

    db = tmp_path / "p.db"
    targets = write_targets(tmp_path, world)
    rc, _, err = await probe("run", "--targets", str(targets), *lab_args(world, ca_file, db))
    assert rc == 0, err
    conn = sqlite3.connect(db)
    conn.execute("update verdicts set classifier_version = '0.9.0'")  # as an older probe wrote them
    conn.commit()
    conn.close()
    one = tmp_path / "one.txt"
    one.write_text("https://gone.lab.test/\n")
    rc, _, err = await probe("run", "--targets", str(one), *lab_args(world, ca_file, db))
    assert rc == 0, err
    assert "verdicts: 0 of 1 site looks blocked, 1 can't tell (dns.nxdomain 1)" in err  # about this run only
    assert rows(db, "select count(*) from measurements") == [(4,)]
    assert rows(db, "select count(*) from verdicts where classifier_version = ?", [CLASSIFIER_VERSION]) == [(4,)]


async def test_json_logs_are_one_event_per_line(tmp_path, world, ca_file):
    db = tmp_path / "p.db"
    rc, out, err = await probe("run", "--targets", str(write_targets(tmp_path, world)), "--json",
                               "--lab-network", "127.0.0.0/8", *lab_args(world, ca_file, db))
    assert rc == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "notice" and kinds[1] == "run_started" and kinds[-2:] == ["run_finished", "verdicts"]
    assert kinds.count("measured") == 3
    measured = {e["url"]: e for e in events if e["event"] == "measured"}
    # each line's hint is what the verdict at the end says (no control here: can't tell)
    verdicts = {url: (blocked, verdict) for url, blocked, verdict in rows(
        db, "select m.url, v.blocked, v.verdict from verdicts v join measurements m using (measurement_id)")}
    assert verdicts["https://gone.lab.test/"] == (None, "dns.nxdomain")
    assert measured["https://gone.lab.test/"]["hint"] == "cant_tell"
    assert measured["https://gone.lab.test/"]["anomaly_hint"] is False
    assert {u: e["hint"] for u, e in measured.items()} == {
        u: ("cant_tell" if b is None else "blocked" if b else v if v in ("down", "error") else "ok")
        for u, (b, v) in verdicts.items()}
    assert events[-2]["measured"] == 3 and events[-2]["status"] == "finished"
    (summary,) = [e for e in events if e["event"] == "verdicts"]
    assert summary["counts"] == {"ok": 1, "dns.nxdomain": 1, "tcp.reset": 1}
    assert summary["cant_tell"] == {"dns.nxdomain": 1, "tcp.reset": 1} and summary["low_confidence_blocked"] == 0


async def test_show_prints_runs_and_the_evidence_of_one_url(tmp_path, world, ca_file):
    db = tmp_path / "p.db"
    targets = write_targets(tmp_path, world)
    rc, _, err = await probe("run", "--targets", str(targets), *lab_args(world, ca_file, db))
    assert rc == 0, err
    rc, out, err = await probe("show", "--db", str(db))
    assert rc == 0 and "finished" in out
    reset_url = f"https://reset.lab.test:{world['reset'].port}/"
    rc, out, err = await probe("show", "--db", str(db), reset_url)
    assert rc == 0, err
    for text in ("DNS", "TCP", "TLS", "HTTP", "connection_reset", "after_client_hello", "benign SNI", "127.0.0.1"):
        assert text in out, text
    rc, out, _ = await probe("show", "--db", str(db), "ok.lab.test")
    assert "OK site" in out and "200" in out and "Lab CA" in out
    rc, out, _ = await probe("show", "--db", str(db), "--json", "gone.lab.test")
    data = json.loads(out)
    assert data["local"]["dns"][0]["failure"] == "dns_nxdomain"
    rc, _, err = await probe("show", "--db", str(db), "never.measured.test")
    assert rc == 2 and err.count("\n") == 1


async def test_list_shows_targets_and_measures_nothing(tmp_path):
    targets = tmp_path / "t.txt"
    targets.write_text("https://charter97.org/ NEWS\nhttps://example.org/ PORN adult\nhttps://spring96.org/ HUMR\n")
    rc, out, err = await probe("run", "--targets", str(targets), "--list", "--exclude-category", "porn",
                               "--db", str(tmp_path / "p.db"))
    assert rc == 0, err
    assert "charter97.org" in out and "spring96.org" in out and "example.org" not in out
    assert "2 targets would be measured" in out
    assert not (tmp_path / "p.db").exists()


@pytest.mark.parametrize(
    "content, expected",
    [
        ("https://ok.test/\nftp://files.test/\n", ":2:"),
        ("https://ok.test/ NOTACODE\n", ":1:"),
        ("charter97.org\n", ":1:"),
    ],
)
async def test_bad_target_lines_are_one_line_errors(tmp_path, content, expected):
    targets = tmp_path / "t.txt"
    targets.write_text(content)
    rc, out, err = await probe("run", "--targets", str(targets), "--db", str(tmp_path / "p.db"), *QUIET)
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err
    assert "Traceback" not in err


async def test_skip_invalid_warns_and_measures_the_rest(tmp_path, world, ca_file):
    targets = tmp_path / "t.txt"
    targets.write_text("ftp://files.test/\nhttps://gone.lab.test/\nhttps://gone.lab.test/\n")
    db = tmp_path / "p.db"
    rc, out, err = await probe("run", "--targets", str(targets), "--skip-invalid", *lab_args(world, ca_file, db))
    assert rc == 0, err
    assert "warning:" in err and ":1:" in err
    assert rows(db, "select count(*) from measurements") == [(1,)]  # the duplicate is measured once


async def test_missing_targets_file(tmp_path):
    rc, _, err = await probe("run", "--targets", str(tmp_path / "nope.txt"), *QUIET)
    assert rc == 2 and "no such file" in err and err.count("\n") == 1


@pytest.mark.parametrize("kind", ["garbage", "newer"])
async def test_unusable_database_is_refused_untouched(tmp_path, kind):
    db = tmp_path / "p.db"
    if kind == "garbage":
        db.write_bytes(b"definitely not sqlite" * 200)
    else:
        d = store.open_db(db)
        d.table("schema_version").insert({"version": store.SCHEMA_VERSION + 5, "description": "x", "applied_at": "now"})
        d.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        d.conn.close()
    before = db.read_bytes()
    targets = tmp_path / "t.txt"
    targets.write_text("https://ok.test/\n")
    for args in (["run", "--targets", str(targets), "--db", str(db), *QUIET], ["show", "--db", str(db)]):
        rc, _, err = await probe(*args)
        assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
        assert ("newer" in err) if kind == "newer" else ("not a SQLite database" in err)
    assert db.read_bytes() == before


async def test_unreachable_control_helper_is_a_clear_error(tmp_path):
    from servers import unused_port

    targets = tmp_path / "t.txt"
    targets.write_text("https://ok.test/\n")
    rc, _, err = await probe("run", "--targets", str(targets), "--db", str(tmp_path / "p.db"),
                             "--control", f"http://127.0.0.1:{unused_port()}", *QUIET)
    assert rc == 2 and "control helper" in err and "unreachable" in err and err.count("\n") == 1


def slow_targets(tmp_path: Path, world, n: int, delay: float) -> Path:
    web = world["web"]
    path = tmp_path / "slow.txt"
    path.write_text("".join(f"{web.url(f'/slow?delay={delay}&i={i}', hostname='slow.lab.test')}\n" for i in range(n)))
    return path


async def test_resume_after_kill_9_loses_and_duplicates_nothing(tmp_path, world, ca_file):
    db = tmp_path / "p.db"
    targets = slow_targets(tmp_path, world, 8, 0.6)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "probe", "run", "--targets", str(targets), "--concurrency", "2",
        *lab_args(world, ca_file, db, scale=1), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        if db.exists():
            try:
                if rows(db, "select count(*) from measurements")[0][0] >= 3:
                    break
            except sqlite3.OperationalError:
                pass
    proc.kill()  # SIGKILL: no cleanup at all
    await proc.wait()
    done_before = rows(db, "select count(*) from measurements")[0][0]
    assert 3 <= done_before < 8
    assert rows(db, "select status from runs") == [("running",)]

    rc, out, err = await probe("run", "--resume", "--db", str(db))
    assert rc == 0, err
    assert f"{8 - done_before} targets left" in err
    urls = [r[0] for r in rows(db, "select url from measurements")]
    assert len(urls) == 8 and len(set(urls)) == 8
    assert rows(db, "select status from runs") == [("finished",)]
    rc, _, err = await probe("run", "--resume", "--db", str(db))
    assert rc == 0 and "nothing to resume" in err


async def test_max_runtime_is_a_hard_deadline(tmp_path, world, ca_file):
    db = tmp_path / "p.db"
    targets = slow_targets(tmp_path, world, 6, 20)
    t0 = time.monotonic()
    rc, out, err = await probe("run", "--targets", str(targets), "--max-runtime", "2s", "--concurrency", "3",
                               *lab_args(world, ca_file, db, scale=2))
    elapsed = time.monotonic() - t0
    assert rc == 0, err
    assert elapsed < 2 + 4, f"took {elapsed:.1f}s"
    assert "stopped at --max-runtime" in err and "Resume with" in err
    assert rows(db, "select status from runs") == [("timed_out",)]
    assert rows(db, "select count(*) from run_targets where status = 'not_measured'") == [(3,)]
    assert rows(db, "select count(*) from run_targets where status = 'pending'") == [(3,)]
    assert rows(db, "select count(*) from measurements") == [(0,)]


async def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path, world, ca_file):
    db = tmp_path / "p.db"
    targets = slow_targets(tmp_path, world, 4, 20)
    rc, out, err = await probe("run", "--targets", str(targets), *lab_args(world, ca_file, db, scale=2),
                               send_signal_after=2.0, timeout=20)
    assert rc == 130, err
    assert "Resume with: probe run --resume" in err and "Traceback" not in err
    assert rows(db, "select status from runs") == [("interrupted",)]


async def test_shipped_target_list_runs_and_records_every_target(tmp_path):
    """The default targets.txt on a network where nothing resolves: quick, all recorded."""
    async with DnsServer({}) as dns:  # every name: NXDOMAIN
        db = tmp_path / "p.db"
        t0 = time.monotonic()
        rc, out, err = await probe("run", "--db", str(db), "--resolver", dns.address, "--concurrency", "32", *QUIET,
                                   timeout=120)
        elapsed = time.monotonic() - t0
    assert rc == 0, err
    n = rows(db, "select target_count from runs")[0][0]
    assert n >= 150
    assert rows(db, "select count(*) from measurements") == [(n,)]
    assert rows(db, "select count(distinct m.url) from measurements m join dns_queries q using (measurement_id) "
                    "where q.failure = 'dns_nxdomain'") == [(n,)]
    assert elapsed < 60
    # no name resolves and there is no control: that says "no network", not "blocked"
    assert rows(db, "select verdict, count(*) from verdicts group by verdict") == [("error", n)]
    assert f"verdicts: 0 of {n} sites look blocked, {n} error" in err and "nothing could be measured" in err
    # the lines as it went agree: none says blocked, and once a few names have failed
    # (the classifier's "no network" rule needs 5), each says error
    assert "BLOCKED" not in err and err.count(" error https://") >= n - 32 - 5


def test_help_texts_say_plainly_what_things_do():
    from click.testing import CliRunner

    from probe.cli.main import main

    result = CliRunner().invoke(main, ["run", "--help"])
    assert result.exit_code == 0
    for text in ("--resume", "--max-runtime", "--store-ip", "--list", "--exclude-category", "--control"):
        assert text in result.output
    result = CliRunner().invoke(main, ["--help"])
    for cmd in ("run", "show", "targets", "control"):
        assert cmd in result.output


async def test_run_with_the_control_helper_stores_both_sides(tmp_path, world, ca_file):
    from servers import unused_port

    port = unused_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    helper = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "probe", "control", "serve", "--port", str(port), "--allow-private",
        "--ca-file", ca_file, "--resolver", world["dns"].address, "--no-system-resolver",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(100):  # wait until it listens
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        db = tmp_path / "p.db"
        rc, out, err = await probe("run", "--targets", str(write_targets(tmp_path, world)),
                                   "--control", f"http://127.0.0.1:{port}", *lab_args(world, ca_file, db))
        assert rc == 0, err
        assert f"control helper at http://127.0.0.1:{port}" in err
        assert rows(db, "select count(*) from control_results where failure is null") == [(3,)]
        ok = rows(db, "select h.side, h.status, h.title from http_requests h join measurements m using (measurement_id) "
                      "where m.url like 'https://ok%' order by side")
        assert ok == [("control", 200, "OK site"), ("local", 200, "OK site")]
        gone = rows(db, "select q.side, q.failure from dns_queries q join measurements m using (measurement_id) "
                        "where m.url like 'https://gone%' and q.query_type = 'A' and q.engine != 'sink' order by side")
        assert gone == [("control", "dns_nxdomain"), ("local", "dns_nxdomain")]
        # the SNI filter is local: the control's handshake to the same server also fails here,
        # as the lab has no separate path; what matters is that both sides are recorded
        assert rows(db, "select count(*) from tls_handshakes where side = 'control'")[0][0] >= 1
        rc, out, _ = await probe("show", "--db", str(db), "ok.lab.test")
        assert "control http://127.0.0.1" in out
    finally:
        helper.send_signal(signal.SIGTERM)
        await asyncio.wait_for(helper.wait(), 10)


async def test_progress_bar_on_a_terminal(tmp_path):
    """On a terminal the run shows a rich progress bar with the anomaly count."""
    import pty

    async with DnsServer({}) as dns:
        targets = tmp_path / "t.txt"
        targets.write_text("https://gone1.lab.test/\nhttps://gone2.lab.test/\n")
        leader, follower = pty.openpty()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160", "TERM": "xterm"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "probe", "run", "--targets", str(targets), "--db", str(tmp_path / "p.db"),
            "--resolver", dns.address, *QUIET, cwd=ROOT, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=follower, stdin=asyncio.subprocess.DEVNULL,
        )
        os.close(follower)
        rc = await asyncio.wait_for(proc.wait(), 30)
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        os.close(leader)
    screen = b"".join(chunks).decode(errors="replace")
    assert rc == 0
    assert "measuring" in screen and "2/2" in screen and "2 can't tell" in screen and "0 look blocked" in screen


async def test_hostile_text_is_shown_as_text_not_rich_markup(tmp_path):
    """A list's note, a page's title or a URL may hold "[/bold]": rich would read it as
    markup and raise on the unmatched closing tag. `run --list`, the run itself and
    `show` print it as it is."""
    title = "[/bold] news [red]"
    zone: dict[str, Behaviour] = {"markup.lab.test": Answer(a=["127.0.0.1"])}
    async with DnsServer(zone) as dns, WebServer(site_app(title=title)) as web:
        targets = tmp_path / "t.txt"
        url = web.url("/", hostname="markup.lab.test")
        targets.write_text(f"{url} NEWS a note with [/bold] in it\n")
        rc, out, err = await probe("run", "--list", "--targets", str(targets))
        assert rc == 0, err
        assert "[/bold] in it" in out
        db = tmp_path / "p.db"
        rc, _, err = await probe("run", "--targets", str(targets), "--db", str(db), "--resolver", dns.address,
                                 "--no-control", *QUIET)
        assert rc == 0, err
    rc, out, err = await probe("show", "markup.lab.test", "--db", str(db))
    assert rc == 0, err
    assert title in out
