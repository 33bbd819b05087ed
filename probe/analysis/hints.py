"""What each measurement will most likely be called, shown by the progress bar as the
run goes.

Not the verdict: that is derived from the stored observations at the end of the run
(``probe analyze``), with all of the run's context. But the progress lines must not
contradict it: an offline run whose every line said "ANOMALY" while the summary said
"0 blocked" taught volunteers to distrust both. So the hint is the classifier itself,
run on the measurement in memory with the context known so far (the share of names that
failed to resolve, which tells an offline computer from blocking; the lab's networks).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from probe.analysis.classify import classify
from probe.analysis.fingerprints import default_fingerprints
from probe.analysis.view import Context
from probe.core.records import Measurement

# The words a hint can be: blocked (with a control, or proof in itself), cant_tell
# (fails the way censors make sites fail, but nothing to compare with), down, error
# (nothing could be measured), ok.
HINTS = ("blocked", "cant_tell", "down", "error", "ok")


def _local_dns_failed(m: Measurement) -> bool:
    """As ``store.dns_failure_counts`` counts it: asked, and no address from any query."""
    return bool(m.dns) and not any(q.addresses() for q in m.dns)


class RunningHint:
    """Called once per finished measurement, in the order they finish."""

    def __init__(self, lab_networks: Iterable[str] = ()):
        nets = []
        for text in lab_networks:
            try:
                nets.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                pass
        self.lab_networks = tuple(nets)
        self.fingerprints = default_fingerprints()
        self.total = self.dns_failed = 0

    def __call__(self, m: Measurement) -> str:
        self.total += 1
        self.dns_failed += _local_dns_failed(m)
        ctx = Context(lab_networks=self.lab_networks, fingerprints=self.fingerprints,
                      run_dns_failure_rate=self.dns_failed / self.total, run_size=self.total)
        try:
            v = classify(m, ctx)
        except Exception:  # a hint must never stop a run; the stored evidence is what counts
            return "error"
        if v.blocked is None:
            return "cant_tell"
        if v.blocked:
            return "blocked"
        return v.verdict if v.verdict in ("down", "error") else "ok"
