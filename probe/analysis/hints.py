"""A quick "something looks wrong" hint for the progress bar during a run.

Not a verdict: issue 3's classifier decides those from stored observations. This only
counts measurements where a step failed locally that did not fail from the control (or
any local failure when there is no control), so a volunteer sees that a run is finding
things. Pure function over one Measurement.
"""

from __future__ import annotations

from probe.core.records import Measurement


def _main_http_failed(http) -> bool:
    main = [h for h in http if h.kind == "main"]
    return bool(main) and (main[-1].failure is not None and main[-1].status is None)


def local_trouble(m: Measurement) -> str | None:
    """The first step that failed locally, by name, or None."""
    if m.dns and not m.addresses:
        return "dns"
    if m.tcp and not any(c.success for c in m.tcp if c.port == m.port):
        return "tcp"
    if m.scheme == "https" and any(
        t.sni_role == "target" and not t.success for t in m.tls if t.port == m.port
    ) and not any(t.success for t in m.tls if t.sni_role == "target" and t.port == m.port):
        return "tls"
    if _main_http_failed(m.http):
        return "http"
    return None


def quick_anomaly(m: Measurement) -> bool:
    step = local_trouble(m)
    if step is None:
        return False
    c = m.control
    if c is None or c.failure is not None:
        return True
    return not _main_http_failed(c.http)  # the control got a page: not simply down
