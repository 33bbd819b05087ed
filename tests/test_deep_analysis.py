"""Deep analysis (``probe.analysis.deep``): one test per rule and per edge case, on
synthetic records of ``probe.core.deep`` (trigger tests, sniffed packets, hop probes)."""

from __future__ import annotations

from typing import Any

import pytest

from probe.analysis.deep import (
    CensorLocation,
    Finding,
    isolate_trigger,
    judge_injection,
    locate_censor,
    summarise,
    where_words,
)
from probe.core.deep import TRIGGER_TESTS, DeepResult, HopProbe, PacketSeen, TriggerTest

SITE = "10.77.2.71:443"
HARMLESS = "10.77.9.9:443"
RESOLVER = "10.77.1.53:53"
HIT, OK = True, False  # interfered, worked


def trig(name: str, interfered: bool, failure: str | None = None) -> TriggerTest:
    """A trigger test as the measurer records it; the address and what was sent follow
    from the name, as in TRIGGER_TESTS."""
    address = HARMLESS if name.endswith("elsewhere") else RESOLVER if name.startswith("dns") else SITE
    sent = {"tls_no_sni": "", "tls_benign_sni": "example.org", "http_benign_host": "example.org",
            "dns_benign_name": "example.org"}.get(name, "charter97.org")
    if failure is None and interfered:
        failure = "generic_timeout" if name.startswith("dns") else "connection_reset"
    return TriggerTest(name, address, sent, "2026-12-03T10:00:00Z", 12.0, interfered, failure)


def outcomes(**results: bool) -> list[TriggerTest]:
    return [trig(name, interfered) for name, interfered in results.items()]


def texts(f: Finding | CensorLocation) -> str:
    return "\n".join(e["text"] for e in f.evidence)


# --- trigger isolation -------------------------------------------------------------------------


def test_sni_filtering() -> None:
    f = isolate_trigger(outcomes(tls_sni=HIT, tls_benign_sni=OK, tls_no_sni=OK, tls_sni_elsewhere=HIT))
    assert f.value == "sni"
    assert f.evidence[0]["fields"] == {"rule": "sni"}
    assert "harmless name sent to the same address worked" in f.evidence[0]["text"]
    assert "sent to a harmless address was interfered with too" in f.evidence[0]["text"]
    # every test's own result follows the conclusion, in the order of TRIGGER_TESTS
    assert [e["fields"]["test"] for e in f.evidence[1:]] == ["tls_sni", "tls_benign_sni", "tls_no_sni", "tls_sni_elsewhere"]
    assert f.evidence[1]["text"].endswith("interfered with (connection_reset)")
    assert f.evidence[2]["text"].endswith(": worked") and '"example.org"' in f.evidence[2]["text"]
    assert "sent nothing" in f.evidence[3]["text"]


def test_sni_filtering_without_a_harmless_address() -> None:
    """The site's SNI elsewhere could not run (no harmless address): the harmless SNI to
    the same address decides alone."""
    f = isolate_trigger(outcomes(tls_sni=HIT, tls_benign_sni=OK))
    assert f.value == "sni"
    assert "not tried at a harmless address" in f.evidence[0]["text"]


def test_sni_to_the_site_only_is_not_isolated() -> None:
    """The site's SNI works elsewhere and a harmless SNI works at the site: the censor
    matches name and address together, or the harmless address avoids it."""
    f = isolate_trigger(outcomes(tls_sni=HIT, tls_benign_sni=OK, tls_sni_elsewhere=OK))
    assert f.value == "not_isolated"
    assert "name and the address together" in f.evidence[0]["text"]


def test_host_filtering() -> None:
    f = isolate_trigger(outcomes(http_host=HIT, http_benign_host=OK, http_host_elsewhere=HIT))
    assert f.value == "host"
    assert "HTTP request (Host)" in f.evidence[0]["text"]


def test_ip_blocking() -> None:
    f = isolate_trigger(outcomes(tls_sni=HIT, tls_benign_sni=HIT, tls_no_sni=HIT, tls_sni_elsewhere=OK))
    assert f.value == "address"
    assert "even with a harmless name" in f.evidence[0]["text"]


def test_ip_blocking_over_tls_and_http() -> None:
    f = isolate_trigger(outcomes(tls_sni=HIT, tls_benign_sni=HIT, http_host=HIT, http_benign_host=HIT,
                              tls_sni_elsewhere=OK, http_host_elsewhere=OK))
    assert f.value == "address"


def test_ip_blocking_needs_every_test_at_the_address_to_fail() -> None:
    """A handshake without SNI that passes means the address itself is reachable."""
    f = isolate_trigger(outcomes(tls_sni=HIT, tls_benign_sni=HIT, tls_no_sni=OK, tls_sni_elsewhere=OK))
    assert f.value == "not_isolated"


def test_everything_at_the_address_failing_without_a_test_elsewhere_is_not_isolated() -> None:
    f = isolate_trigger(outcomes(tls_sni=HIT, tls_benign_sni=HIT))
    assert f.value == "not_isolated"
    assert "cannot be told from a failing network" in f.evidence[0]["text"]


def test_dns_name_filtering() -> None:
    f = isolate_trigger(outcomes(dns_name=HIT, dns_benign_name=OK))
    assert f.value == "dns_name"
    assert f.evidence[1]["fields"]["address"] == RESOLVER


def test_dns_resolver_failing_for_every_name_is_not_isolated() -> None:
    f = isolate_trigger(outcomes(dns_name=HIT, dns_benign_name=HIT))
    assert f.value == "not_isolated"


def test_dns_first_on_the_path() -> None:
    """Both DNS and SNI tests point at the name: DNS is named, as verdicts name the
    first layer on the path."""
    f = isolate_trigger(outcomes(dns_name=HIT, dns_benign_name=OK, tls_sni=HIT, tls_benign_sni=OK))
    assert f.value == "dns_name"


def test_nothing_interfered_any_more_is_not_isolated() -> None:
    f = isolate_trigger(outcomes(tls_sni=OK, tls_benign_sni=OK, tls_no_sni=OK, tls_sni_elsewhere=OK))
    assert f.value == "not_isolated"
    assert "not even the repeated original" in f.evidence[0]["text"]


def test_everything_interfered_everywhere_is_not_isolated() -> None:
    f = isolate_trigger(outcomes(tls_sni=HIT, tls_benign_sni=HIT, tls_no_sni=HIT, tls_sni_elsewhere=HIT))
    assert f.value == "not_isolated"
    assert "also what was sent elsewhere" in f.evidence[0]["text"]


def test_original_missing_is_not_isolated() -> None:
    f = isolate_trigger(outcomes(tls_benign_sni=OK, tls_sni_elsewhere=HIT))
    assert f.value == "not_isolated"
    assert "original was not repeated" in f.evidence[0]["text"]


def test_repeated_test_with_mixed_results_decides_nothing() -> None:
    f = isolate_trigger([trig("tls_sni", HIT), trig("tls_benign_sni", OK), trig("tls_benign_sni", HIT)])
    assert f.value == "not_isolated"
    assert "interfered with 1 of 2 times" in texts(f)
    assert f.evidence[2]["fields"]["interfered"] == [False, True]


def test_no_tests() -> None:
    assert isolate_trigger([]) == Finding(None, [])


def test_unknown_tests_are_ignored() -> None:
    f = isolate_trigger([trig("quic_sni", HIT)])
    assert f.value is None
    assert "does not know" in texts(f)


def test_worked_with_another_failure_says_so() -> None:
    """A harmless SNI the server refuses is not interference: the path let it through."""
    f = isolate_trigger([trig("tls_sni", HIT), trig("tls_benign_sni", OK, failure="ssl_handshake_failure")])
    assert f.value == "sni"
    assert "worked (failed otherwise: ssl_handshake_failure)" in texts(f)


def test_every_trigger_test_name_is_used_by_a_rule() -> None:
    """The vocabulary of probe.core.deep and the rules agree."""
    import probe.analysis.deep as deep

    known = {*deep.ORIGINALS, *deep.AT_SITE, *deep.ELSEWHERE, "dns_benign_name"}
    assert known == set(TRIGGER_TESTS)


# --- injection ---------------------------------------------------------------------------------

FLOW = "tcp 10.77.2.71:443 <- 43122"
SERVER = "10.77.2.71"


def pkt(kind: str, ttl: int, ip_id: int, t_ms: float, flow: str = FLOW, src: str = SERVER, **kw: Any) -> PacketSeen:
    return PacketSeen(flow, kind, src, ttl, ip_id, t_ms, **kw)


def test_injected_rst_ttl_differs_from_syn_ack() -> None:
    f = judge_injection([pkt("syn-ack", 52, 0, 0), pkt("rst", 62, 7, 31)])
    assert f.value == "injected"
    e = f.evidence[0]
    assert e["fields"]["rule"] == "tcp_ttl" and (e["fields"]["ttl"], e["fields"]["syn_ack_ttl"]) == (62, 52)
    assert "IP TTL 62, the SYN-ACK with 52 (10 hops closer)" in e["text"]


def test_injected_rst_from_another_initial_ttl() -> None:
    f = judge_injection([pkt("syn-ack", 52, 0, 0), pkt("rst", 250, 7, 31)])
    assert f.value == "injected"
    assert "another initial TTL (255, not 64)" in texts(f)


def test_one_hop_difference_is_injected_but_said_to_be_weakest() -> None:
    f = judge_injection([pkt("syn-ack", 52, 0, 0), pkt("rst", 53, 7, 31)])
    assert f.value == "injected"
    assert "1 hop closer; a single hop could also be a route change" in texts(f)


def test_server_rst_same_ttl_and_fitting_ip_id() -> None:
    f = judge_injection([pkt("syn-ack", 52, 0, 0), pkt("data", 52, 4411, 20, payload_bytes=1400),
                         pkt("data", 52, 4412, 21, payload_bytes=900), pkt("rst", 52, 4413, 40)])
    assert f.value == "server"
    e = f.evidence[0]
    assert e["fields"]["rule"] == "tcp_server"
    assert "2 data packets and the RST came with the SYN-ACK's IP TTL 52" in e["text"]
    assert "IP IDs in the server's count (4411 to 4413)" in e["text"]


def test_server_rst_with_ip_id_zero_is_linux_not_injection() -> None:
    """Linux sends its own resets for segments without a socket with IP ID 0."""
    f = judge_injection([pkt("syn-ack", 52, 0, 0), pkt("data", 52, 4411, 20), pkt("data", 52, 4412, 21),
                         pkt("rst", 52, 0, 40)])
    assert f.value == "server"
    assert "IP ID 0 on the RST, as a Linux server sends its own resets" in texts(f)


def test_ip_id_anomaly_is_injected() -> None:
    """Same TTL as the server (a censor copying it), but the RST's IP ID is nowhere near
    the server's count."""
    f = judge_injection([pkt("syn-ack", 52, 0, 0), pkt("data", 52, 4411, 20), pkt("data", 52, 4412, 21),
                         pkt("rst", 52, 39017, 22)])
    assert f.value == "injected"
    e = f.evidence[0]
    assert e["fields"]["rule"] == "tcp_ip_id" and e["fields"]["ip_id"] == 39017
    assert e["fields"]["server_ip_ids"] == [4411, 4412]
    assert "IP ID 39017, far from the server's own count (4411 to 4412)" in e["text"]
    # the server's own data packets are still named as the server's
    assert f.evidence[1]["fields"]["rule"] == "tcp_server" and "2 data packets" in f.evidence[1]["text"]


def test_ip_id_anomaly_before_the_servers_data() -> None:
    """An injected RST racing ahead of the server's reply is judged against the IDs after it."""
    f = judge_injection([pkt("syn-ack", 52, 0, 0), pkt("rst", 52, 39017, 5), pkt("data", 52, 4411, 20),
                         pkt("data", 52, 4412, 21)])
    assert f.value == "injected"


def test_ip_id_not_judged_with_one_reference() -> None:
    """Only the SYN-ACK's ID (Linux: 0) and one data packet: nothing to call a count."""
    f = judge_injection([pkt("syn-ack", 52, 0, 0), pkt("data", 52, 4411, 20), pkt("rst", 52, 39017, 22)])
    assert f.value == "server"
    assert "tell nothing" in texts(f)


def test_ip_id_not_judged_when_the_server_uses_random_ids() -> None:
    f = judge_injection([pkt("syn-ack", 52, 812, 0), pkt("data", 52, 30211, 20), pkt("data", 52, 1999, 21),
                         pkt("rst", 52, 52001, 22)])
    assert f.value == "server"


def test_ip_id_from_a_global_counter_fits() -> None:
    """A Windows server's one counter moves on with its other traffic: steps of tens."""
    f = judge_injection([pkt("syn-ack", 116, 20100, 0), pkt("data", 116, 20140, 20), pkt("data", 116, 20190, 21),
                         pkt("rst", 116, 20700, 900)])
    assert f.value == "server"


def test_injected_blockpage_data_packets() -> None:
    f = judge_injection([pkt("syn-ack", 52, 0, 0), pkt("data", 63, 1, 30), pkt("data", 63, 2, 30.5),
                         pkt("fin", 63, 3, 31)])
    assert f.value == "injected"
    first = f.evidence[0]
    assert first["fields"]["count"] == 2 and "2 data packets came with IP TTL 63" in first["text"]
    assert "the FIN came with IP TTL 63" in f.evidence[1]["text"]


def test_no_syn_ack_nothing_to_judge() -> None:
    f = judge_injection([pkt("rst", 62, 0, 1)])
    assert f.value is None
    assert "no SYN-ACK to compare the RST with" in texts(f)


def test_no_packets() -> None:
    assert judge_injection([]) == Finding(None, [])


def test_injected_wins_over_a_server_flow_and_comes_first() -> None:
    other = "tcp 10.77.2.71:443 <- 43123"
    f = judge_injection([pkt("syn-ack", 52, 0, 0, flow=other), pkt("fin", 52, 10, 5, flow=other),
                         pkt("syn-ack", 52, 0, 0), pkt("rst", 61, 0, 9)])
    assert f.value == "injected"
    assert [e["fields"]["rule"] for e in f.evidence] == ["tcp_ttl", "tcp_server"]


DNS_FLOW = "udp 10.77.1.53:53 <- 5353"
DNS_SRC = "10.77.1.53"


def reply(ttl: int, t_ms: float, answers: list[str], flow: str = DNS_FLOW) -> PacketSeen:
    return PacketSeen(flow, "dns", DNS_SRC, ttl, 0, t_ms, answers=answers)


def test_dns_double_reply_with_different_ttls_is_injected() -> None:
    f = judge_injection([reply(62, 3, ["10.10.34.35"]), reply(58, 19, ["93.184.216.34"])])
    assert f.value == "injected"
    e = f.evidence[0]
    assert e["fields"]["rule"] == "dns_double_reply" and e["fields"]["ttls"] == [62, 58]
    assert "IP TTL 62 at 3 ms (10.10.34.35) and IP TTL 58 at 19 ms (93.184.216.34)" in e["text"]
    assert "on-path injection" in e["text"]


def test_dns_duplicated_reply_is_not_injection() -> None:
    f = judge_injection([reply(58, 3, ["93.184.216.34"]), reply(58, 3.1, ["93.184.216.34"])])
    assert f.value == "server"
    assert "a duplicated packet" in texts(f)


def test_dns_double_reply_same_ttl_different_answers_is_not_judged_by_ttl() -> None:
    f = judge_injection([reply(58, 3, ["10.10.34.35"]), reply(58, 9, ["93.184.216.34"])])
    assert f.value is None
    assert "the TTL does not tell who sent which" in texts(f)


def test_dns_single_reply_alone_nothing_to_judge() -> None:
    assert judge_injection([reply(58, 3, ["10.10.34.35"])]).value is None


def test_dns_single_reply_differing_from_the_resolvers_others_is_injected() -> None:
    f = judge_injection([reply(62, 3, ["10.10.34.35"], flow="udp 10.77.1.53:53 <- 5001"),
                         reply(58, 9, ["93.184.216.34"], flow="udp 10.77.1.53:53 <- 5002"),
                         reply(58, 8, ["93.184.216.35"], flow="udp 10.77.1.53:53 <- 5003")])
    assert f.value == "injected"
    e = f.evidence[0]
    assert e["fields"]["rule"] == "dns_odd_reply"
    assert e["fields"]["odd_flows"] == ["udp 10.77.1.53:53 <- 5001"]
    assert (e["fields"]["odd_ttl"], e["fields"]["common_ttl"]) == (62, 58)


def test_dns_one_reply_against_one_other_is_not_judged() -> None:
    """Either could be the odd one, and an anycast resolver may take two paths."""
    f = judge_injection([reply(62, 3, ["10.10.34.35"], flow="udp 10.77.1.53:53 <- 5001"),
                         reply(58, 9, ["93.184.216.34"], flow="udp 10.77.1.53:53 <- 5002")])
    assert f.value is None
    assert "too few to tell" in texts(f)


def test_dns_consistent_replies_are_the_resolvers() -> None:
    f = judge_injection([reply(58, 3, [], flow="udp 10.77.1.53:53 <- 5001"),
                         reply(58, 9, ["93.184.216.34"], flow="udp 10.77.1.53:53 <- 5002")])
    assert f.value == "server"
    assert "all came with IP TTL 58" in texts(f)


# --- the censor's hop ----------------------------------------------------------------------------


def hop(ttl: int, icmp_from: str | None = None, response: str | None = None, response_ttl: int | None = None) -> HopProbe:
    return HopProbe(ttl, icmp_from, response, SERVER if response else None, response_ttl, 5.0 * ttl)


def test_censor_on_hop_2_of_4() -> None:
    """TTL 1 and 2 die at hops 1 and 2; TTL 3 gets the reset: a censor filtering what
    hop 2 forwards (TTL 3 arrives there with 2 left)."""
    loc = locate_censor([hop(1, "10.0.0.1"), hop(2, "10.0.0.2"), hop(3, None, "rst", 62), hop(4, None, "rst", 62)])
    assert (loc.hop, loc.address, loc.first_response_ttl, loc.response) == (2, "10.0.0.2", 3, "rst")
    assert loc.next_address is None
    assert "censor is at hop 2 or right after it" in texts(loc)
    assert "TTL 2 died at hop 2 (10.0.0.2)" in texts(loc)


def test_a_tap_that_lets_the_packet_go_on_is_the_hop_that_expired_it() -> None:
    """TTL 3 brought a reset and hop 3's time-exceeded: a tap saw the packet at hop 3
    (or on the link into it) before hop 3's TTL check; hop 3 is the nearest router."""
    loc = locate_censor([hop(1, "10.0.0.1"), hop(2, "10.0.0.2"), hop(3, "10.0.0.3", "rst", 62)])
    assert (loc.hop, loc.address) == (3, "10.0.0.3")


def test_censor_answering_at_ttl_1() -> None:
    loc = locate_censor([hop(1, None, "rst", 64), hop(2, None, "rst", 64)])
    assert (loc.hop, loc.address, loc.first_response_ttl) == (1, None, 1)
    assert "at or before the first router" in texts(loc)


def test_censor_answering_at_ttl_1_with_a_tap_names_the_first_router() -> None:
    loc = locate_censor([hop(1, "192.168.1.1", "rst", 64)])
    assert (loc.hop, loc.address) == (1, "192.168.1.1")


def test_silent_router_before_the_censor() -> None:
    loc = locate_censor([hop(1, "10.0.0.1"), hop(2), hop(3, None, "blockpage", 62)])
    assert (loc.hop, loc.address) == (2, None)
    assert "sent no time-exceeded" in texts(loc)


def test_ttls_not_tried_below_the_censor_are_said() -> None:
    loc = locate_censor([hop(3, None, "rst", 62)])
    assert (loc.hop, loc.address) == (2, None)
    assert "TTL 1 and 2 not tried: the censor may be closer" in texts(loc)


def test_censor_answering_only_some_of_the_times_is_said() -> None:
    loc = locate_censor([hop(1, "10.0.0.1"), hop(2, None, "rst", 62), hop(3), hop(4, None, "rst", 62)])
    assert loc.hop == 1
    assert "answered at 2 of the 3 TTLs tried from 2 on" in texts(loc)


def test_no_censor_found() -> None:
    loc = locate_censor([hop(1, "10.0.0.1"), hop(2, "10.0.0.2"), hop(3, "10.0.0.3"), hop(4)])
    assert (loc.hop, loc.address, loc.first_response_ttl) == (None, None, None)
    assert loc.evidence[0]["text"] == "no hop answered for the censor up to TTL 4"


def test_server_answering_before_the_censor() -> None:
    loc = locate_censor([hop(1, "10.0.0.1"), hop(2, None, "server", 52), hop(3, None, "rst", 52)])
    assert (loc.hop, loc.address, loc.first_response_ttl) == (None, None, 3)
    assert "the replay was not blocked" in texts(loc)
    assert loc.evidence[0]["fields"]["rule"] == "server_first"


def test_server_answering_and_no_censor() -> None:
    loc = locate_censor([hop(1, "10.0.0.1"), hop(2, None, "server", 52)])
    assert loc.hop is None and loc.first_response_ttl is None
    assert "up to TTL 2" in texts(loc) and "the replay was not blocked" in texts(loc)


def test_servers_own_reset_is_not_the_censor() -> None:
    """A reset with the server's IP TTL, at a TTL that reaches the server (13 hops: 64 - 52 + 1)."""
    hops = [hop(t, f"10.0.0.{t}") for t in range(1, 13)] + [hop(13, None, "rst", 52)]
    loc = locate_censor(hops, server_ttl=52)
    assert loc.hop is None and loc.first_response_ttl == 13
    assert "looks like the server's answer" in texts(loc)


def test_server_ttl_gives_the_servers_distance() -> None:
    loc = locate_censor([hop(1, "10.0.0.1"), hop(2, None, "rst", 62)], server_ttl=52)
    assert loc.hop == 1
    assert "about 13 hops away" in texts(loc)


def test_no_hop_search() -> None:
    loc = locate_censor([])
    assert (loc.hop, loc.first_response_ttl) == (None, None)
    assert texts(loc) == "no hop search was made"


# --- in words --------------------------------------------------------------------------------------


def located(hop_: int = 2, address: str | None = "10.0.0.1", ttl: int = 3, response: str = "rst",
            next_address: str | None = None) -> CensorLocation:
    return CensorLocation(hop_, address, ttl, [], response, next_address)


def test_where_words_inside_own_isp() -> None:
    words = where_words(located(), "AS6697", {"10.0.0.1": "6697"})
    assert words == "the reset was injected 2 hops from you, at 10.0.0.1 or right after it, before the traffic left your ISP"


def test_where_words_without_asn_info() -> None:
    assert where_words(located(), None) == "the reset was injected 2 hops from you, at 10.0.0.1 or right after it"
    assert where_words(located(), "AS6697") == "the reset was injected 2 hops from you, at 10.0.0.1 or right after it"
    assert where_words(located(), "AS6697", {"10.0.0.9": "AS6697"}).endswith("right after it")


def test_where_words_address_in_another_network() -> None:
    assert where_words(located(), "AS6697", {"10.0.0.1": "AS25106"}).endswith("right after it")


def test_where_words_at_the_edge_of_own_isp() -> None:
    words = where_words(located(next_address="10.9.9.9"), "AS6697", {"10.0.0.1": "AS6697", "10.9.9.9": "AS3320"})
    assert words.endswith("at 10.0.0.1 or right after it, at the edge of your ISP")


@pytest.mark.parametrize("response, said", [("fin", "the close (FIN)"), ("blockpage", "the blockpage"),
                                            ("dns_answer", "the forged DNS answer")])
def test_where_words_name_what_was_injected(response: str, said: str) -> None:
    assert where_words(located(hop_=1, ttl=2, response=response), None) == (
        f"{said} was injected 1 hop from you, at 10.0.0.1 or right after it")


def test_where_words_first_hop() -> None:
    assert where_words(located(hop_=1, address=None, ttl=1), None) == (
        "the reset was injected right next to you, at or before the first router")


def test_where_words_router_without_address() -> None:
    assert where_words(located(address=None), "AS6697", {}) == (
        "the reset was injected 2 hops from you, at a router that did not give its address")


def test_where_words_not_located() -> None:
    assert where_words(locate_censor([hop(1, "10.0.0.1")]), "AS6697") == (
        "no hop answered for the censor, so where it sits is unknown")
    loc = locate_censor([hop(1, None, "server", 52), hop(2, None, "rst", 52)])
    assert where_words(loc, None).startswith("where the censor sits could not be told: the server answered")


# --- the whole -------------------------------------------------------------------------------------


def test_summarise() -> None:
    result = DeepResult(
        "m-1", "https://charter97.org/", "2026-12-03T10:00:00Z", 5400.0, "tls.reset",
        trigger_tests=outcomes(tls_sni=HIT, tls_benign_sni=OK, tls_sni_elsewhere=HIT),
        packets=[pkt("syn-ack", 52, 0, 0), pkt("rst", 62, 0, 31)],
        replayed="tls_client_hello", replay_target=SITE, server_ttl=52,
        hops=[hop(3, None, "rst", 62), hop(1, "10.0.0.1"), hop(2, "10.0.0.2")],
        packets_sent=3, skipped=["ipv6: no route"],
    )
    s = summarise(result, own_asn="AS6697", hop_asns={"10.0.0.2": "AS6697"})
    assert s["trigger"] == "sni" and s["trigger_evidence"][0]["fields"]["rule"] == "sni"
    assert s["injected"] == "injected" and s["injection_evidence"][0]["fields"]["rule"] == "tcp_ttl"
    assert (s["censor_hop"], s["censor_address"], s["censor_response"], s["first_response_ttl"]) == (2, "10.0.0.2", "rst", 3)
    assert s["where"] == "the reset was injected 2 hops from you, at 10.0.0.2 or right after it, before the traffic left your ISP"
    assert [h["ttl"] for h in s["hops"]] == [1, 2, 3]
    assert s["hops"][2] == {"ttl": 3, "icmp_from": None, "response": "rst", "response_from": SERVER, "response_ttl": 62,
                            "rtt_ms": 15.0}
    assert (s["packets_sent"], s["skipped"], s["replayed"], s["server_ttl"]) == (3, ["ipv6: no route"], "tls_client_hello", 52)
    assert s["censor_evidence"]
    assert set(s) >= {"trigger", "trigger_evidence", "injected", "injection_evidence", "censor_hop", "censor_address",
                      "where", "hops", "packets_sent", "skipped"}


def test_summarise_empty_result() -> None:
    s = summarise(DeepResult("m-2", "https://charter97.org/", "2026-12-03T10:00:00Z"))
    assert (s["trigger"], s["injected"], s["censor_hop"], s["where"]) == (None, None, None, None)
    assert s["trigger_evidence"] == [] and s["injection_evidence"] == [] and s["hops"] == []


def test_summarise_is_deterministic_and_leaves_the_record_alone() -> None:
    result = DeepResult("m-3", "https://charter97.org/", "2026-12-03T10:00:00Z",
                        trigger_tests=outcomes(dns_name=HIT, dns_benign_name=OK), packets=[reply(62, 3, []), reply(58, 9, [])],
                        hops=[hop(2, None, "dns_answer", 62), hop(1, "10.0.0.1")])
    before = repr(result)
    assert summarise(result) == summarise(result)
    assert repr(result) == before


def test_an_on_path_injector_is_the_hop_that_both_expired_and_answered():
    """A tap on hop 2 sees the query that dies there (TTL 1 left) and forges an answer;
    hop 2 also sends time-exceeded: the censor is hop 2, not hop 1."""
    hops = [HopProbe(1, icmp_from="10.0.1.1"),
            HopProbe(2, icmp_from="10.0.2.1", response="dns_answer", response_from="10.77.1.53", response_ttl=63)]
    loc = locate_censor(hops)
    assert (loc.hop, loc.address, loc.first_response_ttl) == (2, "10.0.2.1", 2)
    assert loc.evidence[0]["fields"]["rule"] == "on_path"
