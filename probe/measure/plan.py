"""Everything a run needs before its first measurement: configuration, preflight checks
of the control helper and DoH, the vantage, the notice shown to the volunteer, and
the run record. Kept out of the click callbacks so it can be tested and reused."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import sqlite_utils

from probe import __version__, store
from probe.core import i18n, units
from probe.core.i18n import N_, _, ngettext
from probe.core.records import new_id, utcnow
from probe.measure.control import HelperInfo
from probe.measure.url import ProbeConfig
from probe.measure.vantage import Vantage, lookup_vantage

DEFAULT_DOH = "https://dns.google/dns-query"


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
            raise PlanError(_("invalid --lab-network {value!r} (use CIDR, e.g. 10.77.0.0/16)").format(value=v)) from None
    return out


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '1.5h', '1d' to seconds (``probe.core.units``), as a PlanError."""
    try:
        return units.parse_duration(text)
    except ValueError as exc:
        raise PlanError(str(exc)) from None


def config_to_json(config: ProbeConfig) -> str:
    """The configuration recorded with a run, without what must never be stored (the
    volunteer's own address: fields marked ``"stored": False``)."""
    data = asdict(config)
    for f in fields(ProbeConfig):
        if f.metadata.get("stored") is False:
            data.pop(f.name, None)
    return json.dumps(data, sort_keys=True)


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

    if not urls:
        return [], []  # nothing to ask: no trust store to load (a tenth of a second at start-up)
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
        raise PlanError(_("this network is behind a captive portal ({reason}): log in with a browser first, "
                          "or use another network, then run again; nothing was measured").format(reason=found.reason))


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
    what = _("the control helper is unreachable") if len(problems) == 1 else _("no control helper is reachable")
    return _("{what}: {problems} (start it, fix --control, or run with --no-control)").format(
        what=what, problems="; ".join(problems))


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

    def add_note(self, text: str, shown: str | None = None) -> None:
        """Something the volunteer should know about this run: kept with it in English
        (``text``, for researchers), shown now in the volunteer's language (``shown``)."""
        self.notes.append(shown or text)
        self.run["notes"] = json.dumps([*json.loads(self.run.get("notes") or "[]"), text], ensure_ascii=False)


def targets_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def plan_new_run(
    *,
    targets_path: Path,
    target_count: int,
    targets_name: str | None = None,
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
    notes: list[str] = []  # in the volunteer's language, shown now
    stored: list[str] = []  # the same in English, kept with the run for researchers

    def note(template: str, **words: Any) -> None:
        """``words`` may be callables, for words that are themselves translated."""
        with i18n.english():
            stored.append(template.format(**{k: v() if callable(v) else v for k, v in words.items()}))
        notes.append(_(template).format(**{k: v() if callable(v) else v for k, v in words.items()}))

    doh_check = asyncio.ensure_future(check_doh(doh_url, config.ca_file)) if doh_url else None
    vantage_task = asyncio.ensure_future(lookup_fn()) if lookup and not (cc and asn) else None
    controls: list[HelperInfo] = []
    try:
        checks: list[Coroutine[Any, Any, Any]] = [check_controls(control_urls, config.ca_file)]  # then refuse_portal's None
        if portal_check:  # at the same time, and it speaks first: behind a portal the helper fails too
            checks.append(refuse_portal(config))
        (controls, problems), *_others = await asyncio.gather(*checks)
        if control_urls and not controls:
            raise PlanError(unreachable_message(problems))
        for p in problems:
            note(N_("control helper skipped: {problem}"), problem=p)
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
                note(N_("this link is slow (about {speed} kB/s from the control helper): a large page still "
                        "arriving when its deadline comes is reported as slow, not blocked"), speed=f"{speed / 1000:.0f}")
        skew = controls[0].clock_skew_s
        if skew is not None and abs(skew) > CLOCK_TOLERANCE_S:
            config.clock_skew_s = skew
            note(N_("this computer's clock is {duration} ahead of the control helper's: certificates are judged "
                    "at the helper's time; set the clock right for better measurements") if skew > 0 else
                 N_("this computer's clock is {duration} behind the control helper's: certificates are judged "
                    "at the helper's time; set the clock right for better measurements"),
                 duration=lambda: _duration(abs(skew)))
    if doh_check is not None:
        reason = await doh_check
        if reason is None:
            config.doh_url = doh_url
        else:
            config.doh_url = None
            note(N_("DNS-over-HTTPS control {url} unreachable ({reason}); turned off for this run"), url=doh_url,
                 reason=reason)
    vantage = await vantage_task if vantage_task is not None else Vantage()
    if cc or asn:
        vantage.source = "cli"
    # Pages that echo the volunteer's address get a placeholder instead, unless they
    # chose to store it (then the run record holds it anyway).
    config.scrub_own_address = not store_ip
    config.own_addresses = [vantage.ip] if vantage.ip and not store_ip else []
    config.controls = [c.url for c in controls]
    control_url = controls[0].url if controls else None
    run = {
        "run_id": new_id(),
        "started_at": utcnow(),
        "finished_at": None,
        "status": "running",
        "probe_version": __version__,
        "targets_source": targets_name or str(targets_path),
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
        "notes": "[]",
    }
    if not run["cc"] and not run["asn"]:
        note(N_("network unknown (give --cc and --asn to label this run)"))
    run["notes"] = json.dumps(stored, ensure_ascii=False)
    return RunPlan(run=run, config=config, control_url=control_url, notes=notes, controls=controls,
                   control_source=control_source)


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        n = round(seconds / 86400)
        return ngettext("{n} day", "{n} days", n).format(n=n)
    if seconds >= 2 * 3600:
        n = round(seconds / 3600)
        return ngettext("{n} hour", "{n} hours", n).format(n=n)
    if seconds >= 2 * 60:
        n = round(seconds / 60)
        return ngettext("{n} minute", "{n} minutes", n).format(n=n)
    n = round(seconds)
    return ngettext("{n} second", "{n} seconds", n).format(n=n)


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
    if config.scrub_own_address and vantage.ip and vantage.ip not in config.own_addresses:
        config.own_addresses.append(vantage.ip)  # the old one too: a page may still show it
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


async def recall_own_address(config: ProbeConfig, lookup_fn=lookup_vantage) -> None:
    """On --resume: the volunteer's address is never stored, so a run that replaces it
    in pages looks it up again (when lookups are allowed) before measuring the rest."""
    if config.scrub_own_address and config.vantage_lookup and not config.own_addresses:
        vantage = await lookup_fn()
        if vantage.ip:
            config.own_addresses = [vantage.ip]


def _norm_asn(asn: str | None) -> str | None:
    if not asn:
        return None
    digits = asn.upper().removeprefix("AS")
    if not digits.isdigit():
        raise PlanError(_("invalid ASN {asn!r} (use e.g. AS6697)").format(asn=asn))
    return f"AS{digits}"


NO_CONTROL_MEANING = N_(
    "no control helper: everything is recorded, but a site that fails here in a way a "
    "site that is down would also fail (refused, timed out, bad certificate, no such "
    "name) is reported as \"can't tell\", not as blocked; blockpages and injected DNS "
    "answers are still recognised. To get a control: probe config set control URL, or "
    "--control URL (ask the maintainers of your target list for one)"
)


def network_difference(previous: dict[str, Any] | None, run: dict[str, Any]) -> list[str]:
    """What tells this run's network from the last run's in the same database, in words
    (empty when nothing does, or nothing is known): a different ASN or country (a VPN,
    mobile data instead of home broadband), else other resolvers of this computer's own
    configuration. Why: a volunteer's results from two networks must not be read as one
    network's, and a run through a VPN measures the VPN's network, not theirs."""
    if previous is None:
        return []
    found = []
    for key, label in (("asn", N_("network {old} -> {new}")), ("cc", N_("country {old} -> {new}"))):
        a, b = previous.get(key), run.get(key)
        if a and b and a != b:
            found.append(_(label).format(old=a, new=b))
    if not found and _from_system(previous) and _from_system(run):
        old, new = _json_list(previous.get("resolvers")), _json_list(run.get("resolvers"))
        if old and new and set(old) != set(new):
            found.append(_("resolvers {old} -> {new}").format(old=", ".join(old), new=", ".join(new)))
    return found


def _json_list(text: str | None) -> list[str]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _from_system(run: dict[str, Any]) -> bool:
    try:
        return bool(json.loads(run.get("config") or "{}").get("resolvers_from_system", True))
    except (ValueError, AttributeError):
        return False


def notice(plan: RunPlan, count: int, db_path: Path | str, store_ip: bool, list_name: str | None = None) -> str:
    """Plain words on what this run will do, shown before it starts."""
    c = plan.config
    dns_parts = []
    if c.system_resolver:
        dns_parts.append(_("this computer's resolver"))
    if c.resolvers:
        dns_parts.append(_("direct queries to {resolvers}").format(resolvers=", ".join(c.resolvers)))
    if c.doh_url:
        dns_parts.append(_("DNS-over-HTTPS at {url}").format(url=c.doh_url))
    if c.dns_sink:
        dns_parts.append(_("the same question to {sink}, where no DNS server runs: an answer there means "
                           "injection").format(sink=c.dns_sink))
    if plan.controls:
        first = plan.controls[0]
        via = f" ({plan.control_source})" if plan.control_source else ""
        kind = _("OONI's test-helper protocol") if first.protocol == "ooni" else f"{first.grant.describe()}"
        control_line = "  - " + _("and asks the control helper at {url}{via} to do the same from an open "
                                  "network ({kind}).").format(url=first.url, via=via, kind=kind)
        if len(plan.controls) > 1:
            control_line += " " + _("If it stops answering: {others}.").format(
                others=", ".join(x.url for x in plan.controls[1:]))
    else:
        control_line = "  - " + _(NO_CONTROL_MEANING) + "."
    lines = [
        ngettext("This run measures {n} website from your network ({list}), as a browser would:",
                 "This run measures {n} websites from your network ({list}), as a browser would:",
                 count).format(n=count, list=list_name or plan.run.get("targets_source")),
        "  - " + _("looks each name up ({how}),").format(how="; ".join(dns_parts) or _("no DNS")),
        "  - " + _("connects to each address on ports 80 and 443, does a TLS handshake and fetches the page,"),
        control_line,
        _("Results are stored in {path}.").format(path=db_path) + " "
        + (_("Your public IP address IS stored (--store-ip).") if store_ip
           else _("Your public IP address is not stored.")),
    ]
    lines += [_("Note: {note}").format(note=n) for n in plan.notes]
    return "\n".join(lines)


def resume_plan(db: sqlite_utils.Database, run_id: str | None) -> dict[str, Any]:
    run = store.get_run(db, run_id) if run_id else store.latest_unfinished_run(db)
    if run is None:
        if run_id:
            raise PlanError(_("no run {run!r} in this database (see `probe show`)").format(run=run_id))
        raise NothingToResume(_("nothing to resume: every run in this database has finished"))
    if run["status"] == "finished":
        raise PlanError(_("run {run} has already finished").format(run=run["run_id"][:8]))
    return run
