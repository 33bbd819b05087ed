"""The failure vocabulary: one mapping from errors to strings, documented once."""

import asyncio
import errno
import socket
import ssl
from pathlib import Path

import pytest

from probe.core import failures as F


@pytest.mark.parametrize(
    "exc, expected",
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), F.CONNECTION_REFUSED),
        (ConnectionResetError(errno.ECONNRESET, "reset"), F.CONNECTION_RESET),
        (BrokenPipeError(errno.EPIPE, "pipe"), F.CONNECTION_RESET),
        (ConnectionResetError(), F.EOF),  # asyncio's "connection lost" mid-TLS-handshake
        (ConnectionAbortedError(errno.ECONNABORTED, "aborted"), F.CONNECTION_ABORTED),
        (OSError(errno.EHOSTUNREACH, "no route to host"), F.HOST_UNREACHABLE),
        (OSError(errno.ENETUNREACH, "network unreachable"), F.NETWORK_UNREACHABLE),
        (OSError(errno.EAFNOSUPPORT, "af"), F.ADDRESS_FAMILY_NOT_SUPPORTED),
        (TimeoutError(), F.GENERIC_TIMEOUT),
        (TimeoutError(), F.GENERIC_TIMEOUT),
        (asyncio.IncompleteReadError(b"", 10), F.EOF),
        (ssl.SSLEOFError(8, "eof"), F.EOF),
        (socket.gaierror(socket.EAI_NONAME, "no name"), F.DNS_NXDOMAIN),
        (socket.gaierror(socket.EAI_FAIL, "fail"), F.DNS_SERVFAIL),
        (socket.gaierror(socket.EAI_AGAIN, "again"), F.DNS_TEMPORARY_FAILURE),
        (ssl.SSLError(1, "[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] alert"), F.SSL_HANDSHAKE_FAILURE),
    ],
)
def test_classify_exception(exc, expected):
    assert F.classify_exception(exc) == expected


def _verify_error(code: int) -> ssl.SSLCertVerificationError:
    e = ssl.SSLCertVerificationError(1, "verify failed")
    e.verify_code = code
    return e


@pytest.mark.parametrize(
    "code, expected",
    [(62, F.SSL_INVALID_HOSTNAME), (18, F.SSL_UNKNOWN_AUTHORITY), (20, F.SSL_UNKNOWN_AUTHORITY),
     (19, F.SSL_UNKNOWN_AUTHORITY), (10, F.SSL_INVALID_CERTIFICATE), (9, F.SSL_INVALID_CERTIFICATE)],
)
def test_certificate_errors(code, expected):
    assert F.classify_exception(_verify_error(code)) == expected


def test_unknown_failures_are_one_line_and_marked():
    text = F.classify_exception(ValueError("weird\nthing  happened"))
    assert text.startswith("unknown_failure: ValueError")
    assert "\n" not in text
    assert F.is_known(text)
    assert not F.is_known("made_up_failure")


def test_every_failure_has_a_description_and_an_ooni_name():
    for name in F.FAILURES:
        assert F.FAILURES[name]
        if name != F.UNKNOWN_FAILURE:
            assert name in F.OONI_NAMES, name


def test_readme_documents_every_failure_string():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [name for name in F.FAILURES if f"`{name}`" not in readme]
    assert not missing, f"README does not document: {missing}"
