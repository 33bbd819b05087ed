"""One DER certificate described as plain data (pure: no network).

Why in core: the TLS step describes what a server presented, and the OONI codec
describes the chain an OONI measurement carries; both must give the same record."""

from __future__ import annotations

import base64
import hashlib

from cryptography import x509

from probe.core.records import Certificate


def describe_certificate(der: bytes) -> Certificate:
    """Subject, issuer, SANs, validity and fingerprint of one DER certificate."""
    fp = hashlib.sha256(der).hexdigest()
    b64 = base64.b64encode(der).decode()
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return Certificate("unparseable", "unparseable", [], "", "", "", fp, b64)
    sans: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        sans = [str(n) for n in ext.value.get_values_for_type(x509.DNSName)]
        sans += [str(n) for n in ext.value.get_values_for_type(x509.IPAddress)]
    except (x509.ExtensionNotFound, ValueError):
        pass
    return Certificate(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        sans=sans,
        not_before=cert.not_valid_before_utc.isoformat(),
        not_after=cert.not_valid_after_utc.isoformat(),
        serial=format(cert.serial_number, "x"),
        sha256=fp,
        der_b64=b64,
    )
