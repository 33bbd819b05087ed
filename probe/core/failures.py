"""The one vocabulary of failure strings, and the pure function that maps errors onto it.

A failure is data, not an exception: every network step catches what went wrong and
records one of these strings. They follow OONI's vocabulary (df-007-errors) without its
``_error`` suffixes; ``OONI_NAMES`` gives the exact OONI string for each so that imports
and exports map one to one. Defined once here and imported everywhere; ``FAILURES``
documents each, and a test checks that the README lists them all.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl

# --- DNS -----------------------------------------------------------------------------
DNS_NXDOMAIN = "dns_nxdomain"
DNS_SERVFAIL = "dns_servfail"
DNS_REFUSED = "dns_refused"
DNS_NO_ANSWER = "dns_no_answer"
DNS_TEMPORARY_FAILURE = "dns_temporary_failure"
DNS_BAD_RESPONSE = "dns_bad_response"
# --- generic -------------------------------------------------------------------------
GENERIC_TIMEOUT = "generic_timeout"
# --- TCP / sockets -------------------------------------------------------------------
CONNECTION_REFUSED = "connection_refused"
CONNECTION_RESET = "connection_reset"
CONNECTION_ABORTED = "connection_aborted"
EOF = "eof"
HOST_UNREACHABLE = "host_unreachable"
NETWORK_UNREACHABLE = "network_unreachable"
ADDRESS_FAMILY_NOT_SUPPORTED = "address_family_not_supported"
# --- TLS -----------------------------------------------------------------------------
SSL_INVALID_HOSTNAME = "ssl_invalid_hostname"
SSL_UNKNOWN_AUTHORITY = "ssl_unknown_authority"
SSL_INVALID_CERTIFICATE = "ssl_invalid_certificate"
SSL_HANDSHAKE_FAILURE = "ssl_handshake_failure"
# --- HTTP ----------------------------------------------------------------------------
HTTP_TOO_MANY_REDIRECTS = "http_too_many_redirects"
HTTP_INVALID_REDIRECT = "http_invalid_redirect"
HTTP_PROTOCOL_ERROR = "http_protocol_error"
BODY_TOO_LARGE = "body_too_large"
# --- the probe itself ----------------------------------------------------------------
NO_ADDRESSES = "no_addresses"
REFUSED_ADDRESS = "refused_address"
CONTROL_UNAVAILABLE = "control_unavailable"
UNKNOWN_FAILURE = "unknown_failure"

# The certificate did not verify: the handshake completed, the chain or name was wrong.
CERT_FAILURES = frozenset({SSL_INVALID_HOSTNAME, SSL_UNKNOWN_AUTHORITY, SSL_INVALID_CERTIFICATE})

FAILURES: dict[str, str] = {
    DNS_NXDOMAIN: "the resolver says the name does not exist (NXDOMAIN)",
    DNS_SERVFAIL: "the resolver answered SERVFAIL",
    DNS_REFUSED: "the resolver refused the query (REFUSED)",
    DNS_NO_ANSWER: "the resolver answered NOERROR with no address of the asked type",
    DNS_TEMPORARY_FAILURE: "the system resolver reported a temporary failure (EAI_AGAIN)",
    DNS_BAD_RESPONSE: "a reply arrived that is not a valid DNS answer to the query",
    GENERIC_TIMEOUT: "the step did not finish within its timeout",
    CONNECTION_REFUSED: "the connection was refused (RST in answer to SYN)",
    CONNECTION_RESET: "the connection was reset (RST) after it was established",
    CONNECTION_ABORTED: "the connection was aborted by the local network stack",
    EOF: "the peer closed the connection before the exchange was complete",
    HOST_UNREACHABLE: "no route to the host (ICMP host unreachable)",
    NETWORK_UNREACHABLE: "no route to the network",
    ADDRESS_FAMILY_NOT_SUPPORTED: "this machine cannot use that address family (e.g. no IPv6)",
    SSL_INVALID_HOSTNAME: "the certificate is not valid for the requested name",
    SSL_UNKNOWN_AUTHORITY: "the certificate is not signed by a trusted authority",
    SSL_INVALID_CERTIFICATE: "the certificate is invalid (expired, not yet valid, malformed)",
    SSL_HANDSHAKE_FAILURE: "the TLS handshake failed (alert or protocol error)",
    HTTP_TOO_MANY_REDIRECTS: "more redirects than the limit were followed",
    HTTP_INVALID_REDIRECT: "a redirect pointed to a location that cannot be fetched",
    HTTP_PROTOCOL_ERROR: "the server's reply is not valid HTTP",
    BODY_TOO_LARGE: "the body is larger than the cap; it was cut and marked truncated",
    NO_ADDRESSES: "there was no address to connect to (DNS gave none)",
    REFUSED_ADDRESS: "the control helper refused to connect to a private or special address",
    CONTROL_UNAVAILABLE: "the control helper could not be reached or gave no usable answer",
    UNKNOWN_FAILURE: "anything else; recorded as 'unknown_failure: <detail>'",
}

# Exact OONI strings (df-007-errors), for import/export.
OONI_NAMES: dict[str, str] = {
    DNS_NXDOMAIN: "dns_nxdomain_error",
    DNS_SERVFAIL: "dns_servfail_error",
    DNS_REFUSED: "dns_refused_error",
    DNS_NO_ANSWER: "dns_no_answer",
    DNS_TEMPORARY_FAILURE: "dns_temporary_failure",
    DNS_BAD_RESPONSE: "dns_server_misbehaving",
    GENERIC_TIMEOUT: "generic_timeout_error",
    CONNECTION_REFUSED: "connection_refused",
    CONNECTION_RESET: "connection_reset",
    CONNECTION_ABORTED: "connection_aborted",
    EOF: "eof_error",
    HOST_UNREACHABLE: "host_unreachable",
    NETWORK_UNREACHABLE: "network_unreachable",
    ADDRESS_FAMILY_NOT_SUPPORTED: "address_family_not_supported",
    SSL_INVALID_HOSTNAME: "ssl_invalid_hostname",
    SSL_UNKNOWN_AUTHORITY: "ssl_unknown_authority",
    SSL_INVALID_CERTIFICATE: "ssl_invalid_certificate",
    SSL_HANDSHAKE_FAILURE: "ssl_failed_handshake",
    HTTP_TOO_MANY_REDIRECTS: "unknown_failure: stopped after too many redirects",  # OONI v0.5
    HTTP_INVALID_REDIRECT: "http_invalid_redirect_location_host",
    HTTP_PROTOCOL_ERROR: "http_request_failed",
    BODY_TOO_LARGE: "unknown_failure: body_too_large",
    NO_ADDRESSES: "dns_no_answer",
    REFUSED_ADDRESS: "unknown_failure: refused_address",
    CONTROL_UNAVAILABLE: "unknown_failure: control_unavailable",
}

_ERRNO: dict[int, str] = {
    errno.ECONNREFUSED: CONNECTION_REFUSED,
    errno.ECONNRESET: CONNECTION_RESET,
    errno.ECONNABORTED: CONNECTION_ABORTED,
    errno.EPIPE: CONNECTION_RESET,
    errno.EHOSTUNREACH: HOST_UNREACHABLE,
    errno.EHOSTDOWN: HOST_UNREACHABLE,
    errno.ENETUNREACH: NETWORK_UNREACHABLE,
    errno.ENETDOWN: NETWORK_UNREACHABLE,
    errno.EAFNOSUPPORT: ADDRESS_FAMILY_NOT_SUPPORTED,
    errno.EADDRNOTAVAIL: ADDRESS_FAMILY_NOT_SUPPORTED,
    errno.ETIMEDOUT: GENERIC_TIMEOUT,
}

_GAI: dict[int | None, str] = {  # looked up by gaierror.errno, which may be None (never found)
    socket.EAI_NONAME: DNS_NXDOMAIN,
    socket.EAI_FAIL: DNS_SERVFAIL,
    socket.EAI_AGAIN: DNS_TEMPORARY_FAILURE,
}
if hasattr(socket, "EAI_NODATA"):  # glibc; absent on some platforms
    _GAI[socket.EAI_NODATA] = DNS_NO_ANSWER
if hasattr(socket, "EAI_ADDRFAMILY"):
    _GAI[socket.EAI_ADDRFAMILY] = DNS_NO_ANSWER

# OpenSSL X509_V_ERR_* codes (x509_vfy.h) that mean "nobody we trust signed this".
_UNKNOWN_AUTHORITY_CODES = {2, 18, 19, 20, 21, 27}
_HOSTNAME_MISMATCH_CODE = 62


def is_known(failure: str | None) -> bool:
    """True for None or a string of the vocabulary (``unknown_failure: ...`` included)."""
    if failure is None:
        return True
    return failure in FAILURES or failure.startswith(UNKNOWN_FAILURE + ":")


def unknown(detail: object) -> str:
    """``unknown_failure: <detail>`` with the detail kept short and on one line."""
    text = " ".join(str(detail).split())[:200] or "no detail"
    return f"{UNKNOWN_FAILURE}: {text}"


def classify_exception(exc: BaseException) -> str:
    """Map any exception raised by a network step to one failure string.

    Order matters: SSL errors are OSErrors, timeouts are OSErrors in 3.11, and aiohttp
    wraps OS errors, so the most specific checks come first.
    """
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, socket.timeout)):
        return GENERIC_TIMEOUT
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        if code == _HOSTNAME_MISMATCH_CODE:
            return SSL_INVALID_HOSTNAME
        if code in _UNKNOWN_AUTHORITY_CODES:
            return SSL_UNKNOWN_AUTHORITY
        return SSL_INVALID_CERTIFICATE
    if isinstance(exc, ssl.SSLZeroReturnError | ssl.SSLEOFError):
        return EOF
    if isinstance(exc, ssl.SSLError):
        # OpenSSL reports a TCP reset during the handshake as a SSLError in some paths.
        if "reset" in str(exc).lower():
            return CONNECTION_RESET
        return SSL_HANDSHAKE_FAILURE
    if isinstance(exc, socket.gaierror):
        return _GAI.get(exc.errno, unknown(f"getaddrinfo {exc.errno}"))
    if isinstance(exc, (asyncio.IncompleteReadError, EOFError)):
        return EOF
    if isinstance(exc, ConnectionRefusedError):
        return CONNECTION_REFUSED
    if isinstance(exc, ConnectionResetError) and exc.errno is None:
        # asyncio's SSL layer raises a bare ConnectionResetError() when the peer closes
        # cleanly mid-handshake; a real RST always carries ECONNRESET.
        return EOF
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return CONNECTION_RESET
    if isinstance(exc, ConnectionAbortedError):
        return CONNECTION_ABORTED
    if isinstance(exc, OSError) and exc.errno in _ERRNO:
        return _ERRNO[exc.errno]
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc and isinstance(cause, OSError | ssl.SSLError):
        return classify_exception(cause)
    return unknown(f"{type(exc).__name__}: {exc}")
