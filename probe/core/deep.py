"""Records of a deep measurement (`probe run --deep`, `probe trace URL`): what was
tried to isolate a block's trigger, the packets of the measurement's own flows, and the
replay of the triggering packet with growing IP TTLs that finds the censor's hop.

Observations only, like ``probe.core.records``: which trigger it was, whether a packet
was injected and where the censor sits are decided by ``probe.analysis.deep`` from
these, so a better rule re-reads the same packets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# What a trigger test sends, by name: the original repeated, then one change at a time.
TRIGGER_TESTS = {
    "tls_sni": "the TLS handshake as measured: the site's name (SNI) to the site's address",
    "tls_benign_sni": "a harmless SNI to the site's address",
    "tls_no_sni": "no SNI at all to the site's address",
    "tls_sni_elsewhere": "the site's SNI to a harmless address",
    "http_host": "the HTTP request as measured: the site's Host to the site's address",
    "http_benign_host": "a harmless Host to the site's address",
    "http_host_elsewhere": "the site's Host to a harmless address",
    "dns_name": "the DNS question as measured: the site's name to the resolver",
    "dns_benign_name": "a harmless name to the same resolver",
}

# What a replayed packet can bring back at one TTL.
HOP_RESPONSES = ("rst", "fin", "blockpage", "dns_answer", "server", None)


@dataclass
class TriggerTest:
    """One connection or query of trigger isolation, made with ordinary sockets."""

    name: str  # a key of TRIGGER_TESTS
    address: str  # ip:port connected to, or the resolver's ip:port
    sent: str  # the SNI, Host or name sent ("" for none)
    started_at: str
    duration_ms: float
    # interfered with as the measurement was (reset, cut, timed out, forged answer)
    interfered: bool
    failure: str | None = None  # normalised failure string, None when it worked
    detail: str | None = None  # e.g. the answer's addresses, the response's status


@dataclass
class PacketSeen:
    """One packet of the measurement's own flows, as the sniffer saw it arrive."""

    flow: str  # "tcp 10.77.2.71:443 <- 43122", "udp 10.77.1.53:53 <- 5353"
    kind: str  # "syn-ack", "rst", "fin", "data", "dns", "icmp-time-exceeded", "icmp-unreachable"
    src: str
    ttl: int
    ip_id: int
    t_ms: float  # since the flow's first packet
    window: int | None = None
    flags: str | None = None
    seq: int | None = None
    payload_bytes: int = 0
    answers: list[str] = field(default_factory=list)  # a DNS reply's addresses


@dataclass
class HopProbe:
    """The triggering packet sent once with this IP TTL, and what came back."""

    ttl: int
    icmp_from: str | None = None  # the router whose time-exceeded came back
    response: str | None = None  # one of HOP_RESPONSES
    response_from: str | None = None
    response_ttl: int | None = None
    rtt_ms: float | None = None


@dataclass
class DeepResult:
    """Everything a deep measurement of one blocked target observed."""

    measurement_id: str
    url: str
    started_at: str
    duration_ms: float = 0.0
    verdict: str | None = None  # the verdict it examined
    trigger_tests: list[TriggerTest] = field(default_factory=list)
    packets: list[PacketSeen] = field(default_factory=list)
    # the hop search: what was replayed, to where, and each TTL's answer
    replayed: str | None = None  # "tls_client_hello", "http_request", "dns_query"
    replay_target: str | None = None
    server_ttl: int | None = None  # the IP TTL of the server's SYN-ACK (or the resolver's reply)
    hops: list[HopProbe] = field(default_factory=list)
    packets_sent: int = 0  # raw packets sent by the hop search
    skipped: list[str] = field(default_factory=list)  # what was not done, and why
