"""Reports and explanations over real probe databases (no mocks): two networks, several
sites over several days, a mix of verdicts, Cyrillic evidence and hostile strings."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlite_utils
from click.testing import CliRunner
from clirun import probe_sync
from rich.console import Console

from probe import store
from probe.analysis import persist
from probe.cli.report import explain_cmd, report_cmd
from probe.core.records import Measurement, new_id
from probe.core.verdicts import CLASSIFIER_VERSION, VERDICTS, Evidence, LayerFinding, Verdict
from probe.report import html, markdown, tables, terminal
from probe.report import model as rep
from probe.report.explain import NothingToExplain, confidence_words, explain, explain_json, explain_measurement

HOSTILE = "<script>alert('x')</script>"
CYRILLIC = "заголовок страницы «Доступ ограничен»"

# (url, day of May 2024, hour, verdict, confidence, evidence lines)
BELTELECOM = [
    ("https://charter97.org/", 1, 10, "tls.reset", 0.95, ["TLS handshake reset right after our ClientHello",
                                                          "a handshake with another name to the same address worked"]),
    ("https://charter97.org/", 2, 10, "tls.reset", 0.95, ["TLS handshake reset right after our ClientHello"]),
    ("https://charter97.org/", 3, 10, "tls.reset", 0.95, ["TLS handshake reset right after our ClientHello"]),
    ("https://nashaniva.com/", 1, 10, "ok", 0.9, ["same title as the control"]),
    ("https://nashaniva.com/", 2, 10, "dns.nxdomain", 0.85, ["local resolver: NXDOMAIN; control: A 104.21.3.4"]),
    ("https://nashaniva.com/", 3, 10, "dns.nxdomain", 0.85, ["local resolver: NXDOMAIN; control: A 104.21.3.4"]),
    ("https://www.svaboda.org/", 1, 10, "http.blockpage", 0.9, [CYRILLIC]),
    ("https://www.svaboda.org/", 2, 9, "http.blockpage", 0.9, [CYRILLIC]),
    ("https://www.svaboda.org/", 2, 15, "ok", 0.6, ["same title as the control"]),
    ("https://www.svaboda.org/", 3, 10, "http.blockpage", 0.9, [CYRILLIC]),
    ("https://gone.example.by/", 1, 10, "down", 0.8, ["control: connection refused too"]),
    ("https://gone.example.by/", 3, 10, "down", 0.8, ["control: connection refused too"]),
    ("https://zerkalo.io/", 3, 10, "http.diff", 0.55, [f"local title {HOSTILE} vs control title Zerkalo"]),
]
A1 = [
    ("https://charter97.org/", 1, 11, "ok", 0.9, ["same title as the control"]),
    ("https://charter97.org/", 2, 11, "tcp.timeout", 0.9, ["SYN to 185.23.4.5:443 unanswered; control connected"]),
    ("https://charter97.org/", 3, 11, "tcp.timeout", 0.9, ["SYN to 185.23.4.5:443 unanswered; control connected"]),
    ("https://www.svaboda.org/", 1, 11, "ok", 0.95, ["same title as the control"]),
    ("https://www.svaboda.org/", 2, 11, "ok", 0.95, ["same title as the control"]),
    ("https://www.svaboda.org/", 3, 11, "ok", 0.95, ["same title as the control"]),
    ("https://belsat.eu/", 2, 11, "error", 0.1, ["control helper unreachable and no local answer"]),
]


def _when(day: int, hour: int) -> str:
    return f"2024-05-{day:02d}T{hour:02d}:00:00.000000Z"


def _verdict(verdict: str, confidence: float, lines: list[str]) -> Verdict:
    blocked = VERDICTS[verdict][0]
    layer = verdict.split(".")[0] if blocked else None
    layers = {"dns": LayerFinding("dns", ok=1.0, rule_id="dns.consistent")}
    if layer:
        layers[layer] = LayerFinding(layer, blocked=confidence, rule_id=f"{verdict}.rule", verdict=verdict)
    return Verdict(verdict, blocked, confidence, layer, rule_id=f"{verdict}.rule" if layer else verdict,
                   evidence=[Evidence(t, {"n": i}) for i, t in enumerate(lines)], layers=layers)


def _run(db, cc: str, asn: str, name: str, day: int, urls: list[str]) -> str:
    run_id = new_id()
    store.create_run(db, {"run_id": run_id, "started_at": _when(day, 8), "status": "finished", "probe_version": "t",
                          "cc": cc, "asn": asn, "network_name": name, "config": "{}", "notes": "[]",
                          "resolvers": "[]"},
                     [store.RunTarget(u, "NEWS") for u in urls])
    return run_id


def _measure(db, run_id: str, url: str, day: int, hour: int) -> str:
    host = urlsplit(url).hostname
    assert host is not None
    m = Measurement(url=url, hostname=host, scheme="https", port=443, started_at=_when(day, hour), category="NEWS")
    store.save_measurement(db, run_id, m)
    return m.measurement_id


def make_db(path: Path, cc: str, asn: str, name: str, plan) -> sqlite_utils.Database:
    """One run per day, one measurement per plan line, one verdict each."""
    db = store.open_db(path)
    runs: dict[int, str] = {}
    items = []
    for url, day, hour, verdict, conf, lines in plan:
        if day not in runs:
            runs[day] = _run(db, cc, asn, name, day, sorted({p[0] for p in plan if p[1] == day}))
        items.append((_measure(db, runs[day], url, day, hour), _verdict(verdict, conf, lines)))
    persist.save_verdicts(db, items)
    return db


@pytest.fixture
def dbs(tmp_path):
    d1 = make_db(tmp_path / "beltelecom.db", "BY", "AS6697", "Beltelecom", BELTELECOM)
    d2 = make_db(tmp_path / "a1.db", "BY", "AS25106", "A1 <Velcom>", A1)
    yield d1, d2
    d1.conn.close()
    d2.conn.close()


@pytest.fixture
def rows(dbs):
    return rep.collect(list(dbs))


def _site(table, url, network):
    (entry,) = [e for e in table if e["url"] == url and e["network"] == network]
    return entry


# --- structures ------------------------------------------------------------------------


def test_collect_merges_databases_and_dedupes_copies(dbs, tmp_path):
    d1, d2 = dbs
    copy_path = tmp_path / "copy-of-beltelecom.db"
    dst = sqlite3.connect(copy_path)
    d1.conn.backup(dst)
    dst.close()
    d3 = store.open_db(copy_path, create=False)
    try:
        rows = rep.collect([d1, d2, d3])
    finally:
        d3.conn.close()
    assert len(rows) == len(BELTELECOM) + len(A1)
    assert len({r["measurement_id"] for r in rows}) == len(rows)
    by_db = {r["db"] for r in rows}
    assert by_db == {"beltelecom.db", "a1.db"}  # the copy's duplicates are the first database's; no paths
    assert {rep.network_of(r) for r in rows} == {"BY/AS6697", "BY/AS25106"}
    assert all(isinstance(r["evidence"], list) for r in rows)


def test_site_network_table_latest_verdict_seen_dates_and_agreement(rows):
    table = rep.site_network_table(rows)
    assert len(table) == 5 + 3  # sites per network

    c = _site(table, "https://charter97.org/", "BY/AS6697")
    assert (c["verdict"], c["blocked"], c["confidence"]) == ("tls.reset", True, 0.95)
    assert (c["agree"], c["total"]) == (3, 3)
    assert c["first_seen"] == _when(1, 10) and c["last_seen"] == _when(3, 10)

    c2 = _site(table, "https://charter97.org/", "BY/AS25106")
    assert c2["verdict"] == "tcp.timeout" and (c2["agree"], c2["total"]) == (2, 3)
    assert c2["first_seen"] == _when(2, 11) and c2["first_measured"] == _when(1, 11)
    assert c2["verdicts_seen"] == ["ok", "tcp.timeout"]

    nn = _site(table, "https://nashaniva.com/", "BY/AS6697")
    assert nn["verdict"] == "dns.nxdomain" and (nn["agree"], nn["total"]) == (2, 3)
    assert (nn["first_seen"], nn["last_seen"]) == (_when(2, 10), _when(3, 10))
    assert (nn["first_measured"], nn["last_measured"]) == (_when(1, 10), _when(3, 10))

    sv = _site(table, "https://www.svaboda.org/", "BY/AS6697")
    assert sv["verdict"] == "http.blockpage" and (sv["agree"], sv["total"]) == (3, 4)
    assert sv["first_seen"] == _when(1, 10) and sv["verdicts_seen"] == ["http.blockpage", "ok"]
    assert sv["evidence"][0]["text"] == CYRILLIC

    ok = _site(table, "https://www.svaboda.org/", "BY/AS25106")
    assert (ok["verdict"], ok["blocked"], ok["agree"], ok["total"]) == ("ok", False, 3, 3)


def test_site_history_is_ordered_and_names_networks(rows):
    history = rep.site_history(rows)
    sv = history["https://www.svaboda.org/"]
    assert len(sv) == 7
    assert [e["measured_at"] for e in sv] == sorted(e["measured_at"] for e in sv)
    assert sv[0] == {"measured_at": _when(1, 10), "network": "BY/AS6697", "verdict": "http.blockpage",
                     "blocked": True, "confidence": 0.9}
    assert {e["network"] for e in sv} == {"BY/AS6697", "BY/AS25106"}


def test_method_and_layer_counts_use_the_latest_verdict_per_site_and_network(rows):
    assert rep.method_counts(rows) == {
        "ok": 1, "down": 1, "dns.nxdomain": 1, "tcp.timeout": 1, "tls.reset": 1,
        "http.blockpage": 1, "http.diff": 1, "error": 1,
    }
    assert list(rep.method_counts(rows)) == ["ok", "down", "dns.nxdomain", "tcp.timeout", "tls.reset",
                                             "http.blockpage", "http.diff", "error"]  # the spec's order
    assert rep.layer_counts(rows) == {"dns": 1, "tcp": 1, "tls": 1, "http": 2}
    per = rep.method_counts_by_network(rows)
    assert per["BY/AS25106"] == {"ok": 1, "tcp.timeout": 1, "error": 1}


def test_sites_are_sorted_blocked_first_then_cant_tell_then_the_rest(rows):
    table = rep.site_network_table(rows)
    order = list(dict.fromkeys(e["url"] for e in table))
    # blocked on both networks first, then blocked on one (more confident first), then
    # could not measure (belsat), down, and the sites that work
    assert order == ["https://charter97.org/", "https://www.svaboda.org/", "https://nashaniva.com/",
                     "https://zerkalo.io/", "https://belsat.eu/", "https://gone.example.by/"]
    assert [e["network"] for e in table[:2]] == ["BY/AS6697", "BY/AS25106"]  # a site's networks together
    assert rep.site_status(table[0]) == "blocked"


def test_network_summaries_are_the_headline_numbers(rows):
    (beltelecom, a1) = rep.network_summaries(rep.site_network_table(rows))
    assert (beltelecom.network, beltelecom.sites, beltelecom.blocked, beltelecom.high) == ("BY/AS6697", 5, 4, 3)
    assert beltelecom.methods == (("dns.nxdomain", 1), ("tls.reset", 1), ("http.blockpage", 1), ("http.diff", 1))
    assert (a1.sites, a1.blocked, a1.high, a1.cant_tell) == (3, 1, 1, 0)
    assert a1.names == ("A1 <Velcom>",)


def test_confidence_levels_use_explains_scale_and_say_nothing_for_error():
    assert rep.confidence_level("tls.reset", True, rep.HIGH_CONFIDENCE) == "high"
    assert rep.confidence_level("tls.reset", True, 0.79) == "medium"
    assert rep.confidence_level("tls.reset", True, 0.2) == "low"
    assert rep.confidence_level("tcp.refused", None, 0.3) == "can't tell"
    assert rep.confidence_level("error", False, 0.1) is None
    assert rep.confidence_level("ok", False, 0.9) == "high"


# --- flat exports ----------------------------------------------------------------------


def test_json_is_a_list_of_measurements_with_exact_verdict_strings(rows):
    data = json.loads(tables.render_json(rows))
    assert isinstance(data, list) and len(data) == len(rows)
    required = {"url", "domain", "asn", "cc", "measured_at", "verdict", "blocked", "confidence", "evidence",
                "measurement_id", "network_name", "layer", "rule_id", "category"}
    assert all(required <= set(d) for d in data)
    assert {d["verdict"] for d in data} == {p[3] for p in BELTELECOM + A1}
    one = next(d for d in data if d["verdict"] == "tls.reset")
    assert one["blocked"] is True and one["asn"] == "AS6697" and one["layer"] == "tls"
    assert one["evidence"][0] == {"text": "TLS handshake reset right after our ClientHello", "fields": {"n": 0}}
    assert CYRILLIC in tables.render_json(rows)  # readable, not \u-escaped


def test_csv_parses_back_one_row_per_measurement(rows):
    parsed = list(csv.DictReader(io.StringIO(tables.render_csv(rows))))
    assert len(parsed) == len(rows)
    assert {p["verdict"] for p in parsed} == {p[3] for p in BELTELECOM + A1}
    first = next(p for p in parsed if p["url"] == "https://charter97.org/" and p["measured_at"] == _when(1, 10))
    assert first["evidence"] == ("TLS handshake reset right after our ClientHello | "
                                 "a handshake with another name to the same address worked")
    assert first["blocked"] == "yes" and first["cc"] == "BY"
    assert any(p["evidence"] == CYRILLIC for p in parsed)


def test_markdown_has_the_tables_and_neutralises_html(rows):
    md = markdown.render_markdown(rep.build_report(rows, ["beltelecom.db", "a1.db"]))
    lines = md.splitlines()
    assert lines[0] == "# Censorship measurement report"
    assert lines[2] == ("**4 of 5 sites look blocked on BY/AS6697 (Beltelecom) (3 with high confidence), by method: "
                        "dns.nxdomain 1, tls.reset 1, http.blockpage 1, http.diff 1**  ")
    assert lines[3].startswith("**1 of 3 sites look blocked on BY/AS25106 (A1 &lt;Velcom&gt;) (1 with high")
    assert "## Latest verdict per site and network" in md and "## Counts by method" in md
    assert "## History per site" in md and "### https://www.svaboda.org/" in md
    table = [line for line in lines if line.startswith("| https://")]
    assert table[0].startswith("| https://charter97.org/ | BY/AS6697 | tls.reset | yes | high (0.95) | 3/3 |")
    assert table[-1].startswith("| https://gone.example.by/ |")  # blocked first, down last
    belsat = next(line for line in table if "belsat" in line)
    assert "| error | no |  | 1/1 |" in belsat  # no confidence word for a verdict that measured nothing
    assert re.search(r"^\| tcp.timeout \| yes \| 1 \| 0 \| 1 \|", md, re.M) or \
        re.search(r"^\| tcp.timeout \| yes \| 1 \| 1 \| 0 \|", md, re.M)
    assert "| blocked at http |  | 2 |" in md
    assert HOSTILE not in md and "&lt;script&gt;" in md
    assert CYRILLIC in md
    assert "- **databases**: beltelecom.db (" in md and "/" not in md.split("- **databases**: ")[1].split("\n")[0]
    # every table line has as many cells as its header
    for block in re.findall(r"((?:^\|.*\|\n)+)", md, re.M):
        widths = {len(re.split(r"(?<!\\)\|", line)) for line in block.strip().splitlines()}
        assert len(widths) == 1, block


# --- HTML ------------------------------------------------------------------------------


class _Resources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.legend: list[str] = []
        self._in_legend = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "action", "poster") and value:
                self.refs.append((tag, name, value))
            if name == "id" and value == "legend":
                self._in_legend = True

    def handle_endtag(self, tag):
        if tag == "ul":
            self._in_legend = False

    def handle_data(self, data):
        if self._in_legend:
            self.legend.append(data)


def test_html_is_one_self_contained_escaped_file_with_a_chart(rows):
    page = html.render_html(rep.build_report(rows, ["beltelecom.db", "a1.db"]))
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    assert "default-src 'none'" in page
    assert "<link" not in page and "<img" not in page and "src=" not in page
    assert "<script" not in page.lower()  # no script of ours, and the hostile one is escaped
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "A1 &lt;Velcom&gt;" in page
    parser = _Resources()
    parser.feed(page)
    ids = set(re.findall(r' id="([^"]+)"', page))
    links = [v for t, n, v in parser.refs if t == "a" and n == "href"]
    assert links and all(v.startswith("#") and v[1:] in ids for v in links)  # only links within the file
    cells = re.findall(r'<a class="c (s-[a-z_]+(?: q-[a-z]+)?)" href="#(site-\d+-\d+)"', page)
    assert len(cells) == 8  # one per site x network measured
    assert {c for c, _ in cells} == {"s-blocked q-high", "s-blocked q-medium", "s-ok", "s-error", "s-down"}
    assert page.count('<span class="c s-none">') == 4  # 6 sites x 2 networks, 8 measured
    legend = "".join(parser.legend)
    assert "blocked, high confidence" in legend and "not blocked: works" in legend and "could not measure" in legend
    assert "can't tell" not in legend  # only what the chart shows
    assert CYRILLIC in page
    for header in ("databases", "networks", "measured (UTC)", "classifier version", "generated (UTC)"):
        assert f"<dt>{header}</dt>" in page
    assert "beltelecom.db (3 runs: " in page and "a1.db (3 runs: " in page and CLASSIFIER_VERSION in page
    assert "Latest verdict per site and network" in page and "Counts by method" in page
    assert "History per site" in page  # several runs: the history is worth its space
    headline = page.index('id="headline"')
    assert headline < page.index("<dl") and "4 of 5 sites look blocked on BY/AS6697" in page[headline:]
    # the chart's first row is the site blocked on both networks
    first_row = page[page.index('<div class="gr"><a class="lbl"'):]
    assert first_row.startswith('<div class="gr"><a class="lbl" href="#site-0" title="https://charter97.org/">')
    assert 'class="k-since"' in page and 'class="k-measured"' not in page


def test_html_with_one_run_has_one_date_column_and_no_history(unclear_db):
    page = html.render_html(rep.build_report(rep.collect([unclear_db])))
    assert page.count('<th class="k-') == 6  # site, verdict, blocked, confidence, measured, evidence
    assert '<th class="k-measured">measured (UTC)</th>' in page
    for key in ("since", "last", "agree", "seen", "network"):
        assert f'class="k-{key}"' not in page
    assert "History per site" not in page
    assert "1 of 2 sites look blocked on BY/AS6697 (Beltelecom) (1 with high confidence), by method: " \
           "http.blockpage 1; 1 more can&#x27;t tell" in page


def test_terminal_report_shows_both_tables(rows):
    buf = io.StringIO()
    console = Console(file=buf, width=220, color_system=None)
    terminal.render_terminal(rep.build_report(rows, ["x.db"]), console)
    out = buf.getvalue()
    assert "latest verdict per site and network" in out and "counts by method" in out
    assert "tls.reset" in out and "blocked at tls" in out and "BY/AS25106" in out


# --- explain ---------------------------------------------------------------------------


def test_explain_a_blocked_site(dbs):
    text = explain(dbs[0], "charter97.org")
    assert "Verdict:     tls.reset" in text
    assert VERDICTS["tls.reset"][1] in text
    assert "Blocked:     yes" in text and "Confidence:  high (0.95)" in text
    assert "  1. TLS handshake reset right after our ClientHello" in text
    assert "measured 2024-05-03 10:00 UTC from BY AS6697 (Beltelecom)" in text  # the latest one
    assert re.search(r"^  tls\s+0\.95\s+0\.00\s+0\.00\s+tls\.reset\.rule -> tls\.reset$", text, re.M)
    assert re.search(r"^  dns\s+0\.00\s+0\.00\s+1\.00\s+dns\.consistent$", text, re.M)
    assert text.rstrip().endswith("See the raw evidence: probe show https://charter97.org/")


def test_explain_an_ok_site_and_cyrillic_evidence(dbs):
    ok = explain(dbs[1], "https://www.svaboda.org")
    assert "Verdict:     ok" in ok and "Blocked:     no: the site works" in ok and "high (0.95)" in ok
    blocked = explain(dbs[0], "www.svaboda.org", db_option="beltelecom.db")
    assert CYRILLIC in blocked and "probe show https://www.svaboda.org/ --db beltelecom.db" in blocked
    assert confidence_words(0.55) == "medium (0.55)" and confidence_words(0.1) == "low (0.10)"


def test_explain_says_no_confidence_for_an_error_and_cant_tell_without_control(dbs, unclear_db):
    text = explain(dbs[1], "belsat.eu")
    assert "Verdict:     error" in text and "no verdict possible" in text
    assert "Confidence" not in text and "medium" not in text and "low (" not in text
    assert "Confidence:  can't tell (no control to compare with" in explain(unclear_db, "belapan.by")


def test_explain_json_is_machine_readable(dbs):
    data = json.loads(explain_json(dbs[0], "charter97.org"))
    assert (data["url"], data["verdict"], data["blocked"], data["confidence"]) == (
        "https://charter97.org/", "tls.reset", True, 0.95)
    assert data["confidence_level"] == "high" and data["db"] == "beltelecom.db"
    assert data["network"] == {"cc": "BY", "asn": "AS6697", "name": "Beltelecom"}
    assert data["evidence"][0] == {"text": "TLS handshake reset right after our ClientHello", "fields": {"n": 0}}
    assert data["measured_at"] == _when(3, 10) and len(data["measurement_id"]) >= 8
    assert data["layers"]["tls"]["rule_id"] == "tls.reset.rule"
    assert json.loads(explain_json(dbs[1], "belsat.eu"))["confidence_level"] is None


def test_explain_does_not_overclaim_a_weak_verdict():
    from probe.report.explain import _blocked_words

    assert _blocked_words("dns.nxdomain", True, 0.3).startswith("perhaps")
    assert _blocked_words("dns.nxdomain", True, 0.9).startswith("yes")


def test_explain_without_verdict_says_to_run_analyze(dbs):
    db = dbs[0]
    run_id = _run(db, "BY", "AS6697", "Beltelecom", 4, ["https://charter97.org/"])
    _measure(db, run_id, "https://charter97.org/", 4, 10)
    assert "probe analyze" in explain(db, "charter97.org")
    with pytest.raises(NothingToExplain, match="no measurement"):
        explain_measurement(db, "never-measured.example")


# --- CLI -------------------------------------------------------------------------------


@pytest.fixture
def paths(dbs, tmp_path):
    return str(tmp_path / "beltelecom.db"), str(tmp_path / "a1.db")


def test_cli_every_format(paths):
    runner = CliRunner()
    for fmt in ("table", "json", "csv", "markdown", "html"):
        result = runner.invoke(report_cmd, ["--db", paths[0], "--db", paths[1], "--format", fmt])
        assert result.exit_code == 0, (fmt, result.output)
        assert "tls.reset" in result.output and "tcp.timeout" in result.output
    result = runner.invoke(report_cmd, ["--db", paths[0], "--db", paths[1], "--format", "json"])
    assert len(json.loads(result.stdout)) == len(BELTELECOM) + len(A1)


def test_cli_writes_a_file_and_merges_databases(paths, tmp_path):
    out = tmp_path / "report.html"
    result = CliRunner().invoke(report_cmd, ["--db", paths[0], "--db", paths[1], "--format", "html", "-o", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert "BY/AS6697" in page and "BY/AS25106" in page and CYRILLIC in page
    assert f"wrote {out}" in result.stderr
    csv_out = tmp_path / "r.csv"
    result = CliRunner().invoke(report_cmd, ["--db", paths[0], "--format", "csv", "-o", str(csv_out),
                                             "--classifier-version", CLASSIFIER_VERSION])
    assert result.exit_code == 0 and len(list(csv.DictReader(csv_out.open(encoding="utf-8")))) == len(BELTELECOM)


def test_cli_errors_are_one_line_and_exit_2(paths, tmp_path):
    runner = CliRunner()
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not sqlite at all" * 10)
    empty = tmp_path / "empty.db"
    store.open_db(empty).conn.close()
    cases = [
        (["--db", str(tmp_path / "missing.db")], "no such database"),
        (["--db", str(corrupt)], "not a SQLite database"),
        (["--db", str(empty)], "probe analyze"),
        (["--db", paths[0], "--classifier-version", "9.9.9"], "no verdicts of classifier 9.9.9"),
        (["--db", paths[0], "-o", str(tmp_path / "no" / "such" / "dir.txt")], "cannot write"),
    ]
    for args, expected in cases:
        result = runner.invoke(report_cmd, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
        assert "Traceback" not in result.output
    assert not (tmp_path / "missing.db").exists()
    # a database without verdicts next to one with them: reported, with a warning
    result = runner.invoke(report_cmd, ["--db", paths[0], "--db", str(empty), "--format", "json"])
    assert result.exit_code == 0 and "has no verdicts yet" in result.stderr


def test_cli_explain(paths, tmp_path):
    runner = CliRunner()
    result = runner.invoke(explain_cmd, ["charter97.org", "--db", paths[1]])
    assert result.exit_code == 0 and "tcp.timeout" in result.output and f"--db {paths[1]}" in result.output
    result = runner.invoke(explain_cmd, ["charter97.org", "--db", paths[1], "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["verdict"], data["blocked"], data["db"]) == ("tcp.timeout", True, "a1.db")
    assert str(tmp_path) not in result.stdout
    result = runner.invoke(explain_cmd, ["nowhere.example", "--db", paths[1]])
    assert result.exit_code == 2 and "no measurement of nowhere.example" in result.stderr
    result = runner.invoke(explain_cmd, ["x", "--db", str(tmp_path / "missing.db")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1


# --- can't tell: a failure that, without a control, could not be told from an outage -----


@pytest.fixture
def unclear_db(tmp_path):
    """A run without a control: one site refused (could be down), one blockpage (proof)."""
    db = store.open_db(tmp_path / "nocontrol.db")
    run_id = _run(db, "BY", "AS6697", "Beltelecom", 4, ["https://belapan.by/", "https://charter97.org/"])
    refused = Verdict("tcp.refused", None, 0.3, "tcp", "failure_no_ctrl",
                      [Evidence("every TCP connect to port 443 failed locally (connection_refused)")],
                      {"tcp": LayerFinding("tcp", 0.5, 0.5, 0, "failure_no_ctrl", "tcp.refused", needs_control=True)})
    page = _verdict("http.blockpage", 0.95, [CYRILLIC])
    persist.save_verdicts(db, [(_measure(db, run_id, "https://belapan.by/", 4, 10), refused),
                               (_measure(db, run_id, "https://charter97.org/", 4, 10), page)])
    yield db
    db.conn.close()


def test_cant_tell_is_null_in_json_and_said_in_every_human_format(unclear_db):
    rows = rep.collect([unclear_db])
    by_url = {r["url"]: r for r in json.loads(tables.render_json(rows))}
    assert by_url["https://belapan.by/"]["blocked"] is None
    assert by_url["https://belapan.by/"]["verdict"] == "tcp.refused"  # the likely verdict, still named
    assert by_url["https://charter97.org/"]["blocked"] is True
    csv_rows = {r["url"]: r for r in csv.DictReader(io.StringIO(tables.render_csv(rows)))}
    assert csv_rows["https://belapan.by/"]["blocked"] == "can't tell"
    report = rep.build_report(rows, ["nocontrol.db"])
    assert report.cant_tell == 1 and report.layers["tcp"] == 0 and report.layers["http"] == 1
    assert report.counts == {"tcp.refused (can't tell)": 1, "http.blockpage": 1}
    md = markdown.render_markdown(report)
    assert "| https://belapan.by/ | tcp.refused | can't tell | can't tell |" in md  # one network: no column
    assert "| can't tell |  | 1 |" in md
    page = html.render_html(report)
    assert "tcp.refused?</span>" in page and "can&#x27;t tell" in page
    buf = io.StringIO()
    terminal.render_terminal(report, Console(file=buf, width=250, force_terminal=False))
    assert "tcp.refused (can't tell)" in buf.getvalue()


def test_explain_says_cant_tell_and_how_to_get_a_control(unclear_db):
    text = explain(unclear_db, "belapan.by")
    assert "Blocked:     can't tell" in text and "tcp.refused is the likely reading" in text
    assert "probe config set control URL" in text


def test_a_chart_cell_that_cannot_tell_is_hatched_not_red(unclear_db):
    page = html.render_html(rep.build_report(rep.collect([unclear_db])))
    cells = dict((href, cls) for cls, href in re.findall(r'<a class="c ([^"]+)" href="#([^"]+)"', page))
    assert cells == {"site-0-0": "s-blocked q-high", "site-1-0": "s-cant_tell"}  # the blockpage first
    assert "repeating-linear-gradient" in page.split("\n.s-cant_tell{", 1)[1].split("}", 1)[0]


def test_tags_are_shown_and_explained(tmp_path):
    db = store.open_db(tmp_path / "tags.db")
    run_id = _run(db, "BY", "AS6697", "Beltelecom", 5, ["https://nashaniva.com/"])
    v = _verdict("tcp.timeout", 0.75, ["every IPv4 connect failed, while IPv6 works"])
    v.tags = ["partial:ipv4"]
    persist.save_verdicts(db, [(_measure(db, run_id, "https://nashaniva.com/", 5, 10), v)])
    rows = rep.collect([db])
    assert json.loads(tables.render_json(rows))[0]["tags"] == ["partial:ipv4"]
    assert "tcp.timeout (IPv4 only)" in markdown.render_markdown(rep.build_report(rows))
    assert "Note:        only the IPv4 addresses" in explain(db, "nashaniva.com")
    db.conn.close()


# --- the terminal at 80 columns, through the real CLI ------------------------------------

LONG_URLS = [
    "https://www.svaboda.org/a/belarus-independent-media-blocked-2024/32921123.html",
    "https://news.example.by/2024/05/03/an-article-with-a-very-long-slug-about-internet-censorship-in-belarus.html",
]


def test_the_table_fits_80_columns_without_chopping_urls(tmp_path):
    plan = [*BELTELECOM, *((url, 3, 12, "tls.reset", 0.95, ["TLS handshake reset right after our ClientHello"])
                          for url in LONG_URLS)]
    make_db(tmp_path / "beltelecom.db", "BY", "AS6697", "Beltelecom", plan).conn.close()
    make_db(tmp_path / "a1.db", "BY", "AS25106", "A1 <Velcom>", A1).conn.close()
    rc, out, err = probe_sync("report", "--db", str(tmp_path / "beltelecom.db"), "--db", str(tmp_path / "a1.db"),
                              env={"COLUMNS": "80"})
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("6 of 7 sites look blocked on BY/AS6697 (Beltelecom) (5 with high"), lines[0]
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    assert str(tmp_path) not in out  # no path of the machine, only file names
    for url in {p[0] for p in plan + A1}:
        shown = url.removeprefix("https://")
        if len(shown) <= 78:
            assert any(shown in line for line in lines), shown  # whole, on one line
        else:  # longer than the terminal: folded at its width, never into narrow pieces
            (i,) = [i for i, line in enumerate(lines) if line.startswith(shown[:20])]
            pieces = [lines[i]]
            while len("".join(pieces)) < len(shown):
                pieces.append(lines[i + len(pieces)])
            assert "".join(pieces) == shown and all(len(p) >= 20 for p in pieces[:-1]), pieces
    # the order: blocked sites first
    assert out.index("charter97.org/") < out.index("belsat.eu/") < out.index("gone.example.by/")


def test_the_table_on_a_wide_terminal_is_one_table(paths):
    rc, out, err = probe_sync("report", "--db", paths[0], "--db", paths[1], env={"COLUMNS": "200"})
    assert rc == 0, err
    assert "┃ site" in out and "verdicts seen" in out and max(len(line) for line in out.splitlines()) <= 200
