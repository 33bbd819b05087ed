"""A tiny lab PKI (built on trustme) producing server TLS contexts.

Stands in for the Web PKI: the "Lab CA" plays the role of a public CA the
probe trusts (its bundle is handed to the probe), and the non-valid kinds
reproduce the certificate errors a client meets when a censor or a broken
site intercepts TLS.
"""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import trustme

__all__ = ["LabPKI", "CERT_KINDS"]

CERT_KINDS = ("valid", "current", "expired", "wrong_host", "unknown_ca")

#: The only name in a ``wrong_host`` certificate.
WRONG_HOST = "wrong.host.invalid"

_DEFAULT_NAMES = ("localhost", "127.0.0.1")


class LabPKI:
    """A trusted "Lab CA" plus helpers to mint server TLS contexts.

    Stands in for the public CA ecosystem: tests give the probe
    ``pki.ca_pem_path(tmp_path)`` as its trust store, then serve sites with
    ``pki.server_context("site.lab.test", kind=...)``:

    * ``"valid"`` – a proper certificate for the names (a normal HTTPS site).
    * ``"current"`` – valid, but only from 30 days ago to 60 days from now, as a real
      site's is (a local clock a year off sees it expired).
    * ``"expired"`` – issued by the Lab CA but expired (a neglected site, or a
      badly-built interception box) → ``CERT_HAS_EXPIRED``.
    * ``"wrong_host"`` – issued by the Lab CA for ``wrong.host.invalid`` only
      (traffic redirected to another server / a blockpage host) →
      ``HOSTNAME_MISMATCH``.
    * ``"unknown_ca"`` – for the right names but signed by a CA the client
      does not trust (TLS interception / MITM with a national root) →
      ``UNABLE_TO_GET_ISSUER_CERT_LOCALLY``.
    """

    def __init__(self) -> None:
        self.ca = trustme.CA(organization_name="Lab CA")
        self._rogue_ca: trustme.CA | None = None
        self._certs: dict[tuple[str, tuple[str, ...]], trustme.LeafCert] = {}

    @property
    def ca_pem(self) -> bytes:
        """The Lab CA certificate in PEM form."""
        return self.ca.cert_pem.bytes()

    def ca_pem_path(self, tmp_dir: str | Path) -> Path:
        """Write the Lab CA bundle to ``tmp_dir/lab-ca.pem`` and return the path
        (what the probe is given as its CA bundle)."""
        path = Path(tmp_dir) / "lab-ca.pem"
        path.write_bytes(self.ca_pem)
        return path

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context trusting only the Lab CA (for tests that
        talk TLS to lab servers directly)."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(ctx)
        return ctx

    def leaf(self, *names: str, kind: str = "valid") -> trustme.LeafCert:
        """The (cached) leaf certificate of ``kind`` for ``names``."""
        if kind not in CERT_KINDS:
            raise ValueError(f"unknown certificate kind {kind!r}; expected one of {CERT_KINDS}")
        names = tuple(names) or _DEFAULT_NAMES
        key = (kind, names)
        cert = self._certs.get(key)
        if cert is None:
            cert = self._issue(names, kind)
            self._certs[key] = cert
        return cert

    def server_context(self, *names: str, kind: str = "valid") -> ssl.SSLContext:
        """A server-side ``ssl.SSLContext`` presenting a certificate of
        ``kind`` for ``names`` (default ``localhost``/``127.0.0.1``), with the
        full chain and ALPN ``http/1.1``."""
        cert = self.leaf(*names, kind=kind)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def _issue(self, names: tuple[str, ...], kind: str) -> trustme.LeafCert:
        if kind == "valid":
            return self.ca.issue_cert(*names)
        if kind == "current":
            now = datetime.datetime.now(datetime.UTC)
            return self.ca.issue_cert(
                *names,
                not_before=now - datetime.timedelta(days=30),
                not_after=now + datetime.timedelta(days=60),
            )
        if kind == "expired":
            now = datetime.datetime.now(datetime.UTC)
            return self.ca.issue_cert(
                *names,
                not_before=now - datetime.timedelta(days=60),
                not_after=now - datetime.timedelta(days=1),
            )
        if kind == "wrong_host":
            return self.ca.issue_cert(WRONG_HOST)
        # unknown_ca
        if self._rogue_ca is None:
            self._rogue_ca = trustme.CA(organization_name="Untrusted Interception CA")
        return self._rogue_ca.issue_cert(*names)
