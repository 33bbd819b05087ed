"""The run's Context (``probe.analysis.view.Context``) from the run's records alone.

Why: ``probe analyze`` builds the Context of a run from SQL aggregates over the store
(``analyze.run_context``); a pipeline that never sees a database (Apache Beam,
``probe.analysis.pipeline``) has only the run's Measurement records. Both must give
the classifier the same Context, or the same measurement gets two verdicts. So the
work is cut in two:

* the aggregates, per measurement, exactly as the store's SQL computes them
  (``store.dns_failure_counts``, ``store.connects_by_family``,
  ``store.download_samples``): ``RunAggregates.add``;
* the decisions over those aggregates (which address family is broken, the link's
  speed, the run's DNS failure rate): ``context_from_aggregates``, which takes the same
  shapes the store's functions return: ``analyze.run_context`` calls it with its SQL
  results, so those rules exist once.

tests/test_pipeline.py holds both sides equal for every run of an imported sample.
Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from probe.analysis.fingerprints import FingerprintDB
from probe.analysis.view import Context
from probe.core.records import Measurement

# A family is the vantage point's problem, not a censor's, when it fails for at least
# this share of the run's dual-stack sites (and for at least BROKEN_FAMILY_MIN of them).
BROKEN_FAMILY_SHARE = 0.8
BROKEN_FAMILY_MIN = 3

# Pages at least this large say something about the link's speed, not only its latency.
LINK_SAMPLE_MIN_BYTES = 64 * 1024


@dataclass
class RunAggregates:
    """What the store's three SQL aggregates say of one run, gathered one measurement at
    a time (so a run's records can stream past once)."""

    # store.dns_failure_counts: (measurements, those whose local DNS was asked and gave no address)
    total: int = 0
    dns_failed: int = 0
    # store.connects_by_family: one row per measurement with a local connect to its own port
    connects: list[dict[str, int]] = field(default_factory=list)
    # store.download_samples: (body bytes, ms) of local main pages of LINK_SAMPLE_MIN_BYTES or more
    downloads: list[tuple[int, float]] = field(default_factory=list)

    def add(self, m: Measurement) -> None:
        self.total += 1
        # the SQL: no local A/AAAA answer row (of any query, any name), yet a local query
        # row; a later reply racing the first (extra_replies) is not an answer row
        answered = any(a.answer_type in ("A", "AAAA") for q in m.dns for a in q.answers)
        self.dns_failed += bool(m.dns) and not answered
        own_port = [c for c in m.tcp if c.port == m.port]
        if own_port:  # the SQL's inner join: no row for a measurement without such a connect
            v4 = [c for c in own_port if ":" not in c.ip]
            v6 = [c for c in own_port if ":" in c.ip]
            self.connects.append({"v4": len(v4), "v4ok": sum(bool(c.success) for c in v4),
                                  "v6": len(v6), "v6ok": sum(bool(c.success) for c in v6)})
        for h in m.http:
            if (h.kind == "main" and h.status is not None and h.body_length is not None
                    and h.body_length >= LINK_SAMPLE_MIN_BYTES and h.duration_ms is not None and h.duration_ms > 0):
                self.downloads.append((h.body_length, h.duration_ms))


def broken_families(rows: Iterable[dict[str, Any]]) -> frozenset[int]:
    """Address families that fail for (nearly) every dual-stack site of the run while
    the other works: the vantage point's problem, not a censor's. ``rows`` as
    ``store.connects_by_family`` returns them."""
    dual = [r for r in rows if r["v4"] and r["v6"]]
    out = set()
    for fam, ok, other in ((4, "v4ok", "v6ok"), (6, "v6ok", "v4ok")):
        failing = sum(1 for r in dual if not r[ok] and r[other])
        if failing >= BROKEN_FAMILY_MIN and failing >= BROKEN_FAMILY_SHARE * len(dual):
            out.add(fam)
    return frozenset(out)


def link_speed(samples: Iterable[tuple[int, float]]) -> float | None:
    """The median download speed (bytes/s) of the run's large pages: what the link
    carries when no helper measured it. A throttled site is one among many."""
    speeds = sorted(length / (ms / 1000) for length, ms in samples)
    return speeds[len(speeds) // 2] if speeds else None


def _networks(run: dict[str, Any], lab_networks: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    config = _config(run)
    nets = []
    for text in [*(config.get("lab_networks") or []), *lab_networks]:
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            pass
    return tuple(nets)


def _config(run: dict[str, Any]) -> dict[str, Any]:
    """The run's options: stored as JSON text (a database row, an export), or already a dict."""
    config = run.get("config")
    if isinstance(config, dict):
        return config
    return json.loads(config or "{}")


def context_from_aggregates(run: dict[str, Any], aggregates: RunAggregates, fingerprints: FingerprintDB,
                            lab_networks: Iterable[str] = ()) -> Context:
    """The Context of a run (a dict with cc, asn and config, as a ``runs`` row) from its
    aggregates. ``lab_networks`` add to those recorded with the run."""
    config = _config(run)
    total = aggregates.total
    return Context(
        broken_families=broken_families(aggregates.connects),
        link_bytes_per_s=config.get("link_bytes_per_s") or link_speed(aggregates.downloads),
        cc=run.get("cc"),
        asn=run.get("asn"),
        lab_networks=_networks(run, lab_networks),
        fingerprints=fingerprints,
        run_dns_failure_rate=aggregates.dns_failed / total if total else None,
        run_size=total,
    )


def context_from_measurements(run: dict[str, Any], measurements: Iterable[Measurement], fingerprints: FingerprintDB,
                              lab_networks: Iterable[str] = ()) -> Context:
    """The Context ``probe analyze`` computes for a run, from the run's Measurement
    records (each once; read in one pass, so a re-iterable group of a pipeline is not
    held in memory) and its ``runs`` row (cc, asn, config)."""
    aggregates = RunAggregates()
    for m in measurements:
        aggregates.add(m)
    return context_from_aggregates(run, aggregates, fingerprints, lab_networks)
