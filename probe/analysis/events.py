"""Blocking events: when a site became blocked, unblocked, or blocked another way, on
one network, from the sequence of its (final, cross-network) verdicts.

A single measurement is a weak witness: one timeout in a row of ``ok`` is more likely a
bad moment than a new policy, so a change counts only once it repeats (OONI's and
Censored Planet's change detection make the same trade: a little delay for far fewer
false alarms).

The rule, per URL (exact) and network (``crossnet.network_key``), in ``measured_at``
order:

* a measurement's *state* is ``blocked:<verdict>`` when ``blocked`` is True, ``ok`` for
  ``ok`` and ``down`` for ``down``. Measurements that can't tell (``blocked`` is None),
  could not measure (``error``), or whose time is unknown are skipped: they neither
  confirm a state nor break one;
* a state is *established* once CONFIRM consecutive (non-skipped) measurements agree.
  A differing measurement followed by a return to the established state is a flake:
  no event. The first established state is the baseline, not an event;
* an *event* is a change of established state: ``ok``/``down`` -> ``blocked:X`` is
  ``blocked``; ``blocked:X`` -> ``ok`` is ``unblocked``; ``blocked:X`` ->
  ``blocked:Y`` is ``method_changed``. ``blocked`` -> ``down`` and ``ok`` <-> ``down``
  are not events;
* ``down`` is an outage, not a policy, so it does not replace the state a later one is
  compared with: ``blocked:X`` -> ``down`` -> ``blocked:X`` is no event (the site was
  blocked before and after its outage), ``blocked:X`` -> ``down`` -> ``ok`` is
  ``unblocked`` and ``blocked:X`` -> ``down`` -> ``blocked:Y`` is ``method_changed``;
  the evidence names the outage between. Only when nothing but ``down`` was
  established before is ``down`` the old state (``down`` -> ``blocked:X`` is
  ``blocked``).

Rows of the ``unknown`` network are left out: without country and ASN they may mix
several networks, and a change between two networks is not an event. A measurement id
seen twice (a database merged twice) counts once.

An event's id is a hash of URL, network, kind and the first measurement of the new
state, so detecting again after more data came gives the same id.
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from probe.analysis.crossnet import UNKNOWN_NETWORK, line, measured_time, network_key, normalise_asn, short_time
from probe.core.verdicts import VERDICTS

EVENTS_VERSION = "1.0.0"
CONFIRM = 2

Row = dict[str, Any]

BLOCKED_PREFIX = "blocked:"


@dataclass
class BlockingEvent:
    """One change of a site's established state on one network."""

    event_id: str
    kind: str  # blocked, unblocked, method_changed
    url: str
    domain: str
    network: str
    cc: str | None
    asn: str | None
    network_name: str | None
    before: str  # verdict code of the old state: ok, down, or the blocked verdict
    after: str
    since: str  # measured_at of the first measurement of the new state
    confirmed_at: str  # measured_at of the measurement that established it
    last_before: str  # measured_at of the last measurement of the old state
    measurement_ids: list[str] = field(default_factory=list)  # the new state's confirming measurements
    evidence: list[dict[str, Any]] = field(default_factory=list)
    events_version: str = EVENTS_VERSION


@dataclass(frozen=True)
class _Point:
    """A measurement that has a state, placed in time."""

    row: Row
    at: datetime
    state: str

    @property
    def code(self) -> str:
        """The verdict code a state stands for: ``blocked:tls.reset`` -> ``tls.reset``."""
        return self.state.removeprefix(BLOCKED_PREFIX)


def measurement_state(row: Row) -> str | None:
    """``blocked:<verdict>``, ``ok``, ``down``, or None for a row that is skipped: a
    can't-tell or ``error`` measurement says nothing about the site's state."""
    verdict = str(row.get("verdict") or "")
    if verdict in ("ok", "down"):
        return verdict
    if row.get("blocked") is True and VERDICTS.get(verdict, (False, ""))[0]:
        return f"{BLOCKED_PREFIX}{verdict}"
    return None


def event_kind(before: str, after: str) -> str | None:
    """The event a change of established state is, or None when it is none."""
    was_blocked, is_blocked = before.startswith(BLOCKED_PREFIX), after.startswith(BLOCKED_PREFIX)
    if is_blocked and not was_blocked:
        return "blocked"
    if was_blocked and after == "ok":
        return "unblocked"
    if was_blocked and is_blocked and before != after:
        return "method_changed"
    return None  # the same state, or a change to or between ok and down


def event_id(url: str, network: str, kind: str, first_measurement_id: str) -> str:
    """Stable across re-detection: more data later does not change the first
    measurement of a state that was already established."""
    key = "\n".join((url, network, kind, first_measurement_id))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def _domain(row: Row) -> str:
    return str(row.get("domain") or urlsplit(str(row.get("url") or "")).hostname or row.get("url") or "")


def _when(at: datetime, previous: datetime | None) -> str:
    """The time alone when the previous time said the date already."""
    if previous is not None and previous.date() == at.date():
        return at.strftime("%H:%M")
    return short_time(at)


def _evidence(before: _Point, run: Sequence[_Point], outage: tuple[_Point, _Point] | None) -> dict[str, Any]:
    """``charter97.org on BY/AS25106: ok until 2026-12-03 10:00, tls.reset since 10:30
    (2 measurements agree)``."""
    first = run[0]
    parts = [f"{before.code} until {short_time(before.at)}"]
    previous = before.at
    if outage is not None:
        parts.append(f"down from {_when(outage[0].at, previous)} to {_when(outage[1].at, outage[0].at)}")
        previous = outage[1].at
    parts.append(f"{first.code} since {_when(first.at, previous)}")
    agree = f"{len(run)} measurement{'s' if len(run) != 1 else ''} agree{'s' if len(run) == 1 else ''}"
    text = f"{_domain(first.row)} on {network_key(first.row)}: {', '.join(parts)} ({agree})"
    fields: dict[str, Any] = {
        "before": before.code, "after": first.code, "last_before": before.row.get("measured_at"),
        "since": first.row.get("measured_at"), "agree": len(run),
        "measurement_ids": [str(p.row.get("measurement_id")) for p in run],
    }
    if outage is not None:
        fields["down_between"] = [outage[0].row.get("measured_at"), outage[1].row.get("measured_at")]
    return line(text, **fields)


def _event(kind: str, before: _Point, run: Sequence[_Point], outage: tuple[_Point, _Point] | None) -> BlockingEvent:
    first, confirming = run[0], run[-1]
    row = first.row
    url, network = str(row.get("url")), network_key(row)
    names = [p.row.get("network_name") for p in run if p.row.get("network_name")]
    return BlockingEvent(
        event_id=event_id(url, network, kind, str(row.get("measurement_id"))),
        kind=kind, url=url, domain=_domain(row), network=network,
        cc=row.get("cc"), asn=row.get("asn"), network_name=names[-1] if names else None,
        before=before.code, after=first.code,
        since=str(row.get("measured_at")), confirmed_at=str(confirming.row.get("measured_at")),
        last_before=str(before.row.get("measured_at")),
        measurement_ids=[str(p.row.get("measurement_id")) for p in run],
        evidence=[_evidence(before, run, outage)],
    )


def _series_events(points: Sequence[_Point], confirm: int) -> list[BlockingEvent]:
    """The events of one URL on one network, its points in time order."""
    events: list[BlockingEvent] = []
    established: str | None = None  # the state the latest confirmed run had
    reference: str | None = None  # the latest established state other than down
    last_of: dict[str, _Point] = {}  # each state's latest measurement so far
    outage_start: _Point | None = None  # first measurement of an established down after the reference
    run: list[_Point] = []
    for p in points:
        if run and run[0].state == p.state:
            run.append(p)
        else:
            run = [p]
        if len(run) == confirm and p.state != established:
            if p.state == "down":
                outage_start = run[0] if reference is not None else None
            else:
                old = reference or established  # None (no baseline yet) or "down"
                kind = event_kind(old, p.state) if old is not None else None
                if kind is not None and old is not None:
                    outage = (outage_start, last_of["down"]) if outage_start is not None and established == "down" else None
                    events.append(_event(kind, last_of[old], run, outage))
                reference, outage_start = p.state, None
            established = p.state
        last_of[p.state] = p
    return events


def detect_events(rows: Iterable[Row], confirm: int = CONFIRM) -> list[BlockingEvent]:
    """Every blocking event in ``rows`` (see the module docstring), ordered by when each
    was confirmed."""
    if confirm < 1:
        raise ValueError("confirm must be at least 1")
    series: dict[tuple[str, str], list[tuple[datetime, str, str, _Point]]] = defaultdict(list)
    seen: set[str] = set()
    for row in rows:
        mid = str(row.get("measurement_id"))
        state, at, network, url = measurement_state(row), measured_time(row.get("measured_at")), network_key(row), row.get("url")
        if mid in seen or state is None or at is None or network == UNKNOWN_NETWORK or not url:
            continue
        seen.add(mid)
        series[(str(url), network)].append((at, str(row.get("measured_at")), mid, _Point(row, at, state)))
    events: list[BlockingEvent] = []
    for items in series.values():
        items.sort(key=lambda item: item[:3])
        events += _series_events([item[3] for item in items], confirm)
    events.sort(key=lambda e: (measured_time(e.confirmed_at) or datetime.min.replace(tzinfo=UTC), e.event_id))
    return events


def event_to_json(e: BlockingEvent) -> dict[str, Any]:
    """A plain dict (JSON-ready): the export and filters' form of an event."""
    return asdict(e)


def _site_matches(site: str, domain: str, url: str) -> bool:
    """``svaboda.org`` matches www.svaboda.org (a subdomain) and svaboda.org; a URL
    matches itself (a trailing slash aside)."""
    wanted = site.strip().lower().rstrip("/")
    if "://" in wanted:
        return wanted == url.strip().lower().rstrip("/")
    wanted = wanted.rstrip(".")
    host = domain.strip().lower().rstrip(".")
    return bool(wanted) and (host == wanted or host.endswith("." + wanted))


def filter_events(events: Iterable[BlockingEvent | dict[str, Any]], cc: str | None = None, asn: str | None = None,
                  site: str | None = None) -> list[BlockingEvent | dict[str, Any]]:
    """The events (objects or their dicts, returned as given) of a country, an ASN
    (``AS6697`` or ``6697``) and a site (a domain, matching its subdomains too, or a
    URL); case-insensitive; None matches everything."""
    out: list[BlockingEvent | dict[str, Any]] = []
    for e in events:
        d = e if isinstance(e, dict) else asdict(e)
        if cc is not None and str(d.get("cc") or "").strip().upper() != cc.strip().upper():
            continue
        if asn is not None and (normalise_asn(d.get("asn")) or "").upper() != (normalise_asn(asn) or "").upper():
            continue
        if site is not None and not _site_matches(site, str(d.get("domain") or ""), str(d.get("url") or "")):
            continue
        out.append(e)
    return out
