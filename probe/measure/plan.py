"""Everything a run needs before its first measurement: configuration, preflight checks
of the control helper and DoH, the vantage, the notice shown to the volunteer, and
the run record. Kept out of the click callbacks so it can be tested and reused."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import sqlite_utils

from probe import __version__, store
from probe.core.records import new_id, utcnow
from probe.measure.control import HelperInfo
from probe.measure.url import ProbeConfig
from probe.measure.vantage import Vantage, lookup_vantage

DEFAULT_DOH = "https://dns.google/dns-query"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)


class PlanError(Exception):
    """Bad input or an unusable setup: one line for the volunteer, exit code 2."""


class NothingToResume(PlanError):
    """Not an error for a scheduled job: said plainly, exit code 0."""


LAB_NETWORK_HELP = (
    "Censorship labs only (as OONI's own QA runs them): a private range (CIDR) that stands for the open "
    "internet, so that answers in it are not called bogons; repeatable, e.g. --lab-network 10.77.0.0/16."
)


def parse_lab_networks(values: tuple[str, ...] | list[str]) -> list[str]:
    """CIDRs as given to --lab-network, normalised; PlanError names the bad one."""
    import ipaddress

    out = []
    for v in values:
        try:
            out.append(str(ipaddress.ip_network(v, strict=False)))
        except ValueError:
            raise PlanError(f"invalid --lab-network {v!r} (use CIDR, e.g. 10.77.0.0/16)") from None
    return out


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


# Beyond this, certificate validity is judged at the control's time (with a warning):
# a few minutes of drift is normal, a wrong date turns every certificate "expired".
CLOCK_TOLERANCE_S = 300.0


async def check_controls(urls: list[str], ca_file: str | None, timeout: float = 15.0
                         ) -> tuple[list[HelperInfo], list[str]]:
    """Ask every helper, in order, what it is and grants: (those that answered, in
    order; one line per helper that did not)."""
    from probe.measure.control import ControlClient, ControlUnavailable
    from probe.measure.tls import make_ssl_context

    ctx = make_ssl_context(ca_file)

    async def one(url: str) -> HelperInfo | str:
        try:
            async with ControlClient(url, timeout=timeout, ssl_context=ctx) as client:
                return await client.health()
        except ControlUnavailable as exc:
            return str(exc)

    results = await asyncio.gather(*(one(u) for u in urls))
    working = [r for r in results if not isinstance(r, str)]
    problems = [r for r in results if isinstance(r, str)]
    return working, problems


async def refuse_portal(config: ProbeConfig) -> None:
    """PlanError when this network is behind a captive portal: measured from behind
    one, every site would look blocked (by the portal, not a censor)."""
    from probe.measure.portal import check_portal

    found = await check_portal(config)
    if found.portal:
        raise PlanError(f"this network is behind a captive portal ({found.reason}): log in with a browser first, "
                        "or use another network, then run again; nothing was measured")


# Below this the notice calls the link slow (2 MiB, the body cap, takes over 10 s).
SLOW_LINK_BYTES_PER_S = 200_000


async def measure_link(info: HelperInfo, ca_file: str | None) -> float | None:
    """The link's download speed from the chosen helper (bytes/s), or None."""
    from probe.measure.control import ControlClient
    from probe.measure.tls import make_ssl_context

    async with ControlClient(info.url, timeout=15, ssl_context=make_ssl_context(ca_file)) as client:
        return await client.link_speed()


def unreachable_message(problems: list[str]) -> str:
    """One line for "no helper answered" (each problem is "URL: reason")."""
    what = "the control helper is unreachable" if len(problems) == 1 else "no control helper is reachable"
    return f"{what}: {'; '.join(problems)} (start it, fix --control, or run with --no-control)"


async def check_doh(url: str, ca_file: str | None, timeout: float = 4.0) -> str | None:
    """None when DoH works from here, else the reason it is turned off for this run."""
    from probe.measure.dns import resolve_doh
    from probe.measure.http import FetchOptions, new_session
    from probe.measure.tls import make_ssl_context

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
    # the helpers that answered, in the order they will be used (first: the control)
    controls: list[HelperInfo] = field(default_factory=list)
    control_source: str | None = None  # where the control came from: --control, the list, config


def targets_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def plan_new_run(
    *,
    targets_path: Path,
    target_count: int,
    config: ProbeConfig,
    control_urls: list[str],
    doh_url: str | None,
    cc: str | None,
    asn: str | None,
    lookup: bool,
    store_ip: bool,
    control_source: str | None = None,
    portal_check: bool = True,
    lookup_fn=lookup_vantage,
) -> RunPlan:
    """Preflight checks and the run record. Raises PlanError for an unusable setup."""
    notes: list[str] = []
    doh_check = asyncio.ensure_future(check_doh(doh_url, config.ca_file)) if doh_url else None
    vantage_task = asyncio.ensure_future(lookup_fn()) if lookup and not (cc and asn) else None
    controls: list[HelperInfo] = []
    try:
        checks: list[Coroutine[Any, Any, Any]] = [check_controls(control_urls, config.ca_file)]  # then refuse_portal's None
        if portal_check:  # at the same time, and it speaks first: behind a portal the helper fails too
            checks.append(refuse_portal(config))
        (controls, problems), *_ = await asyncio.gather(*checks)
        if control_urls and not controls:
            raise PlanError(unreachable_message(problems))
        notes += [f"control helper skipped: {p}" for p in problems]
    except BaseException:
        for t in (doh_check, vantage_task):
            if t is not None:
                t.cancel()
        raise
    if controls:
        speed = await measure_link(controls[0], config.ca_file)
        if speed is not None:
            config.link_bytes_per_s = round(speed, 1)
            if speed < SLOW_LINK_BYTES_PER_S:
                notes.append(f"this link is slow (about {speed / 1000:.0f} kB/s from the control helper): a large "
                             "page still arriving when its deadline comes is reported as slow, not blocked")
        skew = controls[0].clock_skew_s
        if skew is not None and abs(skew) > CLOCK_TOLERANCE_S:
            config.clock_skew_s = skew
            notes.append(f"this computer's clock is {_duration(abs(skew))} {'ahead of' if skew > 0 else 'behind'} "
                         "the control helper's: certificates are judged at the helper's time; set the clock "
                         "right for better measurements")
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
    config.controls = [c.url for c in controls]
    control_url = controls[0].url if controls else None
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
    return RunPlan(run=run, config=config, control_url=control_url, notes=notes, controls=controls,
                   control_source=control_source)


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} seconds"


async def next_run_after_change(old: dict[str, Any], config: ProbeConfig, what: list[str],
                                lookup_fn=lookup_vantage) -> dict[str, Any]:
    """The run that continues ``old`` on the network this computer has moved to: the
    same list and configuration, this computer's resolvers read again, the country and
    network looked up again when allowed (a --cc/--asn given for the first network is
    not carried over)."""
    if config.resolvers_from_system:
        from probe.measure.dns import system_resolvers

        config.resolvers = system_resolvers()
    vantage = await lookup_fn() if config.vantage_lookup else Vantage()
    notes = [f"continues run {old['run_id'][:8]}: this computer's network changed during it "
             f"({', '.join(what) or 'route'}); what was in flight then is measured again here"]
    if not (vantage.cc or vantage.asn):
        notes.append("country and network of this run unknown (those of the first network are not carried over)")
    return {
        **old,
        "run_id": new_id(),
        "started_at": utcnow(),
        "finished_at": None,
        "status": "running",
        "cc": vantage.cc,
        "asn": vantage.asn,
        "network_name": vantage.network_name,
        "resolvers": json.dumps(config.resolvers),
        "probe_ip": vantage.ip if old.get("probe_ip") else None,
        "config": config_to_json(config),
        "notes": json.dumps(notes),
    }


def _norm_asn(asn: str | None) -> str | None:
    if not asn:
        return None
    digits = asn.upper().removeprefix("AS")
    if not digits.isdigit():
        raise PlanError(f"invalid ASN {asn!r} (use e.g. AS6697)")
    return f"AS{digits}"


NO_CONTROL_MEANING = (
    "no control helper: everything is recorded, but a site that fails here in a way a "
    "site that is down would also fail (refused, timed out, bad certificate, no such "
    "name) is reported as \"can't tell\", not as blocked; blockpages and injected DNS "
    "answers are still recognised. To get a control: probe config set control URL, or "
    "--control URL (ask the maintainers of your target list for one)"
)


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
    if plan.controls:
        first = plan.controls[0]
        via = f" ({plan.control_source})" if plan.control_source else ""
        kind = "OONI's test-helper protocol" if first.protocol == "ooni" else f"{first.grant.describe()}"
        control_line = (f"  - and asks the control helper at {first.url}{via} to do the same from an open "
                        f"network ({kind}).")
        if len(plan.controls) > 1:
            control_line += " If it stops answering: " + ", then ".join(x.url for x in plan.controls[1:]) + "."
    else:
        control_line = "  - " + NO_CONTROL_MEANING + "."
    lines = [
        f"This run measures {count} website(s) from your network, as a browser would:",
        f"  - looks each name up ({'; '.join(dns_parts) or 'no DNS'}),",
        "  - connects to each address on ports 80 and 443, does a TLS handshake and fetches the page,",
        control_line,
        f"Results are stored in {db_path}. "
        + ("Your public IP address IS stored (--store-ip)." if store_ip else "Your public IP address is not stored."),
    ]
    lines += [f"Note: {n}" for n in plan.notes]
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
