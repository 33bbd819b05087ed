"""`probe run`: plan a run (or resume one), measure every target, store each
measurement as it finishes, then classify and summarise.

Ctrl-C stops cleanly (exit 130) and says how to resume.
"""


from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from probe import store
from probe.cli.common import (
    DB_HELP,
    EXIT_INTERRUPTED,
    config_value,
    db_flag,
    default_targets,
    fail,
    open_db_or_fail,
    resolve_db,
    resolver_option,
    say,
    shown_path,
)
from probe.cli.consent import ensure_consent
from probe.cli.targets import ALLOW_PRIVATE_HELP, refuse_risky_targets
from probe.core import i18n, units, userconfig
from probe.core.addresses import format_hostport, is_ip, split_hostport
from probe.core.i18n import N_, _, ngettext
from probe.core.records import utcnow
from probe.measure.control import HelperInfo
from probe.measure.dns import system_resolvers
from probe.measure.plan import (
    DEFAULT_DOH,
    LAB_NETWORK_HELP,
    NothingToResume,
    PlanError,
    config_from_json,
    network_difference,
    notice,
    parse_duration,
    parse_lab_networks,
    plan_new_run,
    recall_own_address,
    resume_plan,
)
from probe.measure.url import ProbeConfig
from probe.targets.lists import TargetError, filter_targets, load_targets


@click.command()
@click.option("--targets", "targets_path", type=click.Path(path_type=Path), default=None,
              help="Target list: one URL per line (optional category and note), or a Citizen Lab CSV. "
                   "[default: `probe config set list`, else the list that comes with the probe]")
@click.option("--db", "db_path", type=click.Path(path_type=Path), default=None, help=DB_HELP)
@click.option("--control", "control_urls", multiple=True, metavar="URL",
              help="Control helper (`probe control serve`, or ooni+https://HOST for an OONI test helper) on an "
                   "uncensored network; repeat to name fallbacks, used in order. [default: the list's "
                   "`# control:` header, else `probe config set control`]")
@click.option("--no-portal-check", is_flag=True,
              help="Do not check first for a captive portal (the check fetches the three portal-detection pages "
                   "your operating system fetches too, and resolves two names that cannot exist).")
@click.option("--no-control", is_flag=True,
              help="Measure without a control helper: failures a site that is down would also show are then "
                   "reported as \"can't tell\".")
@click.option("--concurrency", type=click.IntRange(1, 256), default=None,
              help="URLs measured at the same time. [default: `probe config set concurrency`, else 8]")
@click.option("--max-runtime", default=None, metavar="DURATION",
              help="Stop after this long (e.g. 10m); URLs in flight are left for --resume. "
                   "[default: `probe config set max-runtime`, else none]")
@click.option("--max-bytes", default=None, metavar="SIZE",
              help="Stop when the run has downloaded this much (e.g. 200MB): a data cap for metered links; URLs in "
                   "flight are left for --resume. [default: `probe config set max-bytes`, else none]")
@click.option("--yes", "yes", is_flag=True,
              help="Accept the notice of what a run does and its risks without being asked (for automation; "
                   "`probe notice` shows it).")
@click.option("--resume", is_flag=True, help="Continue the last interrupted run with the targets it has not measured.")
@click.option("--run-id", default=None, help="With --resume: the run to continue (default: the latest unfinished).")
@click.option("--list", "list_only", is_flag=True, help="Show what would be measured, and stop.")
@click.option("--exclude-category", multiple=True, metavar="CODE",
              help="Skip targets of this Citizen Lab category (repeatable), e.g. --exclude-category PORN.")
@click.option("--skip-invalid", is_flag=True, help="Skip bad lines of the target list with a warning instead of stopping.")
@click.option("--resolver", multiple=True, metavar="IP[:PORT]", callback=resolver_option,
              help="Resolver for the direct UDP queries (repeatable). [default: those of /etc/resolv.conf]")
@click.option("--system-resolver/--no-system-resolver", default=True, show_default=True,
              help="Also resolve with getaddrinfo, as a browser does. Turn off only in tests and labs.")
@click.option("--doh", "doh_url", default=DEFAULT_DOH, show_default=True, metavar="URL",
              help="DNS-over-HTTPS resolver used as a further control; turned off for the run when unreachable.")
@click.option("--no-doh", is_flag=True, help="Do not use DNS-over-HTTPS.")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Extra CA certificates to trust (PEM), besides the system store and SSL_CERT_FILE.")
@click.option("--cc", default=None, help="Country code of this network, e.g. BY (else looked up when possible).")
@click.option("--asn", default=None, help="ASN of this network, e.g. AS6697 (else looked up when possible).")
@click.option("--no-vantage-lookup", is_flag=True, help="Do not look up this network's country and ASN.")
@click.option("--store-ip", is_flag=True, help="Store your public IP address with the run (off by default, for your safety).")
@click.option("--json", "json_logs", is_flag=True, help="JSON lines on stdout, one event per line, for automation.")
@click.option("--dns-wait", type=click.FloatRange(0, 10), default=1.0, show_default=True, metavar="SECONDS",
              help="Listen this long for injected DNS replies (a second reply to the same query, a reply from "
                   "the sink); overlaps the other steps, 0 turns both off.")
@click.option("--dns-sink", default=None, metavar="IP",
              help="An address that runs no DNS server; each name is also asked there, and any answer "
                   "is evidence of injection. [default: the control helper's address, else 192.0.2.53]")
@click.option("--no-dns-sink", is_flag=True, help="Do not send the injection-test query.")
@click.option("--lab-network", multiple=True, metavar="CIDR", help=LAB_NETWORK_HELP)
@click.option("--allow-private-targets", is_flag=True, help=ALLOW_PRIVATE_HELP)
@click.option("--offline", is_flag=True,
              help="Send nothing beyond the measurements themselves: no control helper, no country/ASN lookup, "
                   "no DNS-over-HTTPS, no upload to a collector.")
@click.option("--no-upload", is_flag=True, help="Do not upload to the configured collector after this run.")
@click.option("--deep", is_flag=True,
              help="Examine each blocked site further: what triggers the block, whether the interfering packets "
                   "were injected, on which hop the censor sits (more visible to a censor; packets need root).")
@click.option("--trigger-address", default=None, metavar="IP",
              help="With --deep: a harmless address to send the site's name to (default: the control helper's).")
@click.option("--timeout-scale", type=click.FloatRange(0.05, 20), default=1.0, show_default=True,
              help="Multiply every network timeout (e.g. 2 on a slow mobile link).")
def run(
    targets_path: Path | None,
    db_path: Path | None,
    control_urls: tuple[str, ...],
    no_portal_check: bool,
    no_control: bool,
    concurrency: int | None,
    max_runtime: str | None,
    max_bytes: str | None,
    yes: bool,
    resume: bool,
    run_id: str | None,
    list_only: bool,
    exclude_category: tuple[str, ...],
    skip_invalid: bool,
    resolver: list[str],
    system_resolver: bool,
    doh_url: str,
    no_doh: bool,
    ca_file: str | None,
    cc: str | None,
    asn: str | None,
    no_vantage_lookup: bool,
    store_ip: bool,
    json_logs: bool,
    dns_wait: float,
    dns_sink: str | None,
    no_dns_sink: bool,
    lab_network: tuple[str, ...],
    timeout_scale: float,
    allow_private_targets: bool,
    offline: bool,
    no_upload: bool,
    deep: bool = False,
    trigger_address: str | None = None,
) -> None:
    """Measure every target: DNS, TCP, TLS and HTTP, locally and from the control."""
    started = time.monotonic()
    since = utcnow()  # --deep examines the runs this command makes
    if trigger_address is not None and not is_ip(trigger_address):
        fail(_("--trigger-address takes an IP address, not {value!r}").format(value=trigger_address))
    if offline:
        if control_urls:
            fail(_("--control and --offline contradict each other"))
        no_control = no_vantage_lookup = no_doh = no_upload = True
    limits = _limits(concurrency, max_runtime, max_bytes)
    # --max-runtime counts from now: loading the list and the checks before measuring
    # are part of the time a volunteer (or a schedule) gave the run.
    limits.deadline = started + limits.runtime if limits.runtime else None
    db_path = resolve_db(db_path)
    if no_control and control_urls:
        fail(_("--control and --no-control contradict each other"))
    if resume:
        if targets_path is not None or list_only:
            fail(_("--resume continues a stored run; it takes no --targets or --list"))
        ensure_consent(yes, db_path, json_logs)
        if deep:
            from probe.cli.deep import ensure_deep_consent

            ensure_deep_consent(yes)
        _resume(db_path, run_id, list(control_urls), no_control, limits, json_logs, no_portal_check,
                after=_afterwards(db_path, yes, json_logs, no_upload, deep, since, trigger_address,
                                  list(control_urls), ProbeConfig()))
        return

    if targets_path is not None:
        path, list_name = targets_path, shown_path(targets_path)
    else:
        path, list_name = default_targets()
    with i18n.english():  # how the run record names the list: the same in every language
        stored_name = list_name if targets_path is not None else default_targets()[1]
    warnings: list[str] = []
    try:
        targets = load_targets(path, skip_invalid=skip_invalid, warn=warnings.append)
    except TargetError as exc:
        fail(str(exc))
    for w in warnings:
        say(_("warning: {message}").format(message=w), level=-1)
    targets = filter_targets(targets, exclude_category)
    refuse_risky_targets(targets, _networks(lab_network), allow_private_targets, path, listing=list_only)
    if list_only:
        _print_list(targets, json_logs)
        return
    if not targets:
        fail(_("{list}: no targets to measure").format(list=list_name)
             + (_(" after --exclude-category") if exclude_category else ""))
    ensure_consent(yes, db_path, json_logs)
    if deep:
        from probe.cli.deep import ensure_deep_consent

        ensure_deep_consent(yes)

    scale = timeout_scale
    base = ProbeConfig()
    config = ProbeConfig(
        dns_timeout=base.dns_timeout * scale,
        tcp_timeout=base.tcp_timeout * scale,
        tls_timeout=base.tls_timeout * scale,
        http_timeout=base.http_timeout * scale,
        control_timeout=base.control_timeout * scale,
        resolvers=resolver or system_resolvers(),
        resolvers_from_system=not resolver,
        vantage_lookup=not no_vantage_lookup,
        system_resolver=system_resolver,
        dns_late_window=dns_wait,
        ca_file=ca_file,
        lab_networks=_networks(lab_network),
    )
    controls, source = _control_sources(control_urls, no_control, path)
    if not no_dns_sink:
        config.dns_sink = _sink_address(dns_sink, controls[0] if controls else None)
    db = open_db_or_fail(db_path)
    lock = _hold_run_lock(db_path)  # noqa: F841 - held until the command ends
    try:
        plan = asyncio.run(
            plan_new_run(
                targets_path=path,
                targets_name=stored_name,
                target_count=len(targets),
                config=config,
                control_urls=controls,
                control_source=source,
                portal_check=not no_portal_check,
                doh_url=None if no_doh else doh_url,
                cc=cc,
                asn=asn,
                lookup=not no_vantage_lookup,
                store_ip=store_ip,
            )
        )
    except PlanError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail(_("stopped before the run started"), EXIT_INTERRUPTED)
    previous = store.list_runs(db, limit=1)
    with i18n.english():  # what is kept with the run, and told to scripts, is English
        moved = network_difference(previous[0] if previous else None, plan.run)
    if moved:
        run_words = {"run": previous[0]["run_id"][:8]}
        plan.add_note(NETWORK_MOVED.format(what="; ".join(moved), **run_words),
                      _(NETWORK_MOVED).format(what="; ".join(network_difference(previous[0], plan.run)), **run_words))
    text = notice(plan, len(targets), shown_path(db_path), store_ip, list_name)
    if json_logs:
        click.echo(json.dumps({"event": "notice", "text": text, "run_id": plan.run["run_id"],
                               "network_changed_since_last_run": moved or None}, ensure_ascii=False))
    else:
        say(text)
        say(_("results go to: {path}").format(path=shown_path(db_path)), level=-1)
        if not no_upload and config_value("collector"):
            say(_("when the run ends, its results are uploaded to {collector} (--no-upload: not this time)").format(
                collector=config_value("collector")))
    store.create_run(db, plan.run, (store.RunTarget(t.url, t.category, t.note) for t in targets))
    _execute(db, db_path, plan.run, plan.config, plan.controls, limits, json_logs,
             after=_afterwards(db_path, yes, json_logs, no_upload, deep, since, trigger_address,
                               [c.url for c in plan.controls], plan.config))


def _afterwards(db_path: Path, yes: bool, json_logs: bool, no_upload: bool, deep: bool, since: str,
                trigger_address: str | None, controls: list[str], config: ProbeConfig) -> Callable[[], None]:
    """What a finished run does next, in order: the deep measurement, then the upload."""
    steps: list[Callable[[], None]] = []
    if deep:
        from probe.cli.deep import deep_step

        steps.append(deep_step(db_path, since, trigger_address, controls, config.tls_timeout,
                               config.dns_late_window))
    if not no_upload:
        steps.append(_uploader(db_path, yes, json_logs))

    def after() -> None:
        for step in steps:
            step()
    return after


def _uploader(db_path: Path, yes: bool, json_logs: bool) -> Callable[[], None]:
    """What a run does when it has finished: upload to the configured collector, if
    any, and if the volunteer agreed (never asked here; probe.cli.upload)."""
    def after() -> None:
        if json_logs:
            return  # automation uploads with `probe upload`, whose output it can read
        from probe.cli.upload import upload_after_run

        upload_after_run(db_path, yes)
    return after


NETWORK_MOVED = N_("this network is not the one of the last run ({run}): {what}. A VPN, or another connection? "
                   "Reports keep the two networks apart.")


@dataclass
class Limits:
    """How much a run may take: sites at once, time, data (flags, else the config file)."""

    concurrency: int = 8
    runtime: float | None = None
    max_bytes: int | None = None
    deadline: float | None = None  # monotonic time, from the command's start


def _limits(concurrency: int | None, max_runtime: str | None, max_bytes: str | None) -> Limits:
    def configured(key: str) -> str | None:
        try:
            return userconfig.value(key)
        except userconfig.ConfigError as exc:
            fail(exc)

    limits = Limits()
    configured_concurrency = configured("concurrency")
    if concurrency is None and configured_concurrency:
        try:  # checked by `probe config set`, but the file can be edited by hand
            concurrency = int(userconfig.check_value("concurrency", configured_concurrency))
        except userconfig.ConfigError as exc:
            fail(_("{path}: {problem}").format(path=shown_path(userconfig.config_path()), problem=exc))
    limits.concurrency = concurrency or 8
    runtime_text = max_runtime or configured("max-runtime")
    limits.runtime = parse_or_fail(runtime_text)
    size_text = max_bytes or configured("max-bytes")
    if size_text:
        try:
            limits.max_bytes = units.parse_size(size_text)
        except ValueError as exc:
            fail(exc)
    return limits


def _control_sources(cli: tuple[str, ...], no_control: bool, targets: Path) -> tuple[list[str], str | None]:
    """The control helpers to use, and where they came from: --control (in order), else
    the target list's `# control:` header, else the user's config file."""
    from probe.core.userconfig import ConfigError, check_control_url, config_path, get
    from probe.targets.lists import read_control_header

    if no_control:
        return [], None
    try:
        if cli:
            return list(dict.fromkeys(check_control_url(u) for u in cli)), "--control"
        try:
            header = read_control_header(targets)
        except TargetError as exc:
            fail(str(exc))
        if header:
            return header, f"named by {targets}"
        configured = get("control")
        if configured:
            return configured, f"from {config_path()}"
    except ConfigError as exc:
        fail(str(exc))
    return [], None


def _networks(values: tuple[str, ...]) -> list[str]:
    try:
        return parse_lab_networks(values)
    except PlanError as exc:
        fail(str(exc))


# RFC 5737 TEST-NET-1: documentation space, where no host runs a resolver. The sink
# query goes there when there is no control helper: an answer is injected on the path.
NO_CONTROL_SINK = "192.0.2.53:53"


def _sink_address(dns_sink: str | None, control_url: str | None) -> str | None:
    """--dns-sink, else the control helper's address when it is an IP or resolves, else
    a documentation address (so that injection is seen without a helper too)."""
    import socket

    from yarl import URL

    from probe.measure.control import split_control_url

    if dns_sink:
        host, port = split_hostport(dns_sink)
        if not is_ip(host):
            fail(_("invalid --dns-sink {value!r} (use an IP address)").format(value=dns_sink))
        return format_hostport(host, port)
    if not control_url:
        return NO_CONTROL_SINK
    host = (URL(split_control_url(control_url)[1]).host or "").strip("[]")
    if not host:
        return None
    if is_ip(host):
        return format_hostport(host, 53)
    try:
        infos = socket.getaddrinfo(host, 53, type=socket.SOCK_DGRAM)
    except OSError:
        return None
    return format_hostport(str(infos[0][4][0]), 53) if infos else None


def _hold_run_lock(db_path: Path) -> contextlib.ExitStack:
    """The database's run lock, held as long as the returned stack is referenced (the
    whole command): a second run on the same database stops at once, naming the first."""
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(store.run_lock(db_path))
    except store.StoreError as exc:
        fail(str(exc))
    return stack


def _time_left(deadline: float | None) -> float | None:
    """Seconds to the --max-runtime deadline (a moment at least, so that a run whose
    time went into loading stops at once, saying what is left)."""
    return None if deadline is None else max(0.001, deadline - time.monotonic())


def _storage_stopped(db, summary, resume_hint: str) -> None:
    """The database refused a write: stop in one line with what is safe, what is left,
    and (for a full disk) how much room to make before resuming."""
    stored = _("{measured} measured in this run are stored and safe, {left} targets are left").format(
        measured=summary.measured, left=summary.not_measured)
    if summary.disk_full:
        need = store.space_needed(db, summary.not_measured)
        fail(_("{error}: {stored}; free about {size} there, then: {command}").format(
            error=summary.storage_error, stored=stored, size=units.format_size(max(need, 1_000_000)), command=resume_hint))
    fail(_("{error}: {stored}; then: {command}").format(error=summary.storage_error, stored=stored, command=resume_hint))


def parse_or_fail(max_runtime: str | None) -> float | None:
    if max_runtime is None:
        return None
    try:
        return parse_duration(max_runtime)
    except PlanError as exc:
        fail(str(exc))


def _print_list(targets, json_logs: bool) -> None:
    if json_logs:
        for t in targets:
            click.echo(json.dumps({"url": t.url, "category": t.category, "note": t.note}, ensure_ascii=False))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=ngettext("{n} target would be measured", "{n} targets would be measured",
                                 len(targets)).format(n=len(targets)))
    table.add_column("#", justify="right")
    table.add_column(_("url"))
    table.add_column(_("category"))
    table.add_column(_("note"))
    for i, t in enumerate(targets, 1):
        # Text, not markup: a list's URL or note may hold "[/bold]"
        table.add_row(str(i), Text(t.url), Text(t.category or ""), Text(t.note or ""))
    Console().print(table)


def _resume(db_path: Path, run_id: str | None, control_urls: list[str], no_control: bool, limits: Limits,
            json_logs: bool, no_portal_check: bool = False, after: Callable[[], None] | None = None) -> None:
    if not db_path.exists():
        fail(_("{path}: no such database; nothing to resume").format(path=shown_path(db_path)))
    db = open_db_or_fail(db_path, create=False)
    lock = _hold_run_lock(db_path)  # noqa: F841 - held until the command ends
    try:
        run_row = resume_plan(db, run_id)
    except NothingToResume as exc:
        click.echo(str(exc), err=True)
        return
    except PlanError as exc:
        fail(str(exc))
    config = config_from_json(run_row["config"])
    if not no_portal_check:
        from probe.measure.plan import refuse_portal

        try:
            asyncio.run(refuse_portal(config))
        except PlanError as exc:
            fail(str(exc))
    asyncio.run(recall_own_address(config))  # never stored: to keep it out of the pages stored from now on
    urls = [] if no_control else (control_urls or config.controls
                                  or ([run_row["control_url"]] if run_row["control_url"] else []))
    controls: list[HelperInfo] = []
    if urls:
        from probe.measure.plan import check_controls, unreachable_message

        controls, problems = asyncio.run(check_controls(urls, config.ca_file))
        if not controls:
            fail(unreachable_message(problems))
    left = store.count_targets(db, run_row["run_id"])
    n = left["pending"] + left["not_measured"]
    msg = ngettext("resuming run {run}: {n} target left", "resuming run {run}: {n} targets left", n).format(
        run=run_row["run_id"][:8], n=n)
    if json_logs:
        click.echo(json.dumps({"event": "resume", "run_id": run_row["run_id"], "text": msg}, ensure_ascii=False))
    else:
        say(msg)
        say(_("results go to: {path}").format(path=shown_path(db_path)), level=-1)
    store.set_run_status(db, run_row["run_id"], "running", finished=False)
    _execute(db, db_path, run_row, config, controls, limits, json_logs, after=after)


def _execute(db, db_path: Path, run_row: dict, config: ProbeConfig, controls: list,
             limits: Limits, json_logs: bool, after: Callable[[], None] | None = None) -> None:
    from probe.analysis.hints import RunningHint
    from probe.cli.common import verbosity
    from probe.cli.progress import JsonReporter, PlainReporter, RichReporter
    from probe.measure.runner import Reporter, run_targets

    hint = RunningHint(config.lab_networks)
    reporter: Reporter
    if json_logs:
        reporter = JsonReporter(hint)
    elif sys.stderr.isatty():
        reporter = RichReporter(hint, verbosity=verbosity())
    else:
        reporter = PlainReporter(hint, verbosity=verbosity())

    def switched(old: str, new: str) -> None:
        if not json_logs:
            say(_("control helper {old} stopped answering; using {new}").format(old=old, new=new))

    async def measure_all(control) -> list:
        """Run after run: when this computer's network changes, what is left continues
        as a new run for the new network (``run_row`` is then that run)."""
        from probe.measure.plan import next_run_after_change

        nonlocal run_row
        summaries = []
        while True:
            row = run_row
            summary = await run_targets(db, row["run_id"], config, control=control, concurrency=limits.concurrency,
                                        reporter=reporter, max_runtime=_time_left(limits.deadline),
                                        max_bytes=limits.max_bytes)
            summaries.append(summary)
            if summary.status != "network_changed":
                return summaries
            new_row = await next_run_after_change(row, config, summary.network_change)
            moved = store.split_run(db, row["run_id"], new_row)
            run_row = new_row
            words = _("this computer's network changed ({what}): run {run} ends here ({marked} measurements were in "
                      "flight and are marked); {moved} targets continue as run {next} on the new network").format(
                what=", ".join(summary.network_change), run=row["run_id"][:8], marked=summary.marked, moved=moved,
                next=new_row["run_id"][:8])
            if json_logs:
                click.echo(json.dumps({"event": "network_changed", "run_id": row["run_id"],
                                       "next_run_id": new_row["run_id"], "changed": summary.network_change,
                                       "marked": summary.marked, "moved": moved}))
            else:
                say(words, level=-1)

    async def go():
        if controls:
            from probe.measure.control import ControlChain, ControlClient
            from probe.measure.tls import make_ssl_context

            ctx = make_ssl_context(config.ca_file)
            clients = []
            for info in controls:
                client = ControlClient(info.url, timeout=config.control_timeout, ssl_context=ctx,
                                       retry_budget=config.control_retry_budget, concurrency=limits.concurrency)
                client.use_grant(info.grant)
                clients.append(client)
            async with ControlChain(clients, on_switch=switched) as chain:
                return await measure_all(chain)
        return await measure_all(None)

    try:
        summaries = asyncio.run(go())
    except KeyboardInterrupt:  # a second Ctrl-C, or one before handlers were installed
        store.set_run_status(db, run_row["run_id"], "interrupted")
        click.echo("\n" + _("stopped. Resume with: {command}").format(
            command=f"probe run --resume{db_flag(db_path)}"), err=True)
        sys.exit(EXIT_INTERRUPTED)
    resume_hint = f"probe run --resume{db_flag(db_path)}"
    if summaries[-1].storage_error:
        _storage_stopped(db, summaries[-1], resume_hint)
    for summary in summaries:
        if not json_logs:
            line = _("run {run} {status}: {measured} measured in {seconds}s").format(
                run=summary.run_id[:8], status=_(STATUS_WORDS.get(summary.status, summary.status)),
                measured=summary.measured, seconds=f"{summary.elapsed_s:.1f}")
            if summary.bytes_used:
                line += _(", {size} downloaded").format(size=units.format_size(summary.bytes_used))
            if summary.not_measured and summary.status != "network_changed":
                line += "; " + _("{n} not measured. Resume with: {command}").format(
                    n=summary.not_measured, command=resume_hint)
            say(line, level=-1)
            _say_lost_controls(summary)
        if summary.measured:
            control_stats = {"retried": summary.controls_retried, "recovered": summary.controls_recovered,
                             "lost": dict(summary.lost_controls)} if controls else None
            _verdicts_of_run(db, db_path, summary.run_id, json_logs, control_stats)
    if not json_logs:
        say(_("see the evidence: {command}").format(command=f"probe show{db_flag(db_path)} URL"))
    if summaries[-1].status == "interrupted":
        sys.exit(EXIT_INTERRUPTED)
    if after is not None:
        after()


# How a run ended, in words (the status codes themselves stay as stored).
STATUS_WORDS = {
    "finished": N_("finished"),
    "interrupted": N_("interrupted"),
    "timed_out": N_("stopped at --max-runtime"),
    "data_cap": N_("stopped at the data cap (--max-bytes)"),
    "network_changed": N_("ended by a network change"),
}


def _say_lost_controls(summary) -> None:
    from probe.measure.control import REASONS

    lost = sum(summary.lost_controls.values())
    if summary.controls_retried:
        n = summary.controls_retried
        say(ngettext("control: {n} answer was lost at first and asked again at the end; {back} came back",
                     "control: {n} answers were lost at first and asked again at the end; {back} came back",
                     n).format(n=n, back=summary.controls_recovered))
    if lost:
        why = "; ".join(str(n) + " " + (_(REASONS[r]) if r in REASONS else r)
                        for r, n in summary.lost_controls.most_common())
        say(ngettext("control: {n} site has no control answer ({why}); its verdict rests on local evidence only",
                     "control: {n} sites have no control answer ({why}); their verdicts rest on local evidence only",
                     lost).format(n=lost, why=why))


def _verdicts_of_run(db, db_path: Path, run_id: str, json_logs: bool, control_stats: dict | None = None) -> None:
    """Classify what the run measured (what `probe analyze --run` does) and say it in one
    line: a volunteer wants the answer, not only the evidence. A failure here never
    costs the measurements, which are already stored."""
    from probe.analysis.analyze import analyze_db
    from probe.core.verdicts import CLASSIFIER_VERSION, VERDICTS

    try:
        result = analyze_db(db, run_id=run_id)
        counts = result.by_verdict
        # Earlier runs classified by an older probe: classify them too, or a report
        # (which reads one classifier version) would leave them out.
        for stale in store.runs_without_verdicts(db, CLASSIFIER_VERSION):
            analyze_db(db, run_id=stale)
    except Exception as exc:
        say(_("could not classify the run ({error}); try: {command}").format(
            error=exc, command=f"probe analyze{db_flag(db_path)}"), level=-1)
        return
    if json_logs:
        click.echo(json.dumps({"event": "verdicts", "run_id": run_id, "counts": dict(counts),
                               "cant_tell": dict(result.cant_tell),
                               "low_confidence_blocked": result.weak_blocked, "controls": control_stats}))
        return

    def listed(c: dict) -> str:
        return f" ({', '.join(f'{v} {n}' for v, n in sorted(c.items(), key=lambda kv: -kv[1]))})" if c else ""

    total = sum(counts.values())
    blocked = {v: n - result.cant_tell.get(v, 0) for v, n in counts.items() if VERDICTS[v][0]}
    blocked = {v: n for v, n in blocked.items() if n}
    n_blocked = sum(blocked.values())
    parts = [ngettext("{n} of {m} site looks blocked", "{n} of {m} sites look blocked", total).format(
        n=n_blocked, m=total) + listed(blocked)]
    if result.weak_blocked:
        parts[0] += _(", {n} of them with low confidence").format(n=result.weak_blocked)
    unclear = sum(result.cant_tell.values())
    if unclear:
        parts.append(_("{n} can't tell").format(n=unclear) + listed(dict(result.cant_tell)))
    parts += [f"{counts[v]} {v}" for v in ("ok", "down", "error") if counts.get(v)]
    say(_("verdicts: {parts}").format(parts=", ".join(parts)), level=-1)
    if unclear:
        why = (_("there was no control answer for them") if control_stats is not None
               else _("there was no control helper"))
        say("  " + ngettext(
            "can't tell: {n} site failed in ways censors use (refused, timed out, bad certificate, no such name), "
            "but {why}, so it cannot be told from a site that is down for everyone.",
            "can't tell: {n} sites failed in ways censors use (refused, timed out, bad certificate, no such name), "
            "but {why}, so they cannot be told from sites that are down for everyone.", unclear).format(
                n=unclear, why=why)
            + " " + _("To tell them apart, measure with a control helper: probe config set control URL (ask your "
                      "target list's maintainers for one), or --control URL"))
    if counts and counts.get("error") == total:
        say("  " + _("nothing could be measured: this computer seems to have no working DNS or no internet "
                     "connection; check it, or name a resolver with --resolver IP"), level=-1)
    if result.weak_blocked:
        say("  " + _("low confidence: little to compare with; see `probe explain URL` for why"))
    say(_("the table: {report}; one site in plain words: {explain}").format(
        report=f"probe report{db_flag(db_path)}", explain=f"probe explain{db_flag(db_path)} URL"))


def _trace(url: str, **options: Any) -> None:
    """`probe trace URL`: one target, measured as `probe run` would, then examined deeply."""
    import tempfile

    from probe.targets.lists import TargetError, load_targets

    with tempfile.TemporaryDirectory(prefix="probe-trace-") as folder:
        path = Path(folder) / "trace.txt"
        path.write_text(url.strip() + "\n", encoding="utf-8")
        try:
            load_targets(path)
        except TargetError:
            fail(_("{url!r} is not a URL to measure (use http:// or https://)").format(url=url))
        run.callback(targets_path=path, list_only=False, resume=False, run_id=None, exclude_category=(),  # type: ignore[misc]
                     skip_invalid=False, deep=True, **options)


trace = click.Command(
    "trace", callback=_trace,
    params=[click.Argument(["url"]), *(p for p in run.params if p.name not in {
        "targets_path", "list_only", "resume", "run_id", "exclude_category", "skip_invalid", "deep"})],
    help="Measure one URL as `probe run` would, then examine it deeply (as --deep): what triggers the block, "
         "whether packets were injected, and on which hop the censor sits.")
