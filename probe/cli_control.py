"""``probe control``: run the control helper. All the logic lives in ``probe.helper``."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import click
from aiohttp import web

from . import dns as dnsstep
from .helper import HelperConfig, make_app
from .measure import ProbeConfig


def _resolver(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str] | None:
    if not values:
        return None
    out = []
    for v in values:
        try:
            host, port = dnsstep.split_hostport(v)
        except ValueError:
            raise click.BadParameter(f"{v!r} is not IP[:PORT]") from None
        if not dnsstep.is_ip(host) or not 0 < port < 65536:
            raise click.BadParameter(f"{v!r} is not IP[:PORT]")
        out.append(dnsstep.format_hostport(host, port))
    return out


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
    callback=_resolver,
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
    "--rate-per-minute",
    default=120,
    show_default=True,
    type=click.IntRange(min=1),
    help="Requests per minute allowed per client IP (per /64 for IPv6).",
)
@click.option(
    "--concurrency",
    default=64,
    show_default=True,
    type=click.IntRange(min=1),
    help="Measurements in flight at once; beyond it clients get 503.",
)
def serve(
    host: str,
    port: int,
    allow_private: bool,
    ca_file: str | None,
    resolvers: list[str] | None,
    system_resolver: bool,
    rate_per_minute: int,
    concurrency: int,
) -> None:
    """Serve the control helper (GET /health, POST /v1/measure) until Ctrl-C or SIGTERM."""
    probe_config = ProbeConfig(ca_file=ca_file, system_resolver=system_resolver)
    if resolvers is not None:
        probe_config.resolvers = resolvers
    config = HelperConfig(
        allow_private=allow_private,
        rate_per_minute=rate_per_minute,
        global_concurrency=concurrency,
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
    # No access log: the clients are volunteers in censored countries; where they are
    # and what they test is not ours to keep.
    runner = web.AppRunner(make_app(config), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        where = ", ".join("http://" + dnsstep.format_hostport(str(a[0]), a[1]) for a in runner.addresses)
        click.echo(f"control helper listening on {where} (Ctrl-C to stop)")
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # Windows
                pass
        await stop.wait()
        click.echo("control helper stopping")
    finally:
        await runner.cleanup()
