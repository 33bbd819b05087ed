"""Numbers and defaults every layer must agree on, written once.

Why: the body cap was once written in five places; the probe, the helper, the OONI
codec and the fingerprint tester must keep (and compare) the same bytes."""

from __future__ import annotations

BODY_CAP = 2 * 1024 * 1024  # read at most this much of a body (a hostile server's is endless)
BODY_KEEP = 64 * 1024  # keep (store, compare, export) at most this much of it


# OONI's default headers (internal/model/http.go): a current desktop Safari.
BROWSER_HEADERS = {
    "User-Agent": (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.10 Safari/605.1.15"
    ),
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "en-US,en;q=0.9",
}
