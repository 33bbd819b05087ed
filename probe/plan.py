"""Everything a run needs before its first measurement: configuration, preflight checks
of the control helper and DoH, the vantage, the notice shown to the volunteer, and
the run record. Kept out of the click callbacks so it can be tested and reused."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import sqlite_utils

from . import __version__, store
from .measure import ProbeConfig
from .records import new_id, utcnow
from .vantage import Vantage, lookup_vantage

DEFAULT_DOH = "https://dns.google/dns-query"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)


class PlanError(Exception):
    """Bad input or an unusable setup: one line for the volunteer, exit code 2."""


class NothingToResume(PlanError):
    """Not an error for a scheduled job: said plainly, exit code 0."""


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '1.5h', '1d' to seconds."""
    m = _DURATION.match(text or "")
    if not m:
        raise PlanError(f"invalid duration {text!r} (use e.g. 90s, 10m, 1h)")
    value = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2).lower()]
    if value <= 0:
        raise PlanError(f"invalid duration {text!r}: must be more than zero")
    return value


def config_to_json(config: ProbeConfig) -> str:
    return json.dumps(asdict(config), sort_keys=True)


def config_from_json(text: str | None) -> ProbeConfig:
    data = json.loads(text or "{}")
    known = {f.name for f in fields(ProbeConfig)}
    kwargs = {k: v for k, v in data.items() if k in known}
    if "ports" in kwargs:
        kwargs["ports"] = tuple(kwargs["ports"])
    return ProbeConfig(**kwargs)


async def check_control(url: str, ca_file: str | None) -> None:
    """Raise PlanError when the control helper does not answer /health."""
    from .control import ControlClient, ControlUnavailable
    from .tls import make_ssl_context

    try:
        async with ControlClient(url, timeout=10, ssl_context=make_ssl_context(ca_file)) as client:
            await client.health()
    except ControlUnavailable as exc:
        raise PlanError(
            f"control helper at {url} is unreachable: {exc} (start it, fix --control, or run without --control)"
        ) from None


async def check_doh(url: str, ca_file: str | None, timeout: float = 4.0) -> str | None:
    """None when DoH works from here, else the reason it is turned off for this run."""
    from .dns import resolve_doh
    from .http import FetchOptions, new_session
    from .tls import make_ssl_context

    session = new_session({}, make_ssl_context(ca_file), FetchOptions())
    try:
        q = await resolve_doh("example.com", "A", url, session, timeout=timeout)
    finally:
        await session.close()
    return None if q.failure is None else q.failure


@dataclass
class RunPlan:
    run: dict[str, Any]
    config: ProbeConfig
    control_url: str | None
    notes: list[str] = field(default_factory=list)


def targets_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def plan_new_run(
    *,
    targets_path: Path,
    target_count: int,
    config: ProbeConfig,
    control_url: str | None,
    doh_url: str | None,
    cc: str | None,
    asn: str | None,
    lookup: bool,
    store_ip: bool,
    lookup_fn=lookup_vantage,
) -> RunPlan:
    """Preflight checks and the run record. Raises PlanError for an unusable setup."""
    notes: list[str] = []
    jobs: list = []
    if control_url:
        jobs.append(check_control(control_url, config.ca_file))
    else:
        notes.append("no control helper: everything is recorded, but verdicts will be weaker")
    doh_check = asyncio.ensure_future(check_doh(doh_url, config.ca_file)) if doh_url else None
    vantage_task = asyncio.ensure_future(lookup_fn()) if lookup and not (cc and asn) else None
    try:
        await asyncio.gather(*jobs)
    except BaseException:
        for t in (doh_check, vantage_task):
            if t is not None:
                t.cancel()
        raise
    if doh_check is not None:
        reason = await doh_check
        if reason is None:
            config.doh_url = doh_url
        else:
            config.doh_url = None
            notes.append(f"DNS-over-HTTPS control {doh_url} unreachable ({reason}); turned off for this run")
    vantage = await vantage_task if vantage_task is not None else Vantage()
    if cc or asn:
        vantage.source = "cli"
    run = {
        "run_id": new_id(),
        "started_at": utcnow(),
        "finished_at": None,
        "status": "running",
        "probe_version": __version__,
        "targets_source": str(targets_path),
        "targets_sha256": targets_digest(targets_path),
        "target_count": target_count,
        "cc": (cc or vantage.cc or None),
        "asn": _norm_asn(asn) or vantage.asn,
        "network_name": vantage.network_name if not asn else None,
        "resolvers": json.dumps(config.resolvers),
        "probe_ip": vantage.ip if store_ip else None,
        "control_url": control_url,
        "doh_url": config.doh_url,
        "config": config_to_json(config),
        "notes": json.dumps(notes),
    }
    if not run["cc"] and not run["asn"]:
        notes.append("network unknown (give --cc and --asn to label this run)")
        run["notes"] = json.dumps(notes)
    return RunPlan(run=run, config=config, control_url=control_url, notes=notes)


def _norm_asn(asn: str | None) -> str | None:
    if not asn:
        return None
    digits = asn.upper().removeprefix("AS")
    if not digits.isdigit():
        raise PlanError(f"invalid ASN {asn!r} (use e.g. AS6697)")
    return f"AS{digits}"


def notice(plan: RunPlan, count: int, db_path: Path, store_ip: bool) -> str:
    """Plain words on what this run will do, shown before it starts."""
    c = plan.config
    dns_parts = []
    if c.system_resolver:
        dns_parts.append("this computer's resolver")
    if c.resolvers:
        dns_parts.append("direct queries to " + ", ".join(c.resolvers))
    if c.doh_url:
        dns_parts.append(f"DNS-over-HTTPS at {c.doh_url}")
    if c.dns_sink:
        dns_parts.append(f"the same question to {c.dns_sink}, where no DNS server runs: an answer there means injection")
    lines = [
        f"This run measures {count} website(s) from your network, as a browser would:",
        f"  - looks each name up ({'; '.join(dns_parts) or 'no DNS'}),",
        "  - connects to each address on ports 80 and 443, does a TLS handshake and fetches the page,",
        (
            f"  - and asks the control helper at {plan.control_url} to do the same from an open network."
            if plan.control_url
            else "  - no control helper is used, so verdicts will be weaker."
        ),
        f"Results are stored in {db_path}. "
        + ("Your public IP address IS stored (--store-ip)." if store_ip else "Your public IP address is not stored."),
    ]
    lines += [f"Note: {n}" for n in plan.notes if not n.startswith("no control helper")]
    return "\n".join(lines)


def resume_plan(db: sqlite_utils.Database, run_id: str | None) -> dict[str, Any]:
    run = store.get_run(db, run_id) if run_id else store.latest_unfinished_run(db)
    if run is None:
        if run_id:
            raise PlanError(f"no run {run_id!r} in this database (see `probe show`)")
        raise NothingToResume("nothing to resume: every run in this database has finished")
    if run["status"] == "finished":
        raise PlanError(f"run {run['run_id'][:8]} has already finished")
    return run
