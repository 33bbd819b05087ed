"""`probe browse`: Datasette over a real probe database, through its JSON API and once
in a headless Chromium. The real command runs in a subprocess on a free port; no mocks.

The database: two networks and an offline one, sites measured over the last two weeks,
two classifier versions whose text order is wrong ("1.9.0" > "1.10.0" as text) and a
pre-release, Cyrillic evidence and a hostile string, a measurement not yet classified.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from clirun import ROOT, probe_sync

from probe import store
from probe.analysis import persist
from probe.core.records import Measurement, new_id
from probe.core.verdicts import CANT_TELL, TAGS, VERDICTS, Evidence, LayerFinding, Verdict
from probe.store import browse, views

HOSTILE = "<script>alert('x')</script>"
CYRILLIC = "заголовок страницы «Доступ ограничен»"
NEW, OLD, RC = "1.10.0", "1.9.0", "1.10.0-rc1"  # NEW is the newest; as text, OLD sorts last
BELTELECOM = ("BY", "AS6697", "Beltelecom")
A1 = ("BY", "AS25106", "A1 <Velcom>")
OFFLINE = (None, None, None)

# (network, url, days ago, verdict, confidence, evidence lines, tags, blocked override)
PLAN: list[tuple[tuple, str, float, str, float, list[str], list[str], bool | None | str]] = [
    (BELTELECOM, "https://charter97.org/", 12, "ok", 0.9, ["same title as the control"], [], "-"),
    (BELTELECOM, "https://charter97.org/", 10, "tls.reset", 0.95,
     ["TLS handshake reset right after our ClientHello", "a handshake with another name to the same address worked"],
     [], "-"),
    (BELTELECOM, "https://charter97.org/", 3, "tls.reset", 0.95, ["TLS handshake reset right after our ClientHello"],
     [], "-"),
    (BELTELECOM, "https://charter97.org/", 1, "tls.reset", 0.95,
     ["TLS handshake reset right after our ClientHello", "a handshake with another name to the same address worked"],
     [], "-"),
    (BELTELECOM, "https://nashaniva.com/", 9, "ok", 0.9, ["same title as the control"], [], "-"),
    (BELTELECOM, "https://nashaniva.com/", 2, "dns.nxdomain", 0.85,
     ["local resolver: NXDOMAIN; control: A 104.21.3.4"], [], "-"),
    (BELTELECOM, "https://www.svaboda.org/", 5, "http.blockpage", 0.9, [CYRILLIC], [], "-"),
    (BELTELECOM, "https://www.svaboda.org/", 1, "http.blockpage", 0.9, [CYRILLIC], [], "-"),
    (BELTELECOM, "https://gone.example.by/", 1, "down", 0.8, ["control: connection refused too"], [], "-"),
    (BELTELECOM, "https://zerkalo.io/", 1, "http.diff", 0.55, [f"local title {HOSTILE} vs control title Zerkalo"],
     [], "-"),
    (A1, "https://charter97.org/", 4, "ok", 0.9, ["same title as the control"], [], "-"),
    (A1, "https://charter97.org/", 1.5, "tcp.timeout", 0.9, ["SYN to 185.23.4.5:443 unanswered; control connected"],
     ["partial:ipv4"], "-"),
    (A1, "https://www.svaboda.org/", 1, "ok", 0.95, ["same title as the control"], [], "-"),
    (A1, "https://belsat.eu/", 1, "tcp.refused", 0.4, ["connection refused locally and from one control address"],
     [], None),
    (OFFLINE, "https://example.org/", 1, "error", 0.1, ["control helper unreachable and no local answer"], [], "-"),
]
# The view's answer, worked out by hand: (url, network) -> (verdict, blocked)
LATEST = {
    ("https://charter97.org/", "BY/AS6697"): ("tls.reset", "yes"),
    ("https://nashaniva.com/", "BY/AS6697"): ("dns.nxdomain", "yes"),
    ("https://www.svaboda.org/", "BY/AS6697"): ("http.blockpage", "yes"),
    ("https://gone.example.by/", "BY/AS6697"): ("down", "no"),
    ("https://zerkalo.io/", "BY/AS6697"): ("http.diff", "yes"),
    ("https://charter97.org/", "BY/AS25106"): ("tcp.timeout", "yes"),
    ("https://www.svaboda.org/", "BY/AS25106"): ("ok", "no"),
    ("https://belsat.eu/", "BY/AS25106"): ("tcp.refused", CANT_TELL),
    ("https://example.org/", "unknown"): ("error", "no"),
}


def _ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _verdict(verdict: str, confidence: float, lines: list[str], tags: list[str], blocked: Any,
             version: str = NEW) -> Verdict:
    is_blocked = VERDICTS[verdict][0] if blocked == "-" else blocked
    layer = verdict.split(".")[0] if VERDICTS[verdict][0] else None
    layers = {"dns": LayerFinding("dns", ok=1.0, rule_id="dns.consistent")}
    if layer:
        layers[layer] = LayerFinding(layer, blocked=confidence, rule_id=f"{verdict}.rule", verdict=verdict)
    return Verdict(verdict, is_blocked, confidence, layer, rule_id=f"{verdict}.rule" if layer else verdict,
                   evidence=[Evidence(t, {"n": i}) for i, t in enumerate(lines)], layers=layers,
                   classifier_version=version, tags=list(tags))


def make_db(path: Path) -> dict[str, Any]:
    """The database of PLAN through the store's own API; returns ids worth asserting."""
    db = store.open_db(path)
    runs: dict[tuple, str] = {}
    items: list[tuple[str, Verdict]] = []
    ids: dict[str, Any] = {"measurements": {}}
    for network, url, days, verdict, conf, lines, tags, blocked in PLAN:
        cc, asn, name = network
        key = (network, int(days))
        if key not in runs:
            runs[key] = new_id()
            store.create_run(db, {"run_id": runs[key], "started_at": _ago(days + 0.01), "status": "finished",
                                  "probe_version": "t", "cc": cc, "asn": asn, "network_name": name,
                                  "config": "{}", "notes": "[]", "resolvers": "[]"},
                             [store.RunTarget(p[1], "NEWS") for p in PLAN if p[0] == network and int(p[2]) == int(days)])
        host = urlsplit(url).hostname
        assert host is not None
        m = Measurement(url=url, hostname=host, scheme="https", port=443, started_at=_ago(days), category="NEWS")
        store.save_measurement(db, runs[key], m)
        ids["measurements"][(url, asn, days)] = m.measurement_id
        items.append((m.measurement_id, _verdict(verdict, conf, lines, tags, blocked)))
    # Older classifiers said otherwise; the newest ("1.10.0", not "1.9.0" as text would say) wins.
    stale = [(mid, _verdict("ok", 0.5, ["an older classifier's reading"], [], "-", OLD)) for mid, _ in items[::2]]
    stale += [(items[3][0], _verdict("tls.timeout", 0.5, ["a release candidate's reading"], [], "-", RC))]
    persist.save_verdicts(db, stale)
    persist.save_verdicts(db, items)
    # The newest measurement of a site, not classified yet: the view keeps the last verdict.
    host_run = runs[(BELTELECOM, 1)]
    unclassified = Measurement(url="https://gone.example.by/", hostname="gone.example.by", scheme="https", port=443,
                               started_at=_ago(0.1), category="NEWS")
    store.save_measurement(db, host_run, unclassified)
    store.close(db)
    return ids


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("browse") / "probe.db"
    return path, make_db(path)


# --- the views, over SQLite alone ------------------------------------------------------------------


def test_version_key_in_sql_orders_as_version_key():
    """The view's classifier order is the store's: numeric pieces, pre-releases first,
    text after numbers, whatever a version string holds."""
    rnd = random.Random(8)
    versions = ["1.2.0", "1.10.0", "1.9.0", "1.1.0-rc1", "1.1.0-rc10", "1.1.0-rc2", "1.1.0", "1.1", "1.1.0.0",
                "01.2", "1.02.0", "a", "1.a", "", "1..2", "1.0-", "1.0-rc1.beta", "10", "9"]
    versions += ["".join(rnd.choice("0123456789.-ab") for _ in range(rnd.randint(0, 9))) for _ in range(2000)]
    conn = sqlite3.connect(":memory:")
    conn.execute("create table t (classifier_version text)")
    conn.executemany("insert into t values (?)", [(v,) for v in versions])
    keys = dict(conn.execute(views.version_key_sql("t")).fetchall())
    distinct = sorted(set(versions))
    for _ in range(20000):
        a, b = rnd.choice(distinct), rnd.choice(distinct)
        ka, kb = store.version_key(a), store.version_key(b)
        assert (ka < kb, ka == kb) == (keys[a] < keys[b], keys[a] == keys[b]), (a, b)


def test_views_exist_and_pick_the_newest_measurement_and_classifier(results):
    path, ids = results
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("select * from latest_verdicts")]
    assert {(r["url"], r["network"]): (r["verdict"], r["blocked"]) for r in rows} == LATEST
    assert len(rows) == len(LATEST)
    assert all(r["classifier_version"] == NEW for r in rows)
    c = next(r for r in rows if r["url"] == "https://charter97.org/" and r["network"] == "BY/AS6697")
    assert c["evidence"] == ("TLS handshake reset right after our ClientHello\n"
                             "a handshake with another name to the same address worked")
    assert c["measurement_id"] == ids["measurements"][("https://charter97.org/", "AS6697", 1)]
    a1 = next(r for r in rows if r["url"] == "https://charter97.org/" and r["network"] == "BY/AS25106")
    assert a1["tags"] == TAGS["partial:ipv4"][0] and a1["network_name"] == "A1 <Velcom>"
    # every measurement with a verdict, judged once, by the newest classifier that judged it
    assert tuple(conn.execute("select count(*), count(distinct measurement_id) from site_verdicts").fetchone()) == (
        len(PLAN), len(PLAN))
    conn.close()


def test_views_are_created_once_and_fallback_queries_match_them(results, tmp_path):
    path, _ = results
    before = sqlite3.connect(path).execute("select name, sql from sqlite_master where type = 'view'").fetchall()
    store.close(store.open_db(path, create=False))  # a second open leaves them be
    after = sqlite3.connect(path).execute("select name, sql from sqlite_master where type = 'view'").fetchall()
    assert before == after and len(after) == 2
    # A database without views (an older probe's, read-only): the canned queries inline them.
    copy = tmp_path / "old.db"
    shutil.copy(path, copy)
    conn = sqlite3.connect(copy)
    conn.executescript("drop view latest_verdicts; drop view site_verdicts;")
    with_views = browse.browse_metadata({"old": False})["databases"]["old"]["queries"]
    plain = browse.browse_metadata({"p": True})["databases"]["p"]["queries"]
    viewed = sqlite3.connect(path)
    for name in ("latest_verdicts", "blocked_by_network", "changes_last_7_days"):
        sql = plain.get(name, {"sql": "select * from latest_verdicts"})["sql"]
        assert conn.execute(with_views[name]["sql"]).fetchall() == viewed.execute(sql).fetchall(), name
    conn.close()
    viewed.close()


def test_metadata_describes_tables_columns_queries_and_facets():
    meta = browse.browse_metadata({"probe": True, "probe_2": False})
    assert meta["title"] and meta["description"]
    for name in ("probe", "probe_2"):
        tables = meta["databases"][name]["tables"]
        for table in ("runs", "measurements", "dns_queries", "tcp_connects", "tls_handshakes", "http_requests",
                      "verdicts", "latest_verdicts", "site_verdicts"):
            assert tables[table]["description"], table
        assert set(tables["latest_verdicts"]["columns"]) == set(views.COLUMNS)
        assert tables["latest_verdicts"]["facets"][:2] == ["verdict", "network"]
    assert "latest_verdicts" not in meta["databases"]["probe"]["queries"]  # the view serves it
    assert meta["databases"]["probe_2"]["queries"]["latest_verdicts"]["sql"].startswith("WITH site_verdicts AS")
    assert set(meta["databases"]["probe"]["queries"]) == {"blocked_by_network", "changes_last_7_days",
                                                         "site_evidence", "verdict_meanings"}
    json.dumps(meta)  # what --metadata reads
    assert browse.datasette_names([Path("a/probe.db"), Path("b/probe.db"), Path("a/probe.db"),
                                   Path("x.db")]) == ["probe", "probe_2", "x"]


# --- the real command ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}


def get(url: str, timeout: float = 15) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class Browse:
    """`probe browse` in a subprocess until stopped; always ended by the test."""

    def __init__(self, *args: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "probe", "browse", "--port", str(self.port), *args],
                                     cwd=ROOT, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started

    def _wait_until_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                _, err = self.proc.communicate()
                raise AssertionError(f"probe browse exited {self.proc.returncode}: {err.decode()}")
            try:
                get(self.base + "/-/versions.json", timeout=2)
                return
            except (OSError, ValueError):
                time.sleep(0.1)
        raise AssertionError("probe browse did not answer within 60 s")

    def json(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode({**params, "_shape": params.get("_shape", "array")})
        return get(f"{self.base}{path}?{query}")

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        """Ctrl-C (to the whole session, as a terminal sends it); kill if it lingers."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            _, err = self.proc.communicate()
        return self.proc.returncode, err.decode(errors="replace")


@pytest.fixture(scope="module")
def server(results) -> Iterator[Browse]:
    if shutil.which("datasette") is None and not _has_datasette():
        pytest.skip("datasette is not installed (pip install 'bynet-probe[browse]')")
    path, _ = results
    b = Browse("--db", str(path), "--no-open")
    yield b
    code, err = b.stop()
    assert code == 130 and "Traceback" not in err, err


def _has_datasette() -> bool:
    import importlib.util

    return importlib.util.find_spec("datasette") is not None


def test_view_through_the_json_api(server):
    rows = server.json("/probe/latest_verdicts.json", _size="max")
    assert {(r["url"], r["network"]): (r["verdict"], r["blocked"]) for r in rows} == LATEST
    sv = next(r for r in rows if r["url"] == "https://www.svaboda.org/" and r["network"] == "BY/AS6697")
    assert sv["evidence"] == CYRILLIC and 0 < sv["confidence"] <= 1 and sv["measured_at"]
    z = next(r for r in rows if r["url"] == "https://zerkalo.io/")
    assert z["evidence"] == f"local title {HOSTILE} vs control title Zerkalo"  # text, not JSON
    assert not any(r["evidence"].startswith("[") for r in rows)
    print(f"\nbrowse: up in {server.startup_s:.2f} s, {len(rows)} rows in latest_verdicts")


def test_facets_on_verdict_and_network(server):
    data = server.json("/probe/latest_verdicts.json", _shape="objects")
    facets = data["facet_results"]
    assert {"verdict", "network"} <= set(facets)
    by_network = {f["value"]: f["count"] for f in facets["network"]["results"]}
    assert by_network == {"BY/AS6697": 5, "BY/AS25106": 3, "unknown": 1}
    by_verdict = {f["value"]: f["count"] for f in facets["verdict"]["results"]}
    assert by_verdict["ok"] == 1 and by_verdict["tls.reset"] == 1 and sum(by_verdict.values()) == len(LATEST)
    assert not data.get("facets_timed_out")
    only = server.json("/probe/latest_verdicts.json", network="BY/AS25106")
    assert {r["url"] for r in only} == {"https://charter97.org/", "https://www.svaboda.org/", "https://belsat.eu/"}


def test_canned_queries(server):
    blocked = server.json("/probe/blocked_by_network.json")
    assert [(r["network"], r["url"], r["verdict"]) for r in blocked] == sorted(
        (n, u, v) for (u, n), (v, b) in LATEST.items() if b == "yes")
    changes = server.json("/probe/changes_last_7_days.json")
    # charter97 on Beltelecom changed 10 days ago (too old); belsat was measured once
    assert {(r["url"], r["network"], r["previous_verdict"], r["verdict"]) for r in changes} == {
        ("https://nashaniva.com/", "BY/AS6697", "ok", "dns.nxdomain"),
        ("https://charter97.org/", "BY/AS25106", "ok", "tcp.timeout"),
    }
    site = server.json("/probe/site_evidence.json", site="charter97.org")
    assert len(site) == 6 and {r["network"] for r in site} == {"BY/AS6697", "BY/AS25106"}
    assert [r["measured_at"] for r in site] == sorted((r["measured_at"] for r in site), reverse=True)
    assert site[0]["verdict"] == "tls.reset" and "ClientHello" in site[0]["evidence"]
    assert server.json("/probe/site_evidence.json", site="svaboda.org")[0]["url"] == "https://www.svaboda.org/"
    assert server.json("/probe/site_evidence.json", site="https://belsat.eu/")[0]["blocked"] == CANT_TELL
    meanings = server.json("/probe/verdict_meanings.json")
    assert [r["verdict"] for r in meanings] == list(VERDICTS)


def test_metadata_is_served(server):
    meta = get(server.base + "/-/metadata.json")
    tables = meta["databases"]["probe"]["tables"]
    assert tables["latest_verdicts"]["columns"]["evidence"].startswith("why, in words")
    assert "blocked_by_network" in meta["databases"]["probe"]["queries"]
    assert meta["title"] == browse.TITLE


def _listening(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (Linux /proc/net/tcp{,6})."""
    found = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_bound_to_loopback_only(server):
    if Path("/proc/net/tcp").exists():
        assert _listening(server.port) == {"0100007F"}  # 127.0.0.1, nothing on 0.0.0.0 or ::
    with pytest.raises(OSError), socket.create_connection(("127.0.0.2", server.port), timeout=2):
        pass  # a socket bound to every address would accept here too


def test_ctrl_c_ends_cleanly_and_says_where_it_served(results):
    path, _ = results
    b = Browse("--db", str(path))
    assert get(b.base + "/probe/latest_verdicts.json?_shape=array&_size=1")
    code, err = b.stop()
    assert code == 130, err
    assert f"serving on {b.base}" in err and f"{b.base}/probe/latest_verdicts" in err
    assert "Traceback" not in err and "stopped" in err


def test_sigterm_ends_it_too_and_leaves_no_temporary_files(results):
    path, _ = results
    leftovers = set(Path(tempfile.gettempdir()).glob("probe-browse-*"))
    b = Browse("--db", str(path))
    assert set(Path(tempfile.gettempdir()).glob("probe-browse-*")) - leftovers  # the metadata, while it serves
    code, err = b.stop(signal.SIGTERM)
    assert code == 128 + signal.SIGTERM and "Traceback" not in err, err
    assert set(Path(tempfile.gettempdir()).glob("probe-browse-*")) == leftovers


def test_print_metadata_names_every_database(results, tmp_path):
    path, _ = results
    other = tmp_path / "elsewhere" / "probe.db"
    other.parent.mkdir()
    shutil.copy(path, other)
    code, out, err = probe_sync("browse", "--db", str(path), "--db", str(other), "--print-metadata")
    assert code == 0, err
    meta = json.loads(out)
    assert set(meta["databases"]) == {"probe", "probe_2"}


def test_bad_input_is_one_line_and_exit_2(results, tmp_path):
    path, _ = results
    code, _, err = probe_sync("browse", "--db", str(tmp_path / "none.db"), "--no-open")
    assert code == 2 and "no such database" in err and len(err.strip().splitlines()) == 1
    code, _, err = probe_sync("browse", "--db", str(path), "--host", "0.0.0.0")
    assert code == 2 and "loopback" in err and len(err.strip().splitlines()) == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = probe_sync("browse", "--db", str(path), "--port", str(port))
    assert code == 2 and "another program" in err and len(err.strip().splitlines()) == 1
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 10)
    code, _, err = probe_sync("browse", "--db", str(garbage))
    assert code == 2 and "not a SQLite database" in err


def test_without_datasette_says_how_to_install_it(results):
    """As on a machine without the `browse` extra: `import datasette` fails."""
    path, _ = results
    code = ("import sys; sys.modules['datasette'] = None; from probe.cli.main import main; "
            f"main(['browse', '--db', {str(path)!r}], prog_name='probe')")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, timeout=60)
    err = p.stderr.decode()
    assert p.returncode == 2 and "pip install 'bynet-probe[browse]'" in err and len(err.strip().splitlines()) == 1


def test_screenshot_in_headless_chromium(server, tmp_path):
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("no Chromium at /usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("python playwright is not installed")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server.base + "/probe/latest_verdicts", timeout=30000)
            rows = page.locator("table.rows-and-columns tbody tr")
            assert rows.count() == len(LATEST)
            for i in range(rows.count()):
                box = rows.nth(i).bounding_box()
                assert box and box["width"] > 0 and box["height"] > 0
            facets = page.locator(".facet-info")
            assert facets.count() >= 2
            for name in ("verdict", "network"):
                facet = page.locator(f'.facet-info[data-column="{name}"]')
                box = facet.bounding_box()
                assert box and box["width"] > 0 and box["height"] > 0, name
            evidence = page.locator("td.col-evidence").filter(has_text="a handshake with another name").first
            assert evidence.evaluate("e => getComputedStyle(e).whiteSpace") == "pre-wrap"
            assert HOSTILE in page.locator("td.col-evidence").filter(has_text="Zerkalo").first.inner_text()
            shot = tmp_path / "latest_verdicts.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("PROBE_SCREENSHOTS"):
        target = Path(os.environ["PROBE_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target / shot.name)
