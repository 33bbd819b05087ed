"""Every censorship scenario of the lab: sites, the URL measured, what the censor does,
and the exact verdict the classifier must give.

All scenarios live in one lab at the same time (distinct names and addresses), so one
probe run measures them all. Addresses are fixed: each lab instance has namespaces of
its own, so two labs never see each other's addresses.

Address plan (all in 10.77.0.0/16, see README.md):

* 10.77.0.0/24  volunteer <-> ISP       (volunteer 10.77.0.2, ISP router + resolver 10.77.0.1)
* 10.77.1.0/24  ISP <-> open internet   (authoritative DNS 10.77.1.53, control helper 10.77.1.80,
                                         the collector test's collector 10.77.1.70)
* 10.77.2.0/24  web sites of the open internet, one address per site
* 10.77.3.0/24  the censor's own hosts  (resolver .53, blockpage .80, redirector .30,
                                         "different page" .90, TLS interception .43,
                                         transparent proxy .44)
* 10.77.4.0/24  dead addresses: blackholed by the ISP router (a silent timeout)
* 10.77.N.0/24  other volunteers' networks (VANTAGES): slow 5, hotel 6, roam 7 (and 8),
                vol2 9 (a second ISP's subscriber), abroad 10 (linked to the open internet)
* 10.77.11-14.0/24  the deep lab's longer path (``Lab(deep=True)``): far 10.77.11.2, routers
                r1, r2 (the censor, with an on-path injector), r3, then net (DEEP_SITES)

Censor rules are written as in ``iptables -t TABLE -A CHAIN <spec>``; the lab adds
``-i <ISP's interface towards the volunteer>`` to each: the censor filters its own
subscribers only, never the control helper (OONI's netem attaches its DPI to the
probe's link in the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

from servers.web import BLOCKPAGE_TEXT

DOMAIN = "lab.test"
LAB_NETWORK = "10.77.0.0/16"
# IPv6: unique-local space stands for the internet too. Volunteer <-> ISP fd77::/64,
# ISP <-> open internet fd77:0:0:1::/64, sites fd77:0:0:2::/64 (only dual-stack sites).
LAB_NETWORK6 = "fd77::/48"
VOL_IP6 = "fd77::2"
ISP_VOL_IP6 = "fd77::1"
ISP_NET_IP6 = "fd77:0:0:1::1"
NET_IP6 = "fd77:0:0:1::2"

VOL_IP = "10.77.0.2"
ISP_VOL_IP = "10.77.0.1"  # the volunteer's router and ISP resolver
ISP_NET_IP = "10.77.1.1"
NET_IP = "10.77.1.2"
AUTH_DNS_IP = "10.77.1.53"  # authoritative DNS of lab.test ("the internet's DNS")
CONTROL_IP = "10.77.1.80"
CONTROL_PORT = 8080
CONTROL_URL = f"http://{CONTROL_IP}:{CONTROL_PORT}"
ISP_CEN_IP = "10.77.3.1"
CEN_IP = "10.77.3.2"
CENSOR_DNS_IP = "10.77.3.53"  # the censor's injecting resolver
BLOCKPAGE_IP = "10.77.3.80"  # serves the Beltelecom-style blockpage on :80 (nothing on :443)
REDIRECTOR_IP = "10.77.3.30"  # answers 302 to Beltelecom's blockpage address
DIFFPAGE_IP = "10.77.3.90"  # a short unrelated page, no known fingerprint
MITM_IP = "10.77.3.43"  # TLS interception: forged certificates from a foreign CA
# The ISP's transparent proxy: the ISP DNATs what its subscribers send here to the real
# site, untouched (OONI netemx's "ISP transparent proxy" 130.192.182.17). Nothing
# listens on the address itself, so the control helper gets a quick RST there.
PROXY_IP = "10.77.3.44"
DEAD_NET = "10.77.4.0/24"  # routed to a blackhole by the ISP: packets vanish
# RFC 5737 TEST-NET-1: the probe's sink without a control helper (192.0.2.53:53). The
# volunteer routes it to the ISP (as its default route would), which drops it.
TEST_NET = "192.0.2.0/24"
DEAD_IP = "10.77.4.4"
NOBODY_IP = "10.77.2.250"  # on the open internet, but nothing listens (RST)

# Beltelecom's redirect target (ooni.by_1: header.location prefix http://82.209.230.23).
# The volunteer namespace has no route outside 10.77.0.0/16, so following it fails
# locally (network unreachable) and no packet is ever sent there.
BELTELECOM_REDIRECT = "http://82.209.230.23/?url={host}"

# The censor's interception CA, as LabPKI calls it (kind "unknown_ca").
INTERCEPTION_CA = "Untrusted Interception CA"

# Citizen Lab fingerprint cl.isp_by_beltelecom_block: body contains this.
BELTELECOM_FINGERPRINT = 'О средствах массовой информации"</div>'

# A Beltelecom-style blockpage (Citizen Lab filtering-annotations
# blockpage_meta/isp_by_beltelecom_block.html: a 649-character page whose text sits in
# <div class="exactCenter">; the text is quoted in shared/research/peers.md 4.3).
BELTELECOM_BLOCKPAGE = (
    "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n"
    "<style>html,body{height:100%;margin:0}body{font-family:Arial,sans-serif;background:#fff}"
    ".exactCenter{width:600px;position:absolute;left:50%;top:40%;margin-left:-300px;"
    "text-align:center;font-size:18px;color:#333}</style>\n</head>\n<body>\n"
    f'<div class="exactCenter">{BLOCKPAGE_TEXT}</div>\n'
    "</body>\n</html>\n"
)
assert BELTELECOM_FINGERPRINT in BELTELECOM_BLOCKPAGE

# The censor's "different page": 200, another title, a tenth of a site's size, and no
# words any blockpage fingerprint would know.
DIFF_PAGE = (
    "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Portal</title></head>\n"
    "<body><h1>Portal</h1><p>Welcome to the portal.</p></body></html>\n"
)

SITE_BODY_SIZE = 8000  # every normal site's page; DIFF_PAGE is < 3 % of it

# Throttling: what the ISP lets through from a throttled site to its subscriber. At
# 64 kbit/s the probe's 2 MiB body cap takes over four minutes, far beyond any HTTP
# timeout; an unthrottled client gets it in well under a second.
THROTTLE_RATE = "64kbit"

# A CDN's browser check (Cloudflare's "Just a moment..." page), served with 503 to the
# one client address the CDN distrusts (Censored Planet false-positive fingerprint
# cp.fp_x_cloudflare_check: "Checking your browser before accessing").
CDN_CHALLENGE_PAGE = (
    "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Just a moment...</title></head>\n"
    "<body><h1>Checking your browser before accessing {host}.</h1>\n"
    "<p>This process is automatic. Your browser will redirect to your requested content shortly.</p>\n"
    "<p>Please allow up to 5 seconds... Ray ID: 7d1a2b3c4d5e6f70</p></body></html>\n"
)


@dataclass(frozen=True)
class Site:
    """A web site of the open internet (namespace ``net``).

    ``ip`` None: the name is not in the authoritative DNS at all (NXDOMAIN everywhere).
    ``dns_answer`` overrides what the authoritative DNS says (e.g. a loopback address
    for everyone). ``serve`` False: the address exists but nothing listens (RST).
    """

    label: str
    ip: str | None
    title: str = ""
    cert: str = "valid"  # LabPKI kind for :443: valid | expired
    serve: bool = True
    dns_answer: str | None = None
    # a client address the site's CDN answers with its 503 browser check (CDN_CHALLENGE_PAGE)
    challenge_for: str | None = None
    ip6: str | None = None  # a dual-stack site's IPv6 address (fd77:0:0:2::/64)
    body_size: int | None = None  # its page's size (default SITE_BODY_SIZE)

    @property
    def host(self) -> str:
        return f"{self.label}.{DOMAIN}"

    @property
    def page_title(self) -> str:
        return self.title or f"{self.label} - a lab site"


@dataclass(frozen=True)
class Rule:
    """One censor rule in the ISP namespace: ``iptables -t table -A chain -i VOLIF spec``."""

    table: str
    chain: str
    spec: str

    def command(self, vol_if: str = "VOLIF") -> str:
        table = "" if self.table == "filter" else f"-t {self.table} "
        return f"iptables {table}-A {self.chain} -i {vol_if} {self.spec}"


@dataclass(frozen=True)
class Scenario:
    name: str
    url: str
    expected: str  # the exact verdict (shared/spec/verdicts.md)
    description: str
    sites: tuple[Site, ...] = ()
    isp_dns: tuple[str, ...] = ()  # dnsmasq lines of the ISP resolver (its lies)
    censor_dns: tuple[str, ...] = ()  # dnsmasq lines of the censor's injecting resolver
    rules: tuple[Rule, ...] = ()
    # The string the censor's DPI matches, when it does: checked to occur in no other
    # scenario's URL (so that one rule never catches two scenarios).
    match: str | None = None
    # Site addresses whose traffic to the volunteer the ISP shapes to THROTTLE_RATE
    # (tc htb on the ISP's interface towards the volunteer).
    throttle: tuple[str, ...] = ()
    # A known classifier bug this scenario exposes: its verdict test is a strict xfail
    # (it fails loudly once the bug is fixed, so that the note is removed).
    known_issue: str | None = None
    # Its evidence needs no control helper (a blockpage, an injected answer): a run
    # without one must still say blocked. Traps (ok, down) must never be blocked then.
    proof_without_control: bool = False
    # the qualifiers the verdict must carry (probe.core.verdicts.TAGS), and no others
    expected_tags: tuple[str, ...] = ()

    @property
    def host(self) -> str:
        from yarl import URL

        return URL(self.url).host or ""

    @property
    def blocked(self) -> bool:
        return self.expected not in ("ok", "down", "error")


def _site(label: str, last: int, **kw) -> Site:
    return Site(label, f"10.77.2.{last}", **kw)


SCENARIOS: tuple[Scenario, ...] = (
    # ---------------------------------------------------------------- no interference
    Scenario(
        "ok", "https://ok.lab.test/", "ok",
        "an https site, nothing in the way",
        sites=(_site("ok", 10),),
    ),
    Scenario(
        "ok_http", "http://ok-http.lab.test/", "ok",
        "a plain-http site, nothing in the way",
        sites=(_site("ok-http", 11),),
    ),
    # ---------------------------------------------------------------- DNS
    Scenario(
        "dns_nxdomain", "https://dns-nxdomain.lab.test/", "dns.nxdomain",
        "the ISP resolver says the name does not exist",
        sites=(_site("dns-nxdomain", 12),),
        isp_dns=("address=/dns-nxdomain.lab.test/",),
    ),
    Scenario(
        "dns_bogon", "https://dns-bogon.lab.test/", "dns.bogon",
        "the ISP resolver answers a loopback address (127.0.0.2)",
        sites=(_site("dns-bogon", 13),),
        isp_dns=("address=/dns-bogon.lab.test/127.0.0.2",),
    ),
    Scenario(
        "dns_blockpage", "https://dns-blockpage.lab.test/", "dns.blockpage",
        "the ISP resolver answers the censor's blockpage host (Beltelecom page on :80, "
        "nothing on :443)",
        sites=(_site("dns-blockpage", 14),),
        isp_dns=(f"address=/dns-blockpage.lab.test/{BLOCKPAGE_IP}",),
        proof_without_control=True,
    ),
    Scenario(
        "dns_injection", "https://dns-injection.lab.test/", "dns.injection",
        "every UDP/53 query naming the site, to any resolver, is diverted to the censor's "
        "resolver, which answers a dead address; the sink query to the control helper's "
        "address (no DNS server there) gets that answer too",
        sites=(_site("dns-injection", 15),),
        # local=: the forger answers every type itself (AAAA: no data), forwards nothing
        censor_dns=(f"address=/dns-injection.lab.test/{DEAD_IP}", "local=/dns-injection.lab.test/"),
        rules=(
            Rule("nat", "PREROUTING",
                 f"-p udp --dport 53 -m string --string dns-injection --algo bm "
                 f"-j DNAT --to-destination {CENSOR_DNS_IP}:53"),
        ),
        match="dns-injection",
        proof_without_control=True,
    ),
    Scenario(
        "dns_inconsistent", "https://dns-inconsistent.lab.test/", "dns.inconsistent",
        "the ISP resolver answers the address of another site (elsewhere.lab.test), whose "
        "certificate is not valid for the name, and which serves no blockpage",
        sites=(_site("dns-inconsistent", 16), _site("elsewhere", 17, title="Elsewhere, another site")),
        isp_dns=("address=/dns-inconsistent.lab.test/10.77.2.17",),
    ),
    # ---------------------------------------------------------------- TCP/IP
    Scenario(
        "tcp_timeout", "https://tcp-timeout.lab.test/", "tcp.timeout",
        "IP blackholing: every packet to the site's address is dropped",
        sites=(_site("tcp-timeout", 20),),
        rules=(Rule("filter", "FORWARD", "-d 10.77.2.20 -j DROP"),),
    ),
    Scenario(
        "tcp_refused", "https://tcp-refused.lab.test/", "tcp.refused",
        "every SYN to the site's address is answered with RST",
        sites=(_site("tcp-refused", 21),),
        rules=(Rule("filter", "FORWARD", "-d 10.77.2.21 -p tcp -j REJECT --reject-with tcp-reset"),),
    ),
    Scenario(
        "tcp_reset", "https://tcp-reset.lab.test/", "tcp.reset",
        "connections to the site's address are established, then every data segment, "
        "on any port and whatever it says, is answered with RST (the benign-SNI "
        "handshake is reset too)",
        sites=(_site("tcp-reset", 22),),
        rules=(
            # Bare ACKs (IP length <= 52: 20 IP + 32 TCP with timestamps) pass, so the
            # handshake completes and the first data segment is what gets the RST.
            Rule("filter", "FORWARD",
                 "-d 10.77.2.22 -p tcp -m conntrack --ctstate ESTABLISHED "
                 "-m length --length 53:65535 -j REJECT --reject-with tcp-reset"),
        ),
    ),
    # ---------------------------------------------------------------- TLS
    Scenario(
        "tls_reset", "https://tls-reset.lab.test/", "tls.reset",
        "SNI filtering: a ClientHello naming the site is answered with RST; the benign "
        "SNI to the same address succeeds",
        sites=(_site("tls-reset", 23),),
        rules=(
            Rule("filter", "FORWARD",
                 "-p tcp --dport 443 -m string --string tls-reset.lab.test --algo bm "
                 "-j REJECT --reject-with tcp-reset"),
        ),
        match="tls-reset.lab.test",
    ),
    Scenario(
        "tls_timeout", "https://tls-timeout.lab.test/", "tls.timeout",
        "SNI filtering: a ClientHello naming the site is dropped (and its retransmits)",
        sites=(_site("tls-timeout", 24),),
        rules=(
            Rule("filter", "FORWARD",
                 "-p tcp --dport 443 -m string --string tls-timeout.lab.test --algo bm -j DROP"),
        ),
        match="tls-timeout.lab.test",
    ),
    Scenario(
        "tls_mitm", "https://tls-mitm.lab.test/", "tls.mitm",
        "TLS interception: :443 of the site is DNATed to the censor's box, which presents "
        f"a certificate for the name from the {INTERCEPTION_CA}",
        sites=(_site("tls-mitm", 25),),
        rules=(
            Rule("nat", "PREROUTING",
                 f"-d 10.77.2.25 -p tcp --dport 443 -j DNAT --to-destination {MITM_IP}:443"),
        ),
    ),
    # ---------------------------------------------------------------- HTTP
    Scenario(
        "http_reset", "http://http-reset.lab.test/", "http.reset",
        "Host filtering: a segment to :80 with 'Host: <name>' is answered with RST",
        sites=(_site("http-reset", 26),),
        rules=(
            Rule("filter", "FORWARD",
                 '-p tcp --dport 80 -m string --string "Host: http-reset.lab.test" --algo bm '
                 "-j REJECT --reject-with tcp-reset"),
        ),
        match="http-reset.lab.test",
    ),
    Scenario(
        "http_timeout", "http://http-timeout.lab.test/", "http.timeout",
        "Host filtering: a segment to :80 with 'Host: <name>' is dropped",
        sites=(_site("http-timeout", 27),),
        rules=(
            Rule("filter", "FORWARD",
                 '-p tcp --dport 80 -m string --string "Host: http-timeout.lab.test" --algo bm -j DROP'),
        ),
        match="http-timeout.lab.test",
    ),
    Scenario(
        "http_blockpage", "http://http-blockpage.lab.test/", "http.blockpage",
        "transparent proxy: :80 of the site is DNATed to the censor's server, which "
        "serves the Beltelecom blockpage (cl.isp_by_beltelecom_block)",
        sites=(_site("http-blockpage", 28),),
        rules=(
            Rule("nat", "PREROUTING",
                 f"-d 10.77.2.28 -p tcp --dport 80 -j DNAT --to-destination {BLOCKPAGE_IP}:80"),
        ),
        proof_without_control=True,
    ),
    Scenario(
        "http_blockpage_redirect", "http://http-redirect-blockpage.lab.test/", "http.blockpage",
        "transparent proxy: :80 of the site is DNATed to the censor's server, which "
        "answers 302 Location: http://82.209.230.23/?... (ooni.by_1)",
        sites=(_site("http-redirect-blockpage", 29),),
        rules=(
            Rule("nat", "PREROUTING",
                 f"-d 10.77.2.29 -p tcp --dport 80 -j DNAT --to-destination {REDIRECTOR_IP}:80"),
        ),
        proof_without_control=True,
    ),
    Scenario(
        "http_diff", "http://http-diff.lab.test/", "http.diff",
        "transparent proxy: :80 of the site is DNATed to a server that answers 200 with "
        "another title and a body a tenth of the size, matching no fingerprint",
        sites=(_site("http-diff", 30),),
        rules=(
            Rule("nat", "PREROUTING",
                 f"-d 10.77.2.30 -p tcp --dport 80 -j DNAT --to-destination {DIFFPAGE_IP}:80"),
        ),
    ),
    Scenario(
        "http_throttled", "http://throttled.lab.test/huge", "http.timeout",
        f"throttling: the ISP shapes everything from the site's address to {THROTTLE_RATE}, so "
        "a large download cannot finish within the HTTP timeout, while the control gets it "
        "at once (OONI's throttlingWithHTTP)",
        sites=(_site("throttled", 47),),
        throttle=("10.77.2.47",),
    ),
    # ---------------------------------------------------------------- blocked after a redirect
    # OONI reports all three as http-failure; the verdict names the step of the
    # redirect target that broke (the probe measures that host's DNS, TCP and TLS).
    Scenario(
        "redirect_then_tls_reset",
        "https://redirect-sni.lab.test/redirect-to?url=https://sni-after-redirect.lab.test/", "tls.reset",
        "the site redirects everyone to another host, and a ClientHello naming that host "
        "is answered with RST (OONI's redirectWithConsistentDNSAndThenConnectionResetForHTTPS)",
        sites=(_site("redirect-sni", 41), _site("sni-after-redirect", 42)),
        rules=(
            Rule("filter", "FORWARD",
                 "-p tcp --dport 443 -m string --string sni-after-redirect.lab.test --algo bm "
                 "-j REJECT --reject-with tcp-reset"),
        ),
        match="sni-after-redirect.lab.test",
    ),
    Scenario(
        "redirect_then_refused",
        "http://redirect-refused.lab.test/redirect-to?url=http://refused-after-redirect.lab.test/", "tcp.refused",
        "the site redirects everyone to another host, whose address answers every SYN "
        "with RST (OONI's redirectWithConsistentDNSAndThenConnectionRefusedForHTTP)",
        sites=(_site("redirect-refused", 43), _site("refused-after-redirect", 44)),
        rules=(Rule("filter", "FORWARD", "-d 10.77.2.44 -p tcp -j REJECT --reject-with tcp-reset"),),
    ),
    Scenario(
        "redirect_then_nxdomain",
        "https://redirect-nxdomain.lab.test/redirect-to?url=https://nxdomain-after-redirect.lab.test/",
        "dns.nxdomain",
        "the site redirects everyone to another host, whose name the ISP resolver says "
        "does not exist (OONI's redirectWithConsistentDNSAndThenNXDOMAIN)",
        sites=(_site("redirect-nxdomain", 45), _site("nxdomain-after-redirect", 46)),
        isp_dns=("address=/nxdomain-after-redirect.lab.test/",),
    ),
    Scenario(
        "dns_ghost", "https://ghost-dns.lab.test/", "dns.blockpage",
        "the name exists nowhere (NXDOMAIN for the control), yet the ISP resolver answers "
        "the censor's blockpage host (OONI's ghostDNSBlockingWithHTTPS)",
        sites=(Site("ghost-dns", None),),
        isp_dns=(f"address=/ghost-dns.lab.test/{BLOCKPAGE_IP}",),
        proof_without_control=True,
    ),
    Scenario(
        "ipv4_blocked_dual_stack", "https://dual-stack.lab.test/", "tcp.timeout",
        "a dual-stack site (A and AAAA): the censor blackholes its IPv4 address only; over "
        "IPv6 the page loads. Partial blocking, never a clean ok",
        sites=(_site("dual-stack", 60, ip6="fd77:0:0:2::60"),),
        rules=(Rule("filter", "FORWARD", "-d 10.77.2.60 -j DROP"),),
        expected_tags=("partial:ipv4",),
    ),
    # ---------------------------------------------------------------- false-positive traps
    Scenario(
        "dns_transparent_proxy", "https://isp-proxy.lab.test/", "ok",
        "the ISP resolver answers its transparent proxy's address, and the ISP relays "
        "every connection there to the real site untouched (OONI's "
        "dnsHijackingToProxyWithHTTPSURL): another address, but the valid certificate "
        "proves it is the site",
        sites=(_site("isp-proxy", 49),),
        isp_dns=(f"address=/isp-proxy.lab.test/{PROXY_IP}",),
        rules=(Rule("nat", "PREROUTING", f"-d {PROXY_IP} -p tcp -j DNAT --to-destination 10.77.2.49"),),
    ),
    Scenario(
        "cdn_challenge", "http://cdn-challenge.lab.test/", "ok",
        "the site's CDN answers the volunteer's address (only) with a 503 'Just a "
        "moment...' browser check and everyone else with the page: the site's doing, not "
        "the ISP's (OONI's cloudflareCAPTCHAWithHTTP, which OONI scores http-diff)",
        sites=(_site("cdn-challenge", 48, challenge_for=VOL_IP),),
    ),
    Scenario(
        "large_file", "http://large-file.lab.test/huge", "ok",
        "a 100 MB download, cut by the body cap on both sides (OONI's largeFileWithHTTP)",
        sites=(_site("large-file", 50),),
    ),
    Scenario(
        "down_everywhere", "https://down-everywhere.lab.test/", "down",
        "the name resolves for everyone to an address where nothing listens (RST)",
        sites=(Site("down-everywhere", NOBODY_IP, serve=False),),
    ),
    Scenario(
        "down_nxdomain_everywhere", "https://down-nxdomain.lab.test/", "down",
        "the authoritative DNS says NXDOMAIN, for everyone",
        sites=(Site("down-nxdomain", None),),
    ),
    Scenario(
        "bogon_everywhere", "https://bogon-everywhere.lab.test/", "down",
        "the authoritative DNS itself answers 127.0.0.1 (a misconfigured site, OONI's "
        "localhostWithHTTPS): the same bogon for everyone is not censorship",
        sites=(Site("bogon-everywhere", None, dns_answer="127.0.0.1"),),
    ),
    Scenario(
        "expired_everywhere", "https://expired-cert.lab.test/", "down",
        "the site's own certificate has expired: TLS fails for everyone (OONI's "
        "badSSLWithExpiredCertificate)",
        sites=(_site("expired-cert", 35, cert="expired"),),
    ),
    Scenario(
        "redirect_loop_everywhere", "https://redirect-loop.lab.test/loop", "down",
        "the site redirects to itself forever, for everyone: the helper stops after 10 "
        "redirects as the probe does and says so (http_too_many_redirects)",
        sites=(_site("redirect-loop", 36),),
    ),
    Scenario(
        "dynamic_page", "http://dynamic-page.lab.test/dynamic", "ok",
        "title and length change on every fetch (a news front page)",
        sites=(_site("dynamic-page", 31),),
    ),
    Scenario(
        "redirect_other_host",
        "https://redirect-away.lab.test/redirect-to?url=https://redirect-target.lab.test/", "ok",
        "the site redirects everyone to another lab host, which works",
        sites=(_site("redirect-away", 32), _site("redirect-target", 33, title="Redirect target")),
    ),
    Scenario(
        "slow_site", "https://slow-site.lab.test/slow?delay=2", "ok",
        "the site answers after 2 s, well inside every timeout",
        sites=(_site("slow-site", 34),),
    ),
    # ---------------------------------------------------------------- cannot measure
    # Its request to the control helper is dropped after the headers got through: the
    # helper reads bodies before it takes a measurement slot, so this costs it a
    # connection for its body timeout (408), never a slot; the probe asks once more at
    # the end of the run and gets no answer then either.
    Scenario(
        "error", "http://unmeasurable.lab.test/", "error",
        "every packet from the volunteer containing the name is dropped: its DNS "
        "queries (to the ISP resolver and to the sink) time out and so does the "
        "request to the control helper, whose body holds the URL",
        sites=(_site("unmeasurable", 40),),
        rules=(
            Rule("filter", "INPUT", "-m string --string unmeasurable --algo bm -j DROP"),
            Rule("filter", "FORWARD", "-m string --string unmeasurable --algo bm -j DROP"),
        ),
        match="unmeasurable",
    ),
)

BY_NAME: dict[str, Scenario] = {s.name: s for s in SCENARIOS}


# ------------------------------------------------------------------------------ vantages
# Other volunteers' networks, beside the censored one (vol): each a namespace with its own
# link to the ISP (10.77.<net>.2, the ISP 10.77.<net>.1), for what happens to a
# volunteer's own network rather than to one site. Each is measured by a probe run of
# its own, at the same time as the main run.


@dataclass(frozen=True)
class Vantage:
    name: str  # the namespace role, also the start of its veth names
    net: int  # 10.77.<net>.0/24
    description: str
    rate: str | None = None  # tc: everything the ISP sends it, shaped to this rate
    loss: float = 0.0  # share of forwarded packets the ISP drops towards it
    portal: bool = False  # behind a captive portal (its own resolver and web server)
    censored: bool = False  # the censor's rules apply to it as to vol
    second_net: int | None = None  # a second link, straight to the open internet
    # a subscriber of a second ISP (same router, another censor): its own resolver
    # (dnsmasq on isp_ip, forwarding to the authoritative DNS, no lies), and the censor
    # rules of NETWORK_SITES for it, which pick its traffic by source subnet
    second_isp: bool = False
    # "net": its link goes straight to the open internet (a volunteer abroad), its
    # resolver is the authoritative DNS; isp_ip is then net's end of the link
    upstream: str = "isp"
    # replaces the first letter of its name in the upstream end's veth name (and the
    # third in its own) where that would clash: vol2 -> vo2XXXX / isp2XXXX, not ispvXXXX
    tag: str = ""

    @property
    def ip(self) -> str:
        return f"10.77.{self.net}.2"

    @property
    def isp_ip(self) -> str:
        return f"10.77.{self.net}.1"

    @property
    def subnet(self) -> str:
        return f"10.77.{self.net}.0/24"

    @property
    def resolver(self) -> str:
        """What its /etc/resolv.conf names: its ISP's resolver (or the hotel's), else,
        abroad, the open internet's DNS."""
        return AUTH_DNS_IP if self.upstream == "net" else self.isp_ip


BIG_PAGE_SIZE = 3_000_000  # an HTML page with a title, larger than the 2 MiB body cap
SLOW_RATE = "256kbit"
SLOW_LOSS = 0.05
PORTAL_HOST = "portal.hotel.test"
PORTAL_TITLE = "Hotel Wi-Fi: please log in"

VANTAGES: tuple[Vantage, ...] = (
    Vantage("slow", 5, f"a volunteer on a {SLOW_RATE} link that loses {SLOW_LOSS:.0%} of packets: large pages "
                       "are still arriving when their deadline comes", rate=SLOW_RATE, loss=SLOW_LOSS),
    Vantage("hotel", 6, "a hotel's Wi-Fi before logging in: its resolver answers every name with the portal's "
                        "address, every plain-HTTP request is sent to the login page, nothing else gets out",
            portal=True),
    Vantage("roam", 7, "a laptop on the censoring ISP (censored as vol is) that moves, half-way through its run, "
                       "to another network (a second link straight to the open internet, another resolver)",
            censored=True, second_net=8),
    # The collector test's volunteers (NETWORK_SITES), beside vol: another Belarusian
    # ISP whose censor resets TLS by SNI, and a volunteer abroad.
    Vantage("vol2", 9, "a subscriber of a second ISP (another censor): its resolver does not lie, its censor "
                       "resets TLS handshakes by SNI (for its own subnet only)", second_isp=True, tag="2"),
    Vantage("abroad", 10, "a volunteer abroad: a link straight to the open internet, its DNS, no censor",
            upstream="net"),
)

# What the roaming volunteer measures: the censored ones first, so that they are
# measured on the censoring ISP before the move; after ROAM_SWITCH_AFTER measurements
# the test moves it (route and resolver) to its second link.
ROAM_TARGETS: tuple[str, ...] = (
    "https://dns-nxdomain.lab.test/", "https://tls-reset.lab.test/", "http://http-blockpage.lab.test/",
    "https://tcp-refused.lab.test/", "https://ok.lab.test/", "http://ok-http.lab.test/",
    "http://dynamic-page.lab.test/dynamic", "https://redirect-away.lab.test/redirect-to?url=https://redirect-target.lab.test/",
    *(f"https://slow-site.lab.test/slow?delay=2&n={i}" for i in range(16)),
)
ROAM_SWITCH_AFTER = 8
ROAM_CENSORED = {"https://dns-nxdomain.lab.test/": "dns.nxdomain", "https://tls-reset.lab.test/": "tls.reset",
                 "http://http-blockpage.lab.test/": "http.blockpage", "https://tcp-refused.lab.test/": "tcp.refused"}
VANTAGE_NAMES = tuple(v.name for v in VANTAGES)

# What the slow volunteer measures, and the verdict (and qualifiers) each must get.
SLOW_TARGETS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("https://ok.lab.test/", "ok", ()),
    ("http://big-page.lab.test/", "ok", ("slow",)),
    ("http://large-file.lab.test/huge", "ok", ("slow",)),
)
# The clock run: the volunteer's own (censored) network, with this computer's clock a
# year ahead (faketime): certificates are judged at the control helper's time, with a
# warning, and real interception still shows.
CLOCK_OFFSET = "+365d"
CLOCK_TARGETS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("https://ok.lab.test/", "ok", ("clock_skew",)),
    ("https://clock-site.lab.test/", "ok", ("clock_skew",)),
    ("https://tls-mitm.lab.test/", "tls.mitm", ("clock_skew",)),
    ("https://expired-cert.lab.test/", "down", ("clock_skew",)),
)

# Sites only the vantages measure.
EXTRA_SITES: tuple[Site, ...] = (
    Site("big-page", "10.77.2.61", title="Big page - a lab site", body_size=BIG_PAGE_SIZE),
    # a certificate valid from 30 days ago to 60 days ahead, as real sites have
    Site("clock-site", "10.77.2.62", cert="current"),
)


# ------------------------------------------------------------------------------ one collector
# Issue 9: volunteers on two networks behind different censors (vol: the ISP resolver
# lies; vol2: a second ISP resets TLS by SNI) and one abroad measure the same few sites
# without a control helper and upload to one collector, which serves in `net`
# (test_collector_lab.py). These sites are in every lab; SCENARIOS and the targets file
# of test_lab.py do not name them.

COLLECTOR_IP = "10.77.1.70"  # on net's loopback, as the control helper
COLLECTOR_PORT = 8470
COLLECTOR_URL = f"http://{COLLECTOR_IP}:{COLLECTOR_PORT}"

# The network each volunteer of the collector test says it is on (--cc, --asn).
NETWORKS: dict[str, tuple[str, str]] = {
    "vol": ("BY", "AS6697"),  # Beltelecom: its resolver lies
    "vol2": ("BY", "AS25106"),  # a second Belarusian ISP: SNI resets
    "abroad": ("DE", "AS3320"),  # abroad: no censor
}


def network_name(role: str) -> str:
    """How reports name a volunteer's network ("BY/AS6697")."""
    return "/".join(NETWORKS[role])


def sni_reset(host: str) -> Rule:
    """A censor's SNI filter: a ClientHello naming ``host`` is answered with RST (only on
    :443, so an upload that names the site, on another port, goes through)."""
    return Rule("filter", "FORWARD",
                f"-p tcp --dport 443 -m string --string {host} --algo bm -j REJECT --reject-with tcp-reset")


@dataclass(frozen=True)
class NetworkSite:
    """A site of the collector test, what each network's censor does to it, and the
    verdict the collector must give on each network (roles of NETWORKS)."""

    name: str
    site: Site
    description: str
    expected: tuple[tuple[str, str], ...]  # (role, verdict on the collector)
    # what each volunteer's own run says of it without a control helper: (role, verdict)
    own: tuple[tuple[str, str], ...]
    isp_dns: tuple[str, ...] = ()  # lies of vol's ISP resolver (vol2 and abroad do not ask it)
    censor: tuple[tuple[str, Rule], ...] = ()  # (role, rule): that network's censor, from the start
    # (role, rule) the censor adds between two rounds; then `expected_after` holds
    later: tuple[tuple[str, Rule], ...] = ()
    expected_after: tuple[tuple[str, str], ...] = ()
    own_after: tuple[tuple[str, str], ...] = ()

    @property
    def url(self) -> str:
        return f"https://{self.site.host}/"

    @property
    def host(self) -> str:
        return self.site.host


def _everywhere(verdict: str) -> tuple[tuple[str, str], ...]:
    return tuple((role, verdict) for role in NETWORKS)


NETWORK_SITES: tuple[NetworkSite, ...] = (
    NetworkSite(
        "dnsonly", Site("dnsonly", "10.77.2.70"),
        "vol's ISP resolver says the name does not exist; vol2 and abroad resolve it",
        expected=(("vol", "dns.nxdomain"), ("vol2", "ok"), ("abroad", "ok")),
        own=(("vol", "dns.nxdomain"), ("vol2", "ok"), ("abroad", "ok")),
        isp_dns=("address=/dnsonly.lab.test/",),
    ),
    NetworkSite(
        "snionly", Site("snionly", "10.77.2.71"),
        "vol2's ISP resets a ClientHello naming the site; vol and abroad load it",
        expected=(("vol", "ok"), ("vol2", "tls.reset"), ("abroad", "ok")),
        own=(("vol", "ok"), ("vol2", "tls.reset"), ("abroad", "ok")),
        censor=(("vol2", sni_reset("snionly.lab.test")),),
    ),
    NetworkSite(
        "offline", Site("offline", "10.77.2.251", serve=False),
        "down for everyone: the name resolves everywhere to an address where nothing listens (RST)",
        expected=_everywhere("down"),
        own=_everywhere("tcp.refused"),
    ),
    NetworkSite(
        "later", Site("later", "10.77.2.72"),
        "works everywhere, until vol2's ISP starts resetting a ClientHello naming it (between rounds)",
        expected=_everywhere("ok"),
        own=_everywhere("ok"),
        later=(("vol2", sni_reset("later.lab.test")),),
        expected_after=(("vol", "ok"), ("vol2", "tls.reset"), ("abroad", "ok")),
        own_after=(("vol", "ok"), ("vol2", "tls.reset"), ("abroad", "ok")),
    ),
    NetworkSite(
        "always_ok", Site("always-ok", "10.77.2.73"),
        "works everywhere",
        expected=_everywhere("ok"),
        own=_everywhere("ok"),
    ),
)


def network_targets_text() -> str:
    """The collector test's target list."""
    return "# censorship lab: the collector test's sites (tests/lab/test_collector_lab.py)\n" + "".join(
        f"{n.url}\n" for n in NETWORK_SITES)


def network_dns_lines() -> list[str]:
    """Lies of vol's ISP resolver for NETWORK_SITES."""
    return [line for n in NETWORK_SITES for line in n.isp_dns]


def network_rules() -> list[tuple[NetworkSite, str, Rule]]:
    """(site, role, rule): the censors' rules for NETWORK_SITES from the start."""
    return [(n, role, rule) for n in NETWORK_SITES for role, rule in n.censor]


# ------------------------------------------------------------------------------ a longer path
# Issue 10: a volunteer three routers away from the open internet, the censor on the
# middle one (test_deep_lab.py, `probe run --deep`). Only a lab made with
# ``Lab(deep=True)`` has it (far, r1, r2, r3 and these sites); the other labs are as
# before. far's traffic to net crosses r1, r2, r3 (no ISP on the way), and each router
# answers an expired packet with ICMP time-exceeded from its address towards far.
#
#   far 10.77.11.2 -- .1 r1 .1 -- 10.77.12.0/24 -- .2 r2 .1 -- 10.77.13.0/24 -- .2 r3 .1 -- 10.77.14.2 net
#       10.77.11.0/24                 (the censor)                                 10.77.14.0/24

DEEP_ROLES = ("far", "r1", "r2", "r3")
FAR_SUBNET = "10.77.11.0/24"
FAR_IP = "10.77.11.2"
NET_FAR_IP = "10.77.14.2"  # net's end of r3's link


@dataclass(frozen=True)
class Router:
    """One router between far and net: ``hop`` routers from far (r1 is hop 1)."""

    name: str  # its namespace role
    hop: int
    down_ip: str  # towards far: the source of its ICMP errors to far
    up_ip: str  # towards net

    @property
    def addresses(self) -> tuple[str, str]:
        return (self.down_ip, self.up_ip)


ROUTERS: tuple[Router, ...] = (
    Router("r1", 1, "10.77.11.1", "10.77.12.1"),
    Router("r2", 2, "10.77.12.2", "10.77.13.1"),
    Router("r3", 3, "10.77.13.2", "10.77.14.1"),
)
CENSOR_ROUTER = "r2"  # the known middle hop
CENSOR_HOP = next(r.hop for r in ROUTERS if r.name == CENSOR_ROUTER)
# Initial IP TTL of every lab host (Linux's 64): as far sees it, a packet from hop k
# arrives with 64 - (k - 1); from a server in net, 64 - len(ROUTERS).
INITIAL_TTL = 64
DEEP_FORGED_IP = "10.77.4.66"  # the injector's DNS answer: a dead address (blackholed: a timeout)
DEEP_DNS_MATCH = "deep-dns"  # what r2 holds and the injector answers (raw bytes of a UDP/53 query)
DEEP_PAGE_MATCH = "Host: deep-page.lab.test"  # what r2 drops and the injector answers (case-insensitive)


@dataclass(frozen=True)
class DeepSite:
    """A site of the deep lab, what r2 does to far's traffic to it, and what
    ``probe show --json``'s ``deep`` must say (None: not asserted)."""

    name: str
    site: Site
    scheme: str  # the URL measured: https://<host>/ or http://<host>/
    description: str
    # r2's censor, as ``iptables -A CHAIN -s FAR_SUBNET SPEC`` (filter table)
    rules: tuple[Rule, ...] = ()
    trigger: str | None = None
    injected: str | None = None
    censor_hop: int | None = None  # and then censor_address is one of r2's addresses
    resets: bool = False  # the server itself resets every connection on :80 and :443

    @property
    def host(self) -> str:
        return self.site.host

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.site.host}/"


def _forward(spec: str) -> Rule:
    return Rule("filter", "FORWARD", spec)


DEEP_SITES: tuple[DeepSite, ...] = (
    DeepSite(
        "sni", Site("deep-sni", "10.77.2.80"), "https",
        "in-path SNI filtering on r2: a ClientHello naming the site is answered with RST (r2's TTL)",
        rules=(_forward("-p tcp --dport 443 -m string --string deep-sni.lab.test --algo bm "
                        "-j REJECT --reject-with tcp-reset"),),
        trigger="sni", injected="injected", censor_hop=CENSOR_HOP,
    ),
    DeepSite(
        "host", Site("deep-host", "10.77.2.81"), "http",
        "in-path Host filtering on r2: a request to :80 naming the site is answered with RST",
        rules=(_forward('-p tcp --dport 80 -m string --string "Host: deep-host.lab.test" --algo bm --icase '
                        "-j REJECT --reject-with tcp-reset"),),
        trigger="host", injected="injected", censor_hop=CENSOR_HOP,
    ),
    DeepSite(
        "ip", Site("deep-ip", "10.77.2.82"), "https",
        "IP blocking on r2: every packet from far to the site's address is dropped (timeouts)",
        rules=(_forward("-d 10.77.2.82 -j DROP"),),
        trigger="address",
    ),
    DeepSite(
        "dns", Site("deep-dns", "10.77.2.83"), "https",
        f"DNS injection on the path: r2's injector answers a query naming the site (to any "
        f"address) with {DEEP_FORGED_IP} from the queried address, IP TTL 64; r2 holds the "
        "real query and the injector sends it on after its answer, so the real one comes second",
        rules=(_forward(f"-p udp --dport 53 -m string --string {DEEP_DNS_MATCH} --algo bm -j DROP"),),
        trigger="dns_name", injected="injected", censor_hop=CENSOR_HOP,
    ),
    DeepSite(
        "page", Site("deep-page", "10.77.2.84"), "http",
        "an injected blockpage: r2's injector answers a request naming the site with a "
        "Beltelecom page (200, FIN) from the site's address, IP TTL 64; r2 drops the request",
        rules=(_forward(f'-p tcp --dport 80 -m string --string "{DEEP_PAGE_MATCH}" --algo bm --icase -j DROP'),),
        trigger="host", injected="injected", censor_hop=CENSOR_HOP,
    ),
    DeepSite(
        "rst", Site("deep-rst", "10.77.2.85"), "https",
        "no censor: the server itself resets every connection (:443 and :80) once the client "
        "has sent something; its RST has the server's TTL",
        injected="server", resets=True,
    ),
)
DEEP_BY_NAME: dict[str, DeepSite] = {d.name: d for d in DEEP_SITES}


def deep_targets_text() -> str:
    """The deep test's target list."""
    return "# censorship lab: the deep test's sites (tests/lab/test_deep_lab.py)\n" + "".join(
        f"{d.url}\n" for d in DEEP_SITES)


def deep_dns_lines() -> list[str]:
    """The authoritative DNS's records of DEEP_SITES (added to auth_dns_lines in a deep lab)."""
    return [f"host-record={d.host},{d.site.ip}" for d in DEEP_SITES]


def deep_rules() -> list[tuple[DeepSite, str]]:
    """(site, iptables-restore line): r2's censor, scoped to far's subnet."""
    return [(d, f"-A {r.chain} -s {FAR_SUBNET} {r.spec}") for d in DEEP_SITES for r in d.rules]


def check_deep(scenarios=SCENARIOS) -> None:
    """The deep sites clash with no other site, and r2's strings match their own site only."""
    others = all_sites(scenarios)
    taken = {x.host for x in others} | {x.ip for x in others if x.ip}
    for d in DEEP_SITES:
        assert d.host not in taken and d.site.ip not in taken, f"deep {d.name}: name or address taken"
    hosts = [d.host for d in DEEP_SITES]
    for d in DEEP_SITES:
        for r in d.rules:
            if "--string" in r.spec:
                needle = r.spec.split("--string ", 1)[1]
                needle = needle[1:].split('"', 1)[0] if needle.startswith('"') else needle.split()[0]
                needle = needle.lower().removeprefix("host: ")
                assert [h for h in hosts if needle in h] == [d.host], f"deep {d.name}: {needle!r}"
                assert not any(needle in x.host for x in others), f"deep {d.name}: {needle!r} matches a scenario"
                assert needle not in "example.com"
    assert len({r.name for r in ROUTERS}) == len(ROUTERS) == 3


def all_sites(scenarios=SCENARIOS) -> list[Site]:
    out: list[Site] = []
    for s in scenarios:
        out.extend(s.sites)
    return out + list(EXTRA_SITES) + [n.site for n in NETWORK_SITES]


def check(scenarios=SCENARIOS) -> None:
    """The table is consistent: unique names, hosts and addresses; every DPI string
    occurs in its own scenario's URL and in no other."""
    names = [s.name for s in scenarios]
    assert len(names) == len(set(names)), "duplicate scenario names"
    sites = all_sites(scenarios)
    hosts = [x.host for x in sites]
    assert len(hosts) == len(set(hosts)), "duplicate site names"
    ips = [x.ip for x in sites if x.ip]
    assert len(ips) == len(set(ips)), "two sites share an address"
    for s in scenarios:
        assert s.host in hosts or not s.sites, f"{s.name}: URL host is not one of its sites"
        if s.match:
            assert s.match in s.url, f"{s.name}: DPI string {s.match!r} not in its URL"
            for other in scenarios:
                if other is not s:
                    assert s.match not in other.url, f"{s.name}: {s.match!r} also matches {other.url}"
                    for site in other.sites:
                        assert s.match not in site.host, f"{s.name}: {s.match!r} also matches {site.host}"
            assert s.match not in "example.com", "the benign SNI must never match"
    # the collector test's DPI strings: each its own site's name, no other site's
    for n in NETWORK_SITES:
        for role, rule in (*n.censor, *n.later):
            assert role in NETWORKS, f"{n.name}: {role} is not a network of the collector test"
            if "--string" in rule.spec:
                needle = rule.spec.split("--string ", 1)[1].split()[0]
                assert needle in n.host and needle not in "example.com", (n.name, needle)
                assert [x.host for x in sites if needle in x.host] == [n.host], f"{n.name}: {needle!r} matches another site"
                for s in scenarios:
                    assert needle not in s.url, f"{n.name}: {needle!r} also matches {s.url}"


def auth_dns_lines(scenarios=SCENARIOS) -> list[str]:
    """dnsmasq lines of the authoritative DNS (namespace net)."""
    lines = [f"local=/{DOMAIN}/"]  # names not listed below: NXDOMAIN
    for site in all_sites(scenarios):
        answer = site.dns_answer or site.ip
        if answer:
            lines.append(f"host-record={site.host},{answer}" + (f",{site.ip6}" if site.ip6 else ""))
    return lines


def isp_dns_lines(scenarios=SCENARIOS) -> list[str]:
    return [line for s in scenarios for line in s.isp_dns]


def censor_dns_lines(scenarios=SCENARIOS) -> list[str]:
    return [line for s in scenarios for line in s.censor_dns]


def throttled(scenarios=SCENARIOS) -> list[str]:
    return [ip for s in scenarios for ip in s.throttle]


def rules(scenarios=SCENARIOS) -> list[tuple[Scenario, Rule]]:
    return [(s, r) for s in scenarios for r in s.rules]


def targets_text(scenarios=SCENARIOS) -> str:
    """The probe's target list: one URL per scenario, in table order (error last)."""
    out = ["# censorship lab: one URL per scenario (python -m tests.lab list)"]
    for s in scenarios:
        out.append(f"# {s.name}: expected {s.expected}")
        out.append(s.url)
    return "\n".join(out) + "\n"


def describe_table(scenarios=SCENARIOS) -> list[dict[str, str]]:
    return [
        {
            "name": s.name,
            "expected": s.expected,
            "url": s.url,
            "description": s.description,
            "isp_dns": "; ".join(s.isp_dns),
            "censor_dns": "; ".join(s.censor_dns),
            "rules": "; ".join(r.command() for r in s.rules),
        }
        for s in scenarios
    ]


check()
check_deep()
