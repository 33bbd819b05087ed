"""`probe analyze` and `probe fingerprints test`: thin click shells."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from probe import store
from probe.analysis.fingerprints import (
    FingerprintError,
    Match,
    default_fingerprints,
    load_fingerprints,
    saved_response,
)
from probe.cli.common import DB_HELP, existing_db, fail
from probe.core.i18n import _
from probe.measure.plan import LAB_NETWORK_HELP, PlanError, parse_lab_networks


def _fingerprints(path: str | None):
    try:
        return load_fingerprints(path) if path else default_fingerprints()
    except FingerprintError as exc:
        fail(str(exc))


@click.command("analyze")
@click.option("--db", "db_path", type=click.Path(path_type=Path), default=None, help=DB_HELP)
@click.option("--run", "run_id", default=None, help="Only this run.")
@click.option("--fingerprints", "fp_path", type=click.Path(), default=None,
              help="Another fingerprint file (same columns as probe/analysis/fingerprints.csv).")
@click.option("--lab-network", multiple=True, metavar="CIDR", help=LAB_NETWORK_HELP)
@click.option("--force", is_flag=True,
              help="Derive every verdict again, even those that are current (same classifier, fingerprints and run).")
@click.option("--json", "as_json", is_flag=True, help="The counts as one JSON object on stdout, for scripts.")
def analyze_cmd(db_path: Path | None, run_id: str | None, fp_path: str | None, lab_network: tuple[str, ...],
                force: bool, as_json: bool) -> None:
    """Derive (again) the verdict of every measurement from its raw observations."""
    from probe.analysis.analyze import analyze_db
    from probe.core.verdicts import CLASSIFIER_VERSION, VERDICTS

    try:
        nets = tuple(parse_lab_networks(lab_network))
    except PlanError as exc:
        fail(str(exc))

    db_path = existing_db(db_path)
    try:
        db = store.open_db(db_path, create=False)
    except store.StoreError as exc:
        fail(str(exc))
    fps = _fingerprints(fp_path)
    summary = analyze_db(db, fingerprints=fps, run_id=run_id, lab_networks=nets, force=force)
    if as_json:
        click.echo(json.dumps({"classifier_version": CLASSIFIER_VERSION, "measurements": summary.measurements,
                               "classified": summary.classified, "current": summary.current,
                               "by_verdict": dict(summary.by_verdict), "cant_tell": dict(summary.cant_tell),
                               "low_confidence_blocked": summary.weak_blocked, "run_id": run_id}))
        return
    if summary.current:
        title = _("{n} measurements: {new} classified, {current} already current (--force derives them again); "
                  "classifier {version}").format(n=summary.measurements, new=summary.classified,
                                                 current=summary.current, version=CLASSIFIER_VERSION)
    else:
        title = _("{n} measurements classified (classifier {version})").format(
            n=summary.measurements, version=CLASSIFIER_VERSION)
    table = Table(title=title)
    table.add_column("verdict")
    table.add_column("blocked")
    table.add_column("count", justify="right")
    for verdict, n in sorted(summary.by_verdict.items(), key=lambda kv: -kv[1]):
        unclear = summary.cant_tell.get(verdict, 0)
        if n - unclear:
            table.add_row(verdict, "yes" if VERDICTS[verdict][0] else "no", str(n - unclear))
        if unclear:
            table.add_row(verdict, "can't tell", str(unclear))
    Console().print(table)


@click.group("fingerprints")
def fingerprints_group() -> None:
    """Blockpage fingerprints (probe/analysis/fingerprints.csv)."""


def _match_target(target: str, fps) -> tuple[str, list[Match]]:
    """An IP (DNS fingerprints), a saved page or HTTP response (file), or a URL (fetched)."""
    try:
        ipaddress.ip_address(target)
        return f"DNS answer {target}", fps.match_dns(target)
    except ValueError:
        pass
    path = Path(target)
    if path.exists():
        h = saved_response(path.read_bytes(), str(path))
        return f"file {path}", fps.match_http(h, label=str(path))
    if target.startswith(("http://", "https://")):
        from probe.measure.http import fetch_url  # the network, only when a URL is given

        hops = asyncio.run(fetch_url(target))
        matches: list[Match] = []
        for h in hops:
            matches += fps.match_http(h)
        last = hops[-1]
        return f"{target} ({len(hops)} hop(s), last: {last.status or last.failure})", matches
    fail(f"{target!r} is not an IP address, a file or an http(s) URL")


@fingerprints_group.command("test")
@click.argument("target")
@click.option("--fingerprints", "fp_path", type=click.Path(), default=None, help="Another fingerprint file.")
def fingerprints_test(target: str, fp_path: str | None) -> None:
    """Which fingerprints match TARGET: an IP address, a saved page or response, or a URL to fetch."""
    fps = _fingerprints(fp_path)
    what, matches = _match_target(target, fps)
    if not matches:
        click.echo(f"{what}: no fingerprint matches ({len(fps.fingerprints)} checked)")
        return
    click.echo(f"{what}: {len(matches)} match(es)")
    for x in matches:
        fp = x.fingerprint
        kind = "FALSE POSITIVE (evidence against blocking)" if fp.is_false_positive else ("blockpage" if fp.confirms else "vague")
        click.echo(f"  {fp.name} [{kind}; scope {fp.scope}; {', '.join(fp.countries) or 'any country'}] {x.where}: {x.value!r}")
        if fp.source:
            click.echo(f"      source: {fp.source}" + (f", first seen {fp.first_seen}" if fp.first_seen else ""))
