"""The censorship lab under pytest: one lab, one probe run over every scenario, then one
test per scenario for its verdict and one for its raw evidence.

Needs root (network namespaces, iptables) and ip, tc, iptables, dnsmasq, sysctl;
skipped otherwise, saying why. About 70 s on a 2-core machine: the lab comes up in
~1 s, the probe run (``--timeout-scale 0.4 --concurrency 4``) takes ~40 s, half of it
the ``error`` scenario waiting for its control helper.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from . import REPO_ROOT
from . import scenarios as S
from .topology import Lab, assert_torn_down, skip_or_fail_without_lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(480)]
skip_or_fail_without_lab()


def probe_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m probe ...` on the database (no network needed): analyze, report, show."""
    return subprocess.run([sys.executable, "-m", "probe", *args], capture_output=True, text=True,
                          cwd=str(REPO_ROOT), timeout=timeout)


@dataclass
class LabRun:
    lab: Lab
    db: str
    probe: subprocess.CompletedProcess
    timings: dict[str, float]
    pids: list[int]
    report: list[dict] | None = None
    report_error: str | None = None
    shown: dict[str, dict] = field(default_factory=dict)
    # the same scenarios measured at the same time without a control helper (as the
    # Quick start runs): nothing that looks like an outage may be called blocked
    nocontrol_db: str | None = None
    nocontrol_probe: subprocess.CompletedProcess | None = None
    nocontrol_report: list[dict] | None = None
    # the other volunteers' networks (S.VANTAGES): their runs and reports, by name
    vantage_probe: dict[str, subprocess.CompletedProcess] = field(default_factory=dict)
    vantage_report: dict[str, list[dict] | None] = field(default_factory=dict)
    vantage_db: dict[str, str] = field(default_factory=dict)

    def show(self, url: str) -> dict:
        if url not in self.shown:
            p = probe_cli("show", "--db", self.db, "--json", url)
            assert p.returncode == 0, f"probe show {url}: {p.stderr.strip()}"
            self.shown[url] = json.loads(p.stdout)
        return self.shown[url]


def _move_when_measured(lab: Lab, db: str, count: int, deadline: float = 120) -> int:
    """Move the roaming volunteer to its second link once its run has stored ``count``
    measurements; returns how many there were at the move."""
    import sqlite3

    end = time.monotonic() + deadline
    n = 0
    while time.monotonic() < end:
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
            try:
                n = conn.execute("select count(*) from measurements").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.Error:
            n = 0
        if n >= count:
            break
        time.sleep(0.05)
    lab.move_to_second_link("roam")
    return n


def _report(db: str) -> tuple[list[dict] | None, str | None]:
    analyze = probe_cli("analyze", "--db", db)
    if analyze.returncode != 0:
        return None, f"probe analyze: exit {analyze.returncode}: {analyze.stderr.strip()}"
    rep = probe_cli("report", "--db", db, "--format", "json")
    try:
        return json.loads(rep.stdout), None
    except ValueError:
        return None, f"probe report --format json: exit {rep.returncode}: {rep.stderr.strip()}"


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("censorlab")
    lab = Lab(workdir=workdir)
    try:
        t0 = time.monotonic()
        lab.up()
        timings = {"up": round(time.monotonic() - t0, 2)}
        pids = [p["pid"] for p in lab.procs]
        db, bare = str(workdir / "probe.db"), str(workdir / "nocontrol.db")
        slow_targets = workdir / "slow-targets.txt"
        slow_targets.write_text("".join(url + "\n" for url, _, _ in S.SLOW_TARGETS))
        clock_targets = workdir / "clock-targets.txt"
        clock_targets.write_text("".join(url + "\n" for url, _, _ in S.CLOCK_TARGETS))
        roam_targets = workdir / "roam-targets.txt"
        roam_targets.write_text("".join(url + "\n" for url in S.ROAM_TARGETS))
        vantage_dbs = {"slow": str(workdir / "slow.db"), "clock": str(workdir / "clock.db"),
                       "hotel": str(workdir / "hotel.db"), "roam": str(workdir / "roam.db")}
        t = time.monotonic()
        with ThreadPoolExecutor(7) as pool:
            with_control = pool.submit(lab.run_probe, db, timeout=300)
            without = pool.submit(lab.run_probe, bare, control=False, timeout=300)
            slow = pool.submit(lab.run_probe, vantage_dbs["slow"], role="slow", targets=slow_targets, timeout=300)
            clock = pool.submit(lab.run_probe, vantage_dbs["clock"], targets=clock_targets, timeout=300,
                                wrapper=("faketime", "-f", S.CLOCK_OFFSET))
            # the hotel volunteer has set a control helper, as users do once
            hotel = pool.submit(lab.run_probe, vantage_dbs["hotel"], role="hotel", timeout=120)
            roam = pool.submit(lab.run_probe, vantage_dbs["roam"], role="roam", targets=roam_targets, timeout=300)
            moved = pool.submit(_move_when_measured, lab, vantage_dbs["roam"], S.ROAM_SWITCH_AFTER)
            probe, bare_probe = with_control.result(), without.result()
            vantage_probe = {"slow": slow.result(), "clock": clock.result(), "hotel": hotel.result(),
                             "roam": roam.result()}
            timings["roam_moved_after"] = moved.result()
        timings["probe"] = round(time.monotonic() - t, 1)
        run = LabRun(lab, db, probe, timings, pids, nocontrol_db=bare, nocontrol_probe=bare_probe,
                     vantage_probe=vantage_probe, vantage_db=vantage_dbs)
        if probe.returncode == 0:
            run.report, run.report_error = _report(db)
        if bare_probe.returncode == 0:
            run.nocontrol_report, _ = _report(bare)
        for name, p in vantage_probe.items():
            if name != "hotel":  # the hotel's run never starts
                run.vantage_report[name] = _report(vantage_dbs[name])[0] if p.returncode == 0 else None
        yield run
    finally:
        lab.down()


def test_probe_run_measured_every_scenario(lab_run):
    p = lab_run.probe
    assert p.returncode == 0, f"probe run failed:\n{p.stderr[-3000:]}"
    assert f"{len(S.SCENARIOS)} measured" in p.stderr, p.stderr[-2000:]
    for s in S.SCENARIOS:
        assert lab_run.show(s.url)["url"] == s.url


# --------------------------------------------------------------------------- verdicts


def _verdict_params():
    for s in S.SCENARIOS:
        marks = [pytest.mark.xfail(strict=True, reason=s.known_issue)] if s.known_issue else []
        yield pytest.param(s, marks=marks, id=s.name)


@pytest.mark.parametrize("scenario", list(_verdict_params()))
def test_verdict(lab_run, scenario):
    assert lab_run.probe.returncode == 0, "probe run failed"
    if lab_run.report is None:
        pytest.fail(f"no report to check (classifier not available yet?): {lab_run.report_error}")
    rows = [r for r in lab_run.report if r["url"] == scenario.url]
    assert rows, f"{scenario.url} is not in the report"
    row = rows[-1]
    for key in ("url", "domain", "asn", "cc", "measured_at", "verdict", "blocked", "confidence", "evidence"):
        assert key in row, f"report row lacks {key!r}"
    assert row["domain"] == scenario.host
    assert (row["cc"], row["asn"]) == ("ZZ", "AS64500")
    texts = [e.get("text") if isinstance(e, dict) else e for e in row["evidence"]]
    assert row["verdict"] == scenario.expected, (
        f"{scenario.name} ({scenario.description}): expected {scenario.expected}, got "
        f"{row['verdict']}; evidence: {texts}")
    assert row["blocked"] is scenario.blocked
    assert row.get("tags", []) == list(scenario.expected_tags), (scenario.name, row.get("tags"))
    assert 0 <= row["confidence"] <= 1


# --------------------------------------------------------------------------- without a control


def _nocontrol_row(lab_run, scenario) -> dict:
    assert lab_run.nocontrol_probe.returncode == 0, lab_run.nocontrol_probe.stderr[-2000:]
    assert lab_run.nocontrol_report is not None, "no report of the run without a control"
    rows = [r for r in lab_run.nocontrol_report if r["url"] == scenario.url]
    assert rows, f"{scenario.url} is not in the report of the run without a control"
    return rows[-1]


@pytest.mark.parametrize("scenario", [s for s in S.SCENARIOS if not s.blocked], ids=lambda s: s.name)
def test_without_a_control_no_trap_is_called_blocked(lab_run, scenario):
    row = _nocontrol_row(lab_run, scenario)
    assert row["blocked"] is not True, (scenario.name, row["verdict"], [e["text"] for e in row["evidence"]])


@pytest.mark.parametrize("scenario", [s for s in S.SCENARIOS if s.proof_without_control], ids=lambda s: s.name)
def test_without_a_control_blockpages_and_injection_are_still_blocked(lab_run, scenario):
    row = _nocontrol_row(lab_run, scenario)
    assert (row["verdict"], row["blocked"]) == (scenario.expected, True), [e["text"] for e in row["evidence"]]


def test_the_run_without_a_control_says_what_it_cannot_tell(lab_run):
    err = lab_run.nocontrol_probe.stderr
    assert "no control helper" in err and "can't tell" in err and "probe config set control URL" in err
    unclear = [r for r in lab_run.nocontrol_report if r["blocked"] is None]
    assert unclear and f"{len(unclear)} can't tell" in err


# --------------------------------------------------------------------------- a volunteer's own network


def _vantage_rows(lab_run, name: str) -> dict[str, dict]:
    p = lab_run.vantage_probe[name]
    assert p.returncode == 0, f"probe run in {name}: exit {p.returncode}\n{p.stderr[-2000:]}"
    assert lab_run.vantage_report[name] is not None, f"no report of the {name} run"
    return {r["url"]: r for r in lab_run.vantage_report[name]}


@pytest.mark.parametrize("url,expected,tags", S.SLOW_TARGETS, ids=[u for u, _, _ in S.SLOW_TARGETS])
def test_on_a_slow_lossy_link_large_pages_are_slow_not_blocked(lab_run, url, expected, tags):
    row = _vantage_rows(lab_run, "slow")[url]
    assert (row["verdict"], row["tags"], row["blocked"]) == (expected, list(tags), False), \
        [e["text"] for e in row["evidence"]]


def test_the_slow_link_was_measured_and_said(lab_run):
    _vantage_rows(lab_run, "slow")
    err = lab_run.vantage_probe["slow"].stderr
    assert "this link is slow (about" in err, err[-2000:]
    speed = probe_cli("show", "--db", lab_run.vantage_db["slow"], "--json")
    assert speed.returncode == 0
    (run,) = json.loads(speed.stdout)
    link = json.loads(run["config"])["link_bytes_per_s"]
    assert 10_000 < link < 40_000, link  # 256 kbit/s is 32 kB/s


def test_a_network_change_mid_run_splits_the_run_and_marks_what_was_in_flight(lab_run):
    p = lab_run.vantage_probe["roam"]
    assert p.returncode == 0, p.stderr[-2000:]
    assert "this computer's network changed (" in p.stderr, p.stderr[-2000:]
    runs = json.loads(probe_cli("show", "--db", lab_run.vantage_db["roam"], "--json").stdout)
    assert len(runs) == 2, runs
    first, second = sorted(runs, key=lambda r: r["started_at"])
    assert (first["cc"], first["asn"]) == ("ZZ", "AS64500")
    # the --cc/--asn given were for the first network: the second is not labelled with them
    assert (second["cc"], second["asn"]) == (None, None) and first["run_id"][:8] in second["notes"]
    rows = lab_run.vantage_report["roam"]
    by_run: dict[str, list[dict]] = {}
    for r in rows:
        by_run.setdefault(r["run_id"], []).append(r)
    before = {r["url"]: r for r in by_run[first["run_id"]] if "network_changed" not in r["tags"]}
    marked = [r for r in by_run[first["run_id"]] if "network_changed" in r["tags"]]
    after = {r["url"]: r for r in by_run[second["run_id"]]}
    # measured on the censoring ISP: its blocking, under its label
    for url, verdict in S.ROAM_CENSORED.items():
        assert before[url]["verdict"] == verdict and before[url]["blocked"] is True, before.get(url)
    # what was in flight at the move is marked, never called blocked, and measured again
    assert marked and all(r["blocked"] is not True for r in marked)
    assert {r["url"] for r in marked} <= set(after)
    # the new network (no censor): everything measured there works
    assert all(r["verdict"] == "ok" for r in after.values()), {u: r["verdict"] for u, r in after.items()}
    assert set(before) | set(after) == set(S.ROAM_TARGETS)


def test_behind_a_captive_portal_the_run_stops_with_one_line(lab_run):
    p = lab_run.vantage_probe["hotel"]
    assert p.returncode == 2, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: this network is behind a captive portal"), lines
    assert f"http://{S.PORTAL_HOST}/login" in lines[0] and "nothing was measured" in lines[0]
    assert "Traceback" not in p.stderr
    rows = probe_cli("show", "--db", lab_run.vantage_db["hotel"], "--json")
    assert json.loads(rows.stdout or "[]") == []  # no run was started


@pytest.mark.parametrize("url,expected,tags", S.CLOCK_TARGETS, ids=[u for u, _, _ in S.CLOCK_TARGETS])
def test_with_the_clock_a_year_off_certificates_are_judged_at_the_controls_time(lab_run, url, expected, tags):
    row = _vantage_rows(lab_run, "clock")[url]
    assert (row["verdict"], row["tags"]) == (expected, list(tags)), [e["text"] for e in row["evidence"]]


def test_the_wrong_clock_is_warned_about(lab_run):
    _vantage_rows(lab_run, "clock")
    err = lab_run.vantage_probe["clock"].stderr
    assert "clock is 365 days ahead of the control helper's" in err, err[-2000:]
    shown = probe_cli("show", "--db", lab_run.vantage_db["clock"], "--json", "https://clock-site.lab.test/")
    (t,) = [t for t in json.loads(shown.stdout)["local"]["tls"] if t["sni_role"] == "target"]
    assert t["cert_valid"] == 1 and t["cert_checked_at"][:4] == time.strftime("%Y", time.gmtime()), t


# --------------------------------------------------------------------------- raw evidence


def dns(m, side="local", engine=None, qtype=None):
    return [q for q in m[side]["dns"] if (engine is None or q["engine"] == engine)
            and (qtype is None or q["query_type"] == qtype)]


def answers(q) -> list[str]:
    return [a["value"] for a in q["answers"] if a["answer_type"] in ("A", "AAAA")]


def tcp(m, side="local", port=None):
    return [c for c in m[side]["tcp"] if port is None or c["port"] == port]


def tls(m, side="local", role="target"):
    return [t for t in m[side]["tls"] if t["sni_role"] == role]


def main_hops(m, side="local"):
    return sorted((h for h in m[side]["http"] if h["kind"] == "main"), key=lambda h: h["hop"])


def fallbacks(m):
    return [h for h in m["local"]["http"] if h["kind"] == "http_fallback"]


def site_ip(label: str) -> str:
    ip = next(x.ip for s in S.SCENARIOS for x in s.sites if x.label == label)
    assert ip is not None, f"{label} has no address"
    return ip


def control_fetched_site(m, title: str | None = None):
    """The control helper measured the real site: no control failure, a 200 page."""
    assert m["control_failure"] is None, m["control_result"]
    last = main_hops(m, "control")[-1]
    assert last["status"] == 200, last
    if title:
        assert last["title"] == title


def local_fetched_site(m, title: str):
    last = main_hops(m)[-1]
    assert (last["status"], last["failure"], last["title"]) == (200, None, title), last


def sink_unanswered(m):
    (sink,) = dns(m, engine="sink")
    assert sink["resolver"] == f"{S.CONTROL_IP}:53"
    assert not sink["answers"] and sink["failure"] is not None, sink


def _title(label):
    return next(x.page_title for s in S.SCENARIOS for x in s.sites if x.label == label)


def ev_ok(m):
    (t,) = tls(m)
    assert t["success"] and t["cert_valid"], t
    local_fetched_site(m, _title("ok"))
    control_fetched_site(m, _title("ok"))
    sink_unanswered(m)


def ev_ok_http(m):
    local_fetched_site(m, _title("ok-http"))
    assert main_hops(m)[-1]["address"] == f"{site_ip('ok-http')}:80"
    control_fetched_site(m, _title("ok-http"))


def ev_dns_nxdomain(m):
    for q in dns(m, engine="udp"):
        assert q["resolver"] == f"{S.ISP_VOL_IP}:53" and q["rcode"] == "NXDOMAIN", q
    (system,) = dns(m, engine="system")
    assert system["failure"] == "dns_nxdomain"
    assert m["addresses"] == []
    assert any(site_ip("dns-nxdomain") in answers(q) for q in dns(m, "control"))
    control_fetched_site(m)


def ev_dns_bogon(m):
    for q in dns(m, engine="system") + dns(m, engine="udp", qtype="A"):
        assert answers(q) == ["127.0.0.2"], q
    assert all(c["failure"] == "connection_refused" for c in tcp(m)), tcp(m)
    assert any(site_ip("dns-bogon") in answers(q) for q in dns(m, "control"))
    control_fetched_site(m)


def ev_dns_blockpage(m):
    assert m["addresses"] == [S.BLOCKPAGE_IP]
    (fb,) = fallbacks(m)
    assert fb["url"] == f"http://{S.BLOCKPAGE_IP}/" and fb["status"] == 200, fb
    assert S.BELTELECOM_FINGERPRINT in fb["body_head"]
    assert main_hops(m)[0]["failure"] == "connection_refused"  # nothing on :443 there
    assert any(site_ip("dns-blockpage") in answers(q) for q in dns(m, "control"))
    control_fetched_site(m)


def ev_dns_injection(m):
    (sink,) = dns(m, engine="sink")
    # an answer from the control helper's address, where no DNS server runs
    assert sink["responder"] == f"{S.CONTROL_IP}:53" and answers(sink) == [S.DEAD_IP], sink
    for q in dns(m, engine="system") + dns(m, engine="udp", qtype="A"):
        assert answers(q) == [S.DEAD_IP], q
    assert all(c["failure"] == "generic_timeout" for c in tcp(m)), tcp(m)
    assert any(site_ip("dns-injection") in answers(q) for q in dns(m, "control"))
    control_fetched_site(m)


def ev_dns_inconsistent(m):
    other = site_ip("elsewhere")
    assert m["addresses"] == [other]
    (t,) = tls(m)
    assert t["failure"] == "ssl_invalid_hostname" and t["cert_valid"] == 0, t
    (fb,) = fallbacks(m)
    assert fb["status"] == 200 and fb["title"] == _title("elsewhere"), fb
    ctl = {c["ip"]: c for c in tls(m, "control")}
    assert ctl[site_ip("dns-inconsistent")]["success"]
    assert ctl[other]["failure"] == "ssl_invalid_hostname"  # not valid from anywhere
    control_fetched_site(m, _title("dns-inconsistent"))


def ev_tcp_timeout(m):
    assert {(c["port"], c["failure"]) for c in tcp(m)} == {(80, "generic_timeout"), (443, "generic_timeout")}
    assert tls(m) == []
    assert all(c["success"] for c in tcp(m, "control"))
    control_fetched_site(m)


def ev_tcp_refused(m):
    assert {(c["port"], c["failure"]) for c in tcp(m)} == {(80, "connection_refused"), (443, "connection_refused")}
    assert all(c["success"] for c in tcp(m, "control"))
    control_fetched_site(m)


def ev_tcp_reset(m):
    assert all(c["success"] for c in tcp(m)), tcp(m)
    (t,) = tls(m)
    assert (t["failure"], t["failure_stage"]) == ("connection_reset", "after_client_hello"), t
    (benign,) = tls(m, role="control")
    assert benign["server_name"] == "example.com"
    assert benign["failure"] == "connection_reset", benign  # not the name: the address
    assert main_hops(m)[0]["failure"] == "connection_reset"
    (fb,) = fallbacks(m)
    assert fb["failure"] == "connection_reset"  # port 80 too
    control_fetched_site(m)


def ev_tls_reset(m):
    assert all(c["success"] for c in tcp(m)), tcp(m)
    (t,) = tls(m)
    assert (t["failure"], t["failure_stage"]) == ("connection_reset", "after_client_hello"), t
    (benign,) = tls(m, role="control")
    assert benign["server_name"] == "example.com" and benign["success"], benign
    (fb,) = fallbacks(m)
    assert fb["status"] == 200 and fb["title"] == _title("tls-reset")
    control_fetched_site(m, _title("tls-reset"))


def ev_tls_timeout(m):
    (t,) = tls(m)
    assert (t["failure"], t["failure_stage"]) == ("generic_timeout", "after_client_hello"), t
    (benign,) = tls(m, role="control")
    assert benign["success"], benign
    control_fetched_site(m, _title("tls-timeout"))


def ev_tls_mitm(m):
    (t,) = tls(m)
    assert t["failure"] == "ssl_unknown_authority" and t["cert_valid"] == 0, t
    leaf = t["peer_certificates"][0]
    assert S.INTERCEPTION_CA in leaf["issuer"] and "tls-mitm.lab.test" in leaf["sans"], leaf
    (ct,) = tls(m, "control")
    assert ct["success"] and ct["cert_valid"] and "Lab CA" in ct["peer_certificates"][0]["issuer"]
    control_fetched_site(m, _title("tls-mitm"))


def ev_http_reset(m):
    (hop,) = main_hops(m)
    assert hop["failure"] == "connection_reset", hop
    assert all(c["success"] for c in tcp(m))
    control_fetched_site(m, _title("http-reset"))


def ev_http_timeout(m):
    (hop,) = main_hops(m)
    assert hop["failure"] == "generic_timeout", hop
    assert all(c["success"] for c in tcp(m))
    control_fetched_site(m, _title("http-timeout"))


def ev_http_blockpage(m):
    (hop,) = main_hops(m)
    # the volunteer believes it talks to the site's own address
    assert hop["address"] == f"{site_ip('http-blockpage')}:80" and hop["status"] == 200, hop
    assert S.BELTELECOM_FINGERPRINT in hop["body_head"]
    control_fetched_site(m, _title("http-blockpage"))


def ev_http_blockpage_redirect(m):
    first, second = main_hops(m)
    assert first["status"] == 302 and first["location"].startswith("http://82.209.230.23/"), first
    # the volunteer has no route outside the lab: the redirect is never followed out
    assert second["failure"] == "network_unreachable", second
    control_fetched_site(m, _title("http-redirect-blockpage"))


def ev_http_diff(m):
    (hop,) = main_hops(m)
    ctl = main_hops(m, "control")[-1]
    assert hop["status"] == 200 and hop["title"] == "Portal", hop
    assert hop["body_length"] * 10 < ctl["body_length"], (hop["body_length"], ctl["body_length"])
    control_fetched_site(m, _title("http-diff"))


def ev_http_throttled(m):
    (hop,) = main_hops(m)
    assert hop["status"] == 200 and hop["failure"] == "generic_timeout", hop
    # some of the body came, slowly: far less than the cap the control read at once
    ctl = main_hops(m, "control")[-1]
    assert ctl["failure"] == "body_too_large" and ctl["body_length"] == 2 * 1024 * 1024, ctl
    assert 0 < hop["body_length"] < ctl["body_length"] // 10, hop["body_length"]


def _redirected_to(m, target_label: str):
    """The first hop is the site's 302 to the other host; the control followed it."""
    hops = main_hops(m)
    assert hops[0]["status"] == 302 and target_label in hops[0]["location"], hops[0]
    ctl = main_hops(m, "control")
    assert [h["status"] for h in ctl] == [302, 200], ctl
    assert ctl[-1]["title"] == _title(target_label)
    return hops


def ev_redirect_then_tls_reset(m):
    hops = _redirected_to(m, "sni-after-redirect")
    assert hops[1]["failure"] == "connection_reset", hops[1]
    # the probe measured the redirect target's own steps: TCP fine, the SNI reset
    target_ip = site_ip("sni-after-redirect")
    assert [c["success"] for c in tcp(m, port=443) if c["ip"] == target_ip] == [True]
    hs = [t for t in tls(m) if t["server_name"] == "sni-after-redirect.lab.test"]
    assert [(t["failure"], t["failure_stage"]) for t in hs] == [("connection_reset", "after_client_hello")], hs
    benign = [t for t in tls(m, role="control") if t["ip"] == target_ip]
    assert benign and benign[0]["success"], benign


def ev_redirect_then_refused(m):
    hops = _redirected_to(m, "refused-after-redirect")
    assert hops[1]["failure"] == "connection_refused", hops[1]
    target_ip = site_ip("refused-after-redirect")
    assert [c["failure"] for c in tcp(m, port=80) if c["ip"] == target_ip] == ["connection_refused"]
    assert any(q["hostname"] == "refused-after-redirect.lab.test" and answers(q) == [target_ip] for q in dns(m))


def ev_redirect_then_nxdomain(m):
    hops = _redirected_to(m, "nxdomain-after-redirect")
    assert hops[1]["failure"] in ("dns_nxdomain", "dns_temporary_failure"), hops[1]
    target = [q for q in dns(m) if q["hostname"] == "nxdomain-after-redirect.lab.test"]
    assert target and all(q["failure"] == "dns_nxdomain" for q in target), target


def ev_dns_ghost(m):
    assert m["addresses"] == [S.BLOCKPAGE_IP]
    assert all(q["failure"] == "dns_nxdomain" for q in dns(m, "control")), dns(m, "control")
    (fb,) = fallbacks(m)
    assert fb["status"] == 200 and S.BELTELECOM_FINGERPRINT in fb["body_head"], fb


def ev_dns_transparent_proxy(m):
    assert m["addresses"] == [S.PROXY_IP]
    assert any(site_ip("isp-proxy") in answers(q) for q in dns(m, "control"))
    (t,) = tls(m)
    assert t["ip"] == S.PROXY_IP and t["success"] and t["cert_valid"], t  # relayed to the real site
    local_fetched_site(m, _title("isp-proxy"))
    assert main_hops(m)[-1]["address"] == f"{S.PROXY_IP}:443"


def ev_cdn_challenge(m):
    (hop,) = main_hops(m)
    assert hop["status"] == 503 and hop["title"] == "Just a moment...", hop
    assert "Checking your browser" in hop["body_head"]
    control_fetched_site(m, _title("cdn-challenge"))


def ev_large_file(m):
    for side in ("local", "control"):
        (hop,) = main_hops(m, side)
        assert hop["status"] == 200 and hop["failure"] == "body_too_large" and hop["body_truncated"], hop


def ev_down_everywhere(m):
    for side in ("local", "control"):
        assert {c["failure"] for c in tcp(m, side)} == {"connection_refused"}, tcp(m, side)
    assert main_hops(m, "control")[-1]["failure"] == "connection_refused"


def ev_down_nxdomain_everywhere(m):
    for side in ("local", "control"):
        assert all(q["failure"] == "dns_nxdomain" for q in dns(m, side) if q["engine"] != "sink"), dns(m, side)
    assert main_hops(m, "control")[-1]["failure"] == "no_addresses"


def ev_bogon_everywhere(m):
    assert m["addresses"] == ["127.0.0.1"]
    assert any(answers(q) == ["127.0.0.1"] for q in dns(m, "control"))
    assert main_hops(m, "control")[-1]["failure"] == "connection_refused"


def ev_expired_everywhere(m):
    for side in ("local", "control"):
        (t,) = tls(m, side)
        assert t["failure"] == "ssl_invalid_certificate", t


def ev_ipv4_blocked_dual_stack(m):
    v4, v6 = site_ip("dual-stack"), "fd77:0:0:2::60"
    assert {(c["ip"], c["failure"]) for c in tcp(m, port=443)} == {(v4, "generic_timeout"), (v6, None)}, tcp(m)
    (t,) = tls(m)
    assert t["ip"] == v6 and t["success"] and t["cert_valid"], t
    local_fetched_site(m, _title("dual-stack"))
    assert main_hops(m)[-1]["address"] == f"[{v6}]:443"  # the page came over IPv6
    assert {c["ip"] for c in tcp(m, "control", port=443) if c["success"]} == {v4, v6}


def ev_redirect_loop_everywhere(m):
    for side in ("local", "control"):
        hops = main_hops(m, side)
        assert len(hops) == 11 and hops[-1]["status"] == 302, [h["url"] for h in hops]
        assert hops[-1]["failure"] == "http_too_many_redirects", hops[-1]


def ev_dynamic_page(m):
    mine, theirs = main_hops(m)[-1], main_hops(m, "control")[-1]
    assert mine["status"] == theirs["status"] == 200
    assert mine["title"].startswith("Dynamic page #") and theirs["title"].startswith("Dynamic page #")
    assert mine["title"] != theirs["title"]  # it really changes between fetches


def ev_redirect_other_host(m):
    for side in ("local", "control"):
        hops = main_hops(m, side)
        assert [h["status"] for h in hops] == [302, 200], hops
        assert hops[1]["url"] == "https://redirect-target.lab.test/"
        assert hops[1]["address"] == f"{site_ip('redirect-target')}:443"


def ev_slow_site(m):
    (hop,) = main_hops(m)
    assert hop["status"] == 200 and hop["duration_ms"] >= 1900, hop
    control_fetched_site(m, _title("slow-site"))


def ev_error(m):
    local_dns = [q for q in dns(m) if q["engine"] != "sink"]
    # the raw queries time out; getaddrinfo gives up first (resolv.conf: timeout:1 attempts:2)
    assert local_dns and all(q["failure"] == "generic_timeout" for q in local_dns if q["engine"] == "udp"), local_dns
    assert all(q["failure"] in ("generic_timeout", "dns_temporary_failure") for q in local_dns), local_dns
    assert m["addresses"] == []
    assert m["control_failure"] == "control_unavailable"


EVIDENCE = {name[3:]: fn for name, fn in globals().items() if name.startswith("ev_")}


def test_every_scenario_has_an_evidence_check():
    assert set(EVIDENCE) == set(S.BY_NAME)


@pytest.mark.parametrize("scenario", S.SCENARIOS, ids=lambda s: s.name)
def test_evidence(lab_run, scenario):
    assert lab_run.probe.returncode == 0, f"probe run failed:\n{lab_run.probe.stderr[-2000:]}"
    m = lab_run.show(scenario.url)
    assert m["run"]["cc"] == "ZZ" and m["run"]["asn"] == "AS64500"
    EVIDENCE[scenario.name](m)


def test_no_scenario_lost_its_control(lab_run):
    """At the probe's default concurrency against the helper's default limits, every
    scenario has its control answer, but `error`, whose request the censor drops."""
    assert lab_run.probe.returncode == 0, "probe run failed"
    lost = {s.name: lab_run.show(s.url)["control_result"] for s in S.SCENARIOS
            if lab_run.show(s.url)["control_failure"] is not None}
    assert set(lost) == {"error"}, lost
    # the censor drops the request (it names the URL); the helper itself answers
    assert lost["error"]["reason"] == "request_lost" and lost["error"]["attempts"] >= 2, lost["error"]
    assert "asked again at the end" in lab_run.probe.stderr


def test_run_is_quick(lab_run):
    assert lab_run.timings["up"] < 20, lab_run.timings
    assert lab_run.timings["probe"] < 120, lab_run.timings


# --------------------------------------------------------------------------- teardown (last)


def test_teardown_leaves_nothing(lab_run):
    lab = lab_run.lab
    assert lab.is_up
    problems = lab.down()
    assert problems == []
    assert_torn_down(lab, lab_run.pids)


@pytest.mark.timeout(120)
def test_lab_html_report_is_readable_in_chromium(lab_run, tmp_path):
    """The lab's real database (every verdict of the vocabulary) as an HTML report in
    headless Chromium at 1,400 px and on a 390 px phone: the geometry checks of
    tests/test_report_browser.py."""
    import test_report_browser as trb  # skips (module level) without playwright or Chromium
    from playwright.sync_api import sync_playwright

    assert lab_run.probe.returncode == 0, lab_run.probe.stderr[-2000:]
    page = tmp_path / "lab.html"
    rc, _, err = trb.probe_sync("report", "--db", str(lab_run.db), "--format", "html", "-o", str(page))
    assert rc == 0, err
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(trb.CHROMIUM), args=trb.CHROMIUM_ARGS)
        try:
            shapes = [trb.measure(browser, page, viewport, tmp_path, "lab") for viewport in (trb.DESKTOP, trb.PHONE)]
        finally:
            browser.close()
    for g in shapes:
        trb.assert_readable(g)
        assert g["headlineLines"] == 1 and g["cells"] >= 30
    assert str(Path(lab_run.db).parent) not in page.read_text(encoding="utf-8")  # no path of this machine
