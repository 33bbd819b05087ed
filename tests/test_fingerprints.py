"""The fingerprint index gives exactly what trying every fingerprint one by one gives.

The index (a dict for `full`, one literal pass for `contains` and literal regexps,
regexps run only when a literal they require occurs) is what makes classifying fast;
this checks it against the plain definition on the whole shipped list, and each engine
of the literal pass (Hyperscan, ahocorasick_rs) against `w in text`."""

from __future__ import annotations

import importlib.util
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.analysis.fingerprints import (
    LITERAL_ENGINES,
    Literals,
    _matches,
    _required_literal,
    default_fingerprints,
    load_fingerprints,
)


def one_by_one(loc, value):
    return [i for i, (fp, compiled) in enumerate(loc.entries) if _matches(fp, compiled, value)]


def test_the_index_matches_what_one_by_one_matching_gives():
    db = default_fingerprints()
    rng = random.Random(20261202)
    checked = 0
    for location, loc in db._by_location.items():
        patterns = [fp.pattern for fp, _ in loc.entries]
        for k in range(200):
            picked = [rng.choice(patterns) for _ in range(rng.randint(0, 3))]
            picked += [p.replace("\\", "") for p in picked]  # regexps written out as text
            value = rng.choice(patterns) if k % 4 == 0 else "<html>" + " filler ".join(picked) + "</html>"
            assert loc.match(value) == one_by_one(loc, value), (location, value[:120])
            checked += 1
    assert checked >= 1000


@pytest.mark.parametrize("pattern, literal, pure", [
    (r"http://cfssupport\.sonicwall\.com", "http://cfssupport.sonicwall.com", True),
    (r"Juniper Web Filtering", "Juniper Web Filtering", True),
    (r"blocked by (the )?firewall", "blocked by ", False),
    (r"(?i)access denied", None, False),  # a case-insensitive pattern has no exact literal
    (r"a|b", None, False),
])
def test_required_literal(pattern, literal, pure):
    assert _required_literal(pattern) == (literal, pure)


def test_a_maintainers_file_with_every_pattern_type(tmp_path):
    path = tmp_path / "fp.csv"
    path.write_text(
        "name,location,pattern_type,pattern,scope,countries,source,first_seen,notes\n"
        "t.full,title,full,Доступ ограничен,isp,BY,test,,\n"
        "t.prefix,header.location,prefix,http://82.209.230.23,isp,BY,test,,\n"
        "t.contains,body,contains,Министерства информации,nat,BY,test,,\n"
        "t.regexp,body,regexp,blocked by (the )?censor,isp,,test,,\n",
        encoding="utf-8")
    db = load_fingerprints(path)
    assert [m.fingerprint.name for m in db._match("title", "Доступ ограничен", "t")] == ["t.full"]
    assert db._match("title", "Доступ ограничен!", "t") == []
    assert [m.fingerprint.name for m in db._match("header.location", "http://82.209.230.23/?x", "l")] == ["t.prefix"]
    body = "<p>решения Министерства информации Республики Беларусь; blocked by the censor</p>"
    assert [m.fingerprint.name for m in db._match("body", body, "b")] == ["t.contains", "t.regexp"]
    assert db._match("body", "blocked by a censor", "b") == []


HYPERSCAN = importlib.util.find_spec("hyperscan")
PAGE_WORDS = sorted(default_fingerprints()._page_literals().words)
SHORT_WORDS = ["ab", "b", "abc", "bc", "Доступ", "ступ", "\u00e9", "e\u0301", "\x00x", "aaa", "aa"]


def test_hyperscan_is_the_engine_where_it_installs():
    """CI installs the wheel: the fast engine is the one in use there, not silently the
    fallback (which the tests below hold to the same answers)."""
    pytest.importorskip("hyperscan", reason="no Hyperscan wheel on this platform: the ahocorasick_rs engine is used")
    literals = Literals({"x"})
    assert literals.found("axb") == {"x"}
    assert literals.engine == "hyperscan"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(st.one_of(st.sampled_from(PAGE_WORDS), st.sampled_from(SHORT_WORDS), st.text(max_size=20)),
                       max_size=10))
def test_every_literal_engine_finds_exactly_the_literals_in_a_text(pieces: list[str]) -> None:
    """Each engine reports each literal that occurs, once, however often and however
    overlapped (``aaa`` holds ``aa`` twice; ``abc`` holds ``ab``, ``b`` and ``bc``),
    in any script, and no other: the set ``w in text`` gives."""
    text = "".join(pieces)
    for words, scanners in ENGINES.items():
        expected = {w for w in words if w in text}
        for engine, literals in scanners.items():
            assert literals.found(text) == expected, engine


# per word list, an automaton of each engine (None: the one chosen for the list), built once
ENGINES = {words: {engine: Literals(set(words), engine=engine) for engine in (None, *LITERAL_ENGINES)
                   # no wheel here; or a NUL in a literal, which its binding cannot take
                   if not (engine == "hyperscan" and (HYPERSCAN is None or any("\x00" in w for w in words)))}
           for words in (tuple(PAGE_WORDS), tuple(SHORT_WORDS))}
