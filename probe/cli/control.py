"""``probe control``: run the control helper. All the logic lives in ``probe.helper.service``."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from probe.cli.common import resolver_option, until_stopped
from probe.core.addresses import format_hostport
from probe.helper.server import serve_helper
from probe.helper.service import HelperConfig
from probe.measure.url import ProbeConfig


@click.group("control")
def control_group() -> None:
    """The control helper: measure URLs from an uncensored network for probes."""


@control_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option(
    "--allow-private",
    is_flag=True,
    default=False,
    help=(
        "DANGER: let the helper connect to loopback, private and other special addresses "
        "(127.0.0.1, 10.x, 192.168.x, fc00::/7, ...). The censorship lab needs it, because "
        "its sites live on such addresses. Never use it on a public server: anyone could "
        "make the helper reach the machine itself and its internal network."
    ),
)
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Extra CA certificate (PEM) to trust for TLS, e.g. the lab's.",
)
@click.option(
    "--resolver",
    "resolvers",
    multiple=True,
    callback=resolver_option,
    metavar="IP[:PORT]",
    help="DNS resolver to query over UDP (repeatable). Default: the system's.",
)
@click.option(
    "--system-resolver/--no-system-resolver",
    default=True,
    show_default=True,
    help="Also resolve with getaddrinfo. Turn off only in tests and labs.",
)
@click.option(
    "--per-client-concurrency",
    default=HelperConfig.per_client_concurrency,
    show_default=True,
    type=click.IntRange(min=1),
    help="Measurements one client IP (one /64 for IPv6) may have in flight; more get 429. "
         "Keep it at least the probe's default --concurrency (8): probes read it and keep within it.",
)
@click.option(
    "--rate-per-minute",
    default=HelperConfig.rate_per_minute,
    show_default=True,
    type=click.IntRange(min=1),
    help="Measurements per minute allowed per client IP (per /64 for IPv6).",
)
@click.option(
    "--burst",
    default=HelperConfig.burst,
    show_default=True,
    type=click.IntRange(min=1),
    help="Measurements a client may ask for at once before the per-minute rate applies.",
)
@click.option(
    "--concurrency",
    default=HelperConfig.global_concurrency,
    show_default=True,
    type=click.IntRange(min=1),
    help="Measurements in flight at once, all clients together; beyond it clients get 503 "
         "(lowered automatically when the file-descriptor limit is too small for it).",
)
@click.option(
    "--behind-proxy",
    is_flag=True,
    default=False,
    help="A reverse proxy on this machine (e.g. Caddy or nginx, for TLS) forwards to the helper: each "
         "client's limits follow the last X-Forwarded-For address the proxy sets, and the proxy's own "
         "connections are not capped per address. Listen on 127.0.0.1 then.",
)
def serve(
    host: str,
    port: int,
    allow_private: bool,
    ca_file: str | None,
    resolvers: list[str],
    system_resolver: bool,
    per_client_concurrency: int,
    rate_per_minute: int,
    burst: int,
    concurrency: int,
    behind_proxy: bool,
) -> None:
    """Serve the control helper (GET /health, POST /v1/measure) until Ctrl-C or SIGTERM."""
    probe_config = ProbeConfig(ca_file=ca_file, system_resolver=system_resolver)
    if resolvers:
        probe_config.resolvers = resolvers
    config = HelperConfig(
        allow_private=allow_private,
        per_client_concurrency=per_client_concurrency,
        rate_per_minute=rate_per_minute,
        burst=burst,
        global_concurrency=concurrency,
        behind_proxy=behind_proxy,
        probe=probe_config,
    )
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if allow_private:
        click.echo(
            "warning: --allow-private: this helper will connect to loopback and private "
            "addresses; never expose it publicly",
            err=True,
        )
    try:
        asyncio.run(_serve(config, host, port))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # e.g. address already in use
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


async def _serve(config: HelperConfig, host: str, port: int) -> None:
    async with serve_helper(config, host, port) as helper:
        where = ", ".join("http://" + format_hostport(str(a[0]), a[1]) for a in helper.addresses)
        b = helper.budget
        click.echo(f"control helper listening on {where} (Ctrl-C to stop); "
                   f"{config.per_client_concurrency} measurements at once and {config.rate_per_minute}/min "
                   f"per client, {b.measurement_slots} at once in all, {b.max_connections} connections "
                   f"(file limit {b.fd_limit})")
        sys.stdout.flush()
        await until_stopped()
        click.echo("control helper stopping")


@control_group.command("check")
@click.argument("url")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Extra CA certificate (PEM) to trust, e.g. a lab's.")
@click.option("--measure", "measure_url", default=None, metavar="URL",
              help="Also have the helper measure this URL, and show what it saw.")
def check(url: str, ca_file: str | None, measure_url: str | None) -> None:
    """Say whether the control helper at URL works, and what it grants a probe.

    Exit 0 when it answers, 2 when it does not (one line saying why).
    """
    from probe.core.userconfig import ConfigError, check_control_url
    from probe.measure.control import ControlClient, ControlUnavailable
    from probe.measure.plan import CLOCK_TOLERANCE_S
    from probe.measure.tls import make_ssl_context

    try:
        url = check_control_url(url)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)

    async def go():
        async with ControlClient(url, timeout=60, ssl_context=make_ssl_context(ca_file)) as client:
            info = await client.health()
            result = await client.measure(measure_url, []) if measure_url else None
            return info, result

    try:
        info, result = asyncio.run(go())
    except ControlUnavailable as exc:
        click.echo(f"error: control helper unreachable: {exc}", err=True)
        sys.exit(2)
    kind = "OONI web_connectivity test helper" if info.protocol == "ooni" else "bynet control helper"
    click.echo(f"{info.url}: works ({kind}{', version ' + info.version if info.version else ''}; "
               f"answered in {info.rtt_ms:.0f} ms)")
    limits = info.raw.get("limits") if isinstance(info.raw.get("limits"), dict) else None
    if limits:
        click.echo(f"  grants each probe: {limits.get('per_client_concurrency')} measurements at once, "
                   f"{limits.get('rate_per_minute')} a minute (bursts of {limits.get('burst')}); "
                   f"{limits.get('global_concurrency')} at once for everyone")
    else:
        click.echo(f"  publishes no limits: a probe keeps to {info.grant.describe()}")
    if info.clock_skew_s is not None:
        off = abs(info.clock_skew_s)
        state = "off by more than the tolerance: certificates will be judged at the helper's time" \
            if off > CLOCK_TOLERANCE_S else "fine"
        click.echo(f"  clocks: this computer is {info.clock_skew_s:+.1f} s from the helper ({state})")
    if info.raw.get("allow_private"):
        click.echo("  warning: it was started with --allow-private (fit for a lab, not for the internet)")
    if result is not None:
        if result.failure:
            click.echo(f"  measuring {measure_url}: failed ({(result.raw or {}).get('error')})")
            sys.exit(2)
        final = [h for h in result.http if h.kind == "main"][-1:] or [None]
        h = final[0]
        addresses = sorted({a for q in result.dns for a in q.addresses()})
        click.echo(f"  measuring {measure_url}: addresses {', '.join(addresses) or '-'}; "
                   + (f"HTTP {h.status or h.failure} {h.title or ''}".rstrip() if h else "no HTTP"))
