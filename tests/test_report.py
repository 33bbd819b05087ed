"""Reports and explanations over real probe databases (no mocks): two networks, several
sites over several days, a mix of verdicts, Cyrillic evidence and hostile strings."""

from __future__ import annotations

import base64
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
from rich.console import Console

from probe import store
from probe.analysis import persist
from probe.cli.report import explain_cmd, report_cmd
from probe.core.records import Measurement, new_id
from probe.core.verdicts import CLASSIFIER_VERSION, VERDICTS, Evidence, LayerFinding, Verdict
from probe.report import heatmap, html, markdown, tables, terminal
from probe.report import model as rep
from probe.report.explain import NothingToExplain, confidence_words, explain, explain_measurement

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
    by_db = {Path(r["db"]).name for r in rows}
    assert by_db == {"beltelecom.db", "a1.db"}  # the copy's duplicates are the first database's
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


def test_day_matrix_takes_the_latest_verdict_of_each_day(rows):
    sites, days, cells = rep.day_matrix(rows)
    assert days == ["2024-05-01", "2024-05-02", "2024-05-03"]
    assert sites[0] == "https://belsat.eu/"  # ordered by domain
    assert cells["BY/AS6697"][("https://www.svaboda.org/", "2024-05-02")] == "ok"  # 15:00 beats 09:00
    assert ("https://belsat.eu/", "2024-05-01") not in cells["BY/AS25106"]


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
    md = markdown.render_markdown(rep.build_report(rows, ["a.db", "b.db"]))
    assert "## Latest verdict per site and network" in md and "## Counts by method" in md
    assert "## History per site" in md and "### https://www.svaboda.org/" in md
    assert re.search(r"^\| https://charter97.org/ \| BY/AS6697 \| tls.reset \| yes \| 0.95 \| 3/3 \|", md, re.M)
    assert re.search(r"^\| tcp.timeout \| yes \| 1 \| 0 \| 1 \|", md, re.M) or \
        re.search(r"^\| tcp.timeout \| yes \| 1 \| 1 \| 0 \|", md, re.M)
    assert "| blocked at http |  | 2 |" in md
    assert HOSTILE not in md and "&lt;script&gt;" in md
    assert CYRILLIC.replace("«", "«") in md
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


def test_html_is_one_self_contained_escaped_file_with_a_heat_map(rows):
    page = html.render_html(rep.build_report(rows, ["results/beltelecom.db", "results/a1.db"]))
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    assert 'src="http' not in page and '<link href="http' not in page and "<link" not in page
    assert "<script" not in page.lower()  # no script of ours, and the hostile one is escaped
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "A1 &lt;Velcom&gt;" in page
    parser = _Resources()
    parser.feed(page)
    assert parser.refs and all(v.startswith("data:image/png;base64,") for _, _, v in parser.refs)
    (img,) = [v for t, _, v in parser.refs if t == "img"]
    png = base64.b64decode(img.split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    legend = "".join(parser.legend)
    for verdict in {r["verdict"] for r in rows}:
        assert verdict in legend
    assert "dns.bogon" not in legend  # only verdicts present
    assert CYRILLIC in page
    for header in ("databases", "networks", "measured (UTC)", "classifier version", "generated (UTC)"):
        assert f"<dt>{header}</dt>" in page
    assert "results/beltelecom.db" in page and CLASSIFIER_VERSION in page
    assert "Latest verdict per site and network" in page and "Counts by method" in page
    assert "History per site" in page


def _png_size(png: bytes) -> tuple[int, int]:
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_heat_map_grows_with_the_number_of_sites():
    def fake(n_sites: int):
        return [{"measurement_id": f"{s}-{d}", "url": f"https://site{s}.by/", "domain": f"site{s}.by", "cc": "BY",
                 "asn": "AS6697", "measured_at": _when(d, 10), "verdict": "ok" if (s + d) % 3 else "tls.reset"}
                for s in range(n_sites) for d in (1, 2, 3)]

    small = heatmap.heatmap_png(fake(10))
    big = heatmap.heatmap_png(fake(200))
    assert small.verdicts == ["ok", "tls.reset"]
    (_w1, h1), (_w2, h2) = _png_size(small.png), _png_size(big.png)
    assert h2 > 10 * h1 / 2 and h2 / 200 >= 0.2 * heatmap.HEATMAP_DPI  # a 0.2 in row per site, at least
    assert big.css_height == h2 * heatmap.HEATMAP_SHOW_DPI // heatmap.HEATMAP_DPI
    huge = heatmap.heatmap_png(fake(1000))  # a whole global list: still a picture a browser can open
    assert max(_png_size(huge.png)) <= heatmap.MAX_HEATMAP_PX + 100


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
    assert "| https://belapan.by/ | BY/AS6697 | tcp.refused | can't tell |" in md
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


def test_a_heat_map_cell_that_cannot_tell_is_its_own_colour(unclear_db):
    chart = heatmap.heatmap_png(rep.collect([unclear_db]))
    assert "can't tell" in chart.verdicts and "tcp.refused" not in chart.verdicts


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
