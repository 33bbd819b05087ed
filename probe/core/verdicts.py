"""The verdict vocabulary and the Verdict record: one source of truth.

Copied from ../shared/spec/verdicts.md (the project's spec): every classified
measurement gets exactly one of these strings. A test checks that this list, the spec
copy in the README and the report agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from probe.core.i18n import N_

CLASSIFIER_VERSION = "1.2.2"
# Below this, a blocked verdict is said with a "perhaps" (typically: little to compare)
LOW_CONFIDENCE = 0.5
# What "blocked = None" is called wherever people read it.
CANT_TELL = "can't tell"

# verdict -> (blocked, meaning)
VERDICTS: dict[str, tuple[bool, str]] = {
    "ok": (False, N_("reachable, and consistent with the control")),
    "down": (False, N_("the site fails from the control too: not censorship")),
    "dns.nxdomain": (True, N_("local resolver says the name does not exist (or SERVFAIL / empty answer) while the control "
                           "resolves it")),
    "dns.bogon": (True, N_("local answer is a private, loopback, link-local or otherwise unroutable address")),
    "dns.blockpage": (True, N_("local answer points at a host that serves a blockpage, or at an address known to belong to "
                            "a censor")),
    "dns.injection": (True, N_("answers are injected on the path: a reply arrives from an address that runs no resolver, or "
                            "two replies race")),
    "dns.inconsistent": (True, N_("local answer differs from the control (no shared address, no shared ASN, no "
                                  "valid certificate for the name) and no stronger DNS verdict applies")),
    "tcp.timeout": (True, N_("connects to the site's real addresses time out locally but succeed from the control "
                             "(IP blackholing)")),
    "tcp.reset": (True, N_("connects are reset locally but succeed from the control")),
    "tcp.refused": (True, N_("connects are refused locally but succeed from the control")),
    "tls.reset": (True, N_("TCP succeeds, the TLS handshake is reset or closed after the ClientHello (SNI filtering)")),
    "tls.timeout": (True, N_("TLS handshake stalls locally, succeeds from the control")),
    "tls.mitm": (True, N_("a certificate that does not validate for the name is presented locally, while the control gets a "
                       "valid one")),
    "http.reset": (True, N_("the plain-HTTP request is reset or closed after it is sent (Host or keyword filtering)")),
    "http.timeout": (True, N_("the HTTP response never comes locally, comes from the control")),
    "http.blockpage": (True, N_("the response matches a known blockpage fingerprint")),
    "http.diff": (True, N_("the response differs materially from the control's without a known fingerprint")),
    "error": (False, N_("the probe could not measure (no network at all, control unreachable and no other evidence)")),
}

LAYERS = ("dns", "tcp", "tls", "http")

# Qualifiers of a verdict, what they mean, and how tables show them.
TAGS: dict[str, tuple[str, str]] = {
    "partial:ipv4": (N_("IPv4 only"), N_("only the IPv4 addresses (or the A answer) are blocked; IPv6 works")),
    "partial:ipv6": (N_("IPv6 only"), N_("only the IPv6 addresses (or the AAAA answer) are blocked; IPv4 works")),
    "slow": (N_("slow link"), N_("the page was still arriving at the link's own speed when the deadline came: the link "
                          "is slow, not the site blocked")),
    "network_changed": (N_("network changed"), N_("this computer's network (route, address or resolver) changed during "
                                           "the measurement: it mixes two networks")),
    "clock_skew": (N_("clock off"), N_("this computer's clock was off: certificates were judged at the control's time")),
}


def tag_label(tag: str) -> str:
    return TAGS.get(tag, (tag, ""))[0]


@dataclass
class Evidence:
    """One human-readable line and the machine fields it came from."""

    text: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class LayerFinding:
    """One layer's reading, as OONI's newer pipeline scores it: a (blocked, down, ok)
    triple (not probabilities), the id of the rule that fired, and the verdict the
    layer would give when it is the first to show interference."""

    layer: str
    blocked: float = 0.0
    down: float = 0.0
    ok: float = 0.0
    rule_id: str = "no_data"
    verdict: str | None = None
    evidence: list[Evidence] = field(default_factory=list)
    # the probe itself could not measure this layer (not the network's doing)
    error: bool = False
    # the "blocked" reading rests on a failure a site that is down for everyone shows too
    # (refused, timed out, bad certificate, no such name), and there was no control to
    # rule that out: reported with blocked = None ("can't tell"), the likely verdict named
    needs_control: bool = False
    # qualifiers a verdict carries (TAGS): "partial:ipv4" (only one address family or
    # record type is blocked), "slow" (the link, not the site, is slow), ...
    tags: list[str] = field(default_factory=list)


def needs_control(f: LayerFinding) -> LayerFinding:
    """Mark a no-control finding whose failure an outage would produce too."""
    f.needs_control = True
    return f


@dataclass
class Verdict:
    verdict: str
    # True, False, or None: "can't tell" (a likely blocked verdict, but without a control
    # it cannot be told from an outage; only ever None for a blocked verdict)
    blocked: bool | None
    confidence: float
    layer: str | None  # the layer that decided; None for ok/down/error with no layer
    rule_id: str
    evidence: list[Evidence] = field(default_factory=list)
    layers: dict[str, LayerFinding] = field(default_factory=dict)
    classifier_version: str = CLASSIFIER_VERSION
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}")
        expected = VERDICTS[self.verdict][0]
        if self.blocked != expected and not (self.blocked is None and expected):
            raise ValueError(f"{self.verdict} must have blocked={expected}" + (" or None" if expected else ""))
