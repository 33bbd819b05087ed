"""Datasette metadata for browsing probe databases: what each table and column holds,
the views people start from, canned queries and facets (``probe browse``, or
``probe browse --print-metadata > metadata.json`` for researchers who run Datasette
themselves).

A pure function of the database names: no I/O. The words are for researchers and stay
English, like column names and verdict codes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from probe.core.verdicts import CANT_TELL, TAGS, VERDICTS
from probe.store.views import NEWEST_FIRST, with_views

TITLE = "bynet-probe results"
DESCRIPTION = (
    "What this probe measured (DNS, TCP, TLS and HTTP, locally and from a control helper on an open network) "
    "and the verdicts derived from it. Start with latest_verdicts: one row per site and network, its newest "
    "verdict and the evidence in words. The raw observations are in the other tables, by measurement_id."
)
# Evidence is one line per item: let the browser keep the lines.
CSS = "td.col-evidence, td.col-previous_evidence { white-space: pre-wrap; min-width: 24em; }"
FACETS = ["verdict", "network", "blocked"]

_VERDICT = "the verdict code: ok, down, error, or how the site is blocked (dns.nxdomain, tls.reset, ...)"
_BLOCKED = f"yes / no / {CANT_TELL} (the failure is one censors use, but an outage looks the same)"
_TAGS = "qualifiers of the verdict: " + ", ".join(label for label, _ in TAGS.values())
_NETWORK = "country/ASN of the volunteer's network (BY/AS6697), or unknown: a censor's policy follows the ISP"
_VIEW_COLUMNS = {
    "url": "the site measured (a target URL)",
    "network": _NETWORK,
    "verdict": _VERDICT,
    "blocked": _BLOCKED,
    "confidence": "0..1: how sure the classifier is of the verdict",
    "evidence": "why, in words: one line per piece of evidence",
    "measured_at": "when the measurement started (UTC)",
    "tags": _TAGS,
    "host": "the URL's host name",
    "category": "Citizen Lab category code of the target (NEWS, HUMR, ...)",
    "network_name": "the ISP's name, as looked up at the time",
    "cc": "country code of the volunteer's network",
    "asn": "autonomous system number of the volunteer's network",
    "layer": "where blocking was first seen: dns, tcp, tls or http",
    "rule_id": "the classifier rule that gave the verdict",
    "classifier_version": "the newest classifier version that judged this measurement",
    "measurement_id": "the measurement (its raw observations: measurements and the tables by measurement_id)",
    "run_id": "the run the measurement belongs to (runs)",
}
_SIDE = "local (this network) or control (the control helper, on an open network)"
_FAILURE = "normalised failure string (dns_nxdomain_error, connection_reset, generic_timeout_error, ...), or empty"
_MID = "the measurement this observation belongs to"

TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "runs": ("One row per run of `probe run` (or imported file): where and when it measured.", {
        "run_id": "the run", "started_at": "UTC", "finished_at": "UTC",
        "status": "running, finished, interrupted or timed_out",
        "probe_version": "the probe's version", "targets_source": "the target list it measured",
        "target_count": "how many targets the list had", "cc": "country code of the network",
        "asn": "autonomous system number of the network", "network_name": "the ISP's name",
        "resolvers": "JSON list of the resolvers asked", "probe_ip": "only with --store-ip",
        "control_url": "the control helper used", "doh_url": "the DNS-over-HTTPS resolver used",
        "config": "JSON: the run's options", "notes": "JSON list of what the volunteer was told about this run",
    }),
    "run_targets": ("The target list of each run, ticked off as each target finishes (for --resume).", {
        "status": "pending, done, not_measured or moved (to the run after a network change)",
        "measurement_id": "the measurement, once done",
    }),
    "measurements": ("One row per URL measured: the raw observations are in the tables below, by measurement_id.", {
        "url": "the target URL", "hostname": "its host name", "started_at": "UTC", "finished_at": "UTC",
        "addresses": "JSON list of the addresses TCP, TLS and HTTP were tried on",
        "control_url": "the control helper asked", "control_failure": "why the control could not answer, if so",
        "network_epoch": "which network of the run (counting changes of route, address or resolver)",
        "network_changed": "1 when the network changed while this measurement was in flight",
    }),
    "dns_queries": ("Every DNS query, local and control.", {
        "side": _SIDE, "measurement_id": _MID,
        "engine": "system (getaddrinfo), udp (a resolver asked directly), doh, or sink (a non-resolver: any "
                  "answer is injected)",
        "resolver": "who was asked", "query_type": "A, AAAA, ...", "failure": _FAILURE,
        "rcode": "the DNS response code", "responder": "the address the answer came from",
        "extra_replies": "JSON: further replies to the same query (a sign of injection)",
    }),
    "dns_answers": ("The answers of each DNS query.", {
        "side": _SIDE, "answer_type": "A, AAAA, CNAME, ...", "value": "the address or name", "ttl": "seconds",
    }),
    "tcp_connects": ("Every TCP connect, local and control.", {
        "side": _SIDE, "measurement_id": _MID, "success": "1 connected, 0 failed", "failure": _FAILURE,
    }),
    "tls_handshakes": ("Every TLS handshake, local and control, with the certificate shown.", {
        "side": _SIDE, "measurement_id": _MID, "server_name": "the SNI sent",
        "sni_role": "target (the site's own name) or control (a harmless name, to tell SNI filtering from "
                    "address blocking)",
        "failure": _FAILURE,
        "failure_stage": "tcp_connect, before_client_hello, after_client_hello or after_server_hello",
        "cert_valid": "1 when the certificate validates for server_name", "cert_failure": "why it does not",
        "peer_certificates": "JSON: the whole chain presented",
        "cert_checked_at": "when the local clock was off: the (control's) time the certificate was judged at",
    }),
    "http_requests": ("Every HTTP request, redirects and the plain-HTTP fallback included.", {
        "side": _SIDE, "measurement_id": _MID,
        "kind": "main (the URL and its redirects) or http_fallback (http:// on each address)",
        "hop": "0 for the URL, then one per redirect", "failure": _FAILURE, "title": "the page title",
        "headers": "JSON [[name, value], ...]", "body_head": "gzip of the first 64 KiB of the body",
        "body_sha256": "hash of up to 2 MiB of the body",
        "attempted": "0: never sent (every address had already timed out on connect; the row stands for that timeout)",
    }),
    "control_results": ("What the control helper answered for each measurement.", {
        "measurement_id": _MID, "raw": "the helper's JSON answer, verbatim", "failure": _FAILURE,
        "attempts": "requests it took", "reason": "why it was lost, in one word",
    }),
    "verdicts": ("Verdicts derived from the observations (`probe analyze`): one row per measurement and "
                 "classifier version; the views below pick the newest.", {
        "verdict": _VERDICT, "blocked": "1 blocked, 0 not, empty: can't tell", "confidence": "0..1",
        "layer": "dns, tcp, tls or http", "rule_id": "the rule that fired",
        "evidence": 'JSON [{"text": ..., "fields": {...}}, ...] (latest_verdicts shows the texts)',
        "layers": "JSON: each layer's reading", "tags": "JSON list of qualifiers (partial:ipv4, slow, ...)",
    }),
    "cross_verdicts": ("Each measurement judged with the other networks' measurements of the same URL (a "
                       "collector, or `probe report` over several databases): the second stage, its own version.", {
        "verdict": _VERDICT, "blocked": "1 blocked, 0 not, empty: can't tell", "confidence": "0..1",
        "rule_id": "cross.works_elsewhere, cross.fails_everywhere, cross.same_censor, ...",
        "evidence": "JSON: why, naming the networks compared", "networks_compared": "JSON list: CC/ASN of the peers",
        "own_verdict": "the measurement's own verdict", "changed": "1 when the networks changed it",
    }),
    "events": ("Blocking events: a site newly blocked, unblocked or blocked another way on a network, each "
               "confirmed by 2 agreeing measurements (a collector; also /events.json and /events.atom).", {
        "kind": "blocked, unblocked or method_changed", "network": "CC/ASN", "before": "the old state's verdict",
        "after": "the new state's verdict", "since": "UTC: the first measurement of the new state",
        "confirmed_at": "UTC: the measurement that confirmed it", "measurement_ids": "JSON: the confirming ones",
        "evidence": "JSON", "detected_at": "UTC: when the collector found it",
    }),
    "uploads": ("What this volunteer's probe uploaded, to which collector, and when (probe show uploads).", {
        "collector": "the collector's URL", "batch_id": "the batch it went in ('known': the collector had it)",
    }),
    "collected": ("A collector's record of who sent each measurement: the token's name, never an address.", {
        "uploader": "the token's name", "batch_id": "the batch it came in", "received_at": "UTC",
    }),
    "batches": ("Batches a collector received: who sent them, how many measurements were new.", {
        "accepted": "measurements stored", "duplicates": "measurements it already had",
    }),
    "tokens": ("A collector's upload tokens: names and SHA-256 hashes only.", {
        "token_sha256": "the token's hash (the token itself is never stored)", "revoked_at": "UTC, once revoked",
    }),
    "webhooks": ("URLs a collector tells of every new blocking event.", {}),
    "webhook_deliveries": ("Each event's delivery to each webhook: attempts, when delivered or given up.", {}),
    "deep_results": ("Deep measurements (`probe run --deep`): one per blocked target examined; probe explain "
                     "says what they mean.", {
        "replayed": "what the hop search sent again: tls_client_hello, http_request, dns_query",
        "server_ttl": "the IP TTL of the server's (or resolver's) own packets", "skipped": "JSON: what was not done, why",
    }),
    "deep_trigger_tests": ("Trigger isolation: the blocked step again, one thing changed at a time.", {
        "name": "tls_sni, tls_benign_sni, tls_no_sni, tls_sni_elsewhere, http_host, ...",
        "interfered": "1 when it was reset, cut or forged as the measurement was",
    }),
    "deep_packets": ("The packets of a deep measurement's flows: IP TTL, IP ID, TCP window.", {
        "kind": "syn-ack, rst, fin, data, dns, icmp-time-exceeded, icmp-unreachable",
    }),
    "deep_hops": ("The hop search: the triggering packet sent with IP TTL 1, 2, ... and what came back.", {
        "icmp_from": "the router where it expired", "response": "rst, fin, blockpage, dns_answer, or server",
    }),
    "analysis_state": ("What each run's verdicts were derived with: `probe analyze` skips a run whose signature "
                       "is unchanged (`--force` re-derives).", {
        "signature": "a digest of the classifier and probe versions, the fingerprints and the run's context",
    }),
    "site_verdicts": ("Every classified measurement with its site, network and verdict (by the newest classifier "
                      "that judged it), the evidence in words.", _VIEW_COLUMNS),
    "latest_verdicts": ("One row per site and network: the verdict of its newest classified measurement, the "
                        "evidence in words. Facet by verdict or network; the canned queries below go further.",
                        _VIEW_COLUMNS),
}


def _verdict_meanings_sql() -> str:
    def lit(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    rows = ",\n  ".join(f"({lit(v)}, {lit('yes' if blocked else 'no')}, {lit(meaning)})"
                        for v, (blocked, meaning) in VERDICTS.items())
    return f"SELECT column1 AS verdict, column2 AS blocked, column3 AS meaning FROM (VALUES\n  {rows})"


BLOCKED_BY_NETWORK = """SELECT network, network_name, url, verdict, confidence, evidence, tags, measured_at, measurement_id
FROM latest_verdicts
WHERE blocked = 'yes'
ORDER BY network, url"""

CHANGES_LAST_7_DAYS = f"""SELECT url, network, previous_verdict, verdict, previous_measured_at, measured_at, evidence,
       measurement_id
FROM (SELECT *, lag(verdict) OVER by_time AS previous_verdict, lag(measured_at) OVER by_time AS previous_measured_at
      FROM site_verdicts
      WINDOW by_time AS (PARTITION BY url, network
                         ORDER BY julianday(measured_at), measured_at, measurement_id))
WHERE previous_verdict IS NOT NULL AND verdict <> previous_verdict
  AND julianday(measured_at) >= julianday('now', '-7 days')
ORDER BY {NEWEST_FIRST}"""

# A host name (charter97.org, with or without www.) or the exact URL.
SITE_EVIDENCE = f"""SELECT measured_at, network, url, verdict, blocked, confidence, evidence, tags, layer, rule_id,
       classifier_version, measurement_id, run_id
FROM site_verdicts
WHERE host = lower(trim(:site)) OR host = 'www.' || lower(trim(:site)) OR url = trim(:site)
ORDER BY {NEWEST_FIRST}, network"""

QUERIES: dict[str, tuple[str, str, str]] = {
    "blocked_by_network": ("Blocked sites by network",
                           "Sites whose latest verdict on a network says blocked, network by network.",
                           BLOCKED_BY_NETWORK),
    "changes_last_7_days": ("Changes in the last 7 days",
                            "Measurements of the last 7 days whose verdict differs from the previous one of the same "
                            "site and network: a block that started or ended.", CHANGES_LAST_7_DAYS),
    "site_evidence": ("All evidence for one site",
                      "Every classified measurement of one site (a host name such as charter97.org, or the URL), "
                      "all networks, newest first.", SITE_EVIDENCE),
    "verdict_meanings": ("What each verdict means", "The verdict vocabulary of the classifier.",
                         _verdict_meanings_sql()),
}


def _table(description: str, columns: Mapping[str, str], facets: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "columns": dict(columns)}
    if facets:
        out["facets"] = list(facets)
    return out


def _queries(has_views: bool) -> dict[str, Any]:
    """The canned queries; without the views, the same SELECTs over the views' bodies,
    and the views themselves as queries of the same name (same URL, no facets)."""
    out: dict[str, Any] = {}
    if not has_views:
        for name, sql in (("latest_verdicts", "SELECT * FROM latest_verdicts"),
                          ("site_verdicts", f"SELECT * FROM site_verdicts ORDER BY {NEWEST_FIRST}")):
            out[name] = {"sql": with_views(sql), "title": name,
                         "description": TABLES[name][0] + " (A query: this database has no views, it is read-only "
                                                          "or from an older probe.)"}
    for name, (title, description, sql) in QUERIES.items():
        out[name] = {"sql": sql if has_views else with_views(sql), "title": title, "description": description}
    return out


def browse_metadata(databases: Mapping[str, bool]) -> dict[str, Any]:
    """Datasette metadata for probe databases, by Datasette's name for each (see
    ``datasette_names``) -> whether the file has the views (``store.views``)."""
    tables: dict[str, Any] = {}
    for name, (description, columns) in TABLES.items():
        tables[name] = _table(description, columns, FACETS if name.endswith("_verdicts") else None)
    tables["schema_version"] = {"hidden": True}
    return {
        "title": TITLE,
        "description": DESCRIPTION,
        "extra_css_urls": ["data:text/css," + quote(CSS)],
        "databases": {
            name: {
                "description": DESCRIPTION,
                "tables": tables,
                "queries": _queries(has_views),
            }
            for name, has_views in databases.items()
        },
    }


def datasette_names(paths: Iterable[Path]) -> list[str]:
    """The names Datasette gives database files (the file's stem; probe, probe_2, ...
    when two stems are alike), in order, one per distinct path."""
    names: list[str] = []
    for path in dict.fromkeys(paths):
        name = suggestion = Path(path).stem
        i = 2
        while name in names:
            name = f"{suggestion}_{i}"
            i += 1
        names.append(name)
    return names

