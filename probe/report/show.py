"""`probe show`: the runs in a database, and one URL's raw evidence as a readable tree.

Only what was observed is shown, local and control side by side; verdicts are
`probe explain`'s job (analysis)."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.tree import Tree


def runs_table(runs: list[dict[str, Any]]) -> Table:
    table = Table(title="runs", show_lines=False)
    for col in ("run", "started (UTC)", "status", "measured", "targets", "network", "control"):
        table.add_column(col)
    for r in runs:
        network = " ".join(x for x in (r.get("cc"), r.get("asn"), r.get("network_name")) if x) or "unknown"
        table.add_row(
            r["run_id"][:8],
            (r["started_at"] or "")[:19].replace("T", " "),
            r["status"] or "",
            str(r.get("measured", "")),
            str(r.get("target_count") or ""),
            network,
            r.get("control_url") or "none",
        )
    return table


def _fail(value: Any) -> str:
    return f"[red]{value}[/red]" if value else "[green]ok[/green]"


def _ms(value: Any) -> str:
    return f"{value:.0f} ms" if isinstance(value, (int, float)) else ""


def _side_tree(parent: Tree, part: dict[str, Any]) -> None:
    dns = parent.add("[bold]DNS")
    if not part["dns"]:
        dns.add("no queries (IP address, or not measured)")
    for q in part["dns"]:
        who = q["engine"] + (f" {q['resolver']}" if q["resolver"] else "")
        node = dns.add(f"{who} {q['query_type']}: {_fail(q['failure'])} rcode={q['rcode'] or '-'} {_ms(q['duration_ms'])}"
                       + (f" from {q['responder']}" if q.get("responder") else ""))
        for a in q["answers"]:
            node.add(f"{a['answer_type']} {a['value']}" + (f" ttl={a['ttl']}" if a["ttl"] is not None else ""))
        for r in q["extra_replies"]:
            node.add(f"[yellow]another reply[/yellow] from {r['responder']} after {r['delay_ms']:.0f} ms: "
                     + (", ".join(a["value"] for a in r["answers"]) or r["rcode"] or "-"))
    tcp = parent.add("[bold]TCP")
    if not part["tcp"]:
        tcp.add("no connects")
    for c in part["tcp"]:
        tcp.add(f"{c['ip']}:{c['port']} {_fail(c['failure'])} {_ms(c['duration_ms'])}")
    tls = parent.add("[bold]TLS")
    if not part["tls"]:
        tls.add("no handshakes")
    for t in part["tls"]:
        label = f"{t['ip']}:{t['port']} SNI={t['server_name']}" + (" (benign SNI)" if t["sni_role"] == "control" else "")
        detail = f" at {t['failure_stage']}" if t["failure_stage"] else ""
        node = tls.add(f"{label} {_fail(t['failure'])}{detail} {t['tls_version'] or ''} {_ms(t['duration_ms'])}")
        for i, cert in enumerate(t["peer_certificates"][:3]):
            node.add(f"cert[{i}] subject={cert['subject']} issuer={cert['issuer']} "
                     f"sans={','.join(cert['sans'][:4])} valid {cert['not_before'][:10]}..{cert['not_after'][:10]} "
                     f"sha256={cert['sha256'][:16]}…")
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
        kind = "" if h["kind"] == "main" else f"[{h['kind']}] "
        http.add(f"{kind}hop {h['hop']} GET {h['url']} via {h['address'] or '?'}: {status} "
                 f"{_fail(h['failure']) if h['failure'] or not status else ''} {' '.join(extra)} {_ms(h['duration_ms'])}")


def measurement_tree(m: dict[str, Any]) -> Tree:
    run = m.get("run") or {}
    network = " ".join(x for x in (run.get("cc"), run.get("asn"), run.get("network_name")) if x) or "unknown network"
    root = Tree(f"[bold]{m['url']}[/bold]  measured {m['started_at'][:19].replace('T', ' ')} UTC from {network}"
                f"  ({_ms(m['duration_ms'])}, id {m['measurement_id'][:8]})")
    root.add(f"addresses tried: {', '.join(m['addresses']) or 'none'}")
    _side_tree(root.add("[bold cyan]local (this network)"), m["local"])
    cr = m.get("control_result")
    if cr is None:
        root.add("[bold cyan]control[/bold cyan]: none was asked (verdicts will be weaker)")
    elif cr["failure"]:
        root.add(f"[bold cyan]control[/bold cyan] {cr['control_url']}: [red]{cr['failure']}[/red]")
    else:
        _side_tree(root.add(f"[bold cyan]control[/bold cyan] {cr['control_url']}"), m["control"])
    return root
