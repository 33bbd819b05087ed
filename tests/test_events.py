"""Blocking events from sequences of verdicts: block, unblock, method change, flakes,
skipped rows, baselines, outages between, stable ids and filters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from probe.analysis.events import EVENTS_VERSION, BlockingEvent, detect_events, event_to_json, filter_events
from probe.core.verdicts import VERDICTS

URL = "https://charter97.org/"
T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
_UNSET: Any = object()


def row(mid: str, verdict: str, minutes: int, network: str = "BY/AS25106", blocked: Any = _UNSET,
        url: str = URL, domain: str = "charter97.org") -> dict[str, Any]:
    """A (final) report row; ``blocked`` defaults to the verdict's kind (True for blocked
    verdicts: settled); times are naive UTC, as the store keeps them."""
    cc, asn = (None, None) if network == "unknown" else network.split("/")
    return {
        "measurement_id": mid, "url": url, "domain": domain,
        "measured_at": (T0 + timedelta(minutes=minutes)).replace(tzinfo=None).isoformat(),
        "cc": cc, "asn": asn, "network_name": f"ISP {asn}", "verdict": verdict,
        "blocked": VERDICTS[verdict][0] if blocked is _UNSET else blocked, "confidence": 0.9,
    }


def series(*verdicts: str | None, network: str = "BY/AS25106", url: str = URL, prefix: str = "m") -> list[dict[str, Any]]:
    """One measurement every 30 minutes; ``None`` is a can't-tell tls.reset."""
    return [row(f"{prefix}{i}", v or "tls.reset", 30 * i, network, None if v is None else _UNSET, url)
            for i, v in enumerate(verdicts)]


def test_block() -> None:
    (e,) = detect_events(series("ok", "ok", "tls.reset", "tls.reset"))
    assert isinstance(e, BlockingEvent)
    assert (e.kind, e.before, e.after) == ("blocked", "ok", "tls.reset")
    assert (e.url, e.domain, e.network, e.cc, e.asn, e.network_name) == (URL, "charter97.org", "BY/AS25106", "BY",
                                                                         "AS25106", "ISP AS25106")
    assert (e.last_before, e.since, e.confirmed_at) == ("2026-12-03T10:30:00", "2026-12-03T11:00:00", "2026-12-03T11:30:00")
    assert e.measurement_ids == ["m2", "m3"] and e.events_version == EVENTS_VERSION
    assert e.evidence[0]["text"] == ("charter97.org on BY/AS25106: ok until 2026-12-03 10:30, tls.reset since 11:00 "
                                     "(2 measurements agree)")


def test_unblock() -> None:
    (e,) = detect_events(series("tls.reset", "tls.reset", "tls.reset", "ok", "ok"))
    assert (e.kind, e.before, e.after, e.last_before, e.measurement_ids) == ("unblocked", "tls.reset", "ok",
                                                                             "2026-12-03T11:00:00", ["m3", "m4"])


def test_method_change() -> None:
    (e,) = detect_events(series("dns.nxdomain", "dns.nxdomain", "tls.reset", "tls.reset"))
    assert (e.kind, e.before, e.after) == ("method_changed", "dns.nxdomain", "tls.reset")
    assert "dns.nxdomain until 2026-12-03 10:30, tls.reset since 11:00" in e.evidence[0]["text"]


def test_a_one_off_flake_is_no_event() -> None:
    assert detect_events(series("ok", "ok", "tls.reset", "ok", "ok", "tcp.timeout", "ok")) == []
    assert detect_events(series("tls.reset", "tls.reset", "ok", "tls.reset")) == []


def test_cant_tell_and_error_rows_are_skipped() -> None:
    rows = series("ok", "ok", "tls.reset", None, "error", "tls.reset", None)
    (e,) = detect_events(rows)
    assert (e.kind, e.measurement_ids, e.since, e.confirmed_at) == ("blocked", ["m2", "m5"], rows[2]["measured_at"],
                                                                     rows[5]["measured_at"])
    # nor do they break an established state
    assert detect_events(series("tls.reset", "tls.reset", None, "error", None, "tls.reset")) == []


def test_the_first_established_state_is_a_baseline() -> None:
    assert detect_events(series("tls.reset", "tls.reset", "tls.reset")) == []
    assert detect_events(series("ok", "ok")) == []
    assert detect_events(series("ok", "tls.reset", "tls.reset")) == []  # the lone ok never established a state


def test_ok_and_down_changes_are_no_events() -> None:
    assert detect_events(series("ok", "ok", "down", "down", "ok", "ok")) == []
    assert detect_events(series("tls.reset", "tls.reset", "down", "down")) == []


def test_down_then_blocked_is_a_block() -> None:
    (e,) = detect_events(series("down", "down", "tcp.timeout", "tcp.timeout"))
    assert (e.kind, e.before, e.after) == ("blocked", "down", "tcp.timeout")


def test_an_outage_between_does_not_hide_nor_invent_events() -> None:
    assert detect_events(series("tls.reset", "tls.reset", "down", "down", "tls.reset", "tls.reset")) == []
    (e,) = detect_events(series("tls.reset", "tls.reset", "down", "down", "ok", "ok"))
    assert (e.kind, e.before, e.after, e.last_before) == ("unblocked", "tls.reset", "ok", "2026-12-03T10:30:00")
    assert "down from 11:00 to 11:30" in e.evidence[0]["text"]
    assert e.evidence[0]["fields"]["down_between"] == ["2026-12-03T11:00:00", "2026-12-03T11:30:00"]
    (e,) = detect_events(series("ok", "ok", "down", "down", "dns.nxdomain", "dns.nxdomain"))
    assert (e.kind, e.before, e.after) == ("blocked", "ok", "dns.nxdomain")


def test_several_events_in_order() -> None:
    events = detect_events(series("ok", "ok", "dns.nxdomain", "dns.nxdomain", "tls.reset", "tls.reset", "ok", "ok"))
    assert [(e.kind, e.before, e.after) for e in events] == [
        ("blocked", "ok", "dns.nxdomain"), ("method_changed", "dns.nxdomain", "tls.reset"), ("unblocked", "tls.reset", "ok")]


def test_ids_are_stable_when_more_data_comes() -> None:
    first = detect_events(series("ok", "ok", "tls.reset", "tls.reset"))
    more = detect_events(series("ok", "ok", "tls.reset", "tls.reset", "tls.reset", "ok", "ok"))
    assert [e.event_id for e in more][0] == first[0].event_id
    assert len(more) == 2 and len({e.event_id for e in more}) == 2
    assert len(first[0].event_id) == 16 and int(first[0].event_id, 16) >= 0


def test_networks_and_urls_are_separate_series_and_input_order_does_not_matter() -> None:
    rows = (series("ok", "ok", "tls.reset", "tls.reset")
            + series("ok", "tls.reset", "ok", "tls.reset", network="BY/AS6697", prefix="b")
            + series("dns.nxdomain", "dns.nxdomain", "ok", "ok", url="https://belsat.eu/", prefix="c"))
    events = detect_events(rows[::-1])
    assert [(e.network, e.url, e.kind) for e in events] == [("BY/AS25106", URL, "blocked"),
                                                             ("BY/AS25106", "https://belsat.eu/", "unblocked")]


def test_events_are_sorted_by_confirmation() -> None:
    late = [row(f"x{i}", v, 100 + 30 * i, "BY/AS6697") for i, v in enumerate(["ok", "ok", "tls.reset", "tls.reset"])]
    early = series("ok", "ok", "tcp.timeout", "tcp.timeout")
    assert [e.network for e in detect_events(late + early)] == ["BY/AS25106", "BY/AS6697"]


def test_unknown_network_unparseable_time_and_duplicates() -> None:
    assert detect_events(series("ok", "ok", "tls.reset", "tls.reset", network="unknown")) == []
    rows = series("ok", "ok", "tls.reset", "tls.reset")
    rows[3] = {**rows[3], "measured_at": "not a time"}
    assert detect_events(rows) == []
    rows = series("ok", "ok", "tls.reset")
    assert detect_events(rows + [dict(rows[2])]) == []  # the same measurement twice is one


def test_confirm() -> None:
    rows = series("ok", "ok", "tls.reset", "tls.reset", "ok", "ok")
    assert [e.kind for e in detect_events(rows, confirm=1)] == ["blocked", "unblocked"]
    assert detect_events(rows, confirm=3) == []
    (e,) = detect_events(series("ok", "ok", "ok", "tls.reset", "tls.reset", "tls.reset"), confirm=3)
    assert e.measurement_ids == ["m3", "m4", "m5"]
    with pytest.raises(ValueError):
        detect_events(rows, confirm=0)


def test_event_to_json() -> None:
    (e,) = detect_events(series("ok", "ok", "tls.reset", "tls.reset"))
    d = event_to_json(e)
    assert d["event_id"] == e.event_id and d["measurement_ids"] == ["m2", "m3"] and d["kind"] == "blocked"
    assert json.loads(json.dumps(d)) == d


def test_filters() -> None:
    rows = (series("ok", "ok", "tls.reset", "tls.reset")
            + series("ok", "ok", "dns.nxdomain", "dns.nxdomain", network="DE/AS3320", prefix="d")
            + series("ok", "ok", "tcp.timeout", "tcp.timeout", network="BY/AS6697", url="https://www.svaboda.org/",
                     prefix="s"))
    for r in rows[-4:]:
        r["domain"] = "www.svaboda.org"
    events = detect_events(rows)
    dicts = [event_to_json(e) for e in events]
    assert len(events) == 3
    for given in (events, dicts):
        assert [e for e in filter_events(given)] == list(given)
        assert {_get(e, "network") for e in filter_events(given, cc="by")} == {"BY/AS25106", "BY/AS6697"}
        assert [_get(e, "network") for e in filter_events(given, asn="3320")] == ["DE/AS3320"]
        assert [_get(e, "network") for e in filter_events(given, asn="as25106")] == ["BY/AS25106"]
        assert [_get(e, "network") for e in filter_events(given, cc="BY", asn="AS6697")] == ["BY/AS6697"]
        assert [_get(e, "url") for e in filter_events(given, site="svaboda.org")] == ["https://www.svaboda.org/"]
        assert [_get(e, "url") for e in filter_events(given, site="WWW.Svaboda.org")] == ["https://www.svaboda.org/"]
        assert len(filter_events(given, site="https://charter97.org")) == 2
        assert filter_events(given, site="97.org") == [] and filter_events(given, cc="DE", site="svaboda.org") == []
    assert all(isinstance(e, BlockingEvent) for e in filter_events(events, cc="BY"))
    assert all(isinstance(e, dict) for e in filter_events(dicts, cc="BY"))


def _get(e: BlockingEvent | dict[str, Any], key: str) -> Any:
    return e[key] if isinstance(e, dict) else getattr(e, key)
