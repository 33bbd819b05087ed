"""The HTML report in a real browser (headless Chromium through Playwright): is it
readable on a 1,400 px screen and on a phone?

Geometry, not pixels: the headline's box is at the top, the evidence column's right
edge is inside a 1,400 px viewport, a 390 px phone has no horizontal page overflow,
every chart square has a size and links to an id that exists. Reports come from real
databases: one left by a real `probe run` against local servers (the shapes of a run),
one of 10 networks x 500 sites written through the store API, and, as root, the
censorship lab's. Screenshots go to tmp_path, and to $PROBE_SCREENSHOTS when set.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from clirun import QUIET, probe, probe_sync
from servers import NXDOMAIN, Answer, Behaviour, DnsServer, RawTcpServer, WebServer, site_app
from test_report import CYRILLIC, HOSTILE, _measure, _run, _verdict

from probe import store
from probe.analysis import persist
from probe.core.verdicts import Evidence, LayerFinding, Verdict

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}


def _skip_reason() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "needs the Python package playwright (pip install -e '.[test]')"
    if not CHROMIUM.exists():
        return f"needs Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


if (_reason := _skip_reason()) is not None:
    pytest.skip(_reason, allow_module_level=True)


# --- databases ---------------------------------------------------------------------------


async def _real_run(db: Path, tmp_path: Path, pki: Any, ca_file: str) -> tuple[int, str]:
    """A real `probe run` (no control helper, as the Quick start runs it) against local
    servers: a site that works, a name that does not exist, an SNI reset, the Ministry
    of Information's blockpage, a windows-1251 page."""
    zone: dict[str, Behaviour] = {
        "ok.lab.test": Answer(a=["127.0.0.1"]),
        "gone.lab.test": NXDOMAIN,
        "reset.lab.test": Answer(a=["127.0.0.1"]),
        "blocked.lab.test": Answer(a=["127.0.0.1"]),
        "cp1251.lab.test": Answer(a=["127.0.0.1"]),
    }
    ctx = pki.server_context("ok.lab.test", "blocked.lab.test", "cp1251.lab.test")
    async with DnsServer(zone) as dns, WebServer(site_app(title="OK site"), ssl_context=ctx) as web, \
            RawTcpServer("reset_after_data") as reset:
        targets = tmp_path / "targets.txt"
        targets.write_text(
            "# a volunteer's list\n"
            f"{web.url('/', hostname='ok.lab.test')} NEWS fine site\n"
            "https://gone.lab.test/ NEWS name removed\n"
            f"https://reset.lab.test:{reset.port}/ HUMR SNI filtered\n"
            f"{web.url('/blockpage', hostname='blocked.lab.test')} NEWS blocked by the ministry\n"
            f"{web.url('/cp1251', hostname='cp1251.lab.test')} NEWS an older Belarusian site\n"
        )
        rc, _, err = await probe("run", "--targets", str(targets), "--db", str(db), "--cc", "BY", "--asn", "6697",
                                 "--resolver", dns.address, "--ca-file", ca_file, "--timeout-scale", "0.3",
                                 "--lab-network", "127.0.0.0/8", *QUIET)
    return rc, err


@pytest.fixture(scope="module")
def real_run_db(tmp_path_factory, pki, ca_file) -> Path:
    tmp = tmp_path_factory.mktemp("realrun")
    db = tmp / "probe.db"
    # a thread of its own: Playwright's sync API runs an event loop in this one
    with ThreadPoolExecutor(1) as pool:
        rc, err = pool.submit(asyncio.run, _real_run(db, tmp, pki, ca_file)).result(timeout=100)
    assert rc == 0, err[-2000:]
    return db


# verdicts of the big report, by (site + network) % len: mostly ok, every kind of block
_BIG_PLAN = [
    ("ok", 0.95), ("ok", 0.9), ("ok", 0.95), ("tls.reset", 0.95), ("ok", 0.9), ("dns.nxdomain", 0.85),
    ("ok", 0.95), ("http.blockpage", 0.9), ("ok", 0.6), ("http.diff", 0.55), ("down", 0.8), ("tcp.timeout", 0.4),
    ("ok", 0.95), ("error", 0.1), ("cant_tell", 0.3), ("ok", 0.95),
]


def _cant_tell() -> Verdict:
    return Verdict("tcp.refused", None, 0.3, "tcp", "failure_no_ctrl",
                   [Evidence("every TCP connect to port 443 failed locally (connection_refused)")],
                   {"tcp": LayerFinding("tcp", 0.5, 0.5, 0, "failure_no_ctrl", "tcp.refused", needs_control=True)})


def big_urls(n: int = 500) -> list[str]:
    """Realistic lengths: bare domains, news paths, a few very long article URLs."""
    out = []
    for k in range(n):
        if k % 7 == 0:
            out.append(f"https://www.independent-news-{k:03d}.example.by/2024/05/03/"
                       f"{'long-article-slug-' * (1 + k % 4)}{k}.html")
        elif k % 3 == 0:
            out.append(f"https://site{k:03d}.example.org/news/")
        else:
            out.append(f"https://media{k:03d}.example.by/")
    return out


@pytest.fixture(scope="module")
def big_db(tmp_path_factory) -> Path:
    """10 networks x 500 sites, one run each, through the store API (as `probe analyze`
    leaves verdicts), with Cyrillic and hostile evidence."""
    path = tmp_path_factory.mktemp("big") / "ten-networks.db"
    db = store.open_db(path)
    urls = big_urls()
    try:
        for n in range(10):
            run_id = _run(db, "BY", f"AS{[6697, 25106, 42772, 21274, 12406, 44087, 56740, 60280, 31143, 35128][n]}",
                          f"ISP <{n}>", 1 + n % 3, urls)
            items = []
            for k, url in enumerate(urls):
                verdict, conf = _BIG_PLAN[(k * 3 + n) % len(_BIG_PLAN)]
                lines = [CYRILLIC if k % 5 == 0 else f"local title {HOSTILE} vs control title Site {k}",
                         "a handshake with another name to the same address worked"]
                v = _cant_tell() if verdict == "cant_tell" else _verdict(verdict, conf, lines)
                items.append((_measure(db, run_id, url, 1 + n % 3, 10), v))
            persist.save_verdicts(db, items)
    finally:
        db.conn.close()
    return path


# --- the browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _html_report(db: Path, out: Path) -> Path:
    """`probe report --format html -o OUT` through the real CLI."""
    rc, _, err = probe_sync("report", "--db", str(db), "--format", "html", "-o", str(out))
    assert rc == 0, err
    return out


def _save(shot: bytes, name: str, tmp_path: Path) -> None:
    (tmp_path / name).write_bytes(shot)
    where = os.environ.get("PROBE_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / name, Path(where) / name)


# The geometry a reader depends on, measured by the page itself.
_GEOMETRY_JS = """() => {
  const box = e => { if (!e) return null; const r = e.getBoundingClientRect();
                     return {x: r.x, y: r.y + window.scrollY, w: r.width, h: r.height, right: r.right}; };
  const cells = [...document.querySelectorAll('#chart a.c')];
  const targets = cells.map(a => a.getAttribute('href'));
  const ev = [...document.querySelectorAll('table.sites td.k-evidence')];
  const blocks = [...document.querySelectorAll('#chart div.blk')];
  return {
    scrollWidth: document.scrollingElement.scrollWidth,
    headline: box(document.getElementById('headline')),
    headlineLines: document.querySelectorAll('#headline p').length,
    evidenceHeader: box(document.querySelector('table.sites th.k-evidence')),
    evidenceRight: Math.max(...ev.map(e => e.getBoundingClientRect().right)),
    evidenceMinWidth: Math.min(...ev.map(e => e.getBoundingClientRect().width)),
    evidenceCells: ev.length,
    cells: cells.length,
    cellMin: Math.min(...cells.map(a => Math.min(a.getBoundingClientRect().width, a.getBoundingClientRect().height))),
    cellMax: Math.max(...cells.map(a => a.getBoundingClientRect().width)),
    badLinks: targets.filter(h => !h.startsWith('#') || !document.getElementById(h.slice(1))).length,
    labelMin: Math.min(...[...document.querySelectorAll('#chart a.lbl')].map(a => a.getBoundingClientRect().width)),
    blockLefts: [...new Set(blocks.map(b => Math.round(b.getBoundingClientRect().x)))].length,
    chart: box(document.getElementById('chart')),
    firstCard: box(document.querySelector('table.sites tbody tr')),
    firstSite: box(document.querySelector('table.sites td.k-site')),
    firstEvidence: box(document.querySelector('table.sites td.k-evidence')),
    pageHeight: document.scrollingElement.scrollHeight,
  };
}"""


def measure(browser: Any, page_file: Path, viewport: dict[str, int], tmp_path: Path, name: str) -> dict[str, Any]:
    """Load the report at ``viewport``, save a screenshot of the top and of the chart,
    and return the page's geometry (see _GEOMETRY_JS)."""
    context = browser.new_context(viewport=viewport, device_scale_factor=1, java_script_enabled=True)
    try:
        page = context.new_page()
        page.goto(page_file.as_uri())
        geometry = page.evaluate(_GEOMETRY_JS)
        # measured; now only the top and the chart are pictured: a 5,000-row table makes
        # the page 200,000 px tall, and Chromium lays all of it out for any screenshot
        page.set_default_timeout(90_000)
        page.evaluate("() => document.querySelectorAll('body > section:not(#chart), body > h2, body > div.hist,"
                      " body > dl.verdicts').forEach(e => { e.style.display = 'none'; })")
        _save(page.screenshot(), f"{name}-{viewport['width']}-top.png", tmp_path)
        chart = geometry["chart"]  # clipped from the page: no waiting for 5,000 links to be "stable"
        clip = {"x": 0, "y": chart["y"], "width": viewport["width"], "height": min(chart["h"], 6000)}
        _save(page.screenshot(full_page=True, clip=clip), f"{name}-{viewport['width']}-chart.png", tmp_path)
        geometry["viewport"] = viewport
        return geometry
    finally:
        context.close()


def assert_readable(g: dict[str, Any]) -> None:
    """What every report must give a reader, at either width."""
    width = g["viewport"]["width"]
    assert g["headline"] and g["headline"]["h"] > 0 and g["headline"]["y"] < 120, g["headline"]
    assert g["headline"]["right"] <= width
    assert g["cells"] > 0 and g["cellMin"] >= 10, (g["cells"], g["cellMin"])  # a square a finger can hit
    assert g["badLinks"] == 0
    assert g["labelMin"] >= 40, g["labelMin"]  # a site's name is legible next to its squares
    if width >= 1400:
        assert g["scrollWidth"] <= width, g["scrollWidth"]
        assert g["evidenceHeader"]["right"] <= width, g["evidenceHeader"]
        assert g["evidenceRight"] <= width and g["evidenceMinWidth"] >= 150, (g["evidenceRight"],
                                                                              g["evidenceMinWidth"])
    else:
        assert g["scrollWidth"] <= width, g["scrollWidth"]  # no horizontal page overflow on a phone
        card, site, evidence = g["firstCard"], g["firstSite"], g["firstEvidence"]
        assert card["right"] <= width and card["w"] >= width - 60, card  # a card as wide as the phone
        assert evidence["y"] > site["y"] and evidence["w"] >= card["w"] - 30, (site, evidence)  # stacked
        assert g["evidenceRight"] <= width


# --- the tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1400px", "390px"])
def test_report_of_a_real_run_is_readable(browser, real_run_db, tmp_path, viewport):
    page = _html_report(real_run_db, tmp_path / "real-run.html")
    g = measure(browser, page, viewport, tmp_path, "real-run")
    assert_readable(g)
    assert g["headlineLines"] == 1  # one network
    assert g["cells"] == 5 and g["evidenceCells"] == 5
    text = page.read_text(encoding="utf-8")
    assert text.count('<th class="k-') == 6  # one run: one date column, no network column
    assert str(real_run_db.parent) not in text and "probe.db (run " in text
    (tmp_path / "geometry.json").write_text(json.dumps(g, indent=1))


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1400px", "390px"])
def test_report_of_ten_networks_and_500_sites_is_readable(browser, big_db, tmp_path, viewport):
    t = time.monotonic()
    page = _html_report(big_db, tmp_path / "ten-networks.html")
    rendered = time.monotonic() - t
    g = measure(browser, page, viewport, tmp_path, "ten-networks")
    assert_readable(g)
    assert g["headlineLines"] == 10 and g["cells"] == 5000 and g["evidenceCells"] == 5000
    assert g["cellMax"] <= 24  # squares, not stretched bars
    if viewport["width"] >= 1400:
        assert g["blockLefts"] >= 3  # the chart's blocks flow side by side: 500 rows, not 500 lines tall
        assert g["chart"]["h"] < 5 * 900, g["chart"]
    size = page.stat().st_size
    assert size < 6_000_000, size
    assert rendered < 30, rendered
    print(f"ten-networks at {viewport['width']}: {json.dumps(g)} size={size} rendered in {rendered:.1f}s")


# The censorship lab's own database is checked the same way in tests/lab/test_lab.py
# (test_lab_html_report_is_readable_in_chromium), on the lab run that module makes anyway.
