"""A measurement judged with the other networks' measurements of the same URL.

One measurement without a control cannot tell a blocked site from a site that is down:
a timeout or a refused connection looks the same. The classifier then says "can't
tell" (``blocked`` is None) and names the likely verdict. Other vantage points that
measured the same URL at about the same time can often tell, as Censored Planet and
ICLab decide with many vantage points: a site that works on another network is up, so
the failure is this network's; a site that fails the same way from a country the censor
does not reach is down for everyone.

This stage runs after the per-measurement classifier, over the rows
``store.report_rows`` yields (one per classified measurement), and has its own version
(CROSSNET_VERSION), so a change here never re-labels what the classifier said.

Peers. For a row, its peers are, for each *other* network (``network_key``: country and
ASN), that network's measurement of the same URL (exact URL) closest in time within
``window`` (ties: the earlier one). Only one measurement per network counts, so a
network measured a hundred times weighs as much as one measured once. Never peers: rows
of the row's own network (the same censor and the same outage), rows whose verdict is
``error`` (they learned nothing), rows of the ``unknown`` network (no lookup, so they
may mix several networks), rows tagged ``network_changed`` (half on one network, half on
another), rows with an unknown verdict code, and rows whose ``measured_at`` is missing
or unparseable (not comparable in time; such a row has no peers either). ``measured_at``
without a timezone is UTC, as the probe stores it.

Rules, one function each, applied in this order; the first that applies wins:

1. ``cross.own``: the own verdict is not of the blocked kind (``ok``, ``down``,
   ``error``, or a code this version does not know): kept, never rewritten; no peers
   are consulted.
2. ``cross.own_evidence``: the own verdict settled it (``blocked`` is True: a control
   confirmed it, or the evidence proves itself: blockpage, bogon, MITM, ...): kept; the
   peers are still listed.
3. ``cross.network_changed``: can't tell because the volunteer's network changed during
   the measurement, not for want of a control: kept (peers cannot say which network the
   failure belonged to).
4. ``cross.unknown_network``: can't tell, and the row's own network is unknown: kept
   (it cannot be told which networks are "other").
5. ``cross.works_elsewhere``: can't tell, and at least one peer network saw the URL
   ``ok``: the site is up, so the failure is this network's: same verdict, blocked,
   confidence 0.8 (one such network) or 0.9 (two or more).
6. ``cross.fails_everywhere``: can't tell, every peer failed the same way (same
   verdict code, itself can't tell) or is ``down`` (its control failed too), and at
   least one peer is beyond the censor's reach (a known country other than the row's,
   or a ``down`` peer, whose control helper saw the failure): ``down``, not blocked,
   confidence 0.8.
7. ``cross.no_peers``: can't tell, and no other network measured the URL within the
   window (or the row's own time is unknown): kept.
8. ``cross.same_censor``: can't tell, and every peer is in the row's own country:
   behind the same censor an outage looks the same: kept.
9. ``cross.mixed``: anything else (peers failing differently, peers of unknown country,
   a peer whose control confirmed a block): kept as can't tell.

A peer whose own verdict is blocked (True) with the same code does not count as failing
in rule 6: its control reached the site, which an outage would not allow; such a row
ends in ``cross.mixed``.

Cost: rows are grouped by URL and each network's rows sorted once, so a row's peers
cost one binary search per other network of that URL (none for a network with nothing
in the window): O(n k log n) for k networks per URL, and a row of rule 1 (most rows:
``ok``) costs nothing. k is also the size of what is listed per row
(``networks_compared``, the evidence), so no method that lists peers can do better.
Pure: no I/O.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from probe.core.verdicts import VERDICTS

CROSSNET_VERSION = "1.0.0"
# "Close in time": a day covers one round of volunteers' daily runs, and outages that
# last longer than a day are rare enough that a day-old "ok" still says the site is up
# (hence confidence 0.8, not 1).
WINDOW = timedelta(hours=24)
UNKNOWN_NETWORK = "unknown"

# One network that saw the site work is good evidence; two that agree make a
# coincidental short outage or a broken measurement much less likely.
WORKS_ELSEWHERE_ONE = 0.8
WORKS_ELSEWHERE_MORE = 0.9
FAILS_EVERYWHERE = 0.8

Row = dict[str, Any]


@dataclass
class CrossVerdict:
    """A measurement's verdict once the other networks' measurements were considered."""

    measurement_id: str
    verdict: str
    blocked: bool | None
    confidence: float | None
    rule_id: str
    evidence: list[dict[str, Any]] = field(default_factory=list)
    networks_compared: list[str] = field(default_factory=list)  # the peers' network keys
    own_verdict: str | None = None
    own_blocked: bool | None = None
    changed: bool = False  # verdict or blocked differs from the own
    cross_version: str = CROSSNET_VERSION


# --- networks and times (shared with events, and reusable by reports) ---------------------


def normalise_asn(asn: Any) -> str | None:
    """``6697``, ``as6697`` and ``AS6697`` are one network: ``AS6697``."""
    text = str(asn).strip() if asn is not None else ""
    if not text:
        return None
    digits = text[2:] if text[:2].upper() == "AS" else text
    return f"AS{digits}" if digits.isdigit() else text


def network_key(row: Mapping[str, Any]) -> str:
    """``BY/AS6697``: a censor's policy follows country and ASN, not the volunteer, so
    several volunteers on one ISP are one network. ``unknown`` when neither is known
    (a run without network lookup, e.g. an offline machine)."""
    cc = str(row.get("cc") or "").strip().upper()
    asn = normalise_asn(row.get("asn"))
    if not cc and not asn:
        return UNKNOWN_NETWORK
    return f"{cc or '??'}/{asn or 'AS?'}"


def network_sort_key(network: str) -> tuple:
    """``BY/AS6697`` before ``BY/AS25106``: ASNs in numeric order, within a country."""
    cc, _, asn = network.partition("/")
    digits = asn[2:] if asn[:2].upper() == "AS" else asn
    return (cc, int(digits) if digits.isdigit() else float("inf"), asn)


def measured_time(value: Any) -> datetime | None:
    """``measured_at`` as an aware UTC datetime; None when missing or unparseable (then
    the row cannot be placed in time, so it is compared with nothing)."""
    if not value or not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def short_time(at: datetime) -> str:
    """Minutes are enough for people; the fields keep the full timestamp."""
    return at.strftime("%Y-%m-%d %H:%M")


def line(text: str, **fields: Any) -> dict[str, Any]:
    """One evidence line as stored everywhere (``asdict(Evidence)``: ``{"text", "fields"}``),
    built directly: ``asdict`` deep-copies the fields, which dominated the run time."""
    return {"text": text, "fields": fields}


def join_words(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


# --- the rows as the comparison sees them -------------------------------------------------


class _Seen:
    """A row with what comparing needs worked out once: a row is the peer of many
    others, so its words are made once, not once per comparison."""

    def __init__(self, row: Row) -> None:
        self.row = row
        self.network = network_key(row)
        self.at = measured_time(row.get("measured_at"))
        self.ts = self.at.timestamp() if self.at is not None else None
        self.mid = str(row.get("measurement_id"))
        self.verdict = str(row.get("verdict") or "error")
        self.blocked: bool | None = row.get("blocked")
        self.cc = str(row.get("cc") or "").strip().upper()
        self.tags = list(row.get("tags") or [])

    def can_be_peer(self) -> bool:
        return (self.at is not None and self.network != UNKNOWN_NETWORK and self.verdict in VERDICTS
                and self.verdict != "error" and "network_changed" not in self.tags)

    @cached_property
    def said(self) -> str:
        """``tls.reset (can't tell) on BY/AS25106 (2026-12-03 10:02)``."""
        mark = " (can't tell)" if self.blocked is None and _blocked_kind(self.verdict) else ""
        return f"{self.verdict}{mark} on {self.where}"

    @cached_property
    def where(self) -> str:
        """``BY/AS25106 (2026-12-03 10:02)``."""
        return f"{self.network} ({short_time(self.at)})" if self.at else self.network

    def fields(self) -> dict[str, Any]:
        return {"network": self.network, "measurement_id": self.mid, "verdict": self.verdict,
                "blocked": self.blocked, "measured_at": self.row.get("measured_at")}


def _blocked_kind(verdict: str) -> bool:
    return VERDICTS.get(verdict, (False, ""))[0]


class _Pool:
    """One URL's peer-eligible rows, per network, in time order: what a binary search
    for "that network's closest measurement" needs."""

    def __init__(self, seen: Iterable[_Seen]) -> None:
        per_network: dict[str, list[_Seen]] = defaultdict(list)
        for s in seen:
            if s.can_be_peer():
                per_network[s.network].append(s)
        # (network, its times, its rows), networks in network order, rows in time order
        self.series: list[tuple[str, list[float], list[_Seen]]] = []
        for network in sorted(per_network, key=network_sort_key):
            rows = sorted(per_network[network], key=lambda s: (s.ts, s.mid))
            self.series.append((network, [s.ts for s in rows if s.ts is not None], rows))

    def peers(self, own: _Seen, window: timedelta) -> list[_Seen]:
        """For each other network, its measurement nearest to ``own`` within ``window``;
        the earlier one on a tie, so the answer does not depend on input order."""
        t, limit = own.ts, window.total_seconds()
        if t is None or own.network == UNKNOWN_NETWORK:
            return []
        found = []
        for network, times, rows in self.series:
            if network == own.network or times[0] > t + limit or times[-1] < t - limit:
                continue
            i = bisect_left(times, t)
            before = t - times[i - 1] if i > 0 else None
            after = times[i] - t if i < len(times) else None
            if before is not None and before <= limit and (after is None or before <= after):
                found.append(rows[i - 1])
            elif after is not None and after <= limit:
                found.append(rows[i])
        return found


_EMPTY_POOL = _Pool(())


@dataclass
class _Case:
    """One row to judge, with its URL's pool; peers are worked out only when a rule asks."""

    own: _Seen
    pool: _Pool
    window: timedelta

    @cached_property
    def peers(self) -> list[_Seen]:
        return self.pool.peers(self.own, self.window)


# --- the verdicts a rule gives ------------------------------------------------------------


def _kept(case: _Case, rule_id: str, evidence: list[dict[str, Any]], peers: Sequence[_Seen] = ()) -> CrossVerdict:
    own = case.own
    return CrossVerdict(own.mid, own.verdict, own.blocked, own.row.get("confidence"), rule_id, evidence,
                        [p.network for p in peers], own.row.get("verdict"), own.blocked, False)


def _judged(case: _Case, verdict: str, blocked: bool, confidence: float, rule_id: str,
            evidence: list[dict[str, Any]], peers: Sequence[_Seen]) -> CrossVerdict:
    own = case.own
    changed = verdict != own.row.get("verdict") or blocked != own.blocked
    return CrossVerdict(own.mid, verdict, blocked, confidence, rule_id, evidence, [p.network for p in peers],
                        own.row.get("verdict"), own.blocked, changed)


# --- the rules, in order ------------------------------------------------------------------


def _rule_own(case: _Case) -> CrossVerdict | None:
    """ok, down and error are the measurement's own findings (with or without a control):
    other networks say nothing about whether the site worked *here*."""
    if _blocked_kind(case.own.verdict):
        return None
    return _kept(case, "cross.own", [])


def _rule_own_evidence(case: _Case) -> CrossVerdict | None:
    """A control confirmed the block, or the evidence proves itself (a blockpage, a
    bogon answer, a forged certificate): other networks cannot outweigh that. They are
    listed, so a reader sees where else it was measured."""
    if case.own.blocked is None:
        return None
    peers = case.peers
    evidence = []
    if peers:
        evidence.append(line(f"its own evidence settles it; also measured: {join_words([p.said for p in peers])}",
                             peers=[p.fields() for p in peers]))
    return _kept(case, "cross.own_evidence", evidence, peers)


def _rule_network_changed(case: _Case) -> CrossVerdict | None:
    """Can't tell because the volunteer's network changed mid-measurement, not for want
    of a control: a site working elsewhere would not say which network failed."""
    if "network_changed" not in case.own.tags:
        return None
    return _kept(case, "cross.network_changed", [line(
        "this computer's network changed during the measurement: other networks cannot say which one failed",
        network=case.own.network)])


def _rule_unknown_network(case: _Case) -> CrossVerdict | None:
    """Without country and ASN it cannot be told which networks are "other", nor whether
    a peer is behind the same censor."""
    if case.own.network != UNKNOWN_NETWORK:
        return None
    return _kept(case, "cross.unknown_network", [line(
        "this measurement's network (country and ASN) is unknown: it cannot be compared with other networks",
        network=UNKNOWN_NETWORK)])


def _rule_works_elsewhere(case: _Case) -> CrossVerdict | None:
    """The site worked on another network at about the same time: it is up, so this
    network's failure is this network's doing."""
    working = [p for p in case.peers if p.verdict == "ok"]
    if not working:
        return None
    confidence = WORKS_ELSEWHERE_MORE if len(working) >= 2 else WORKS_ELSEWHERE_ONE
    text = (f"works on {join_words([p.where for p in working])}: the site is up, so this failure "
            f"({case.own.verdict}) is this network's")
    evidence = [line(text, works_on=[p.fields() for p in working], network=case.own.network)]
    return _judged(case, case.own.verdict, True, confidence, "cross.works_elsewhere", evidence, case.peers)


def _abroad(own: _Seen, peer: _Seen) -> bool:
    """The peer is in another (known) country: another censor, if any."""
    return bool(own.cc and peer.cc and peer.cc != own.cc)


def _rule_fails_everywhere(case: _Case) -> CrossVerdict | None:
    """The site failed the same way on every network that measured it, including one
    the censor cannot reach (in another country, or ``down``: its own control helper saw
    the site fail as well): an outage, not blocking."""
    own, peers = case.own, case.peers
    if not peers:
        return None
    alike = all(p.verdict == "down" or (p.verdict == own.verdict and p.blocked is None) for p in peers)
    abroad = [p.network for p in peers if _abroad(own, p)]
    control_failed = [p.network for p in peers if p.verdict == "down" and p.network not in abroad]
    if not alike or not (abroad or control_failed):
        return None
    why = []
    if abroad:
        why.append(f"{join_words(abroad)} {'is' if len(abroad) == 1 else 'are'} outside {own.cc}")
    if control_failed:
        why.append(f"the control of {join_words(control_failed)} failed too")
    text = (f"fails everywhere it was measured: {join_words([p.said for p in peers])}; "
            f"{join_words(why)}: the site is down, not blocked")
    evidence = [line(text, fails_on=[p.fields() for p in peers], outside=abroad + control_failed, network=own.network)]
    return _judged(case, "down", False, FAILS_EVERYWHERE, "cross.fails_everywhere", evidence, peers)


def _rule_no_peers(case: _Case) -> CrossVerdict | None:
    """Nothing to compare with: a URL measured once, or on one network only, or this
    measurement's time is unknown."""
    if case.peers:
        return None
    if case.own.at is None:
        text = "this measurement's time is unknown: it cannot be compared with other networks"
    else:
        text = f"no other network measured it within {case.window.total_seconds() / 3600:g} hours: nothing to compare with"
    return _kept(case, "cross.no_peers", [line(text, window_hours=case.window.total_seconds() / 3600)])


def _rule_same_censor(case: _Case) -> CrossVerdict | None:
    """Every network that measured it is in this country: behind the same censor, a
    block and an outage look the same from all of them."""
    own, peers = case.own, case.peers
    if not own.cc or any(p.cc != own.cc for p in peers):
        return None
    text = (f"every network that measured it is in {own.cc} ({join_words([p.said for p in peers])}): "
            "behind the same censor, an outage looks the same")
    return _kept(case, "cross.same_censor", [line(text, cc=own.cc, peers=[p.fields() for p in peers])], peers)


def _rule_mixed(case: _Case) -> CrossVerdict | None:
    """The other networks neither saw it work nor fail alike from beyond the censor:
    they do not settle it either way."""
    peers = case.peers
    text = (f"other networks do not settle it: {join_words([p.said for p in peers])}; "
            "neither working elsewhere nor failing alike beyond the censor")
    return _kept(case, "cross.mixed", [line(text, peers=[p.fields() for p in peers])], peers)


RULES: tuple[Callable[[_Case], CrossVerdict | None], ...] = (
    _rule_own,
    _rule_own_evidence,
    _rule_network_changed,
    _rule_unknown_network,
    _rule_works_elsewhere,
    _rule_fails_everywhere,
    _rule_no_peers,
    _rule_same_censor,
    _rule_mixed,
)


def _judge(case: _Case) -> CrossVerdict:
    for rule in RULES:
        found = rule(case)
        if found is not None:
            return found
    raise AssertionError("_rule_mixed always applies")


# --- the public API -----------------------------------------------------------------------


def judge_across(rows: Iterable[Row], window: timedelta = WINDOW) -> dict[str, CrossVerdict]:
    """measurement_id -> its cross verdict, for every row (see the module docstring for
    peers and rules). Measurement ids are expected to be unique, as ``report.collect``
    makes them; a repeated id keeps the judgement of its last row."""
    by_url: dict[str, list[_Seen]] = defaultdict(list)
    no_url: list[_Seen] = []
    for row in rows:
        seen = _Seen(row)
        url = row.get("url")
        (by_url[url] if url else no_url).append(seen)
    out: dict[str, CrossVerdict] = {}
    for group in by_url.values():
        pool = _Pool(group)
        for seen in group:
            out[seen.mid] = _judge(_Case(seen, pool, window))
    for seen in no_url:  # nothing to group them by: compared with nothing
        out[seen.mid] = _judge(_Case(seen, _EMPTY_POOL, window))
    return out


def apply_crossnet(rows: Iterable[Row], verdicts: Mapping[str, CrossVerdict]) -> list[Row]:
    """The rows as ``probe report`` shows them: copies (the input is not changed) whose
    verdict, blocked, confidence, rule_id and evidence (cross lines first, then the
    measurement's own) are the cross verdict's when it changed them, and the row's own
    otherwise. Every row also gets own_verdict, own_blocked, own_confidence,
    own_rule_id, cross_rule_id, cross_version, networks_compared and cross_evidence (the
    cross lines alone, also for unchanged rows: why it stayed as it was). A row without
    a cross verdict keeps its values, with cross_rule_id and cross_version None."""
    out: list[Row] = []
    for row in rows:
        new = dict(row)
        new.update(own_verdict=row.get("verdict"), own_blocked=row.get("blocked"),
                   own_confidence=row.get("confidence"), own_rule_id=row.get("rule_id"))
        cross = verdicts.get(str(row.get("measurement_id")))
        if cross is None:
            new.update(cross_rule_id=None, cross_version=None, networks_compared=[], cross_evidence=[])
        else:
            if cross.changed:
                new.update(verdict=cross.verdict, blocked=cross.blocked, confidence=cross.confidence,
                           rule_id=cross.rule_id, evidence=[*cross.evidence, *(row.get("evidence") or [])])
            new.update(cross_rule_id=cross.rule_id, cross_version=cross.cross_version,
                       networks_compared=list(cross.networks_compared), cross_evidence=list(cross.evidence))
        out.append(new)
    return out
