"""`probe browse`: the results in Datasette, on this computer only.

Datasette runs in this process (its own `serve` command, so its options and checks are
Datasette's), with metadata from probe.store.browse written to a temporary file: what
each table and column holds, the views people start from (``latest_verdicts``),
canned queries and facets.

Why loopback only: Datasette runs any read-only SQL it is sent, and a volunteer's
results say which sites they tried to read; on a shared network (a café, an office)
anyone could ask. A researcher who wants more runs Datasette with
``probe browse --print-metadata``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import json
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from probe import store
from probe.cli.common import EXIT_INTERRUPTED, default_db, fail
from probe.core.i18n import _
from probe.store import StoreBusy, StoreError, StoreReadOnly

DEFAULT_PORT = 8001
# The views are computed for every query of a page (about 0.4 s per query at 30,000
# measurements): Datasette's limits (200 ms a facet, 1 s a query) would drop the facets
# of a large database, and suggesting facets (a query per column) would double the wait.
SETTINGS = {"facet_time_limit_ms": "3000", "sql_time_limit_ms": "10000", "suggest_facets": "off"}


class BrowseError(Exception):
    """One line for the volunteer; exit code 2."""


class Terminated(Exception):
    """SIGTERM: uvicorn shuts down, then raises the signal again; ending by this
    exception (not by the signal) lets the temporary metadata folder be removed."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated


def loopback_host(host: str) -> str:
    """The address to bind: a loopback address as given ("localhost" is 127.0.0.1);
    anything else raises BrowseError."""
    if host.strip().lower() == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip().strip("[]"))
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise BrowseError(_("--host must be a loopback address (127.0.0.1 or ::1), not {host}: Datasette answers "
                            "any SQL it is sent, and your results say which sites you tried to read").format(host=host))
    return str(address)


def base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def check_port(host: str, port: int) -> None:
    """Raise BrowseError when something already listens on the port (or it cannot be
    bound), before Datasette says so in a log line. SO_REUSEADDR as uvicorn binds: a
    port in TIME_WAIT after the last `probe browse` is free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise BrowseError(_("cannot serve on {url} ({reason}): is another program using the port? "
                                "Give another with --port").format(url=base_url(host, port),
                                                                   reason=exc.strerror or exc)) from None


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def prepare_database(path: Path) -> tuple[bool, bool]:
    """Upgrade the database and create the views where it can be written; returns
    (has_views, immutable). A database on a read-only disk is served as it is:
    immutable (SQLite cannot make the files a WAL database needs to be read there), and
    without views when it has none (the canned queries stand in for them)."""
    if not path.exists():
        raise BrowseError(_("{path}: no such database (run `probe run` first, or give --db)").format(path=path))
    try:
        store.close(store.open_db(path, create=False))
    except (StoreReadOnly, StoreBusy):
        pass  # read it as it is
    except StoreError as exc:
        raise BrowseError(str(exc)) from None
    try:
        db = store.open_db(path, readonly=True)
    except StoreError as exc:
        raise BrowseError(str(exc)) from None
    try:
        has_views = {"site_verdicts", "latest_verdicts"} <= set(db.view_names())
    finally:
        store.close(db)
    return has_views, not _writable(path)


def plan(paths: Sequence[Path]) -> tuple[list[Path], list[Path], dict[str, Any], str]:
    """Prepare every database: (mutable files, immutable files, metadata, start path).
    Datasette names mutable files first, then immutable ones, each by its stem."""
    mutable: list[Path] = []
    immutable: list[Path] = []
    views: dict[Path, bool] = {}
    for path in dict.fromkeys(Path(os.path.abspath(p)) for p in paths):
        has_views, frozen = prepare_database(path)
        (immutable if frozen else mutable).append(path)
        views[path] = has_views
    ordered = mutable + immutable
    names = store.datasette_names(ordered)
    metadata = store.browse_metadata({name: views[p] for name, p in zip(names, ordered, strict=True)})
    start = f"/{names[0]}/latest_verdicts" if len(names) == 1 else "/"
    return mutable, immutable, metadata, start


def serve(mutable: Sequence[Path], immutable: Sequence[Path], metadata: dict[str, Any], host: str, port: int,
          open_browser: bool) -> None:
    """Datasette's own `serve`, in this process, until Ctrl-C (KeyboardInterrupt)."""
    try:
        from datasette.cli import serve as datasette_serve
    except ImportError as exc:  # installed, but broken or too old
        raise BrowseError(_("Datasette cannot be loaded ({reason}): pip install -U 'bynet-probe[browse]'").format(
            reason=exc)) from None

    with tempfile.TemporaryDirectory(prefix="probe-browse-") as folder:
        metadata_file = Path(folder) / "metadata.json"
        metadata_file.write_text(json.dumps(metadata, indent=2, ensure_ascii=False), encoding="utf-8")
        args = [str(p) for p in mutable]
        for path in immutable:
            args += ["-i", str(path)]
        args += ["--host", host, "--port", str(port), "--metadata", str(metadata_file)]
        for name, value in SETTINGS.items():
            args += ["--setting", name, value]
        if open_browser:
            args.append("--open")
        previous = signal.signal(signal.SIGTERM, _terminated)
        try:
            datasette_serve.main(args, prog_name="datasette", standalone_mode=False)
        except click.Abort:
            raise KeyboardInterrupt from None  # click's way of saying Ctrl-C
        except click.ClickException as exc:
            raise BrowseError(_("Datasette could not start: {reason}").format(reason=exc.format_message())) from None
        except SystemExit as exc:
            if exc.code:  # uvicorn could not bind, and said why in the line above
                raise BrowseError(_("Datasette stopped (exit code {code})").format(code=exc.code)) from None
        finally:
            signal.signal(signal.SIGTERM, previous)


@click.command("browse")
@click.option("--db", "dbs", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="SQLite database of results; repeat to browse several. [default: as for `probe run`]")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on: a loopback address only (127.0.0.1, ::1).")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535),
              help="Port to serve on.")
@click.option("--open/--no-open", "open_browser", default=False, show_default=True,
              help="Open the results in your web browser.")
@click.option("--print-metadata", is_flag=True,
              help="Print Datasette's metadata JSON for these databases and exit (to run Datasette yourself).")
def browse_cmd(dbs: tuple[Path, ...], host: str, port: int, open_browser: bool, print_metadata: bool) -> None:
    """Browse the results in Datasette, on this computer only (http://127.0.0.1:8001).

    Start with latest_verdicts: one row per site and network, its verdict and the
    evidence in words; facet by verdict or network. Canned queries: blocked sites by
    network, changes in the last 7 days, all evidence for one site.
    """
    try:
        if not print_metadata and importlib.util.find_spec("datasette") is None:
            raise BrowseError(_("Datasette is not installed: pip install 'bynet-probe[browse]'"))
        bind = loopback_host(host)
        mutable, immutable, metadata, start = plan(list(dbs) or [default_db()])
        if print_metadata:
            click.echo(json.dumps(metadata, indent=2, ensure_ascii=False))
            return
        check_port(bind, port)
        url = base_url(bind, port)
        click.echo(_("serving on {url} — Ctrl-C to stop").format(url=url), err=True)
        click.echo(_("start here: {url}").format(url=url + start), err=True)
        serve(mutable, immutable, metadata, bind, port, open_browser)
        # uvicorn returns only once a signal stopped it, and SIGTERM ends as Terminated:
        # this is Ctrl-C (asyncio.run swallows the KeyboardInterrupt uvicorn raises again)
        raise KeyboardInterrupt
    except BrowseError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            click.echo(_("stopped"), err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Terminated:
        sys.exit(128 + signal.SIGTERM)
