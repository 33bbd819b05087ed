"""Two volunteers behind different censors, one abroad, one collector (issue 9's "Done
when", the lab half).

Three volunteers measure the same five sites (``scenarios.NETWORK_SITES``) without a
control helper, each on its own network:

* ``vol``    BY/AS6697   its ISP's resolver says ``dnsonly.lab.test`` does not exist;
* ``vol2``   BY/AS25106  a second ISP, whose censor resets a ClientHello naming
                         ``snionly.lab.test`` (for its own subnet only); its resolver is clean;
* ``abroad`` DE/AS3320   no censor (a link straight to the open internet).

``offline.lab.test`` is down for everyone, ``later.lab.test`` works until vol2's censor
starts resetting it after round 2. Four rounds: the three volunteers measure at the same
time, then upload to one collector (``probe collector serve`` in ``net``): vol and
abroad with ``probe upload`` and a token in the environment, vol2 by itself at the end
of its run (``probe config set collector`` and ``collector-token``). Then ``probe
report`` on the collector's database must show each network's own censor: a site
blocked on one network only is blocked there and ``ok`` on the others although nobody
had a control, the site that is down everywhere is never called blocked, and the
censor's change appears as exactly one event, in the report and in the feeds.

The volunteers' own databases are checked too, without the collector: each network
sees its own censor, and the three merged (``probe report --db a --db b --db c``) give
the verdicts and the one event the collector must give. When those pass and the
collector's fail, the collector is at fault, not the lab.

Needs root and the lab's commands, as test_lab.py; about a minute.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import scenarios as S
from .topology import Lab, probe_here, skip_or_fail_without_lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]
skip_or_fail_without_lab()

ROUNDS = 4
CENSOR_CHANGES_AFTER = 2  # rounds: the event rule needs 2 agreeing measurements each side
ROLES = tuple(S.NETWORKS)  # vol, vol2, abroad
UPLOADS_ITSELF = "vol2"  # `probe config set collector`; the others run `probe upload`
TOKEN_ENV = "BYNET_PROBE_COLLECTOR_TOKEN"
LATER = next(n for n in S.NETWORK_SITES if n.later)
BY_URL = {n.url: n for n in S.NETWORK_SITES}

# Fetch a URL from inside a lab namespace (the host has no route there): one JSON line,
# {"status", "type", "body"} or {"status": null, "error"} once `wait` seconds are over.
FETCH = r"""
import json, sys, time, urllib.error, urllib.request
url, end = sys.argv[1], time.monotonic() + float(sys.argv[2])
while True:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            out = {"status": r.status, "type": r.headers.get("Content-Type"), "body": r.read().decode("utf-8", "replace")}
    except urllib.error.HTTPError as e:
        out = {"status": e.code, "type": e.headers.get("Content-Type"), "body": e.read().decode("utf-8", "replace")}
    except OSError as e:
        if time.monotonic() < end:
            time.sleep(0.1)
            continue
        out = {"status": None, "error": repr(e)}
    print(json.dumps(out))
    break
"""


_cli = probe_here


def _said(p: subprocess.CompletedProcess | None) -> str:
    if p is None:
        return "(not run)"
    return f"exit {p.returncode}\n--- stdout\n{(p.stdout or '')[-2500:]}\n--- stderr\n{(p.stderr or '')[-2500:]}"


def _json(p: subprocess.CompletedProcess | None) -> Any:
    if p is None or p.returncode != 0:
        return None
    try:
        return json.loads(p.stdout)
    except ValueError:
        return None


@dataclass
class CollectorLab:
    lab: Lab
    db: str  # the collector's
    dbs: dict[str, str]  # each volunteer's
    configs: dict[str, str]  # each volunteer's config file (BYNET_PROBE_CONFIG)
    timings: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, subprocess.CompletedProcess] = field(default_factory=dict)
    configured: list[subprocess.CompletedProcess] = field(default_factory=list)  # vol2's `config set`
    serve: subprocess.Popen | None = None
    health: dict[str, dict] = field(default_factory=dict)  # by namespace
    runs: list[dict[str, subprocess.CompletedProcess]] = field(default_factory=list)  # per round, per role
    uploads: list[dict[str, subprocess.CompletedProcess]] = field(default_factory=list)
    own: dict[int, dict[str, dict[str, dict]]] = field(default_factory=dict)  # round -> role -> url -> row
    merged: subprocess.CompletedProcess | None = None  # the three volunteers' databases merged
    merged_events: subprocess.CompletedProcess | None = None
    report: subprocess.CompletedProcess | None = None  # on the collector's database
    events: subprocess.CompletedProcess | None = None
    table: subprocess.CompletedProcess | None = None
    feeds: dict[str, dict] = field(default_factory=dict)
    serve_exit: int | None = None

    @property
    def serve_log(self) -> str:
        return self.lab.log_tail(str(self.lab.dir / "net-collector.log"), 40)

    def token(self, role: str) -> str:
        return (self.tokens[role].stdout or "").strip()


def _fetch(lab: Lab, role: str, path: str, wait: float = 5) -> dict:
    p = lab.exec(role, [sys.executable, "-c", FETCH, S.COLLECTOR_URL + path, str(wait)], timeout=wait + 30)
    try:
        return json.loads(p.stdout)
    except ValueError:
        return {"status": None, "error": f"fetch failed: {_said(p)}"}


def _own_reports(c: CollectorLab) -> dict[str, dict[str, dict]]:
    """Each volunteer's own report (its database alone; one row per measurement): role
    -> url -> its latest row."""
    with ThreadPoolExecutor(len(ROLES)) as pool:
        done = {role: pool.submit(_cli, "report", "--db", c.dbs[role], "--format", "json") for role in ROLES}
    return {role: {r["url"]: r for r in sorted(_json(f.result()) or [], key=lambda r: str(r.get("measured_at")))}
            for role, f in done.items()}


def _round(c: CollectorLab, n: int, targets: Path) -> None:
    lab = c.lab

    def measure(role: str) -> subprocess.CompletedProcess:
        cc, asn = S.NETWORKS[role]
        # the lab's flags, then this network's (a later --cc/--asn overrides the lab's)
        return lab.run_probe(c.dbs[role], role=role, targets=targets, control=False, timeout=150,
                             extra=("--cc", cc, "--asn", asn, "--yes"), env={"BYNET_PROBE_CONFIG": c.configs[role]})

    def upload(role: str) -> subprocess.CompletedProcess:
        return lab.exec(role, [sys.executable, "-m", "probe", "upload", "--db", c.dbs[role],
                               "--collector", S.COLLECTOR_URL, "--yes"], timeout=90,
                        env={"BYNET_PROBE_CONFIG": c.configs[role], TOKEN_ENV: c.token(role)})

    with ThreadPoolExecutor(len(ROLES)) as pool:
        runs = {role: pool.submit(measure, role) for role in ROLES}
        c.runs.append({role: f.result() for role, f in runs.items()})
        ups = {role: pool.submit(upload, role) for role in ROLES if role != UPLOADS_ITSELF}
        c.uploads.append({role: f.result() for role, f in ups.items()})


@pytest.fixture(scope="module")
def collector_lab(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("collectorlab")
    # the scenarios' censorship is not needed here; the collector test's sites, vol2
    # and abroad are in every lab
    lab = Lab([S.BY_NAME["ok"]], workdir=workdir)
    c = CollectorLab(lab, str(workdir / "collector.db"), {r: str(workdir / f"{r}.db") for r in ROLES},
                     {r: str(workdir / f"{r}.ini") for r in ROLES})
    targets = workdir / "network-targets.txt"
    targets.write_text(S.network_targets_text())
    t_all = time.monotonic()
    try:
        lab.up()
        c.timings["up"] = lab.up_seconds
        # the maintainer makes one token per volunteer (abroad's once the collector
        # runs: volunteers join a running collector)
        for role in ROLES[:2]:
            c.tokens[role] = _cli("collector", "token", "add", role, "--db", c.db)
        c.serve = lab.start("net", "collector", [
            sys.executable, "-m", "probe", "collector", "serve", "--db", c.db,
            "--host", S.COLLECTOR_IP, "--port", str(S.COLLECTOR_PORT)])
        end = time.monotonic() + 20
        while time.monotonic() < end and c.serve.poll() is None:
            c.health["net"] = _fetch(lab, "net", "/api/v1/health", wait=2)
            if c.health["net"].get("status") == 200:
                break
        c.tokens[ROLES[2]] = _cli("collector", "token", "add", ROLES[2], "--db", c.db)
        for role in ROLES:  # through each volunteer's network (vol's and vol2's censors on the way)
            c.health[role] = _fetch(lab, role, "/api/v1/health", wait=5)
        # vol2 set its collector once, as volunteers do; its runs upload by themselves
        env = {"BYNET_PROBE_CONFIG": c.configs[UPLOADS_ITSELF]}
        c.configured = [_cli("config", "set", "collector", S.COLLECTOR_URL, env=env),
                        _cli("config", "set", "collector-token", c.token(UPLOADS_ITSELF), env=env)]
        t = time.monotonic()
        for n in range(1, ROUNDS + 1):
            _round(c, n, targets)
            if n == CENSOR_CHANGES_AFTER:
                c.own[n] = _own_reports(c)
                for role, rule in LATER.later:  # the censor changes its rules between two runs
                    lab.censor(role, rule)
        c.timings["rounds"] = round(time.monotonic() - t, 1)
        c.own[ROUNDS] = _own_reports(c)
        # the reference: the volunteers' own databases, merged on this machine
        dbs = [a for role in ROLES for a in ("--db", c.dbs[role])]
        c.merged = _cli("report", *dbs, "--format", "json")
        c.merged_events = _cli("report", *dbs, "--events", "--format", "json")
        # the collector: its report, its events, its feeds (read from abroad)
        c.report = _cli("report", "--db", c.db, "--format", "json")
        c.events = _cli("report", "--db", c.db, "--events", "--format", "json")
        c.table = _cli("report", "--db", c.db, env={"COLUMNS": "200"})
        for name, path in (("vol2", f"/events.json?asn={S.NETWORKS['vol2'][1]}"),
                           ("vol", f"/events.json?asn={S.NETWORKS['vol'][1]}"),
                           ("atom", "/events.atom")):
            c.feeds[name] = _fetch(lab, "abroad", path)
        if c.serve.poll() is None:
            os.killpg(c.serve.pid, signal.SIGTERM)
            try:
                c.serve_exit = c.serve.wait(10)
            except subprocess.TimeoutExpired:
                c.serve_exit = None
        else:
            c.serve_exit = c.serve.returncode
        c.timings["total"] = round(time.monotonic() - t_all, 1)
        yield c
    finally:
        lab.down()


# --------------------------------------------------------------------------- the lab itself


def test_every_volunteer_measured_every_round(collector_lab):
    c = collector_lab
    assert len(c.runs) == ROUNDS, c.runs
    for n, runs in enumerate(c.runs, 1):
        for role, p in runs.items():
            assert p.returncode == 0, f"round {n}: {role}'s probe run: {_said(p)}"
            assert f"{len(S.NETWORK_SITES)} measured" in p.stderr, f"round {n}: {role}: {_said(p)}"
    runs = json.loads(_cli("show", "--db", c.dbs["vol2"], "--json").stdout)
    # the network's --cc/--asn, given after the lab's, are the ones recorded
    assert {(r["cc"], r["asn"]) for r in runs} == {S.NETWORKS["vol2"]}, runs


def _own_row(c: CollectorLab, n: int, role: str, site: S.NetworkSite) -> dict:
    rows = c.own[n][role]
    assert site.url in rows, f"{site.url} not in {role}'s own report after round {n}: {sorted(rows)}"
    return rows[site.url]


def _params(pairs_of):
    return [pytest.param(site, role, verdict, id=f"{site.name}-{role}")
            for site in S.NETWORK_SITES for role, verdict in pairs_of(site)]


def _check_own(row: dict, site: S.NetworkSite, role: str, verdict: str, when: str) -> None:
    texts = [e.get("text") if isinstance(e, dict) else e for e in row.get("evidence", [])]
    assert row["verdict"] == verdict, f"{row['url']} on {role} {when}, no control: {row['verdict']} ({texts})"
    if verdict == "ok":
        assert row["blocked"] is False, row
    elif all(v == "down" for _, v in site.expected):  # down everywhere: never blocked
        assert row["blocked"] is not True, (row["blocked"], texts)
    else:  # can't tell without a control (None), or blocked: never "works"
        assert row["blocked"] is not False, (row["blocked"], texts)


@pytest.mark.parametrize("site,role,verdict", _params(lambda s: s.own))
def test_each_network_sees_its_own_censor(collector_lab, site, role, verdict):
    """Each volunteer's own run, no control (before the censor's change)."""
    _check_own(_own_row(collector_lab, CENSOR_CHANGES_AFTER, role, site), site, role, verdict,
               f"after round {CENSOR_CHANGES_AFTER}")


@pytest.mark.parametrize("site,role,verdict", _params(lambda s: s.own_after or s.own))
def test_after_the_censors_change_each_network_still_sees_its_own(collector_lab, site, role, verdict):
    _check_own(_own_row(collector_lab, ROUNDS, role, site), site, role, verdict, f"after round {ROUNDS}")


def _rows_text(rows: list[dict], url: str | None = None) -> str:
    """The rows of one site (or all), one line each, for failure messages."""
    out = []
    for r in rows:
        if url is None or r.get("url") == url:
            texts = [e.get("text") if isinstance(e, dict) else e for e in r.get("evidence") or []]
            out.append(f"  {r.get('url')} {r.get('network') or (str(r.get('cc')) + '/' + str(r.get('asn')))}: "
                       f"{r.get('verdict')} blocked={r.get('blocked')} conf={r.get('confidence')} "
                       f"own={r.get('own_verdict')}/{r.get('own_blocked')} rule={r.get('cross_rule_id')} "
                       f"measured={r.get('measured_at')} evidence={texts}")
    return "\n".join(out) or "  (no rows)"


def _by_network(rows: list[dict], url: str) -> dict[str, list[dict]]:
    """Rows of one site by network ("BY/AS6697"), from cc and asn (the key every
    report has), oldest first."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("url") == url:
            out.setdefault(f"{r.get('cc')}/{r.get('asn')}", []).append(r)
    for group in out.values():
        group.sort(key=lambda r: str(r.get("measured_at")))
    return out


def _check_verdict(rows: list[dict] | None, site: S.NetworkSite, role: str, verdict: str, what: str) -> dict:
    assert rows is not None, f"no {what} to check"
    network = S.network_name(role)
    mine = _by_network(rows, site.url).get(network)
    assert mine, f"{site.url} has no row for {network} in {what}:\n{_rows_text(rows, site.url)}"
    row = mine[-1]
    msg = f"{site.name} ({site.description}) on {network}, {what}:\n{_rows_text(rows, site.url)}"
    assert row["verdict"] == verdict, msg
    if verdict == "ok":
        assert row["blocked"] is False, msg
    elif verdict == "down":
        assert row["blocked"] is False, msg
    else:
        assert row["blocked"] is True, msg
    return row


def _expected_now(site: S.NetworkSite):
    return site.expected_after or site.expected


@pytest.mark.parametrize("site,role,verdict", _params(_expected_now))
def test_the_volunteers_databases_merged_give_each_network_its_verdict(collector_lab, site, role, verdict):
    """The reference for the collector: `probe report` over the three databases."""
    _check_verdict(_json(collector_lab.merged), site, role, verdict,
                   f"the volunteers' databases merged ({_said(collector_lab.merged)[:300]})")


def _check_one_event(events: Any, what: str) -> dict:
    assert isinstance(events, list), f"{what}: not a JSON list: {events!r}"[:3000]
    listed = "\n".join(f"  {e.get('kind')} {e.get('domain') or e.get('url')} on {e.get('network')}: "
                       f"{e.get('before')} -> {e.get('after')}" for e in events if isinstance(e, dict))
    assert len(events) == 1, f"{what}: expected exactly one event (later.lab.test blocked on " \
                             f"{S.network_name('vol2')}), got {len(events)}:\n{listed}"
    (e,) = events
    site = e.get("domain") or e.get("site") or e.get("url") or ""
    assert (e.get("kind"), LATER.host in site, e.get("network"), e.get("after")) == \
        ("blocked", True, S.network_name("vol2"), "tls.reset"), f"{what}:\n{json.dumps(e, indent=1)[:3000]}"
    return e


def test_the_volunteers_databases_merged_show_one_event(collector_lab):
    _check_one_event(_json(collector_lab.merged_events), "probe report --events over the volunteers' databases")


# --------------------------------------------------------------------------- the collector


def test_a_token_per_volunteer_alone_on_stdout(collector_lab):
    c = collector_lab
    for role in ROLES:
        p = c.tokens[role]
        assert p.returncode == 0, f"probe collector token add {role}: {_said(p)}"
        lines = p.stdout.splitlines()
        assert len(lines) == 1 and lines[0].strip() and " " not in lines[0].strip(), _said(p)
    assert len({c.token(r) for r in ROLES}) == len(ROLES), "two volunteers got the same token"


def test_the_collector_is_healthy_and_every_volunteer_reaches_it(collector_lab):
    c = collector_lab
    for where in ("net", *ROLES):
        h = c.health.get(where) or {}
        assert h.get("status") == 200, f"GET /api/v1/health from {where}: {h}\ncollector log:\n{c.serve_log}"
        assert json.loads(h["body"]).get("ok") is True, h


def test_every_upload_was_sent(collector_lab):
    """`probe upload` (vol, abroad) and the run's own upload (vol2): each round sends
    that round's measurements, only those."""
    c = collector_lab
    for p in c.configured:
        assert p.returncode == 0, f"vol2's probe config set: {_said(p)}"
    sent = re.compile(r"\bsent (\d+) measurements?\b")
    for n in range(ROUNDS):
        for role in ROLES:
            if role == UPLOADS_ITSELF:
                p, what = c.runs[n][role], "probe run (uploads by itself: probe config set collector)"
            else:
                p, what = c.uploads[n][role], "probe upload"
            assert p.returncode == 0, f"round {n + 1}: {role}: {what}: {_said(p)}\ncollector log:\n{c.serve_log}"
            out = p.stdout + p.stderr
            assert "not uploaded" not in out, f"round {n + 1}: {role}: {what}: {_said(p)}"
            m = sent.search(out)
            assert m, f"round {n + 1}: {role}: {what} does not say how many measurements it sent: {_said(p)}"
            assert int(m.group(1)) == len(S.NETWORK_SITES), f"round {n + 1}: {role}: {what}: {_said(p)}"


REPORT_KEYS = ("url", "domain", "cc", "asn", "network", "verdict", "blocked", "confidence", "own_verdict",
               "own_blocked", "cross_rule_id", "evidence")


def test_the_collectors_report_has_every_network_and_the_contracts_keys(collector_lab):
    c = collector_lab
    rows = _json(c.report)
    assert isinstance(rows, list) and rows, f"probe report --db COLLECTOR --format json: {_said(c.report)}"
    missing = sorted({k for r in rows for k in REPORT_KEYS if k not in r})
    assert not missing, f"report rows lack {missing}; a row: {json.dumps(rows[0])[:1500]}"
    for r in rows:
        assert r["network"] == f"{r['cc']}/{r['asn']}", r
        assert isinstance(r["evidence"], list), r
    # every site, on every network: both Belarusian networks side by side, and abroad
    for site in S.NETWORK_SITES:
        assert set(_by_network(rows, site.url)) == {S.network_name(r) for r in ROLES}, _rows_text(rows, site.url)


@pytest.mark.parametrize("site,role,verdict", _params(_expected_now))
def test_the_collector_gives_each_network_its_verdict(collector_lab, site, role, verdict):
    """Nobody had a control: a site blocked on one network only is blocked there (the
    others' measurements are its control) and ok on the others; the site down for
    everyone is down."""
    row = _check_verdict(_json(collector_lab.report), site, role, verdict, "the collector's report")
    if row["blocked"] is True and row.get("own_blocked") is None:
        # the volunteer alone could not tell; the collector did, by a cross-network rule
        assert row.get("cross_rule_id") and row.get("evidence"), row


def test_the_collector_calls_the_site_down_everywhere_never_blocked(collector_lab):
    rows = _json(collector_lab.report) or []
    site = next(n for n in S.NETWORK_SITES if n.name == "offline")
    mine = [r for r in rows if r.get("url") == site.url]
    assert mine, _rows_text(rows)
    assert not [r for r in mine if r.get("blocked") is True], _rows_text(rows, site.url)


def test_the_collectors_table_shows_both_networks_and_their_methods(collector_lab):
    p = collector_lab.table
    assert p is not None and p.returncode == 0, _said(p)
    out = p.stdout
    for role, method in (("vol", "dns.nxdomain"), ("vol2", "tls.reset")):
        network = S.network_name(role)
        headline = [line for line in out.splitlines() if f"blocked on {network} " in line]
        assert headline and method in headline[0], f"no headline for {network} naming {method}:\n{out[:4000]}"
    assert S.network_name("abroad") in out, out[:4000]


def test_the_censors_change_is_one_event(collector_lab):
    c = collector_lab
    _check_one_event(_json(c.events), f"probe report --db COLLECTOR --events --format json ({_said(c.events)[:500]})")


def _feed(c: CollectorLab, name: str) -> dict:
    f = c.feeds.get(name) or {}
    assert f.get("status") == 200, f"{name} feed: {f}\ncollector log:\n{c.serve_log}"
    return f


def test_the_json_feed_of_the_censoring_network_has_the_event(collector_lab):
    f = _feed(collector_lab, "vol2")
    feed = json.loads(f["body"])
    assert str(feed.get("version", "")).startswith("https://jsonfeed.org/version/1"), feed
    items = feed.get("items")
    assert isinstance(items, list), feed
    _check_one_event([i.get("_bynet_probe") or {} for i in items], f"GET /events.json?asn={S.NETWORKS['vol2'][1]}")


def test_the_json_feed_of_the_other_network_has_no_event(collector_lab):
    feed = json.loads(_feed(collector_lab, "vol")["body"])
    assert feed.get("items") == [], json.dumps(feed, indent=1)[:3000]


def test_the_atom_feed_has_the_event(collector_lab):
    body = _feed(collector_lab, "atom")["body"]
    root = ET.fromstring(body)
    ns = "{http://www.w3.org/2005/Atom}"
    assert root.tag == f"{ns}feed", body[:2000]
    entries = root.findall(f"{ns}entry")
    assert len(entries) == 1, body[:4000]
    text = ET.tostring(entries[0], encoding="unicode")
    assert LATER.host in text and S.network_name("vol2") in text, text[:3000]


def test_the_collector_stops_on_sigterm(collector_lab):
    c = collector_lab
    assert c.serve is not None
    assert c.serve_exit is not None, f"the collector did not stop within 10 s of SIGTERM:\n{c.serve_log}"
    assert c.serve_exit in (0, -signal.SIGTERM, 128 + signal.SIGTERM), f"exit {c.serve_exit}:\n{c.serve_log}"
    assert "Traceback" not in Path(c.lab.dir / "net-collector.log").read_text(errors="replace"), c.serve_log


def test_quick_enough(collector_lab):
    assert collector_lab.timings.get("total", 1e9) < 180, collector_lab.timings
