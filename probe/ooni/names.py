"""OONI's failure strings and ours, both ways: one mapping for import, export, and the
test-helper protocol (``probe.ooni.th``). Pure; no network code."""

from __future__ import annotations

from typing import Any

from probe.core import failures as F

# OONI strings that several of ours share cannot be mapped back to one of them.
# http_request_failed is OONI's catch-all for a failed HTTP round trip: broader than
# our http_protocol_error, so it is not mapped back to it either.
AMBIGUOUS = {theirs for theirs in F.OONI_NAMES.values() if list(F.OONI_NAMES.values()).count(theirs) > 1}
AMBIGUOUS.add("http_request_failed")
FROM_OONI: dict[str, str] = {theirs: ours for ours, theirs in F.OONI_NAMES.items() if theirs not in AMBIGUOUS}
FROM_OONI.update(
    {
        # dns_no_answer is shared with no_addresses, a state of our own HTTP step; as a
        # DNS result it means exactly "NOERROR without an address".
        "dns_no_answer": F.DNS_NO_ANSWER,
        # Test helper (oohelperd) legacy names, each exactly one of ours (ooni.md 1.3).
        "dns_name_error": F.DNS_NXDOMAIN,
        "connection_refused_error": F.CONNECTION_REFUSED,
        # Android's getaddrinfo EAI_NODATA, which our own classifier also calls no answer.
        "android_dns_cache_no_data": F.DNS_NO_ANSWER,
        # errno names our classifier maps the same way (failures._ERRNO).
        "timed_out": F.GENERIC_TIMEOUT,
        "network_down": F.NETWORK_UNREACHABLE,
        # MK-era: a TCP connect timeout, and a redirect to a URL that cannot be fetched.
        "tcp_timed_out_error": F.GENERIC_TIMEOUT,
        "http_invalid_redirect_url": F.HTTP_INVALID_REDIRECT,
        # Go's http.Client redirect limit as web_connectivity 0.5 reports it.
        "unknown_failure: stopped after too many redirects": F.HTTP_TOO_MANY_REDIRECTS,
    }
)


def failure_from_ooni(failure: Any) -> str | None:
    """An OONI failure string as ours: exact equivalents mapped, anything else kept
    verbatim behind ``unknown_failure:`` (never guessed)."""
    if failure is None or failure == "":
        return None
    text = str(failure)
    if text in FROM_OONI:
        return FROM_OONI[text]
    if text.startswith(F.UNKNOWN_FAILURE):  # "unknown_failure: x", or MK's "unknown_failure x"
        return F.unknown(text[len(F.UNKNOWN_FAILURE):].lstrip(":").strip())
    return F.unknown(text)


def failure_to_ooni(failure: str | None) -> str | None:
    """Our failure string as OONI's (``unknown_failure: ...`` is the same in both)."""
    if failure is None:
        return None
    return F.OONI_NAMES.get(failure, failure)
