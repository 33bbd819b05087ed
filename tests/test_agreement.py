"""Our classifier on OONI's own measurements (real and QA), next to OONI's labels.

Keeps the README's agreement table true, makes every disagreement carry its reason,
and pins the cases where OONI is known to be wrong: there we must be right."""

from __future__ import annotations

from pathlib import Path

import pytest

from probe.analysis import agreement as A
from probe.core.verdicts import VERDICTS

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "ooni"


@pytest.fixture(scope="module")
def rows():
    return A.agreement(DATA)


def test_every_indexed_measurement_is_classified(rows):
    index_lines = (DATA / "INDEX.csv").read_text(encoding="utf-8").strip().splitlines()
    assert len(rows) == len(index_lines) - 1 == 64
    assert all(r.verdict in VERDICTS for r in rows)
    assert set(A.OUR_FAMILY) == set(VERDICTS)


def test_the_readme_table_is_what_the_classifier_gives_now(rows):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert A.readme_section(readme) == A.markdown(rows), (
        "README's OONI agreement table is stale: python -m probe.analysis.agreement --update README.md")


def test_every_disagreement_and_only_a_disagreement_is_explained(rows):
    disagree = {r.case for r in rows if not r.agree}
    assert not disagree - set(A.EXPLANATIONS), f"unexplained: {sorted(disagree - set(A.EXPLANATIONS))}"
    assert not set(A.EXPLANATIONS) - disagree, f"stale explanations: {sorted(set(A.EXPLANATIONS) - disagree)}"
    assert "**unexplained**" not in A.markdown(rows)


def test_we_agree_with_ooni_on_most_cases(rows):
    assert sum(r.agree for r in rows) >= 50


@pytest.mark.parametrize("case, verdict", [
    # an ISP blockpage behind a 302, which OONI scored accessible
    ("real/backend-fastpath__20250527233111.802678_ID_webconnectivity_5a37ec909dbf14e3.json", "http.blockpage"),
    # a TLS reset after the ClientHello, which OONI calls http-failure
    ("synthetic-qa/tlsBlockingConnectionResetWithConsistentDNS.json", "tls.reset"),
    # Cloudflare's CAPTCHA, OONI's admitted false positive
    ("synthetic-qa/cloudflareCAPTCHAWithHTTP.json", "ok"),
    # after a redirect: named at the step that broke, not "http-failure"
    ("synthetic-qa/redirectWithConsistentDNSAndThenConnectionRefusedForHTTP.json", "tcp.refused"),
    ("synthetic-qa/redirectWithConsistentDNSAndThenConnectionResetForHTTPS.json", "tls.reset"),
    ("synthetic-qa/redirectWithConsistentDNSAndThenTimeoutForHTTPS.json", "tls.timeout"),
    ("synthetic-qa/redirectWithConsistentDNSAndThenConnectionResetForHTTP.json", "http.reset"),
    ("synthetic-qa/redirectWithConsistentDNSAndThenNXDOMAIN.json", "dns.nxdomain"),
    # a probe bug is not the network's doing
    ("real/backend-fastpath__bug_351.json", "error"),
    # misconfigured for everyone: not censorship
    ("synthetic-qa/localhostWithHTTPS.json", "down"),
    ("synthetic-qa/badSSLWithExpiredCertificate.json", "down"),
])
def test_where_ooni_is_wrong_or_coarse_we_are_right(rows, case, verdict):
    (row,) = [r for r in rows if r.case == case]
    assert row.verdict == verdict, (row.verdict, row.rule)


def test_update_rewrites_only_the_section(tmp_path, rows):
    path = tmp_path / "README.md"
    path.write_text(f"# title\n\nbefore\n\n{A.README_START}\nold table\n{A.README_END}\n\nafter\n", encoding="utf-8")
    assert A.main([str(DATA), "--update", str(path)]) == 0
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# title\n\nbefore\n\n") and text.endswith(f"{A.README_END}\n\nafter\n")
    assert "old table" not in text and A.readme_section(text) == A.markdown(rows)
