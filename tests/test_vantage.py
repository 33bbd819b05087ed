"""Vantage lookup (country, ASN, network) and the rule that the IP is stored only on opt-in.

A local DNS server plays OpenDNS's myip and Team Cymru's IP-to-ASN zones."""

from pathlib import Path

from servers import Answer, Behaviour, DnsServer, Txt

from probe.measure.plan import plan_new_run
from probe.measure.url import ProbeConfig
from probe.measure.vantage import lookup_vantage, parse_asname_txt, parse_origin_txt, reverse_name

NAMES = {"myip": "myip.lab.test", "origin": "origin.lab.test", "origin6": "origin6.lab.test", "asn": "asn.lab.test"}
ZONE: dict[str, Behaviour] = {
    "myip.lab.test": Answer(a=["198.51.100.7"]),
    "7.100.51.198.origin.lab.test": Txt(["6697 | 198.51.100.0/24 | BY | ripencc | 2008-01-01"]),
    "as6697.asn.lab.test": Txt(["6697 | BY | ripencc | 2002-08-20 | BELPAK-AS Beltelecom, BY"]),
}


def test_parsers():
    assert parse_origin_txt("6697 | 178.120.0.0/13 | BY | ripencc | 2008-01-01") == ("AS6697", "BY")
    assert parse_asname_txt("6697 | BY | ripencc | 2002-08-20 | BELPAK-AS Beltelecom, BY") == "BELPAK-AS Beltelecom, BY"
    assert reverse_name("1.2.3.4") == "4.3.2.1.origin.asn.cymru.com"
    assert reverse_name("2001:db8::1").endswith(".8.b.d.0.1.0.0.2.origin6.asn.cymru.com")


async def test_lookup_through_dns():
    async with DnsServer(ZONE) as dns:
        v = await lookup_vantage(myip_resolver=dns.address, cymru_resolvers=[dns.address], names=NAMES)
    assert (v.cc, v.asn, v.network_name, v.ip, v.source) == ("BY", "AS6697", "BELPAK-AS Beltelecom, BY", "198.51.100.7", "dns")


async def test_lookup_gives_unknown_when_dns_fails():
    async with DnsServer({}) as dns:
        v = await lookup_vantage(myip_resolver=dns.address, cymru_resolvers=[dns.address], names=NAMES, timeout=2)
    assert v.source == "unknown" and v.cc is None and v.ip is None


async def test_public_ip_is_stored_only_on_opt_in(tmp_path):
    targets = tmp_path / "t.txt"
    targets.write_text("https://charter97.org/\n")
    async with DnsServer(ZONE) as dns:
        async def lookup():
            return await lookup_vantage(myip_resolver=dns.address, cymru_resolvers=[dns.address], names=NAMES)

        for store_ip in (False, True):
            plan = await plan_new_run(targets_path=Path(targets), target_count=1, config=ProbeConfig(resolvers=[]),
                                      control_urls=[], doh_url=None, cc=None, asn=None, lookup=True,
                                      store_ip=store_ip, lookup_fn=lookup)
            run = plan.run
            assert (run["cc"], run["asn"], run["network_name"]) == ("BY", "AS6697", "BELPAK-AS Beltelecom, BY")
            assert run["probe_ip"] == ("198.51.100.7" if store_ip else None)
            assert "198.51.100.7" not in str({k: v for k, v in run.items() if k != "probe_ip"})
