"""`probe show`: the runs in a database, and one URL's raw evidence as a readable tree.

Only what was observed is shown, local and control side by side; verdicts are
`probe explain`'s job (analysis)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.tree import Tree


def e(value: Any) -> str:
    """Data as text for rich: a censor's certificate subject, a page title or a URL
    from a hostile list may hold "[/bold]", which rich would read as markup (and, for
    an unmatched closing tag, raise)."""
    return escape(str(value))


def runs_table(runs: list[dict[str, Any]]) -> Table:
    table = Table(title="runs", show_lines=False)
    for col in ("run", "started (UTC)", "status", "measured", "targets", "network", "control"):
        table.add_column(col)
    for r in runs:
        network = " ".join(x for x in (r.get("cc"), r.get("asn"), r.get("network_name")) if x) or "unknown"
        table.add_row(
            e(r["run_id"][:8]),
            e((r["started_at"] or "")[:19].replace("T", " ")),
            e(r["status"] or ""),
            e(r.get("measured", "")),
            e(r.get("target_count") or ""),
            e(network),
            e(r.get("control_url") or "none"),
        )
    return table


def _fail(value: Any) -> str:
    return f"[red]{e(value)}[/red]" if value else "[green]ok[/green]"


def _ms(value: Any) -> str:
    return f"{value:.0f} ms" if isinstance(value, (int, float)) else ""


def _side_tree(parent: Tree, part: dict[str, Any]) -> None:
    dns = parent.add("[bold]DNS")
    if not part["dns"]:
        dns.add("no queries (IP address, or not measured)")
    for q in part["dns"]:
        who = e(q["engine"] + (f" {q['resolver']}" if q["resolver"] else ""))
        node = dns.add(f"{who} {e(q['query_type'])}: {_fail(q['failure'])} rcode={e(q['rcode'] or '-')} "
                       f"{_ms(q['duration_ms'])}" + (f" from {e(q['responder'])}" if q.get("responder") else ""))
        for a in q["answers"]:
            node.add(f"{e(a['answer_type'])} {e(a['value'])}" + (f" ttl={e(a['ttl'])}" if a["ttl"] is not None else ""))
        for r in q["extra_replies"]:
            node.add(f"[yellow]another reply[/yellow] from {e(r['responder'])} after {r['delay_ms']:.0f} ms: "
                     + e(", ".join(a["value"] for a in r["answers"]) or r["rcode"] or "-"))
    tcp = parent.add("[bold]TCP")
    if not part["tcp"]:
        tcp.add("no connects")
    for c in part["tcp"]:
        tcp.add(f"{e(c['ip'])}:{e(c['port'])} {_fail(c['failure'])} {_ms(c['duration_ms'])}")
    tls = parent.add("[bold]TLS")
    if not part["tls"]:
        tls.add("no handshakes")
    for t in part["tls"]:
        label = e(f"{t['ip']}:{t['port']} SNI={t['server_name']}") + (" (benign SNI)" if t["sni_role"] == "control" else "")
        detail = f" at {e(t['failure_stage'])}" if t["failure_stage"] else ""
        node = tls.add(f"{label} {_fail(t['failure'])}{detail} {e(t['tls_version'] or '')} {_ms(t['duration_ms'])}")
        for i, cert in enumerate(t["peer_certificates"][:3]):
            node.add(e(f"cert[{i}] subject={cert['subject']} issuer={cert['issuer']} "
                       f"sans={','.join(cert['sans'][:4])} valid {cert['not_before'][:10]}..{cert['not_after'][:10]} "
                       f"sha256={cert['sha256'][:16]}…"))
    http = parent.add("[bold]HTTP")
    if not part["http"]:
        http.add("no requests")
    for h in part["http"]:
        status = f"{h['status']} {h['reason'] or ''}".strip() if h["status"] else ""
        extra = []
        if h.get("title"):
            extra.append(f"title={h['title']!r}")
        if h.get("location"):
            extra.append(f"location={h['location']}")
        if h.get("body_length") is not None:
            extra.append(f"body={h['body_length']} B" + (" (truncated)" if h["body_truncated"] else ""))
        kind = "" if h["kind"] == "main" else e(f"[{h['kind']}] ")
        http.add(f"{kind}hop {e(h['hop'])} GET {e(h['url'])} via {e(h['address'] or '?')}: {e(status)} "
                 f"{_fail(h['failure']) if h['failure'] or not status else ''} {e(' '.join(extra))} "
                 f"{_ms(h['duration_ms'])}")


def measurement_tree(m: dict[str, Any]) -> Tree:
    run = m.get("run") or {}
    network = " ".join(x for x in (run.get("cc"), run.get("asn"), run.get("network_name")) if x) or "unknown network"
    root = Tree(f"[bold]{e(m['url'])}[/bold]  measured {e(m['started_at'][:19].replace('T', ' '))} UTC from {e(network)}"
                f"  ({_ms(m['duration_ms'])}, id {e(m['measurement_id'][:8])})")
    root.add("addresses tried: " + e(", ".join(m["addresses"]) or "none"))
    _side_tree(root.add("[bold cyan]local (this network)"), m["local"])
    cr = m.get("control_result")
    if cr is None:
        root.add("[bold cyan]control[/bold cyan]: none was asked (verdicts will be weaker)")
    elif cr["failure"]:
        root.add(f"[bold cyan]control[/bold cyan] {e(cr['control_url'])}: [red]{e(cr['failure'])}[/red]")
    else:
        _side_tree(root.add(f"[bold cyan]control[/bold cyan] {e(cr['control_url'])}"), m["control"])
    if m.get("deep"):
        _deep_tree(root.add("[bold cyan]deep measurement[/bold cyan]"), m["deep"])
    return root


def _deep_tree(node: Tree, d: dict[str, Any]) -> None:
    """The trigger tests, the packets and the hop search, with what they mean."""
    obs = d.get("observed") or {}
    node.add(f"trigger: {e(str(d.get('trigger') or '-'))}; injected: {e(str(d.get('injected') or '-'))}; "
             f"censor's hop: {e(str(d.get('censor_hop') or '-'))} {e(str(d.get('censor_address') or ''))}")
    if d.get("where"):
        node.add(e(str(d["where"])))
    tests = node.add("trigger tests")
    for t in obs.get("trigger_tests") or []:
        mark = "[red]interfered[/red]" if t["interfered"] else "[green]fine[/green]"
        tests.add(f"{e(t['name'])} to {e(t['address'])} sending {e(repr(t['sent']))}: {mark} "
                  f"{e(t['failure'] or t['detail'] or '')}")
    packets = node.add(f"packets seen: {len(obs.get('packets') or [])}")
    for p in (obs.get("packets") or [])[:40]:
        packets.add(f"{e(p['kind'])} from {e(p['src'])}: TTL {p['ttl']}, IP ID {p['ip_id']}"
                    + (f", window {p['window']}" if p.get("window") is not None else "") + f" ({e(p['flow'])})")
    hops = node.add(f"hop search ({e(str(obs.get('replayed') or '-'))} to {e(str(obs.get('replay_target') or '-'))}, "
                    f"{obs.get('packets_sent', 0)} packets)")
    for h in obs.get("hops") or []:
        hops.add(f"TTL {h['ttl']}: " + ", ".join(x for x in (
            f"time exceeded from {e(h['icmp_from'])}" if h.get("icmp_from") else "",
            f"{e(h['response'])} from {e(str(h['response_from']))} (TTL {h['response_ttl']})" if h.get("response") else "",
        ) if x) if h.get("icmp_from") or h.get("response") else f"TTL {h['ttl']}: nothing came back")
    for why in obs.get("skipped") or []:
        node.add("[yellow]skipped[/yellow]: " + e(why))
