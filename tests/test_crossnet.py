"""Cross-network verdicts: one test per rule and per edge case, on synthetic report rows
(the shape ``store.report_rows`` yields)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from probe.analysis.crossnet import CROSSNET_VERSION, WINDOW, apply_crossnet, judge_across, network_key
from probe.core.verdicts import VERDICTS

URL = "https://charter97.org/"
T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
_UNSET: Any = object()


def row(mid: str, network: str = "BY/AS6697", verdict: str = "ok", blocked: Any = _UNSET, hours: float = 0.0,
        url: str = URL, tags: tuple[str, ...] = (), measured_at: Any = _UNSET, confidence: float = 0.5) -> dict[str, Any]:
    """A report row. ``blocked`` defaults to the verdict's kind, and to None ("can't
    tell", no control) for blocked verdicts; times are naive UTC, as the store keeps them."""
    if network == "unknown":
        cc, asn = None, None
    else:
        cc, asn = network.split("/")
    if blocked is _UNSET:
        blocked = None if VERDICTS[verdict][0] else False
    if measured_at is _UNSET:
        measured_at = (T0 + timedelta(hours=hours)).replace(tzinfo=None).isoformat()
    return {
        "measurement_id": mid, "url": url, "domain": "charter97.org", "category": "NEWS", "measured_at": measured_at,
        "run_id": f"run-{mid}", "cc": cc, "asn": asn, "network_name": f"ISP {asn}", "verdict": verdict,
        "blocked": blocked, "confidence": confidence, "layer": None, "rule_id": "classifier.rule",
        "evidence": [{"text": f"own evidence of {mid}", "fields": {}}], "tags": list(tags), "classifier_version": "1.2.1",
    }


def texts(v: Any) -> str:
    return "\n".join(e["text"] for e in v.evidence)


# --- rule 1: ok, down, error are never rewritten --------------------------------------------


@pytest.mark.parametrize("verdict", ["ok", "down", "error"])
def test_own_ok_down_error_are_kept(verdict: str) -> None:
    got = judge_across([row("a", verdict=verdict), row("b", "DE/AS3320", "tls.reset", blocked=True)])
    v = got["a"]
    assert (v.verdict, v.blocked, v.confidence, v.rule_id) == (verdict, False, 0.5, "cross.own")
    assert not v.changed and v.networks_compared == [] and v.evidence == []
    assert v.cross_version == CROSSNET_VERSION


# --- rule 2: a verdict that settled itself ---------------------------------------------------


def test_own_evidence_is_kept_and_peers_listed() -> None:
    got = judge_across([row("a", verdict="http.blockpage", blocked=True, confidence=0.9),
                        row("b", "DE/AS3320", "ok", hours=1)])
    v = got["a"]
    assert (v.verdict, v.blocked, v.confidence, v.rule_id) == ("http.blockpage", True, 0.9, "cross.own_evidence")
    assert v.networks_compared == ["DE/AS3320"] and not v.changed
    assert "DE/AS3320" in texts(v)


# --- rule 3: works elsewhere -----------------------------------------------------------------


def test_blocked_on_one_network_ok_on_the_other_both_without_control() -> None:
    got = judge_across([row("a", "BY/AS6697", "tls.reset", hours=0), row("b", "BY/AS25106", "ok", hours=0.03)])
    a, b = got["a"], got["b"]
    assert (a.verdict, a.blocked, a.confidence, a.rule_id) == ("tls.reset", True, 0.8, "cross.works_elsewhere")
    assert a.changed and a.own_blocked is None and a.own_verdict == "tls.reset"
    assert a.networks_compared == ["BY/AS25106"]
    assert "works on BY/AS25106 (2026-12-03 10:01)" in texts(a) and "this network's" in texts(a)
    assert a.evidence[0]["fields"]["works_on"][0]["measurement_id"] == "b"
    assert (b.verdict, b.blocked, b.rule_id, b.changed) == ("ok", False, "cross.own", False)


def test_works_on_two_networks_is_surer() -> None:
    got = judge_across([row("a", "BY/AS6697", "tcp.timeout"), row("b", "BY/AS25106", "ok", hours=2),
                        row("c", "DE/AS3320", "ok", hours=-3)])
    v = got["a"]
    assert (v.verdict, v.blocked, v.confidence, v.rule_id) == ("tcp.timeout", True, 0.9, "cross.works_elsewhere")
    assert v.networks_compared == ["BY/AS25106", "DE/AS3320"]
    assert "BY/AS25106 (2026-12-03 12:00) and DE/AS3320 (2026-12-03 07:00)" in texts(v)


def test_one_network_working_is_enough_even_if_another_fails() -> None:
    got = judge_across([row("a", "BY/AS6697", "tcp.timeout"), row("b", "BY/AS25106", "tcp.timeout"),
                        row("c", "DE/AS3320", "ok")])
    assert (got["a"].blocked, got["a"].confidence, got["a"].rule_id) == (True, 0.8, "cross.works_elsewhere")


# --- rule 4: fails everywhere ----------------------------------------------------------------


def test_down_everywhere_including_a_network_abroad() -> None:
    got = judge_across([row("a", "BY/AS6697", "tcp.timeout"), row("b", "BY/AS25106", "tcp.timeout", hours=1),
                        row("c", "DE/AS3320", "tcp.timeout", hours=-1)])
    v = got["a"]
    assert (v.verdict, v.blocked, v.confidence, v.rule_id) == ("down", False, 0.8, "cross.fails_everywhere")
    assert v.changed and v.networks_compared == ["BY/AS25106", "DE/AS3320"]
    assert "DE/AS3320 is outside BY: the site is down, not blocked" in texts(v) and "BY/AS25106" in texts(v)
    assert v.evidence[0]["fields"]["outside"] == ["DE/AS3320"]
    assert got["c"].verdict == "down"  # and the one abroad: BY is another country for DE too


def test_a_down_peer_is_beyond_the_censor_even_in_the_same_country() -> None:
    # its control helper saw the site fail: an outage, whatever this country's censor does
    got = judge_across([row("a", "BY/AS6697", "tcp.refused"), row("b", "BY/AS25106", "down", hours=1)])
    v = got["a"]
    assert (v.verdict, v.blocked, v.confidence, v.rule_id) == ("down", False, 0.8, "cross.fails_everywhere")
    assert "the control of BY/AS25106 failed too: the site is down" in texts(v)


# --- rule 5: kept as can't tell --------------------------------------------------------------


def test_failing_on_two_networks_of_the_same_country_only_stays_cant_tell() -> None:
    got = judge_across([row("a", "BY/AS6697", "tls.reset", confidence=0.4), row("b", "BY/AS25106", "tls.reset", hours=1)])
    v = got["a"]
    assert (v.verdict, v.blocked, v.confidence, v.rule_id) == ("tls.reset", None, 0.4, "cross.same_censor")
    assert not v.changed and v.networks_compared == ["BY/AS25106"]
    assert "every network that measured it is in BY" in texts(v) and "BY/AS25106" in texts(v)


def test_a_url_measured_once_has_no_peers() -> None:
    v = judge_across([row("a", "BY/AS6697", "tls.reset")])["a"]
    assert (v.verdict, v.blocked, v.rule_id, v.networks_compared) == ("tls.reset", None, "cross.no_peers", [])
    assert "no other network measured it within 24 hours" in texts(v)


def test_peers_failing_differently_are_mixed() -> None:
    got = judge_across([row("a", "BY/AS6697", "tls.reset"), row("b", "DE/AS3320", "tcp.timeout", hours=1)])
    v = got["a"]
    assert (v.verdict, v.blocked, v.rule_id) == ("tls.reset", None, "cross.mixed")
    assert "tcp.timeout (can't tell) on DE/AS3320" in texts(v)


def test_a_peer_whose_control_confirmed_a_block_is_not_an_outage() -> None:
    # DE's control reached the site while DE failed: not "down everywhere"
    got = judge_across([row("a", "BY/AS6697", "tls.reset"), row("b", "DE/AS3320", "tls.reset", blocked=True)])
    assert (got["a"].blocked, got["a"].rule_id) == (None, "cross.mixed")


def test_peers_of_unknown_country_do_not_count_as_abroad() -> None:
    got = judge_across([row("a", "BY/AS6697", "tls.reset"), row("b", "/AS3320", "tls.reset")])
    assert (got["a"].blocked, got["a"].rule_id) == (None, "cross.mixed")


# --- edge cases ------------------------------------------------------------------------------


def test_a_peer_outside_the_window_is_ignored() -> None:
    far = WINDOW.total_seconds() / 3600 + 1
    got = judge_across([row("a", "BY/AS6697", "tls.reset"), row("b", "DE/AS3320", "ok", hours=far)])
    assert (got["a"].blocked, got["a"].rule_id, got["a"].networks_compared) == (None, "cross.no_peers", [])
    edge = judge_across([row("a", "BY/AS6697", "tls.reset"), row("b", "DE/AS3320", "ok", hours=-24)])
    assert edge["a"].rule_id == "cross.works_elsewhere"  # the window's edge is inside
    narrow = judge_across([row("a", "BY/AS6697", "tls.reset"), row("b", "DE/AS3320", "ok", hours=2)],
                          window=timedelta(hours=1))
    assert narrow["a"].rule_id == "cross.no_peers"


def test_the_closest_peer_of_each_network_is_chosen() -> None:
    # DE worked 20 hours before, but failed alike an hour after: the nearer one counts
    rows = [row("a", "BY/AS6697", "tls.reset"), row("old", "DE/AS3320", "ok", hours=-20),
            row("near", "DE/AS3320", "tls.reset", hours=1), row("later", "DE/AS3320", "ok", hours=5)]
    v = judge_across(rows)["a"]
    assert (v.verdict, v.blocked, v.rule_id, v.networks_compared) == ("down", False, "cross.fails_everywhere", ["DE/AS3320"])
    assert [p["measurement_id"] for p in v.evidence[0]["fields"]["fails_on"]] == ["near"]
    rows[2] = row("near", "DE/AS3320", "ok", hours=1)
    rows[1] = row("old", "DE/AS3320", "tls.reset", hours=-20)
    v = judge_across(rows)["a"]
    assert (v.blocked, v.confidence, v.rule_id) == (True, 0.8, "cross.works_elsewhere")  # one network, however many rows
    assert v.evidence[0]["fields"]["works_on"][0]["measurement_id"] == "near"


def test_on_a_tie_the_earlier_peer_is_chosen_whatever_the_input_order() -> None:
    rows = [row("a", "BY/AS6697", "tls.reset"), row("after", "DE/AS3320", "ok", hours=1),
            row("before", "DE/AS3320", "tls.reset", hours=-1)]
    for order in (rows, rows[::-1]):
        assert judge_across(order)["a"].rule_id == "cross.fails_everywhere"


def test_rows_of_its_own_network_are_never_peers() -> None:
    got = judge_across([row("a", "BY/AS6697", "tls.reset"), row("b", "BY/AS6697", "ok", hours=1)])
    assert (got["a"].blocked, got["a"].rule_id, got["a"].networks_compared) == (None, "cross.no_peers", [])


def test_peers_that_cannot_tell_count_as_failing_alike() -> None:
    got = judge_across([row("a", "BY/AS6697", "tls.timeout"), row("b", "DE/AS3320", "tls.timeout"),
                        row("c", "NL/AS1136", "down")])
    assert (got["a"].verdict, got["a"].rule_id) == ("down", "cross.fails_everywhere")
    assert got["a"].networks_compared == ["DE/AS3320", "NL/AS1136"]


def test_error_peers_are_ignored_for_the_nearest_useful_one() -> None:
    got = judge_across([row("a", "BY/AS6697", "tls.reset"), row("e", "DE/AS3320", "error")])
    assert got["a"].rule_id == "cross.no_peers"
    got = judge_across([row("a", "BY/AS6697", "tls.reset"), row("e", "DE/AS3320", "error"),
                        row("k", "DE/AS3320", "ok", hours=6)])
    assert got["a"].rule_id == "cross.works_elsewhere"
    assert got["a"].evidence[0]["fields"]["works_on"][0]["measurement_id"] == "k"


@pytest.mark.parametrize("when", [None, "", "yesterday", 12345])
def test_an_unknown_time_is_compared_with_nothing(when: Any) -> None:
    got = judge_across([row("a", "BY/AS6697", "tls.reset", measured_at=when), row("b", "DE/AS3320", "ok"),
                        row("c", "NL/AS1136", "tls.reset"), row("d", "FR/AS3215", "ok", measured_at=when)])
    assert (got["a"].blocked, got["a"].rule_id, got["a"].networks_compared) == (None, "cross.no_peers", [])
    assert "time is unknown" in texts(got["a"])
    assert got["c"].networks_compared == ["DE/AS3320"]  # d, without a time, is no peer


def test_a_row_of_unknown_network_keeps_its_verdict_and_is_no_peer() -> None:
    got = judge_across([row("a", "unknown", "tls.reset"), row("b", "DE/AS3320", "ok"), row("c", "BY/AS6697", "tls.reset"),
                        row("d", "unknown", "ok")])
    assert (got["a"].blocked, got["a"].rule_id, got["a"].networks_compared) == (None, "cross.unknown_network", [])
    assert got["c"].networks_compared == ["DE/AS3320"]
    assert "unknown" not in got["c"].networks_compared


def test_a_network_change_is_not_settled_by_other_networks() -> None:
    got = judge_across([row("a", "BY/AS6697", "tcp.timeout", tags=("network_changed",)), row("b", "DE/AS3320", "ok"),
                        row("c", "NL/AS1136", "tcp.timeout"), row("d", "FR/AS3215", "ok", tags=("network_changed",))])
    assert (got["a"].blocked, got["a"].rule_id) == (None, "cross.network_changed")
    assert got["c"].networks_compared == ["DE/AS3320"]  # a row that mixes two networks is no peer either


def test_only_the_exact_url_is_compared() -> None:
    got = judge_across([row("a", "BY/AS6697", "tls.reset"), row("b", "DE/AS3320", "ok", url="http://charter97.org/")])
    assert got["a"].rule_id == "cross.no_peers"


def test_times_with_and_without_timezone_are_the_same_clock() -> None:
    got = judge_across([row("a", "BY/AS6697", "tls.reset", measured_at="2026-12-03T10:00:00"),
                        row("b", "DE/AS3320", "ok", measured_at="2026-12-04T11:30:00+01:00")])  # 10:30 UTC next day
    assert got["a"].rule_id == "cross.no_peers"
    got = judge_across([row("a", "BY/AS6697", "tls.reset", measured_at="2026-12-03T10:00:00"),
                        row("b", "DE/AS3320", "ok", measured_at="2026-12-04T10:30:00.000000+01:00")])
    assert got["a"].rule_id == "cross.works_elsewhere"
    assert "DE/AS3320 (2026-12-04 09:30)" in texts(got["a"])


def test_every_row_gets_a_cross_verdict() -> None:
    rows = [row(str(i), net, verdict, hours=i) for i, (net, verdict) in enumerate(
        [("BY/AS6697", "ok"), ("BY/AS6697", "tls.reset"), ("unknown", "error"), ("DE/AS3320", "down")])]
    rows.append({**row("x"), "url": None})
    assert set(judge_across(rows)) == {"0", "1", "2", "3", "x"}


# --- network keys ----------------------------------------------------------------------------


def test_network_key() -> None:
    assert network_key({"cc": "BY", "asn": "AS6697"}) == "BY/AS6697"
    assert network_key({"cc": "by", "asn": "6697"}) == "BY/AS6697"
    assert network_key({"cc": "BY", "asn": None}) == "BY/AS?"
    assert network_key({"cc": None, "asn": "AS6697"}) == "??/AS6697"
    assert network_key({"cc": None, "asn": ""}) == "unknown"
    assert network_key({}) == "unknown"


# --- applying them ---------------------------------------------------------------------------


def test_apply_replaces_changed_rows_and_annotates_the_rest() -> None:
    rows = [row("a", "BY/AS6697", "tls.reset", confidence=0.45), row("b", "BY/AS25106", "ok"),
            row("c", "BY/AS6697", "tcp.timeout", url="https://belsat.eu/")]
    before = copy.deepcopy(rows)
    verdicts = judge_across(rows)
    out = apply_crossnet(rows, verdicts)
    assert rows == before  # copies, the input untouched
    a, b, c = out
    assert (a["verdict"], a["blocked"], a["confidence"], a["rule_id"]) == ("tls.reset", True, 0.8, "cross.works_elsewhere")
    assert (a["own_verdict"], a["own_blocked"], a["own_confidence"], a["own_rule_id"]) == ("tls.reset", None, 0.45,
                                                                                          "classifier.rule")
    assert a["evidence"][0]["text"].startswith("works on BY/AS25106")
    assert a["evidence"][1:] == before[0]["evidence"]
    assert (a["cross_rule_id"], a["cross_version"], a["networks_compared"]) == ("cross.works_elsewhere", CROSSNET_VERSION,
                                                                               ["BY/AS25106"])
    for new, old in ((b, before[1]), (c, before[2])):
        assert {k: new[k] for k in old} == old  # unchanged rows: the same values
    assert (b["cross_rule_id"], c["cross_rule_id"]) == ("cross.own", "cross.no_peers")
    assert c["cross_evidence"] and c["evidence"] == before[2]["evidence"]
    missing = apply_crossnet([row("z")], {})[0]
    assert (missing["verdict"], missing["cross_rule_id"], missing["own_verdict"]) == ("ok", None, "ok")
