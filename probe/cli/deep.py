"""`probe run --deep` and `probe trace URL`: after a run, each blocked target examined
packet by packet (probe.measure.deep), stored (probe.store.deep), and said in words
(probe.analysis.deep).

Why opt-in, with a notice of its own: a deep measurement sends what no browser sends
(the same handshake under other names, packets that expire on the way on purpose), so a
censor can tell it from ordinary traffic more easily than a plain run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from probe import store
from probe.cli.common import open_db_or_fail, say
from probe.cli.consent import agree_once
from probe.core.addresses import format_hostport, split_hostport
from probe.core.i18n import _, ngettext

DEEP_CONSENT_SECTION = "deep-consent"


def deep_notice() -> str:
    return "\n".join([
        _("A deep measurement examines each blocked site further: it repeats the blocked step with other names "
          "and addresses, records the packets of those connections, and sends the triggering packet again with "
          "short lifetimes so that the routers on the way answer, to find where the censor sits."),
        _("It is more visible than a browser's traffic: a censor watching your connection can tell that this "
          "computer runs a measurement tool. It needs administrator rights (root or CAP_NET_RAW) for the packet "
          "part; without them only the repeated connections are made."),
    ])


def ensure_deep_consent(yes: bool) -> None:
    """Go on only when deep measurement was agreed to: before, now on a terminal, or with --yes."""
    agree_once(DEEP_CONSENT_SECTION, yes, deep_notice(), yes_said=None,
               no_terminal=_("nothing measured: agree to deep measurement first, in a terminal, or with --yes"),
               prompt=_("Type yes to agree and start, anything else to stop"),
               refused=_("nothing measured: deep measurement was not agreed to"))


def harmless_address(trigger_address: str | None, controls: list[str]) -> str | None:
    """Where the site's name is sent to see whether the name alone triggers the block:
    --trigger-address, else the control helper's host and port (an address no censor
    blocks, where a server surely listens)."""
    if trigger_address:
        return trigger_address
    for url in controls:
        scheme, _, rest = url.removeprefix("ooni+").partition("://")
        host = rest.split("/", 1)[0]
        name, port = split_hostport(host, 443 if scheme == "https" else 80)
        if name:
            return format_hostport(name, port)
    return None


def examine_runs(db_path: Path, since: str, harmless: str | None, timeout: float, dns_wait: float) -> int:
    """Deep-measure every measurement of the runs started since ``since`` that is not
    plainly fine (blocked, or can't tell); returns how many were examined."""
    from probe.analysis.deep import summarise
    from probe.measure.deep import raw_sockets_allowed

    db = open_db_or_fail(db_path, create=False)
    raw = raw_sockets_allowed()
    if not raw:
        say(_("deep measurement: packet capture and the hop search are skipped: they need root or CAP_NET_RAW; "
              "the trigger tests still run"), level=-1)
    examined = 0
    try:
        targets = _blocked_since(db, since)
        if targets:
            say(ngettext("deep measurement of {n} blocked or unclear site ...",
                         "deep measurement of {n} blocked or unclear sites ...", len(targets)).format(n=len(targets)))
        for mid, verdict, layer in targets:
            m = store.load_measurement(db, mid)
            if m is None:
                continue
            result = asyncio.run(_measure(m, verdict, layer, harmless, timeout, dns_wait, raw))
            store.save_deep(db, result)
            examined += 1
            s = summarise(result)
            say(_("  {url}: trigger {trigger}, {injected}, censor's hop {hop} ({seconds:.1f} s, {packets} packets)")
                .format(url=m.url, trigger=s.get("trigger") or "-", injected=s.get("injected") or "-",
                        hop=s.get("censor_hop") or "-", seconds=result.duration_ms / 1000,
                        packets=result.packets_sent), level=0)
    finally:
        store.close(db)
    return examined


async def _measure(m: Any, verdict: str, layer: str | None, harmless: str | None, timeout: float, dns_wait: float,
                   raw: bool) -> Any:
    from probe.measure.deep import deep_measure

    return await deep_measure(m, verdict, layer, harmless=harmless, timeout=timeout, dns_wait=dns_wait,
                              raw_allowed=raw)


def _blocked_since(db: Any, since: str) -> list[tuple[str, str, str | None]]:
    """(measurement id, verdict, layer) of what is worth a closer look: blocked, can't
    tell, and down (a site failing for the control too: whether its reset or silence is
    its own is worth knowing, and costs one target's budget)."""
    out = []
    for run in store.runs(db):
        if (run.get("started_at") or "") < since:
            continue
        for mid, _run in store.measurement_ids(db, run["run_id"]):
            v = store.latest_verdict(db, mid)
            # blocked or can't tell; and down, which a site that resets everyone is: is the reset its own?
            if v is None or v["verdict"] in ("ok", "error") or (v["blocked"] == 0 and v["verdict"] != "down"):
                continue
            out.append((mid, v["verdict"], v["layer"]))
    return out


def deep_step(db_path: Path, since: str, trigger_address: str | None, controls: list[str], timeout: float,
              dns_wait: float) -> Callable[[], None]:
    """What `probe run --deep` does once the run's verdicts are in."""
    def after() -> None:
        try:
            examine_runs(db_path, since, harmless_address(trigger_address, controls), timeout, dns_wait)
        except KeyboardInterrupt:
            say(_("deep measurement stopped; what was examined is stored"), level=-1)
            raise SystemExit(130) from None
    return after

