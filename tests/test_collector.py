"""The collector and the upload: a real collector (in this process, or `probe collector
serve` in its own, to be killed), real volunteers' databases, the real `probe upload`.

What must hold: a batch is stored whole or not at all, never twice; every refusal is a
4xx JSON reason that changes nothing; an interrupted upload goes on where the
collector's acknowledgement left off; and the collector judges each site across the
networks that uploaded it, and publishes the changes as events."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from clirun import ROOT, probe, rows
from collector_data import add, at, measurement, new_run, volunteer_db
from servers import unused_port

from probe import store
from probe.collector.server import RunningCollector, serve_collector
from probe.collector.service import BATCH_VERSION, CollectorConfig

TOKEN_ENV = "BYNET_PROBE_COLLECTOR_TOKEN"


@pytest.fixture
async def collector(tmp_path) -> AsyncIterator[RunningCollector]:
    async with serve_collector(tmp_path / "collector.db", CollectorConfig()) as running:
        yield running


def _token(running: RunningCollector, name: str) -> str:
    db = store.open_db(running.state.db_path)
    try:
        return store.add_token(db, name)
    finally:
        store.close(db)


def batch_body(db_path: Path, ids: list[str], *, batch_id: str | None = None, **override: Any) -> bytes:
    db = store.open_db(db_path)
    try:
        bundles = [store.bundle(db, mid) for mid in ids]
    finally:
        store.close(db)
    batch = {"batch_version": BATCH_VERSION, "batch_id": batch_id or str(uuid.uuid4()), "probe_version": "t",
             "bundles": bundles, **override}
    return gzip.compress(json.dumps(batch).encode())


async def post(url: str, data: bytes, tok: str | None, path: str = "/api/v1/batches") -> tuple[int, Any]:
    headers = {"Content-Encoding": "gzip"} if path.endswith("batches") else {}
    if tok is not None:
        headers["Authorization"] = f"Bearer {tok}"
    async with aiohttp.ClientSession() as s, s.post(url + path, data=data, headers=headers) as r:
        return r.status, await r.json(content_type=None)


def counts(db: Path) -> dict[str, int]:
    tables = ("measurements", "dns_queries", "tcp_connects", "tls_handshakes", "http_requests", "collected", "runs")
    return {t: rows(db, f"select count(*) from {t}")[0][0] for t in tables}


def env_for(tmp_path: Path, tok: str, name: str = "config.ini") -> dict[str, str]:
    """A volunteer of their own: config file (consent to run given as in conftest)."""
    cfg = tmp_path / name
    if not cfg.exists():
        cfg.write_text("[consent]\nversion = 1\n")
    return {"BYNET_PROBE_CONFIG": str(cfg), TOKEN_ENV: tok}


# --- tokens ------------------------------------------------------------------------------


async def test_tokens_are_shown_once_stored_hashed_listed_and_revoked(tmp_path):
    db = tmp_path / "c.db"
    rc, out, err = await probe("collector", "token", "add", "anna", "--db", str(db))
    assert rc == 0, err
    tok = out.strip()
    assert len(tok) >= 40 and "\n" not in tok and "anna" in err
    assert tok.encode() not in db.read_bytes() and rows(db, "select count(*) from tokens") == [(1,)]
    rc, _, err = await probe("collector", "token", "add", "anna", "--db", str(db))
    assert rc == 2 and "revoke it first" in err and "Traceback" not in err
    rc, out, _ = await probe("collector", "token", "list", "--db", str(db), "--json")
    (listed,) = json.loads(out)
    assert listed["name"] == "anna" and listed["revoked_at"] is None and tok not in out
    rc, _, err = await probe("collector", "token", "revoke", "anna", "--db", str(db))
    assert rc == 0
    rc, _, err = await probe("collector", "token", "revoke", "anna", "--db", str(db))
    assert rc == 2 and "no live token" in err
    rc, out, _ = await probe("collector", "token", "add", "anna", "--db", str(db))  # a new one after revoking
    assert rc == 0 and out.strip() != tok


# --- the protocol's refusals ---------------------------------------------------------------


async def test_refusals_are_4xx_json_and_change_nothing(tmp_path, collector):
    vol = tmp_path / "vol.db"
    ids = volunteer_db(vol, 3)
    good = _token(collector, "good")
    bad_one = _token(collector, "revoked")
    db = store.open_db(collector.state.db_path)
    store.revoke_token(db, "revoked")
    store.close(db)
    cdb = Path(collector.state.db_path)
    before = counts(cdb)
    body = batch_body(vol, ids)
    bomb = gzip.compress(b"[" + b" " * (80 * 1024 * 1024) + b"]")
    cases = [
        (None, body, 401, "unauthenticated"),
        ("not-a-token", body, 401, "unauthenticated"),
        (bad_one, body, 403, "revoked"),
        (good, b"not gzip at all", 400, "malformed"),
        (good, body[: len(body) // 2], 400, "malformed"),  # truncated gzip
        (good, gzip.compress(b"{not json"), 400, "malformed"),
        (good, gzip.compress(b"[1, 2]"), 400, "malformed"),
        (good, bomb, 413, "too_large"),
        (good, batch_body(vol, ids, batch_version=BATCH_VERSION + 1), 422, "newer_schema"),
        (good, batch_body(vol, ids, bundles=[{"bundle_version": 99}]), 422, "newer_schema"),
        (good, batch_body(vol, ids, bundles=[{"bundle_version": 1, "run": {}}]), 400, "malformed"),
        (good, batch_body(vol, ids, bundles=[{}] * 501), 413, "too_large"),
        (good, b"\x1f\x8b" + os.urandom(9 * 1024 * 1024), 413, "too_large"),
    ]
    for tok, data, status, code in cases:
        got, answer = await post(collector.url, data, tok)
        assert (got, answer.get("error")) == (status, code), (tok, data[:20], answer)
        assert isinstance(answer.get("reason"), str) and "\n" not in answer["reason"]
    # one bad bundle among good ones: the whole batch is refused
    mixed = json.loads(gzip.decompress(body))
    mixed["bundles"].append({"bundle_version": 1})
    got, answer = await post(collector.url, gzip.compress(json.dumps(mixed).encode()), good)
    assert got == 400 and answer["reason"].startswith("bundles[3]")
    assert counts(cdb) == before and before["measurements"] == 0


async def test_the_same_batch_twice_stores_once(tmp_path, collector):
    vol = tmp_path / "vol.db"
    ids = volunteer_db(vol, 5)
    tok = _token(collector, "anna")
    body = batch_body(vol, ids, batch_id="b-1")
    status, first = await post(collector.url, body, tok)
    assert status == 200 and sorted(first["accepted"]) == sorted(ids) and first["duplicates"] == []
    cdb = Path(collector.state.db_path)
    after_first = counts(cdb)
    status, second = await post(collector.url, body, tok)
    assert status == 200 and second["accepted"] == [] and sorted(second["duplicates"]) == sorted(ids)
    assert counts(cdb) == after_first and after_first["measurements"] == 5
    assert rows(cdb, "select uploader, count(*) from collected group by uploader") == [("anna", 5)]
    # judged on arrival: a verdict per measurement, and one across networks
    assert rows(cdb, "select count(*) from verdicts") == [(5,)]
    assert rows(cdb, "select count(*) from cross_verdicts") == [(5,)]
    # `known` says what the collector holds
    status, known = await post(collector.url, json.dumps({"ids": [*ids, "nope"]}).encode(), tok, "/api/v1/known")
    assert status == 200 and sorted(known["known"]) == sorted(ids)


async def test_a_token_over_its_rate_gets_429_with_retry_after(tmp_path, collector):
    tok = _token(collector, "busy")
    codes = []
    async with aiohttp.ClientSession() as s:
        for _ in range(CollectorConfig().burst + 5):
            async with s.post(collector.url + "/api/v1/known", json={"ids": []},
                              headers={"Authorization": f"Bearer {tok}"}) as r:
                codes.append((r.status, r.headers.get("Retry-After")))
                body = await r.json()
    assert codes[0][0] == 200 and codes[-1][0] == 429 and int(codes[-1][1] or 0) >= 1
    assert body["error"] == "rate_limited"


# --- the volunteer's side -------------------------------------------------------------------


async def test_upload_sends_what_is_new_and_show_uploads_lists_it(tmp_path, collector):
    vol = tmp_path / "vol.db"
    ids = volunteer_db(vol, 30)
    env = env_for(tmp_path, _token(collector, "anna"))
    # without agreeing to uploads, and no terminal: nothing is sent
    rc, _, err = await probe("upload", "--db", str(vol), "--collector", collector.url, env=env)
    assert rc == 2 and "nothing sent" in err and "Traceback" not in err
    rc, out, err = await probe("upload", "--db", str(vol), "--collector", collector.url, "--yes", env=env)
    assert rc == 0, err
    assert "sent 30 measurements" in err
    cdb = Path(collector.state.db_path)
    assert counts(cdb)["measurements"] == 30
    rc, out, err = await probe("upload", "--db", str(vol), "--collector", collector.url, env=env)
    assert rc == 0 and "nothing new" in err  # agreed once: not asked again
    add(store.open_db(vol), new_run(store.open_db(vol), "BY", "AS6697"), [measurement("https://late.example/")])
    rc, out, err = await probe("upload", "--db", str(vol), "--collector", collector.url, env=env)
    assert rc == 0 and "sent 1 measurement " in err
    rc, out, _ = await probe("show", "uploads", "--db", str(vol), "--json")
    history = json.loads(out)
    assert sum(h["measurements"] for h in history) == 31 and {h["collector"] for h in history} == {collector.url}
    rc, out, _ = await probe("show", "uploads", "--db", str(vol))
    assert collector.url in out and "31" not in out.splitlines()[0]
    assert rows(vol, "select count(distinct measurement_id) from uploads") == [(len(ids) + 1,)]
    # which probe and classifier sent it
    from probe import __version__
    from probe.core.verdicts import CLASSIFIER_VERSION

    assert rows(cdb, "select distinct probe_version, classifier_version from batches") == [
        (__version__, CLASSIFIER_VERSION)]
    # no address of the volunteer and no path of their machine reached the collector
    assert rows(cdb, "select count(*) from runs where probe_ip is not null") == [(0,)]


async def test_upload_failures_are_one_line(tmp_path, collector):
    vol = tmp_path / "vol.db"
    volunteer_db(vol, 2)
    env = env_for(tmp_path, "wrong-token")
    rc, _, err = await probe("upload", "--db", str(vol), "--collector", collector.url, "--yes", env=env)
    assert rc == 2 and "an unknown token" in err and len(err.strip().splitlines()) <= 2
    rc, _, err = await probe("upload", "--db", str(vol), "--collector", f"http://127.0.0.1:{unused_port()}",
                             "--yes", env=env, timeout=60)
    assert rc == 2 and "could not be reached" in err and "Traceback" not in err
    rc, _, err = await probe("upload", "--db", str(vol), "--yes", env={**env, TOKEN_ENV: ""})
    assert rc == 2 and "no collector" in err
    rc, _, err = await probe("upload", "--db", str(vol), "--collector", "ftp://x", env=env)
    assert rc == 2 and "not a collector URL" in err


async def test_an_upload_killed_half_way_resumes_where_the_collector_acknowledged(tmp_path, collector):
    vol = tmp_path / "vol.db"
    ids = volunteer_db(vol, 1000)
    env = env_for(tmp_path, _token(collector, "anna"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "probe", "upload", "-v", "--db", str(vol), "--collector", collector.url, "--yes",
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "LANGUAGE": "en", **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    while b"to go" not in (line := await asyncio.wait_for(proc.stderr.readline(), 60)):
        assert line, "the upload ended before its first batch was acknowledged"
    proc.kill()  # kill -9: mid-upload, a batch in flight
    await proc.wait()
    cdb = Path(collector.state.db_path)
    recorded = rows(vol, "select count(*) from uploads")[0][0]
    assert 200 <= recorded < 1000
    rc, _, err = await probe("upload", "--db", str(vol), "--collector", collector.url, env=env, timeout=120)
    assert rc == 0, err
    assert rows(cdb, "select count(*), count(distinct measurement_id) from measurements") == [(1000, 1000)]
    assert rows(vol, "select count(*) from uploads") == [(1000,)]
    # the second upload sent only what the first had not got acknowledged
    sent = rows(cdb, "select sum(accepted), sum(duplicates) from batches")[0]
    assert sent[0] == 1000 and sent[1] == 0
    assert set(ids) == {r[0] for r in rows(cdb, "select measurement_id from collected")}


async def test_an_acknowledgement_lost_on_the_way_is_not_sent_again(tmp_path, collector):
    """The collector stored a batch but the volunteer never heard: `known` finds it."""
    vol = tmp_path / "vol.db"
    ids = volunteer_db(vol, 10)
    tok = _token(collector, "anna")
    status, _ = await post(collector.url, batch_body(vol, ids[:6]), tok)
    assert status == 200
    rc, _, err = await probe("upload", "--db", str(vol), "--collector", collector.url, "--yes",
                             env=env_for(tmp_path, tok))
    assert rc == 0 and "sent 4 measurements; 6 the collector already had" in err
    cdb = Path(collector.state.db_path)
    assert rows(cdb, "select sum(duplicates) from batches") == [(0,)]


async def test_ten_volunteers_upload_at_once(tmp_path, collector):
    vols = []
    for i in range(10):
        path = tmp_path / f"vol{i}.db"
        volunteer_db(path, 60, asn=f"AS{64500 + i}")
        vols.append((path, env_for(tmp_path, _token(collector, f"v{i}"), f"c{i}.ini")))
    results = await asyncio.gather(*(probe("upload", "--db", str(p), "--collector", collector.url, "--yes", env=e,
                                           timeout=120) for p, e in vols))
    assert [r[0] for r in results] == [0] * 10, [r[2] for r in results]
    cdb = Path(collector.state.db_path)
    assert rows(cdb, "select count(*), count(distinct measurement_id) from measurements") == [(600, 600)]
    assert rows(cdb, "select uploader, count(*) from collected group by uploader order by uploader") == [
        (f"v{i}", 60) for i in range(10)]
    assert rows(cdb, "select count(*) from verdicts") == [(600,)]


async def test_a_run_uploads_by_itself_once_agreed_and_never_offline(tmp_path, collector):
    from servers import WebServer, site_app

    env = env_for(tmp_path, _token(collector, "anna"))
    async with WebServer(site_app(title="A site")) as web_server:
        targets = tmp_path / "t.txt"
        targets.write_text(web_server.url("/") + " NEWS\n")
        vol = tmp_path / "vol.db"
        for key, value in (("collector", collector.url),):
            rc, _, err = await probe("config", "set", key, value, env=env)
            assert rc == 0, err
        common = ("run", "--targets", str(targets), "--db", str(vol), "--no-control", "--no-doh",
                  "--no-vantage-lookup", "--allow-private-targets", "--cc", "BY", "--asn", "AS6697")
        rc, _, err = await probe(*common, env=env)  # not agreed to uploading yet: a run never asks
        assert rc == 0 and "run `probe upload` once" in err
        rc, _, err = await probe(*common, "--offline", env=env)
        assert rc == 0 and "not uploaded" not in err and "sent " not in err
        rc, _, err = await probe("upload", "--db", str(vol), "--yes", env=env)
        assert rc == 0 and "sent 2 measurements" in err
        rc, _, err = await probe(*common, env=env)
        assert rc == 0 and "sent 1 measurement " in err, err
    cdb = Path(collector.state.db_path)
    assert rows(cdb, "select count(*) from measurements") == [(3,)]


# --- kill -9 -------------------------------------------------------------------------------


async def _serve_process(db: Path, port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "probe", "collector", "serve", "--db", str(db), "--port", str(port),
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "LANGUAGE": "en"},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            try:
                async with s.get(f"http://127.0.0.1:{port}/api/v1/health") as r:
                    if r.status == 200:
                        return proc
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    raise AssertionError("the collector did not start")


async def test_a_collector_killed_mid_batch_loses_and_doubles_nothing(tmp_path):
    cdb, vol = tmp_path / "collector.db", tmp_path / "vol.db"
    ids = volunteer_db(vol, 1000)
    rc, out, _ = await probe("collector", "token", "add", "anna", "--db", str(cdb))
    env = env_for(tmp_path, out.strip())
    port = unused_port()
    server = await _serve_process(cdb, port)
    url = f"http://127.0.0.1:{port}"
    upload = asyncio.create_task(probe("upload", "--db", str(vol), "--collector", url, "--yes", env=env, timeout=120))
    for _ in range(600):  # until the first batch is stored: then kill -9, the next batch in flight
        await asyncio.sleep(0.05)
        try:
            if rows(cdb, "select count(*) from batches")[0][0] >= 1:
                break
        except sqlite3.OperationalError:
            pass
    server.kill()
    await server.wait()
    rc, _, err = await upload
    assert rc == 2 and "could not be reached" in err
    held = rows(cdb, "select count(*) from measurements")[0][0]
    assert held % 200 == 0 and 200 <= held < 1000, held  # whole batches only
    assert rows(cdb, "pragma integrity_check") == [("ok",)]
    server = await _serve_process(cdb, port)  # restarted: it classifies what it had not judged yet
    try:
        rc, _, err = await probe("upload", "--db", str(vol), "--collector", url, env=env, timeout=120)
        assert rc == 0, err
    finally:
        server.send_signal(signal.SIGTERM)
        await asyncio.wait_for(server.wait(), 20)
    assert rows(cdb, "select count(*), count(distinct measurement_id) from measurements") == [(1000, 1000)]
    src, dst = counts(vol), counts(cdb)
    assert {k: dst[k] for k in ("dns_queries", "tcp_connects", "tls_handshakes", "http_requests")} == {
        k: src[k] for k in ("dns_queries", "tcp_connects", "tls_handshakes", "http_requests")}
    assert rows(cdb, "select count(*) from verdicts") == [(1000,)]
    assert set(ids) == {r[0] for r in rows(cdb, "select measurement_id from collected")}


# --- across networks, events, feeds and webhooks -------------------------------------------


async def test_a_site_failing_on_one_network_only_is_blocked_there_and_becomes_an_event(tmp_path):
    """Network A (AS6697) sees charter97 fine twice, then reset twice; network B
    (AS25106) sees it fine throughout; both without a control. On the collector: A's
    resets are tls.reset blocked (it works on B), and one event says so, in both feeds
    and to a webhook that fails once before it answers."""
    got: list[dict] = []
    calls = {"n": 0}

    async def hook(request: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return web.Response(status=503)
        got.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = unused_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    cdb = tmp_path / "collector.db"
    db = store.open_db(cdb)
    store.add_webhook(db, f"http://127.0.0.1:{hook_port}/hook")
    store.close(db)
    url = "https://charter97.org/"
    try:
        async with serve_collector(cdb) as running:
            for name, asn, kinds in (("a", "AS6697", ["ok", "ok", "reset", "reset"]),
                                     ("b", "AS25106", ["ok", "ok", "ok", "ok"])):
                vol = tmp_path / f"{name}.db"
                vdb = store.open_db(vol)
                for i, kind in enumerate(kinds):
                    when = at(8 - 2 * i)
                    add(vdb, new_run(vdb, "BY", asn, when), [measurement(url, kind, when),
                                                             measurement("https://down.example/", "refused", when)])
                store.close(vdb)
                rc, _, err = await probe("upload", "--db", str(vol), "--collector", running.url, "--yes",
                                         env=env_for(tmp_path, _token(running, name), f"{name}.ini"))
                assert rc == 0, err
            async with aiohttp.ClientSession() as s:
                async with s.get(running.url + "/events.json?asn=AS6697") as r:
                    feed = await r.json(content_type=None)
                async with s.get(running.url + "/events.json?asn=25106") as r:
                    other = await r.json(content_type=None)
                async with s.get(running.url + "/events.atom?site=charter97.org") as r:
                    atom = await r.text()
            for _ in range(150):  # the webhook: refused once, retried after 5 s
                if got:
                    break
                await asyncio.sleep(0.1)
    finally:
        await runner.cleanup()
    (item,) = feed["items"]
    event = item["_bynet_probe"]
    assert (event["kind"], event["after"], event["before"], event["network"]) == ("blocked", "tls.reset", "ok",
                                                                                 "BY/AS6697")
    assert other["items"] == []
    assert atom.count("<entry>") == 1 and "charter97.org" in atom
    assert got and got[0]["event"]["event_id"] == event["event_id"] and calls["n"] == 2
    # the report on the collector's database: both networks, the cross verdicts
    rc, out, err = await probe("report", "--db", str(cdb), "--format", "json")
    assert rc == 0, err
    latest: dict[tuple[str, str], dict] = {}
    for r in json.loads(out):
        latest[(r["url"], r["asn"])] = r
    a, b = latest[(url, "AS6697")], latest[(url, "AS25106")]
    assert (a["verdict"], a["blocked"], a["own_blocked"]) == ("tls.reset", True, None)
    assert "BY/AS25106" in a["networks_compared"] and (b["verdict"], b["blocked"]) == ("ok", False)
    down_a = latest[("https://down.example/", "AS6697")]
    assert down_a["blocked"] is None  # failing on both networks of one country: can't tell, never blocked
    rc, out, _ = await probe("report", "--db", str(cdb), "--events", "--format", "json")
    (listed,) = json.loads(out)
    assert listed["event_id"] == event["event_id"]
    rc, out, _ = await probe("report", "--db", str(cdb))
    assert rc == 0 and "AS6697" in out and "AS25106" in out
    # explain, on the collector's database: one network's latest, with the others beside it
    rc, out, err = await probe("explain", "charter97.org", "--db", str(cdb), "--network", "BY/AS6697")
    assert rc == 0, err
    assert "Verdict:" in out and "tls.reset" in out and "works on BY/AS25106" in out
    assert "this measurement by itself said tls.reset (can't tell)" in out and "BY/AS25106: ok (not blocked)" in out
    rc, out, _ = await probe("explain", "charter97.org", "--db", str(cdb), "--network", "AS25106", "--json")
    data = json.loads(out)
    assert data["network"]["asn"] == "AS25106" and data["verdict"] == "ok"
    assert [o["network"] for o in data["other_networks"]] == ["BY/AS6697"]
    rc, _, err = await probe("explain", "charter97.org", "--db", str(cdb), "--network", "DE")
    assert rc == 2 and "no measurement of charter97.org on DE" in err
    # researchers' files, straight from the collector's database
    rc, out, err = await probe("export-ooni", "--db", str(cdb), "-o", str(tmp_path / "ooni.jsonl"))
    assert rc == 0, err
    assert len((tmp_path / "ooni.jsonl").read_text().splitlines()) == 16
    rc, _, err = await probe("export", "--db", str(cdb), "--format", "parquet", "-o", str(tmp_path / "pq"))
    assert rc == 0, err
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "pq" / "measurements.parquet")
    assert table.num_rows == 16 and set(table.column("asn").to_pylist()) == {"AS6697", "AS25106"}
