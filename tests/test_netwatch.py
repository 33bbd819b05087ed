"""The network watch reads this computer's network locally, sends nothing, stores no
address. A real change of network is exercised in the censorship lab (tests/lab: the
roaming volunteer)."""

from __future__ import annotations

from probe.measure.netwatch import NetworkView, NetworkWatch, read_network


def test_the_same_network_reads_the_same():
    anchors = ["127.0.0.1:53", "[::1]:53"]
    assert read_network(anchors) == read_network(anchors)
    watch = NetworkWatch(anchors)
    assert watch.check() is False and watch.epoch == 0 and watch.changes == []


def test_changes_are_words_and_the_digest_hides_addresses():
    a = NetworkView(("10.0.0.1:53",), ("v4 eth0 0101A8C0",), ("1.2.3.4>192.168.1.10",))
    b = NetworkView(("10.0.0.1:53",), ("v4 wlan0 0102A8C0",), ("1.2.3.4>10.20.0.7",))
    assert a.changes(b) == ["route", "address"]
    assert a.digest != b.digest and "192.168" not in a.digest and len(a.digest) == 16


def test_a_changed_view_moves_the_epoch():
    watch = NetworkWatch(["127.0.0.1:53"])
    watch.view = NetworkView(("192.0.2.1:53",), (), ())  # as if it had been another network
    assert watch.check() is True and watch.epoch == 1 and "resolvers" in watch.changes[-1].what
    assert watch.check() is False
