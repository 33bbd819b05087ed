"""Agreement with OONI: our verdicts on OONI's own measurements, next to OONI's labels.

    python -m probe.analysis.agreement [DATA_DIR]            # print the table (markdown)
    python -m probe.analysis.agreement --update README.md    # rewrite the README's copy

OONI's `blocking` is one of false/null/"dns"/"tcp_ip"/"http-failure"/"http-diff" (plus
`accessible`). Ours is finer, so both are reduced to a common family before comparing:
TLS interference is "http-failure" in OONI's vocabulary, a blockpage is "http-diff".
Every disagreement must carry an explanation (EXPLANATIONS), checked by a test that also
keeps the README's table true.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from probe.analysis.classify import classify
from probe.analysis.view import Context
from probe.ooni.decode import ooni_to_measurement

OUR_FAMILY = {
    "ok": "accessible",
    "down": "down",
    "error": "can't tell",
    "dns.nxdomain": "dns", "dns.bogon": "dns", "dns.blockpage": "dns", "dns.injection": "dns", "dns.inconsistent": "dns",
    "tcp.timeout": "tcp_ip", "tcp.reset": "tcp_ip", "tcp.refused": "tcp_ip",
    "tls.reset": "http-failure", "tls.timeout": "http-failure", "tls.mitm": "http-failure",
    "http.reset": "http-failure", "http.timeout": "http-failure",
    "http.blockpage": "http-diff", "http.diff": "http-diff",
}


def ooni_family(blocking: str, accessible: str) -> str:
    b = (blocking or "").strip().strip('"')
    if b in ("", "null", "None"):
        return "can't tell"
    if b == "false":
        return "accessible" if accessible == "true" else "down"
    return b


# Why we differ, case by case. Keys are the file names under tests/data/ooni/. A test
# fails when a disagreement has no explanation, or an explanation no disagreement.
EXPLANATIONS: dict[str, str] = {
    "synthetic-qa/httpDiffWithInconsistentDNS.json":
        "Both call it blocked; we say how and where. The page is a blockpage (fingerprint `ooni.in_11`). The "
        "ISP's answer (130.192.182.17) differs from the control's, but that address presents a valid "
        "certificate for www.example.com: it is a transparent proxy that relays TLS to the site, so DNS only "
        "led to the proxy and is not the layer at fault (the evidence still names the differing answer); "
        "the proxy's HTTP blockpage is.",
    "real/backend-fastpath__20250527233111.802678_ID_webconnectivity_5a37ec909dbf14e3.json":
        "**OONI is wrong.** The ISP answers `archive.org` with a 302 to `lamanlabuh.aduankonten.id`, "
        "Indonesia's Trustpositif blockpage (fingerprint `ooni.id_lamanlabuh_kominfo`, in OONI's own list); "
        "OONI's comparison matched status and a shared header and scored it accessible. We match the "
        "fingerprint on the redirect's `Location`.",
    "real/backend-fastpath__bug_351.json":
        "**OONI is wrong.** The failure string is ooniprobe 2.2.0's own bug (Python's `ascii` codec choked "
        "on a byte of the response), not a network event, and the control fetched the page; OONI's "
        "fastpath itself gives such measurements accuracy 0. We say `error`: the probe could not measure.",
    "real/backend-fastpath__requests_none.json":
        "The control resolves `www.wikispaces.com` only to a CNAME and its own fetch fails "
        "(`dns_lookup_error`): the site (closed in 2018) is gone for everyone. OONI calls the local "
        "NXDOMAIN inconsistent because the control's answer list is not empty (it holds the CNAME); "
        "neither side has an address, so we say `down`.",
    "real/backend-fastpath__web_connectivity_b64_hdr.json":
        "Both call it blocked; we say how. The reply is a redirect to `/UserCheck/PortalMain?...`, the "
        "blockpage of a Check Point URL filter (fingerprint `cl.prod_checkpoint_urlfilter_forward`); "
        "OONI only saw a redirect it could not follow (`http_invalid_redirect_url`).",
    "real/backend-fastpath__web_connectivity_no_body.json":
        "The certificate does not verify locally and the control's own request fails too "
        "(`unknown_error`): the site is broken for everyone. OONI (Measurement Kit era, test 0.0.1) "
        "called it accessible although nothing was fetched; we say `down`, as OONI's QA does for "
        "its badSSL cases.",
    "real/backend-fastpath__web_connectivity_null2.json":
        "The certificate is invalid locally and the control's fetch fails too: OONI v0.4 has no "
        "label for a TLS failure both sides share (null); we say `down`, broken for everyone, as "
        "OONI's QA does for its badSSL cases.",
    "real/probecli-manual-8844__IT_v0.5.28_doh-8.8.4.4.json":
        "A DNS-over-HTTPS URL on an IP address, which OONI's analysis leaves unscored (null). The "
        "certificate for 8.8.4.4 validated and the reply came over HTTPS from the server itself: `ok`.",
    "synthetic-qa/cloudflareCAPTCHAWithHTTP.json":
        "**OONI is wrong, and says so** (ooni/probe#2661: the QA suite is \"forced to declare "
        "http-diff\"): Cloudflare shows the probe's address a CAPTCHA, the site's doing. We recognise "
        "the page (Censored Planet false-positive fingerprint) and say `ok`; the lab's `cdn_challenge` "
        "scenario checks it on real packets.",
    "synthetic-qa/controlFailureWithSuccessfulHTTPWebsite.json":
        "The control helper could not be reached, but the page loaded (200, the address other "
        "resolvers give too). OONI has no verdict for plain HTTP without a control; we say `ok` at "
        "low confidence (0.30), as OONI does for the HTTPS twin of this case.",
    "synthetic-qa/redirectWithBrokenLocationForHTTP.json":
        "The server sends the probe's address (only) a redirect to an empty location; the control "
        "gets the page. Nothing failed on the network: the reply itself differs, so we say "
        "`http.diff` at 0.60, where OONI files it under http-failure.",
    "synthetic-qa/redirectWithBrokenLocationForHTTPS.json":
        "As the HTTP twin: a redirect to an empty location for the probe only, the page for the "
        "control. The reply differs (`http.diff`, 0.60); no network step failed.",
    "synthetic-qa/redirectWithConsistentDNSAndThenConnectionRefusedForHTTP.json":
        "**OONI's label is too coarse.** `blocking` keeps the v0.4 vocabulary (http-failure), though "
        "OONI's own XBlockingFlags=2 says TCP/IP: after the bit.ly redirect every connect to "
        "www.example.com is refused. We judge the redirect target's own connects: `tcp.refused`; "
        "the lab's `redirect_then_refused` checks it on real packets.",
    "synthetic-qa/redirectWithConsistentDNSAndThenConnectionRefusedForHTTPS.json":
        "**OONI's label is too coarse**, as in the HTTP twin: the redirect target's connects are all "
        "refused (OONI's XBlockingFlags=2, TCP/IP), so we say `tcp.refused`.",
}


@dataclass
class Row:
    case: str
    cc: str
    input: str
    ooni_blocking: str
    ooni_accessible: str
    ooni: str
    verdict: str
    confidence: float
    ours: str
    rule: str
    blocked: bool | None = False

    @property
    def agree(self) -> bool:
        return self.ooni == self.ours


def load_doc(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonc":
        text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    return json.loads(text)


def agreement(data_dir: Path) -> list[Row]:
    rows = []
    with (data_dir / "INDEX.csv").open(newline="", encoding="utf-8") as fh:
        index = list(csv.DictReader(fh))
    for entry in index:
        doc = load_doc(data_dir / entry["file"])
        m, meta = ooni_to_measurement(doc)
        v = classify(m, Context(cc=meta.get("cc"), asn=meta.get("asn")))
        rows.append(Row(
            case=entry["file"], cc=entry["probe_cc"], input=entry["input"],
            ooni_blocking=entry["blocking"].strip('"') or "null", ooni_accessible=entry["accessible"] or "null",
            ooni=ooni_family(entry["blocking"], entry["accessible"]),
            verdict=v.verdict, confidence=v.confidence,
            ours="can't tell" if v.blocked is None else OUR_FAMILY[v.verdict], rule=f"{v.layer or '-'}:{v.rule_id}",
            blocked=v.blocked,
        ))
    return rows


def markdown(rows: list[Row]) -> str:
    agree = sum(r.agree for r in rows)
    out = [f"{agree} of {len(rows)} agree.", "",
           "| case | OONI `blocking` / `accessible` | our verdict (confidence) | agree? | why we differ |",
           "|---|---|---|---|---|"]
    for r in rows:
        name = Path(r.case).stem.replace("backend-fastpath__", "").replace("probecli-", "")
        why = "" if r.agree else EXPLANATIONS.get(r.case, "**unexplained**")
        shown = f"`{r.verdict}`" + (" (can't tell)" if r.blocked is None else "")
        out.append(f"| {name} | {r.ooni_blocking} / {r.ooni_accessible} | {shown} ({r.confidence:.2f}) | "
                   f"{'yes' if r.agree else '**no**'} | {why} |")
    return "\n".join(out)


README_START = "<!-- ooni-agreement:start (python -m probe.analysis.agreement --update README.md) -->"
README_END = "<!-- ooni-agreement:end -->"


def replace_section(text: str, table: str) -> str:
    """``text`` with the part between the README markers replaced by ``table``."""
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    return text[:start] + "\n" + table + "\n" + text[end:]


def readme_section(text: str) -> str:
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    return text[start:end].strip("\n")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m probe.analysis.agreement", description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default="tests/data/ooni",
                        help="a folder with INDEX.csv and the measurements it names")
    parser.add_argument("--update", metavar="README", help="rewrite the table between the markers in this file")
    args = parser.parse_args(argv)
    table = markdown(agreement(Path(args.data_dir)))
    if args.update:
        path = Path(args.update)
        path.write_text(replace_section(path.read_text(encoding="utf-8"), table), encoding="utf-8")
        print(f"updated {path}")
    else:
        print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
