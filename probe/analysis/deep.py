"""A deep measurement judged: which part of the traffic triggers the block, whether the
censor's packets were forged on the path, and at which hop the censor sits.

Reads the records of ``probe.core.deep`` (``probe run --deep``, ``probe trace URL``) and
nothing else: pure functions, no I/O, so a better rule re-reads old packets. Evidence
lines are ``{"text", "fields"}`` dicts, as everywhere in ``probe.analysis``.

Trigger isolation (``isolate_trigger``)
---------------------------------------
Each trigger test is *interfered* (the same interference as the measurement: reset, cut,
timeout, forged answer), *worked*, *mixed* (repeated, and interfered only some of the
times: it counts as neither) or *absent* (it could not run: no harmless address, ...).
The rules, one function each, in the order of the path (DNS, then the address, then
TLS, then HTTP, as verdicts name the first layer interfered with); the first that fits
wins:

==============  ===========================================================================
value           rule
==============  ===========================================================================
``dns_name``    ``dns_name`` interfered AND ``dns_benign_name`` (same resolver) worked
``address``     every test to the site's address that ran interfered (``tls_sni``,
                ``tls_benign_sni``, ``tls_no_sni``, ``http_host``, ``http_benign_host``),
                at least one of them a harmless one, AND every test of the site's name to
                a harmless address that ran worked (``tls_sni_elsewhere``,
                ``http_host_elsewhere``), at least one of them
``sni``         ``tls_sni`` interfered AND ``tls_benign_sni`` worked AND
                ``tls_sni_elsewhere`` did not work (interfered, mixed, or not tried)
``host``        ``http_host`` interfered AND ``http_benign_host`` worked AND
                ``http_host_elsewhere`` did not work (interfered, mixed, or not tried)
``not_isolated``  tests ran but no rule fits (the block did not show again, everything
                failed everywhere, the name is blocked only at the site's own address, ...);
                the evidence says which
None            no trigger test (or none this version knows)
==============  ===========================================================================

Why ``sni`` needs the harmless SNI to work at the *same* address: that is the one test
that keeps everything (address, port, path, TLS stack) and changes only the name. The
site's SNI to a harmless address is supporting evidence only: when it works, the censor
may match name *and* address, or the harmless address may be routed around the censor,
so that case is ``not_isolated``, not ``sni``. ``tls_no_sni`` decides nothing for
``sni`` (some censors also cut handshakes without a name), but it is a test to the
site's address: when it ran, ``address`` needs it interfered with too, since one that
passes shows the address reachable.

Injection (``judge_injection``)
-------------------------------
One sender stamps all its packets of one flow with one initial IP TTL, and they travel
one path (routers hash a flow's 5-tuple onto one of equal-cost paths), so every packet
of the server's in a TCP flow arrives with the same TTL as its SYN-ACK. A packet forged
by a box on the path starts from the box's own initial TTL and travels fewer hops.
Hence no tolerance: a TTL differing by even 1 is called injected (the evidence says by
how much; a difference of 1 is the weakest case, see the traps).

=============================  ============================================================
rule                           gives
=============================  ============================================================
TCP TTL                        a RST, FIN or data packet whose IP TTL differs from the
                               flow's SYN-ACK: ``injected``
TCP IP ID                      a RST, FIN or data packet with the SYN-ACK's TTL whose IP ID
                               (not 0) is far (> ``IP_ID_GAP``) from the server's own IDs,
                               when those (at least 2, 0s left out) count up in small steps
                               (<= ``IP_ID_STEP``): ``injected``
TCP server                     RST/FIN/data with the SYN-ACK's TTL and an IP ID that fits
                               (or that cannot be judged): ``server``
DNS double reply               two replies to one query (one flow) from the same address
                               with different IP TTLs: ``injected`` (on-path injection)
DNS odd reply                  a flow's single reply from a resolver whose TTL differs from
                               the TTL that at least 2 of the resolver's replies in other
                               flows share: ``injected``; all alike: ``server``
=============================  ============================================================

``injected`` wins over ``server``; None when there was nothing to compare (no SYN-ACK,
a single DNS reply alone). ``server`` means "nothing told it apart from whatever sent
the SYN-ACK (or the resolver's other replies)", not proof: a middlebox that answers
the connection itself, or a censor that copies the TTL and IP ID, looks the same.

False-positive traps, and what is done about them:

- a Linux server's own resets for a segment it has no socket for, and its SYN-ACKs,
  carry IP ID 0: guarded, an IP ID of 0 is never judged, nor used as a reference;
- servers whose IP IDs are random (OpenBSD, macOS), always 0, or one global counter
  on a busy machine: guarded, IP IDs are judged only when the server's own count up in
  small steps;
- a duplicated DNS packet (same TTL, same answers): guarded, only a TTL difference
  counts;
- an anycast resolver (8.8.8.8, 1.1.1.1) reached over different paths by different
  flows (different source ports hash onto different paths): guarded in part, an odd
  reply must differ from a TTL that at least 2 other flows agree on; one reply against
  one other is not judged, as either may be the odd one;
- a route change in the middle of one TCP flow, or per-packet (not per-flow) load
  balancing over paths of unequal length: NOT guarded; both are rare within the second
  a measurement lasts, and the evidence says when the difference is a single hop;
- a SYN proxy or DDoS scrubber that answers the SYN itself and hands the connection to
  the server: NOT guarded: the server's later packets then differ from the SYN-ACK
  (the evidence names both TTLs so a reader can tell a scrubber's few hops apart).

The censor's hop (``locate_censor``)
------------------------------------
The triggering packet was replayed inside an established connection with IP TTL 1, 2,
... A packet sent with TTL t arrives at hop k with TTL t-k+1; a router that gets a packet
with TTL 1 sends ICMP time-exceeded instead of forwarding it, before its FORWARD rules
run. So a censor filtering what router k forwards (iptables FORWARD, a DPI box on the
link after it) first acts at t = k+1, and the last time-exceeded before that came from
hop k itself: for the first TTL t whose answer is the censor's (rst, fin, blockpage,
dns_answer; "server" means the packet got through), the censor is at hop t-1, at the
address that sent TTL t-1's time-exceeded, or right after it (a censor acting before
the router's TTL check, in its PREROUTING, is hop t: "right after"). Except: when TTL t
brought back both the censor's answer and a time-exceeded from hop t, the packet died at
hop t and was answered anyway: an on-path tap or injector watching the wire there (it
sees packets before the router's TTL check), so the censor is hop t itself, at that
time-exceeded's address (``_rule_on_path_tap``). An answer at TTL 1
puts it at or before the first router (the volunteer's own router, or a bridge on the
access link): hop 1, whose address is TTL 1's time-exceeded when one came. Not located:
no censor answer up to the highest TTL tried; the server answered at a lower TTL than
any censor answer (the replay got through, so it is not what the censor acts on); or
the answer carries the server's IP TTL at a TTL that reaches the server (it is the
server's own answer to an odd packet).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from probe.analysis.crossnet import join_words, line, normalise_asn
from probe.core.deep import TRIGGER_TESTS, DeepResult, HopProbe, PacketSeen, TriggerTest

Line = dict[str, Any]

INTERFERED, WORKED, MIXED = "interfered", "worked", "mixed"

# The tests by what they send where.
ORIGINALS = ("dns_name", "tls_sni", "http_host")
AT_SITE = ("tls_sni", "tls_benign_sni", "tls_no_sni", "http_host", "http_benign_host")
HARMLESS_AT_SITE = ("tls_benign_sni", "tls_no_sni", "http_benign_host")
ELSEWHERE = ("tls_sni_elsewhere", "http_host_elsewhere")

# A per-connection IP ID counter (Linux, per socket) steps by 1 per packet we see; a
# global counter (Windows) by the server's other traffic too, tens per millisecond on a
# busy server. Steps up to IP_ID_STEP still "count up"; random IDs do so by chance once
# in 512 per step.
IP_ID_STEP = 128
# How far a packet's IP ID may sit from the server's count around it and still be the
# server's: a RST that comes a while after the last data packet, from a global counter,
# has moved on further than one step.
IP_ID_GAP = 1024
IP_ID_SPACE = 1 << 16

TCP_JUDGED = ("rst", "fin", "data")
PACKET_WORDS = {"rst": "RST", "fin": "FIN", "data": "data packet", "syn-ack": "SYN-ACK"}
# What the hop search may get back that is the censor's, not the server's.
CENSOR_RESPONSES = ("rst", "fin", "blockpage", "dns_answer")
RESPONSE_WORDS = {
    "rst": "the reset",
    "fin": "the close (FIN)",
    "blockpage": "the blockpage",
    "dns_answer": "the forged DNS answer",
}
# The initial TTLs stacks use (Linux/macOS 64, Windows 128, network gear 255).
INITIAL_TTLS = (64, 128, 255)


@dataclass
class Finding:
    """What one question of the deep analysis concluded, and why."""

    value: str | None
    evidence: list[Line] = field(default_factory=list)


@dataclass
class CensorLocation:
    """Where the hop search places the censor. ``hop`` counts routers from the
    volunteer (1 = the first router); ``first_response_ttl`` is the lowest TTL that
    brought back a censor-like answer, also when that did not locate it."""

    hop: int | None
    address: str | None
    first_response_ttl: int | None
    evidence: list[Line] = field(default_factory=list)
    response: str | None = None  # what the censor answered: one of CENSOR_RESPONSES
    next_address: str | None = None  # the hop right after ``hop``, when it answered


# --- trigger isolation -------------------------------------------------------------------


def _states(tests: Sequence[TriggerTest]) -> dict[str, str]:
    """Each test's outcome; a test repeated with different outcomes is ``mixed``, which
    no rule accepts as either interfered or worked (a flaky result proves nothing)."""
    seen: dict[str, set[bool]] = defaultdict(set)
    for t in tests:
        if t.name in TRIGGER_TESTS:
            seen[t.name].add(t.interfered)
    return {name: MIXED if len(got) > 1 else (INTERFERED if True in got else WORKED) for name, got in seen.items()}


def _test_lines(tests: Sequence[TriggerTest]) -> list[Line]:
    """One line per test, in the order of TRIGGER_TESTS, so a reader sees every result
    the rule was chosen from."""
    lines = []
    by_name: dict[str, list[TriggerTest]] = defaultdict(list)
    for t in tests:
        by_name[t.name].append(t)
    for name in by_name:
        if name not in TRIGGER_TESTS:
            lines.append(line(f"{name}: a test this version does not know, ignored", test=name))
    for name, what in TRIGGER_TESTS.items():
        runs = by_name.get(name, [])
        if not runs:
            continue
        hit = [t for t in runs if t.interfered]
        if len(runs) > 1 and 0 < len(hit) < len(runs):
            outcome = f"interfered with {len(hit)} of {len(runs)} times"
        elif hit:
            outcome = "interfered with" + (f" ({hit[0].failure})" if hit[0].failure else "")
        else:
            failure = next((t.failure for t in runs if t.failure), None)
            outcome = "worked" + (f" (failed otherwise: {failure})" if failure else "")
        t = runs[0]
        sent = f'"{t.sent}"' if t.sent else "nothing"
        lines.append(line(f"{what} (sent {sent} to {t.address}): {outcome}", test=name, address=t.address, sent=t.sent,
                          interfered=[r.interfered for r in runs], failure=[r.failure for r in runs],
                          detail=[r.detail for r in runs]))
    return lines


def _rule_dns_name(s: Mapping[str, str]) -> str | None:
    """The resolver answers a harmless name and not the site's: the name is the trigger
    (a resolver's blocklist, or a DNS injector matching the question)."""
    if s.get("dns_name") == INTERFERED and s.get("dns_benign_name") == WORKED:
        return "the site's name in the DNS question is the trigger: a harmless name asked of the same resolver was answered"
    return None


def _rule_address(s: Mapping[str, str]) -> str | None:
    """Everything sent to the site's address fails, whatever name it carries, while the
    site's name to another address passes: the address is the trigger (IP blocking).
    Without a test elsewhere, a network that fails everything looks the same."""
    at_site = [n for n in AT_SITE if n in s]
    harmless = [n for n in HARMLESS_AT_SITE if n in s]
    elsewhere = [n for n in ELSEWHERE if n in s]
    if not harmless or not elsewhere:
        return None
    if any(s[n] != INTERFERED for n in at_site) or any(s[n] != WORKED for n in elsewhere):
        return None
    return ("the site's address is the trigger: every connection to it was interfered with, even with a harmless name, "
            "while the site's name sent to a harmless address worked")


def _name_rule(s: Mapping[str, str], original: str, benign: str, elsewhere: str, what: str) -> str | None:
    """Shared by SNI and Host: only the name changed, and the interference went away."""
    if s.get(original) != INTERFERED or s.get(benign) != WORKED or s.get(elsewhere) == WORKED:
        return None
    text = f"the site's name in the {what} is the trigger: a harmless name sent to the same address worked"
    if s.get(elsewhere) == INTERFERED:
        return f"{text}, and the site's name sent to a harmless address was interfered with too"
    if s.get(elsewhere) == MIXED:
        return f"{text}, and the site's name sent to a harmless address was interfered with some of the times"
    return f"{text} (the site's name was not tried at a harmless address)"


def _rule_sni(s: Mapping[str, str]) -> str | None:
    """SNI filtering: the handshake to the same address passes with a harmless SNI."""
    return _name_rule(s, "tls_sni", "tls_benign_sni", "tls_sni_elsewhere", "TLS handshake (SNI)")


def _rule_host(s: Mapping[str, str]) -> str | None:
    """Host filtering: the request to the same address passes with a harmless Host."""
    return _name_rule(s, "http_host", "http_benign_host", "http_host_elsewhere", "HTTP request (Host)")


TRIGGER_RULES: tuple[tuple[str, Callable[[Mapping[str, str]], str | None]], ...] = (
    ("dns_name", _rule_dns_name),
    ("address", _rule_address),
    ("sni", _rule_sni),
    ("host", _rule_host),
)


def _why_not_isolated(s: Mapping[str, str]) -> str:
    """The most telling reason no rule fits, so a reader knows what to try again."""
    originals = [n for n in ORIGINALS if n in s]
    if not originals:
        return "the original was not repeated, so there is nothing to compare the other tests with"
    if all(v == WORKED for v in s.values()):
        return ("nothing was interfered with any more, not even the repeated original: "
                "the block may come and go, or was lifted")
    if all(s[n] != INTERFERED for n in originals):
        return "the repeated original was not interfered with this time: the block may come and go"
    if all(v == INTERFERED for v in s.values()) and any(n in s for n in ELSEWHERE):
        return ("everything was interfered with, also what was sent elsewhere: this network may be failing, "
                "or the censor matches more than one thing")
    if s.get("tls_sni") == INTERFERED and s.get("tls_benign_sni") == WORKED and s.get("tls_sni_elsewhere") == WORKED:
        return ("only the site's SNI to the site's own address was interfered with: the censor may match the name and the "
                "address together, or the harmless address is reached on a path without the censor")
    if s.get("http_host") == INTERFERED and s.get("http_benign_host") == WORKED and s.get("http_host_elsewhere") == WORKED:
        return ("only the site's Host to the site's own address was interfered with: the censor may match the name and the "
                "address together, or the harmless address is reached on a path without the censor")
    at_site = [n for n in AT_SITE if n in s]
    if at_site and all(s[n] == INTERFERED for n in at_site) and not any(n in s for n in ELSEWHERE):
        return ("everything sent to the site's address was interfered with, but the site's name was not tried at a harmless "
                "address: blocking by address cannot be told from a failing network")
    if s.get("dns_name") == INTERFERED and s.get("dns_benign_name") != WORKED:
        return "the harmless name was not answered properly either (or not asked): the resolver may be failing"
    if MIXED in s.values():
        return "some tests gave different results when repeated: the block may come and go"
    return "no rule fits this combination of results"


def isolate_trigger(tests: list[TriggerTest]) -> Finding:
    """Which part of the traffic the censor reacts to: ``dns_name``, ``address``,
    ``sni``, ``host``, ``not_isolated`` (tests ran, no rule fits) or None (no tests).
    The rule table is in the module docstring; the first line of the evidence is the
    conclusion, the others each test's result."""
    lines = _test_lines(tests)
    s = _states(tests)
    if not s:
        return Finding(None, lines)
    for value, rule in TRIGGER_RULES:
        text = rule(s)
        if text is not None:
            return Finding(value, [line(text, rule=value), *lines])
    return Finding("not_isolated", [line(_why_not_isolated(s), rule="not_isolated"), *lines])


# --- injection ---------------------------------------------------------------------------

# A judged packet (or group of packets): "injected", "server", or "note" (said, decides nothing).
_Judged = tuple[str, Line]


def _flows(packets: Iterable[PacketSeen]) -> dict[str, list[PacketSeen]]:
    """Packets per flow in arrival order (stable for equal times)."""
    out: dict[str, list[PacketSeen]] = defaultdict(list)
    for p in packets:
        out[p.flow].append(p)
    return {flow: sorted(ps, key=lambda p: p.t_ms) for flow, ps in out.items()}


def initial_ttl(ttl: int) -> int:
    """The initial TTL a packet most likely started from: the smallest usual one not
    below what arrived (no path is longer than 64 hops)."""
    return next((i for i in INITIAL_TTLS if ttl <= i), 255)


def _ttl_gap_words(ttl: int, reference: int) -> str:
    """"3 hops closer", or "another initial TTL (255, not 64)": what the difference says
    about the sender."""
    a, b = initial_ttl(ttl), initial_ttl(reference)
    if a != b:
        return f"another initial TTL ({a}, not {b})"
    d = ttl - reference
    hops = f"{abs(d)} hop{'s' if abs(d) != 1 else ''} {'closer' if d > 0 else 'farther'}"
    return f"{hops}; a single hop could also be a route change" if abs(d) == 1 else hops


def _counts_up(ids: Sequence[int]) -> bool:
    """Consecutive IDs step forward by 1..IP_ID_STEP (modulo 2^16): a counter."""
    return len(ids) >= 2 and all(0 < (b - a) % IP_ID_SPACE <= IP_ID_STEP for a, b in zip(ids, ids[1:], strict=False))


def _id_fits(p: PacketSeen, refs: Sequence[PacketSeen]) -> bool:
    """The IP ID sits in the server's count: not behind the packet before it, not more
    than IP_ID_GAP past it, and not past the one after it."""
    before = [r for r in refs if r.t_ms <= p.t_ms]
    after = [r for r in refs if r.t_ms > p.t_ms]
    if before and (p.ip_id - before[-1].ip_id) % IP_ID_SPACE > IP_ID_GAP:
        return False
    return not (after and (after[0].ip_id - p.ip_id) % IP_ID_SPACE > IP_ID_GAP)


def _rule_tcp_ttl(flow: str, syn_ack: PacketSeen, judged: Sequence[PacketSeen]) -> list[_Judged]:
    """A packet whose TTL differs from the SYN-ACK's came from another sender: one line
    per kind of packet and TTL."""
    groups: dict[tuple[str, int], list[PacketSeen]] = defaultdict(list)
    for p in judged:
        if p.ttl != syn_ack.ttl:
            groups[(p.kind, p.ttl)].append(p)
    out = []
    for (kind, ttl), ps in groups.items():
        what = PACKET_WORDS.get(kind, kind)
        what = f"the {what}" if len(ps) == 1 else f"{len(ps)} {what}s"
        out.append(("injected", line(
            f"{flow}: {what} came with IP TTL {ttl}, the SYN-ACK with {syn_ack.ttl} ({_ttl_gap_words(ttl, syn_ack.ttl)}): "
            "another sender on the path injected it",
            rule="tcp_ttl", flow=flow, kind=kind, count=len(ps), ttl=ttl, syn_ack_ttl=syn_ack.ttl,
            ip_ids=[p.ip_id for p in ps], src=ps[0].src)))
    return out


def _rule_tcp_ip_id(flow: str, server: Sequence[PacketSeen], judged: Sequence[PacketSeen]) -> list[tuple[PacketSeen, _Judged]]:
    """Among packets with the server's TTL, one whose IP ID is far from the server's
    count came from someone copying the TTL. An IP ID of 0 is never judged: a Linux
    server sends its own resets for segments it has no socket for with IP ID 0."""
    out = []
    for p in judged:
        refs = [r for r in server if r is not p and r.ip_id != 0]
        if p.ip_id == 0 or not _counts_up([r.ip_id for r in refs]) or _id_fits(p, refs):
            continue
        ids = [r.ip_id for r in refs]
        out.append((p, ("injected", line(
            f"{flow}: the {PACKET_WORDS.get(p.kind, p.kind)} came with the server's IP TTL {p.ttl} but IP ID {p.ip_id}, "
            f"far from the server's own count ({ids[0]} to {ids[-1]}): another sender on the path injected it",
            rule="tcp_ip_id", flow=flow, kind=p.kind, ttl=p.ttl, ip_id=p.ip_id, server_ip_ids=ids, src=p.src))))
    return out


def _ip_id_words(server: Sequence[PacketSeen], fine: Sequence[PacketSeen]) -> str:
    """What the IP IDs of the packets judged the server's said, for its evidence line."""
    ids = [r.ip_id for r in server if r.ip_id != 0]
    said = (f"IP IDs in the server's count ({ids[0]} to {ids[-1]})" if _counts_up(ids)
            else "IP IDs that tell nothing (the server's do not count up)")
    if any(p.kind == "rst" and p.ip_id == 0 for p in fine):
        said += "; IP ID 0 on the RST, as a Linux server sends its own resets"
    return said


def _rule_tcp_server(flow: str, syn_ack: PacketSeen, server: Sequence[PacketSeen], fine: Sequence[PacketSeen]) -> list[_Judged]:
    """Packets with the SYN-ACK's TTL and a fitting (or unjudgeable) IP ID: nothing
    tells them apart from whatever answered the connection, most likely the server."""
    if not fine:
        return []
    counts = Counter(PACKET_WORDS.get(p.kind, p.kind) for p in fine)
    what = join_words([f"the {k}" if n == 1 else f"{n} {k}s" for k, n in counts.items()])
    return [("server", line(
        f"{flow}: {what} came with the SYN-ACK's IP TTL {syn_ack.ttl} and {_ip_id_words(server, fine)}: sent by the "
        "server (or by whatever answered the connection)",
        rule="tcp_server", flow=flow, kinds=sorted({p.kind for p in fine}), ttl=syn_ack.ttl, ip_ids=[p.ip_id for p in fine]))]


def _judge_tcp_flow(flow: str, ps: Sequence[PacketSeen]) -> list[_Judged]:
    """Each RST, FIN and data packet of one TCP flow against the flow's first SYN-ACK."""
    syn_acks = [p for p in ps if p.kind == "syn-ack"]
    judged = [p for p in ps if p.kind in TCP_JUDGED]
    if not judged:
        return []
    if not syn_acks:
        kinds = join_words(sorted({PACKET_WORDS.get(p.kind, p.kind) for p in judged}))
        return [("note", line(f"{flow}: no SYN-ACK to compare the {kinds} with", rule="tcp_no_syn_ack", flow=flow))]
    syn_ack = syn_acks[0]
    same_ttl = [p for p in judged if p.ttl == syn_ack.ttl]
    by_id = _rule_tcp_ip_id(flow, [syn_ack, *same_ttl], same_ttl)
    off = [p for p, _ in by_id]
    fine = [p for p in same_ttl if not any(p is q for q in off)]
    return [*_rule_tcp_ttl(flow, syn_ack, judged), *(j for _, j in by_id),
            *_rule_tcp_server(flow, syn_ack, [syn_ack, *fine], fine)]


def _rule_dns_double_reply(flow: str, src: str, replies: Sequence[PacketSeen]) -> list[_Judged]:
    """Two replies to one query from one address: a resolver answers once, so with
    different TTLs one of them was sent by someone else spoofing the resolver."""
    ttls = sorted({p.ttl for p in replies})
    desc = join_words([f"IP TTL {p.ttl} at {p.t_ms:g} ms ({', '.join(p.answers) or 'no address'})" for p in replies])
    fields = dict(flow=flow, src=src, ttls=[p.ttl for p in replies], t_ms=[p.t_ms for p in replies],
                  answers=[p.answers for p in replies])
    if len(ttls) > 1:
        return [("injected", line(
            f"{flow}: {len(replies)} replies to one query from {src}, with {desc}: a second sender on the path "
            "spoofed the resolver (on-path injection)", rule="dns_double_reply", **fields))]
    if len({tuple(p.answers) for p in replies}) > 1:
        return [("note", line(
            f"{flow}: {len(replies)} replies to one query from {src} with the same IP TTL but different answers ({desc}): "
            "the TTL does not tell who sent which", rule="dns_double_reply_same_ttl", **fields))]
    return [("server", line(f"{flow}: the reply from {src} came twice, alike (IP TTL {ttls[0]}): a duplicated packet",
                            rule="dns_duplicate", **fields))]


def _rule_dns_odd_reply(src: str, singles: Mapping[str, PacketSeen]) -> list[_Judged]:
    """A resolver's single replies in different flows share one TTL; a reply that
    differs from a TTL at least 2 others agree on was sent by someone else. One against
    one is not judged: either could be the odd one, and an anycast resolver may be
    reached over two paths."""
    if len(singles) < 2:
        return []
    by_ttl: dict[int, list[str]] = defaultdict(list)
    for flow, p in singles.items():
        by_ttl[p.ttl].append(flow)
    fields = dict(src=src, ttls={flow: p.ttl for flow, p in singles.items()})
    if len(by_ttl) == 1:
        ttl = next(iter(by_ttl))
        return [("server", line(f"the {len(singles)} replies from {src} in different flows all came with IP TTL {ttl}: "
                                "sent by the resolver, as far as the TTL tells", rule="dns_consistent", **fields))]
    ranked = sorted(by_ttl.items(), key=lambda kv: -len(kv[1]))
    common_ttl, common = ranked[0]
    if len(common) < 2 or len(common) == len(ranked[1][1]):
        spread = join_words([f"{ttl} ({', '.join(flows)})" for ttl, flows in ranked])
        return [("note", line(f"the replies from {src} came with different IP TTLs, {spread}: too few to tell which is "
                              "the resolver's (an anycast resolver may be reached over two paths)", rule="dns_odd_reply_unjudged",
                              **fields))]
    out: list[_Judged] = []
    for ttl, flows in ranked[1:]:
        out.append(("injected", line(
            f"the reply from {src} in {join_words(flows)} came with IP TTL {ttl}, its {len(common)} replies in other flows "
            f"with {common_ttl} ({_ttl_gap_words(ttl, common_ttl)}): they did not all come from one sender, so some were "
            "forged on the path", rule="dns_odd_reply", odd_flows=flows, odd_ttl=ttl, common_ttl=common_ttl, **fields)))
    return out


def _judge_dns(flows: Mapping[str, Sequence[PacketSeen]]) -> list[_Judged]:
    """Double replies flow by flow, then single replies across the flows of each resolver."""
    out: list[_Judged] = []
    singles: dict[str, dict[str, PacketSeen]] = defaultdict(dict)
    for flow, ps in flows.items():
        per_src: dict[str, list[PacketSeen]] = defaultdict(list)
        for p in ps:
            if p.kind == "dns":
                per_src[p.src].append(p)
        for src, replies in per_src.items():
            if len(replies) > 1:
                out += _rule_dns_double_reply(flow, src, replies)
            else:
                singles[src][flow] = replies[0]
    for src, by_flow in singles.items():
        out += _rule_dns_odd_reply(src, by_flow)
    return out


def judge_injection(packets: list[PacketSeen]) -> Finding:
    """Were the packets that ended or answered the measurement forged on the path?
    ``injected``, ``server`` (nothing told them apart from the real sender's) or None
    (nothing to compare). Rules and traps: module docstring. Evidence: injected lines
    first, then the server's, then what could not be judged."""
    flows = _flows(packets)
    judged: list[_Judged] = []
    for flow, ps in flows.items():
        if any(p.kind in ("syn-ack", *TCP_JUDGED) for p in ps):
            judged += _judge_tcp_flow(flow, ps)
    judged += _judge_dns(flows)
    order = {"injected": 0, "server": 1, "note": 2}
    judged.sort(key=lambda j: order[j[0]])
    kinds = {kind for kind, _ in judged}
    value = "injected" if "injected" in kinds else "server" if "server" in kinds else None
    return Finding(value, [ln for _, ln in judged])


# --- the censor's hop ----------------------------------------------------------------------


def _by_ttl(hops: Iterable[HopProbe]) -> dict[int, list[HopProbe]]:
    out: dict[int, list[HopProbe]] = defaultdict(list)
    for h in hops:
        out[h.ttl].append(h)
    return dict(sorted(out.items()))


def _icmp_from(probes: Sequence[HopProbe]) -> str | None:
    return next((p.icmp_from for p in probes if p.icmp_from), None)


def _first_censor(by_ttl: Mapping[int, Sequence[HopProbe]]) -> HopProbe | None:
    """The lowest TTL whose answer is the censor's kind: where it first reacts."""
    return next((p for probes in by_ttl.values() for p in probes if p.response in CENSOR_RESPONSES), None)


def _rule_server_first(by_ttl: Mapping[int, Sequence[HopProbe]], censor: HopProbe | None) -> Line | None:
    """The server answered the replay at a TTL below any censor answer: the replayed
    packet got through, so it is not what the censor acts on (a censor may watch only a
    connection's first packets) and nothing located it."""
    server = next((p for probes in by_ttl.values() for p in probes if p.response == "server"), None)
    if server is None or (censor is not None and censor.ttl <= server.ttl):
        return None
    later = (f"; a {censor.response} came at TTL {censor.ttl}, after the server's own answer" if censor else "")
    return line(f"the server answered the replayed packet at TTL {server.ttl}, before any censor answer: the replay was "
                f"not blocked, so the censor could not be located{later}",
                rule="server_first", server_ttl=server.ttl, censor_ttl=censor.ttl if censor else None)


def server_hops(server_ttl: int) -> int:
    """The lowest TTL that reaches the server, from the TTL its SYN-ACK arrived with
    (assumes the way back is as long as the way there)."""
    return initial_ttl(server_ttl) - server_ttl + 1


def _rule_servers_own(censor: HopProbe, server_ttl: int | None) -> Line | None:
    """An answer that carries the server's IP TTL, at a TTL that reaches the server, is
    the server's own answer to an odd packet, not a censor's."""
    if server_ttl is None or censor.response_ttl != server_ttl or censor.ttl < server_hops(server_ttl):
        return None
    return line(f"the {censor.response} at TTL {censor.ttl} came with the server's own IP TTL {server_ttl}, and TTL "
                f"{censor.ttl} reaches the server (about {server_hops(server_ttl)} hops away): it looks like the server's "
                "answer, so the censor could not be located", rule="servers_own", ttl=censor.ttl,
                response_ttl=censor.response_ttl, server_ttl=server_ttl)


def _rule_on_path_tap(by_ttl: Mapping[int, Sequence[HopProbe]], censor: HopProbe,
                      server_ttl: int | None) -> CensorLocation | None:
    """The censor's answer and a time-exceeded came back for the same TTL: the packet
    died at that hop AND was answered, so the censor watches the wire at that router (an
    on-path tap or injector sees a packet before the router's TTL check), not behind its
    forwarding rules. The censor is at hop t itself."""
    t = censor.ttl
    address = _icmp_from(by_ttl.get(t, []))
    if address is None:
        return None
    answer = (f"the {censor.response} came back first at TTL {t}"
              + (f" (from {censor.response_from}, IP TTL {censor.response_ttl})" if censor.response_from else ""))
    evidence = [line(f"{answer}, together with a time-exceeded from hop {t} ({address}): the packet died there and was "
                     f"answered all the same, so the censor watches the traffic at hop {t} or on the link into it "
                     f"(an on-path injector)",
                     rule="on_path", hop=t, address=address, ttl=t, response=censor.response,
                     response_from=censor.response_from, response_ttl=censor.response_ttl)]
    if server_ttl is not None:
        evidence.append(line(f"the server's SYN-ACK came with IP TTL {server_ttl}: it is about {server_hops(server_ttl)} "
                             "hops away", rule="server_distance", server_ttl=server_ttl, server_hops=server_hops(server_ttl)))
    return CensorLocation(t, address, t, evidence, censor.response, _icmp_from(by_ttl.get(t + 1, [])))


def _located(by_ttl: Mapping[int, Sequence[HopProbe]], censor: HopProbe, server_ttl: int | None) -> CensorLocation:
    """hop t-1 (or 1 at TTL 1), its address from its time-exceeded, and why; or hop t
    when that hop answered time-exceeded too (``_rule_on_path_tap``)."""
    tap = _rule_on_path_tap(by_ttl, censor, server_ttl)
    if tap is not None:
        return tap
    t = censor.ttl
    hop = max(t - 1, 1)
    address = _icmp_from(by_ttl.get(hop, []))
    next_address = _icmp_from(by_ttl.get(hop + 1, [])) if t > 1 else None
    answer = (f"the {censor.response} came back first at TTL {t}"
              + (f" (from {censor.response_from}, IP TTL {censor.response_ttl})" if censor.response_from else ""))
    fields = dict(ttl=t, response=censor.response, response_from=censor.response_from, response_ttl=censor.response_ttl)
    evidence = []
    if t == 1:
        at = f" ({address})" if address else ""
        evidence.append(line(f"{answer}: the censor sits at or before the first router{at}, on your own router or on the "
                             "link to your ISP", rule="first_hop", hop=1, address=address, **fields))
    else:
        if address:
            died = f"TTL {hop} died at hop {hop} ({address})"
        elif hop in by_ttl:
            died = f"TTL {hop} died at hop {hop}, which sent no time-exceeded (address unknown)"
        else:
            died = f"TTL {hop} was not tried (hop {hop}'s address unknown)"
        evidence.append(line(
            f"{answer}, and {died}: a router sends time-exceeded before its forwarding rules run, "
            f"so the censor is at hop {hop} or right after it", rule="hop", hop=hop, address=address, **fields))
    missing = [k for k in range(1, t) if k not in by_ttl]
    if missing:
        evidence.append(line(f"TTL {join_words([str(k) for k in missing])} not tried: the censor may be closer",
                             rule="ttls_missing", missing=missing))
    tried = [k for k in by_ttl if k >= t]
    answered = [k for k in tried if any(p.response in CENSOR_RESPONSES for p in by_ttl[k])]
    if len(answered) < len(tried):
        evidence.append(line(f"the censor answered at {len(answered)} of the {len(tried)} TTLs tried from {t} on: "
                             "packet loss, or a censor that acts only some of the times", rule="censor_gaps",
                             answered=answered, tried=tried))
    if server_ttl is not None:
        evidence.append(line(f"the server's SYN-ACK came with IP TTL {server_ttl}: it is about {server_hops(server_ttl)} "
                             "hops away", rule="server_distance", server_ttl=server_ttl, server_hops=server_hops(server_ttl)))
    return CensorLocation(hop, address, t, evidence, censor.response, next_address)


def locate_censor(hops: list[HopProbe], server_ttl: int | None = None) -> CensorLocation:
    """The hop the censor's answer first comes from (module docstring: why TTL t means
    hop t-1). ``server_ttl`` (the server's SYN-ACK TTL) tells the server's own answers
    apart and how far away the server is."""
    by_ttl = _by_ttl(hops)
    if not by_ttl:
        return CensorLocation(None, None, None, [line("no hop search was made", rule="no_hops")])
    censor = _first_censor(by_ttl)
    first = censor.ttl if censor else None
    response = censor.response if censor else None
    top = max(by_ttl)
    not_found = [] if censor else [line(f"no hop answered for the censor up to TTL {top}", rule="not_found", max_ttl=top)]
    server_first = _rule_server_first(by_ttl, censor)
    if server_first is not None:
        return CensorLocation(None, None, first, [*not_found, server_first], response)
    if censor is None:
        return CensorLocation(None, None, None, not_found)
    own = _rule_servers_own(censor, server_ttl)
    if own is not None:
        return CensorLocation(None, None, first, [own], response)
    return _located(by_ttl, censor, server_ttl)


# --- in words, and the whole ---------------------------------------------------------------


def _in_asn(address: str | None, own_asn: str | None, hop_asns: Mapping[str, str] | None) -> bool | None:
    """True/False when the address's ASN is known, None when it is not."""
    if address is None or own_asn is None or not hop_asns or address not in hop_asns:
        return None
    return (normalise_asn(hop_asns[address]) or "").upper() == (normalise_asn(own_asn) or "").upper()


def where_words(location: CensorLocation, own_asn: str | None, hop_asns: dict[str, str] | None = None) -> str:
    """The censor's place in plain words: "the reset was injected 2 hops from you, at
    10.0.0.1 or right after it, before the traffic left your ISP". The last part only
    when ``hop_asns`` puts that address in ``own_asn``; "at the edge of your ISP" when
    the next hop is known to be outside it (the censor may then sit on either side)."""
    if location.hop is None:
        if location.first_response_ttl is None:
            return "no hop answered for the censor, so where it sits is unknown"
        return "where the censor sits could not be told: " + (location.evidence[0]["text"] if location.evidence else "")
    what = RESPONSE_WORDS.get(location.response or "", "the censor's answer")
    if location.first_response_ttl == 1:
        place = f"{what} was injected right next to you, at or before the first router"
        place += f" ({location.address})" if location.address else ""
    else:
        hops = f"{location.hop} hop{'s' if location.hop != 1 else ''}"
        at = f"at {location.address} or right after it" if location.address else "at a router that did not give its address"
        place = f"{what} was injected {hops} from you, {at}"
    inside = _in_asn(location.address, own_asn, hop_asns)
    if inside:
        if location.first_response_ttl != 1 and _in_asn(location.next_address, own_asn, hop_asns) is False:
            return f"{place}, at the edge of your ISP"
        return f"{place}, before the traffic left your ISP"
    return place


def summarise(result: DeepResult, own_asn: str | None = None, hop_asns: dict[str, str] | None = None) -> dict[str, Any]:
    """What ``probe show --json``, ``probe explain`` and the report display of a deep
    measurement: the three findings, the place in words, and the hop search as run.
    ``injected`` is ``judge_injection``'s value ("injected", "server" or None)."""
    trigger = isolate_trigger(result.trigger_tests)
    injection = judge_injection(result.packets)
    location = locate_censor(result.hops, result.server_ttl)
    return {
        "trigger": trigger.value,
        "trigger_evidence": trigger.evidence,
        "injected": injection.value,
        "injection_evidence": injection.evidence,
        "censor_hop": location.hop,
        "censor_address": location.address,
        "censor_response": location.response,
        "first_response_ttl": location.first_response_ttl,
        "censor_evidence": location.evidence,
        "where": where_words(location, own_asn, hop_asns) if result.hops else None,
        "replayed": result.replayed,
        "replay_target": result.replay_target,
        "server_ttl": result.server_ttl,
        "hops": [asdict(h) for h in sorted(result.hops, key=lambda h: h.ttl)],
        "packets_sent": result.packets_sent,
        "skipped": list(result.skipped),
    }
