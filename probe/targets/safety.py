"""Targets that are not public websites: this computer, its local network, a cloud
metadata service, or a name that imitates another site's.

Why: a volunteer runs whatever list they are given, and the probe stores (and exports)
the pages it fetches. A list with ``http://127.0.0.1:631/``, ``http://192.168.1.1/`` or
``http://169.254.169.254/latest/meta-data/`` in it would store the volunteer's printer
settings, router page or cloud credentials in results meant to be shared, and a name
such as ``раураl.com`` (Cyrillic letters in a Latin name) is a look-alike of another
site. So ``probe targets lint`` warns about them and ``probe run`` measures them only
with ``--allow-private-targets`` (a researcher's own local test, a lab).

Only the URL's own host is judged. A public name whose DNS answer is a private address
is a censor's (or a site's) answer, and is measured as any other: that is evidence.

What counts (one ``Risk`` code each; a host may have several):

* ``loopback``: 127.0.0.0/8, ::1, ``localhost`` and ``*.localhost``;
* ``unspecified``: 0.0.0.0/8 and ``::`` (connecting there reaches this computer);
* ``private``: RFC 1918 (10/8, 172.16/12, 192.168/16), IPv6 unique-local fc00::/7 and
  the old site-local fec0::/10, and also the ISP's shared space 100.64.0.0/10 (RFC 6598,
  carrier-grade NAT): those are the ISP's own machines, not the open internet;
* ``link_local``: 169.254.0.0/16, fe80::/10;
* ``metadata``: the cloud metadata services (``METADATA_ADDRESSES``, ``METADATA_NAMES``),
  whatever range they sit in;
* ``reserved``: any other address that is not global (multicast, broadcast,
  documentation, benchmarking, future use);
* ``local_name``: names only a local network answers: one label without a dot
  (``router``), and ``LOCAL_SUFFIXES`` (``.local``, ``.internal``, ``.home.arpa``, ...);
* ``mixed_script``: a label that mixes writing systems (Latin with Cyrillic or Greek...),
  decoded from punycode first. A label in one script (``наша-ніва.бел``) is fine, and so
  are the mixtures that languages use (Japanese Han with kana, Korean Han with Hangul,
  each with Latin), as in Unicode's "highly restrictive" profile (UTS #39).

IPv4-mapped (``::ffff:127.0.0.1``), NAT64 (``64:ff9b::7f00:1``) and 6to4 IPv6 forms are
judged by the IPv4 address they carry, and so are the numeric spellings that
``inet_aton`` (so the system resolver and browsers) accepts: ``0x7f000001``,
``2130706433``, ``0177.0.0.1``, ``127.1``. Hosts inside a ``--lab-network`` range stand
for the open internet and are never risky (``localhost`` counts as 127.0.0.1 there).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from probe.core.i18n import N_, _, ngettext

LOOPBACK = "loopback"
UNSPECIFIED = "unspecified"
PRIVATE = "private"
LINK_LOCAL = "link_local"
METADATA = "metadata"
RESERVED = "reserved"
LOCAL_NAME = "local_name"
MIXED_SCRIPT = "mixed_script"
CODES = (LOOPBACK, UNSPECIFIED, PRIVATE, LINK_LOCAL, METADATA, RESERVED, LOCAL_NAME, MIXED_SCRIPT)

ALLOW_FLAG = "--allow-private-targets"
# A few words per code, for the one line that names several hosts.
SHORT = {
    LOOPBACK: N_("this computer"),
    UNSPECIFIED: N_("this computer"),
    PRIVATE: N_("local network"),
    LINK_LOCAL: N_("local network"),
    METADATA: N_("cloud metadata"),
    RESERVED: N_("reserved address"),
    LOCAL_NAME: N_("local name"),
    MIXED_SCRIPT: N_("look-alike name"),
}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# The instance metadata services of the big clouds: on a cloud machine they hand out the
# machine's credentials to whoever asks from it. AWS, Azure, GCP, Oracle, DigitalOcean
# and OpenStack use 169.254.169.254; AWS also fd00:ec2::254 (IPv6), 169.254.170.2 (ECS
# task credentials) and 169.254.169.253 (its DNS); Alibaba 100.100.100.200; Oracle's
# older one 192.0.0.192.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.169.253", "fd00:ec2::254", "100.100.100.200", "192.0.0.192",
))
METADATA_NAMES = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal",
})
# Names that only a local network answers: mDNS (.local), ICANN's private-use .internal,
# the home-network zone home.arpa (RFC 8375), and what home routers and companies use.
LOCAL_SUFFIXES = ("local", "localdomain", "internal", "home.arpa", "lan", "intranet", "corp", "home")

_PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fec0::/10",
))
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class Risk:
    """Why one target is not a public website: a stable code (for JSON and tests) and one
    plain line for the volunteer, in their language."""

    code: str
    host: str  # as written in the URL: lower case, without brackets or a final dot
    why: str


# --- hosts -----------------------------------------------------------------------------


def url_host(url: str) -> str | None:
    """The host of a URL, lower case, without brackets, zone or final dots; a bare host
    (no ``scheme://``) is taken as it is. None when there is none."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        host = urlsplit(text).hostname
    except ValueError:
        return None
    if not host:
        return None
    host = host.split("%", 1)[0]  # an IPv6 zone ("fe80::1%25eth0")
    return host.rstrip(".") or None


# One part of an inet_aton address: decimal, 0x-hex or 0-octal.
_NUMERIC_PART = re.compile(r"0x[0-9a-f]*|[0-9]+")


def inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address that ``inet_aton`` (getaddrinfo, browsers) reads in ``host``:
    ``0x7f000001``, ``2130706433``, ``0177.0.0.1`` and ``127.1`` are all 127.0.0.1.
    None when ``host`` is a name."""
    parts = host.lower().split(".")
    if not 1 <= len(parts) <= 4 or not all(_NUMERIC_PART.fullmatch(p) for p in parts):
        return None
    try:
        values = [int(p[2:] or "0", 16) if p.startswith("0x") else int(p, 8 if len(p) > 1 and p[0] == "0" else 10)
                  for p in parts]
    except ValueError:  # "08": not octal
        return None
    *front, last = values
    if any(v > 255 for v in front) or last >= 256 ** (5 - len(values)):
        return None
    number = last
    for i, v in enumerate(front):
        number += v << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
    return None


def _address_risk(address: IPAddress) -> tuple[str, str] | None:
    """(code, why) of one address, or None for a global one."""
    if address in METADATA_ADDRESSES:
        return METADATA, _("a cloud metadata service: on a cloud server it hands out that server's credentials")
    if address.is_unspecified or address in _THIS_NETWORK:
        return UNSPECIFIED, _("the unspecified address: connecting to it reaches this computer itself")
    if address.is_loopback:
        return LOOPBACK, _("a loopback address: this computer itself")
    if address.is_link_local:
        return LINK_LOCAL, _("a link-local address: a device on your local network")
    if any(address in n for n in _PRIVATE):
        return PRIVATE, _("a private address: a machine on your local network")
    if address in _SHARED:
        return PRIVATE, _("an address inside your internet provider's own network (100.64.0.0/10), "
                          "not the open internet")
    if not address.is_global or address.is_multicast or address.is_reserved:
        return RESERVED, _("a reserved address (multicast, broadcast, documentation or future use), "
                           "not a website on the open internet")
    return None


def _in_lab(address: IPAddress, lab: Sequence[Network]) -> bool:
    return any(address.version == n.version and address in n for n in lab)


def _ip_risks(host: str, address: IPAddress, lab: Sequence[Network], spelled: bool) -> list[Risk]:
    inner = _embedded_ipv4(address)
    judged = inner or address
    if _in_lab(address, lab) or _in_lab(judged, lab):
        return []
    found = _address_risk(judged)
    if found is None:
        return []
    code, why = found
    if inner is not None:
        why = _("{why} (written as the IPv6 address {host})").format(why=why, host=host)
    elif spelled:
        why = _("{why} ({host} is {address})").format(why=why, host=host, address=address)
    return [Risk(code, host, why)]


def _name_risks(host: str, lab: Sequence[Network]) -> list[Risk]:
    if host == "localhost" or host.endswith(".localhost"):
        if _in_lab(ipaddress.IPv4Address("127.0.0.1"), lab):  # RFC 6761: it is the loopback address
            return []
        return [Risk(LOOPBACK, host, _("the name of this computer itself (localhost)"))]
    if host in METADATA_NAMES:
        return [Risk(METADATA, host, _("a cloud metadata service: on a cloud server it hands out that server's "
                                       "credentials"))]
    for suffix in LOCAL_SUFFIXES:
        if host == suffix or host.endswith("." + suffix):
            return [Risk(LOCAL_NAME, host, _("a name only a local network answers (.{suffix})").format(
                suffix=suffix))]
    if "." not in host:
        return [Risk(LOCAL_NAME, host, _("a name without a dot, which only your local network can answer"))]
    return []


# --- scripts ---------------------------------------------------------------------------

# Mixtures that whole languages write, as in UTS #39's "highly restrictive" level.
_ALLOWED_MIXES = (
    frozenset({"Latin", "Han", "Hiragana", "Katakana"}),  # Japanese
    frozenset({"Latin", "Han", "Bopomofo"}),  # Chinese
    frozenset({"Latin", "Han", "Hangul"}),  # Korean
)
_SCRIPT_WORDS = {"CJK": "Han", "KANGXI": "Han", "IDEOGRAPHIC": "Han"}
_SCRIPT_PREFIXES = ("FULLWIDTH ", "HALFWIDTH ", "SMALL ", "MODIFIER LETTER ")


def script_of(char: str) -> str | None:
    """The writing system of a letter ("Latin", "Cyrillic", "Greek", "Han", ...), from
    its Unicode name; None for what every script shares (digits, hyphens, marks)."""
    if not unicodedata.category(char).startswith("L"):
        return None
    name = unicodedata.name(char, "")
    if not name or name.startswith("KATAKANA-HIRAGANA"):  # the prolonged sound mark: both kana
        return None
    stripped = True
    while stripped:
        stripped = False
        for prefix in _SCRIPT_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix):], True
    word = name.split(" ", 1)[0].split("-", 1)[0]
    return _SCRIPT_WORDS.get(word, word.capitalize())


def label_scripts(label: str) -> list[str]:
    """The scripts of one label's letters, in order of first appearance."""
    out: list[str] = []
    for char in label:
        script = script_of(char)
        if script and script not in out:
            out.append(script)
    return out


def _unicode_label(label: str) -> str | None:
    if not label.startswith("xn--"):
        return label
    try:
        return label.encode("ascii").decode("idna")
    except UnicodeError:
        return None  # not valid punycode: the list parser says so


def _script_risks(host: str) -> list[Risk]:
    for raw in host.split("."):
        if raw.isascii() and not raw.startswith("xn--"):
            continue  # plain LDH: Latin only
        label = _unicode_label(raw)
        if label is None:
            continue
        scripts = label_scripts(label)
        if len(scripts) > 1 and not any(set(scripts) <= mix for mix in _ALLOWED_MIXES):
            return [Risk(MIXED_SCRIPT, host, _(
                "its name mixes {scripts} letters in \u201c{label}\u201d, as look-alike names of other sites do"
            ).format(scripts=" + ".join(scripts), label=label))]
    return []


# --- the rule --------------------------------------------------------------------------


def parse_networks(cidrs: Iterable[str | Network]) -> list[Network]:
    """--lab-network values as networks; bad ones are left out (the command that takes
    them says so on its own)."""
    out: list[Network] = []
    for c in cidrs:
        try:
            out.append(c if not isinstance(c, str) else ipaddress.ip_network(c, strict=False))
        except ValueError:
            continue
    return out


def host_risks(host: str, lab_networks: Iterable[str | Network] = ()) -> list[Risk]:
    """Every reason ``host`` (a name or an address, brackets allowed) is not a public
    website; empty for a public one."""
    host = host.strip().lower().strip("[]").split("%", 1)[0].rstrip(".")
    if not host:
        return []
    lab = parse_networks(lab_networks)
    try:
        return _ip_risks(host, ipaddress.ip_address(host), lab, spelled=False)
    except ValueError:
        pass
    numeric = inet_aton(host)
    if numeric is not None:
        return _ip_risks(host, numeric, lab, spelled=True)
    return _name_risks(host, lab) + _script_risks(host)


def target_risks(url: str, lab_networks: Iterable[str | Network] = ()) -> list[Risk]:
    """Every reason the host of ``url`` is not a public website (see the module's
    docstring); empty for a public one or a URL without a host."""
    host = url_host(url)
    return [] if host is None else host_risks(host, lab_networks)


def risky_targets(urls: Iterable[str], lab_networks: Iterable[str | Network] = ()) -> list[tuple[str, list[Risk]]]:
    """(url, its risks) of every risky URL, in order."""
    lab = parse_networks(lab_networks)
    out = []
    for url in urls:
        risks = target_risks(url, lab)
        if risks:
            out.append((url, risks))
    return out


def describe(risks: Sequence[Risk]) -> str:
    """One line: ``HOST: why; why``."""
    return _("{host}: {why}").format(host=risks[0].host, why="; ".join(r.why for r in risks))


# How many hosts a refusal names before it counts the rest.
NAMED_IN_REFUSAL = 3


def refusal(risky: Sequence[tuple[str, Sequence[Risk]]], listed_in: str | None = None) -> str:
    """The one line a run stops with when its list has risky targets and no
    ``--allow-private-targets``: how many, the first few hosts (each once, however many
    ports and paths it has) and why, what to do."""
    n = len(risky)
    hosts = list(dict.fromkeys((risks[0].host, risks[0].code) for _url, risks in risky))  # a host, many ports
    named = ", ".join(_("{host} ({what})").format(host=host, what=_(SHORT[code]))
                      for host, code in hosts[:NAMED_IN_REFUSAL])
    more = len(hosts) - NAMED_IN_REFUSAL
    if more > 0:
        named += " " + ngettext("and {n} more", "and {n} more", more).format(n=more)
    lint = _(" (see `probe targets lint {path}`)").format(path=listed_in) if listed_in else ""
    return ngettext(
        "{n} target is not an ordinary public website: {hosts}{lint}. Nothing was measured: remove it from the "
        "list, or measure it anyway with {flag}",
        "{n} targets are not ordinary public websites: {hosts}{lint}. Nothing was measured: remove them from the "
        "list, or measure them anyway with {flag}",
        n,
    ).format(n=n, hosts=named, lint=lint, flag=ALLOW_FLAG)


def warnings(risky: Sequence[tuple[str, Sequence[Risk]]], limit: int = 10) -> list[str]:
    """One line per risky target (up to ``limit``, then a count), for a run that
    measures them anyway or a list that only shows them."""
    lines = [_("{url} is not an ordinary public website: {why}").format(url=url, why="; ".join(r.why for r in risks))
             for url, risks in risky[:limit]]
    more = len(risky) - limit
    if more > 0:
        lines.append(ngettext("{n} more target is not an ordinary public website (see `probe targets lint`)",
                              "{n} more targets are not ordinary public websites (see `probe targets lint`)",
                              more).format(n=more))
    return lines
