"""Feeds of blocking events (probe.report.feeds): Atom 1.0 parsed back with ElementTree,
JSON Feed 1.1 through json, newest first, stable ids, and hostile text that still
gives well-formed XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import pytest

from probe.report.feeds import (
    ATOM_NS,
    JSON_FEED_VERSION,
    FeedError,
    atom_feed,
    json_feed,
    rfc3339,
    xml_text,
)

A = f"{{{ATOM_NS}}}"
FEED_URL = "https://feeds.example.org/events.atom"
SITE_URL = "https://example.org/events/"


def _event(event_id: str, kind: str, confirmed_at: str, **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": event_id, "kind": kind, "url": "https://charter97.org/", "domain": "charter97.org",
        "network": "BY/AS25106", "cc": "BY", "asn": "AS25106", "network_name": "A1",
        "before": "ok", "after": "tls.reset", "since": "2024-05-01T10:00:00.000000Z", "confirmed_at": confirmed_at,
        "last_before": "2024-04-30T22:00:00.000000Z", "measurement_ids": ["m-1", "m-2"],
        "evidence": [{"text": "TLS handshake reset right after our ClientHello", "fields": {"ip": "185.23.4.5"}},
                     {"text": "a handshake with another name to the same address worked", "fields": {}}],
        "events_version": "1.0.0",
    }
    event.update(extra)
    return event


EVENTS = [
    _event("3fa2-blocked", "blocked", "2024-05-02T10:00:00.000000Z"),
    _event("77aa-unblocked", "unblocked", "2024-05-09T08:30:00.250000Z", domain="nashaniva.com",
           url="https://nashaniva.com/", before="dns.nxdomain", after="ok", network="BY/AS6697", asn="AS6697"),
    _event("19c0-changed", "method_changed", "2024-05-05T12:00:00+03:00", domain="zerkalo.io", url="https://zerkalo.io/",
           before="dns.nxdomain", after="tls.reset"),
]


def _parse(data: bytes) -> ET.Element:
    assert data.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    return ET.fromstring(data)


def test_atom_feed_head_and_entries_newest_first():
    root = _parse(atom_feed(EVENTS, feed_url=FEED_URL, site_url=SITE_URL))
    assert root.tag == f"{A}feed"
    assert root.findtext(f"{A}id") == FEED_URL
    assert root.findtext(f"{A}title") == "bynet-probe blocking events"
    assert root.findtext(f"{A}updated") == "2024-05-09T08:30:00.25Z"  # the newest confirmed_at
    links = {link.get("rel"): link for link in root.findall(f"{A}link")}
    assert links["self"].get("href") == FEED_URL and links["self"].get("type") == "application/atom+xml"
    assert links["alternate"].get("href") == SITE_URL
    assert root.findtext(f"{A}author/{A}name") == "bynet-probe"

    entries = root.findall(f"{A}entry")
    assert [e.findtext(f"{A}id") for e in entries] == [
        "urn:bynet-probe:event:77aa-unblocked", "urn:bynet-probe:event:19c0-changed", "urn:bynet-probe:event:3fa2-blocked"]
    assert [e.findtext(f"{A}title") for e in entries] == [
        "nashaniva.com unblocked on BY/AS6697 (was dns.nxdomain)",
        "zerkalo.io on BY/AS25106: method changed: dns.nxdomain -> tls.reset",
        "charter97.org blocked on BY/AS25106 (tls.reset)",
    ]
    # times in RFC 3339 UTC with Z, whatever offset the event came with
    assert [e.findtext(f"{A}updated") for e in entries] == [
        "2024-05-09T08:30:00.25Z", "2024-05-05T09:00:00Z", "2024-05-02T10:00:00Z"]

    blocked = entries[2]
    assert blocked.findtext(f"{A}summary") == ("TLS handshake reset right after our ClientHello\n"
                                               "a handshake with another name to the same address worked")
    assert blocked.find(f"{A}summary").get("type") == "text"  # type: ignore[union-attr]
    terms = {(c.get("scheme"), c.get("term")) for c in blocked.findall(f"{A}category")}
    assert terms == {("urn:bynet-probe:kind", "blocked"), ("urn:bynet-probe:cc", "BY"),
                     ("urn:bynet-probe:asn", "AS25106"), ("urn:bynet-probe:verdict", "tls.reset")}
    content = blocked.findtext(f"{A}content") or ""
    assert "since: 2024-05-01T10:00:00Z" in content and "measurements: m-1, m-2" in content


def test_atom_entries_have_what_rfc_4287_requires():
    root = _parse(atom_feed(EVENTS, feed_url=FEED_URL, site_url=SITE_URL))
    for entry in root.findall(f"{A}entry"):
        for tag in ("id", "title", "updated"):
            assert len(entry.findall(f"{A}{tag}")) == 1, tag
        # no entry-level author: the feed's applies; content is inline text, so no alternate link is needed
        assert entry.find(f"{A}content") is not None


def test_updated_given_wins_and_the_same_events_give_the_same_bytes():
    data = atom_feed(EVENTS, feed_url=FEED_URL, site_url=SITE_URL, updated=datetime(2024, 6, 1, 12, tzinfo=UTC))
    assert _parse(data).findtext(f"{A}updated") == "2024-06-01T12:00:00Z"
    assert atom_feed(EVENTS, feed_url=FEED_URL, site_url=SITE_URL) == \
        atom_feed(list(reversed(EVENTS)), feed_url=FEED_URL, site_url=SITE_URL)


def test_an_empty_feed_is_valid():
    root = _parse(atom_feed([], feed_url=FEED_URL, site_url=SITE_URL, updated="2024-05-01T00:00:00Z"))
    assert root.findall(f"{A}entry") == []
    assert root.findtext(f"{A}id") == FEED_URL and root.findtext(f"{A}updated") == "2024-05-01T00:00:00Z"
    # without a time given, it still has one (Atom requires it)
    now = _parse(atom_feed([], feed_url=FEED_URL, site_url=SITE_URL)).findtext(f"{A}updated") or ""
    assert now.endswith("Z") and datetime.fromisoformat(now.replace("Z", "+00:00")).year >= 2024
    feed = json_feed([], feed_url=FEED_URL, site_url=SITE_URL)
    assert feed["version"] == JSON_FEED_VERSION and feed["items"] == []


HOSTILE_DOMAIN = "evil<&>\"'\x00\x01\x08\x0b\x0c\x1f\ufffe\ufffftest.by\ud800"


def test_hostile_text_gives_well_formed_xml():
    event = _event("x<&>\x01", "blocked", "2024-05-02T10:00:00Z", domain=HOSTILE_DOMAIN, network="BY/<AS1>&",
                   cc="B\x02Y", evidence=[{"text": "<script>alert('x')</script> & \x1b[31m", "fields": {}}, "plain \x00"])
    data = atom_feed([event], feed_url=FEED_URL + "?a=1&b=<2>", site_url=SITE_URL, title="t\x07 <&>")
    root = _parse(data)  # ElementTree refuses anything that is not well-formed
    entry = root.find(f"{A}entry")
    assert entry is not None
    assert entry.findtext(f"{A}title") == "evil<&>\"'test.by blocked on BY/<AS1>& (tls.reset)"
    assert entry.findtext(f"{A}id") == "urn:bynet-probe:event:x<&>"
    assert entry.findtext(f"{A}summary") == "<script>alert('x')</script> & [31m\nplain "
    assert root.findtext(f"{A}title") == "t <&>"
    assert root.find(f"{A}link").get("href") == FEED_URL + "?a=1&b=<2>"  # type: ignore[union-attr]
    assert b"<script>" not in data  # escaped, not markup
    assert {c.get("term") for c in entry.findall(f"{A}category")} >= {"BY"}


def test_xml_text_keeps_what_xml_allows():
    assert xml_text("tab\tnl\ncr\r é 😀 \ue000") == "tab\tnl\ncr\r é 😀 \ue000"
    assert xml_text("\x00a\x1fb\ud800c\ufffed") == "abcd"
    assert xml_text(None) == ""


def test_json_feed_items():
    feed = json_feed(EVENTS, feed_url="https://feeds.example.org/events.json", site_url=SITE_URL)
    assert json.loads(json.dumps(feed, ensure_ascii=False)) == feed
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["home_page_url"] == SITE_URL and feed["feed_url"] == "https://feeds.example.org/events.json"
    items = feed["items"]
    assert [i["id"] for i in items] == [
        "urn:bynet-probe:event:77aa-unblocked", "urn:bynet-probe:event:19c0-changed", "urn:bynet-probe:event:3fa2-blocked"]
    last = items[2]
    assert last["title"] == "charter97.org blocked on BY/AS25106 (tls.reset)"
    assert last["date_published"] == "2024-05-02T10:00:00Z"
    assert last["tags"] == ["blocked", "BY", "AS25106", "tls.reset"]
    assert "TLS handshake reset right after our ClientHello" in last["content_text"]
    assert last["_bynet_probe"] == EVENTS[0]  # the whole event
    assert last["_bynet_probe"] is not EVENTS[0]  # a copy: the caller's events are not shared


def test_json_feed_with_hostile_text_encodes_as_utf8():
    event = _event("h", "blocked", "2024-05-02T10:00:00Z", domain=HOSTILE_DOMAIN)
    feed = json_feed([event], feed_url=FEED_URL, site_url=SITE_URL)
    text = json.dumps(feed, ensure_ascii=False)
    text.encode("utf-8")  # no lone surrogate left anywhere
    item = feed["items"][0]
    assert item["title"].startswith("evil<&>\"'test.by blocked")
    assert item["_bynet_probe"]["domain"] == HOSTILE_DOMAIN.replace("\ud800", "")


def test_times_and_bad_times():
    assert rfc3339("2024-05-01T10:00:00.000000Z") == "2024-05-01T10:00:00Z"
    assert rfc3339("2024-05-01T13:00:00.5+03:00") == "2024-05-01T10:00:00.5Z"
    assert rfc3339("2024-05-01T10:00:00") == "2024-05-01T10:00:00Z"  # naive is UTC, as stored
    with pytest.raises(FeedError, match="confirmed_at"):
        atom_feed([_event("bad", "blocked", "yesterday")], feed_url=FEED_URL, site_url=SITE_URL)
    with pytest.raises(FeedError):
        json_feed([_event("bad", "blocked", "")], feed_url=FEED_URL, site_url=SITE_URL)
