"""TLS step: a handshake with SNI to one address, and the certificate it presented.

The handshake is driven by hand over a MemoryBIO so that we know exactly how far it got:
a reset right after our ClientHello (SNI filtering) looks different from a failure after
the server answered (a bad certificate). A certificate that fails validation is not the
end of the evidence: a second handshake without verification captures the chain that
was presented, since an interception certificate is what a researcher needs to see.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import ssl
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from probe.core import failures as F
from probe.core.certs import describe_certificate
from probe.core.records import Certificate, Stopwatch, TlsHandshake

BROWSER_ALPN = ["h2", "http/1.1"]


def make_ssl_context(ca_file: str | None = None, *, verify: bool = True) -> ssl.SSLContext:
    """A client context that trusts the system store (SSL_CERT_FILE honoured by OpenSSL)
    plus ``ca_file``, or verifies nothing (to capture a chain that did not validate)."""
    if verify:
        ctx = ssl.create_default_context()
        if ca_file:
            ctx.load_verify_locations(cafile=ca_file)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(BROWSER_ALPN)
    return ctx


def presented_ders(obj: ssl.SSLObject) -> list[bytes]:
    """Every certificate the server sent (DER), leaf first; the leaf alone if that is
    all this Python can give. SSLObject.get_unverified_chain() is public from 3.13; 3.11
    has it on the private _sslobj, returning _ssl.Certificate objects."""
    inner = getattr(obj, "_sslobj", obj)
    getter = getattr(obj, "get_unverified_chain", None) or getattr(inner, "get_unverified_chain", None)
    ders: list[bytes] = []
    if getter is not None:
        try:
            der = ssl._ssl.ENCODING_DER  # type: ignore[attr-defined]
            ders = [c if isinstance(c, bytes) else c.public_bytes(der) for c in getter() or []]
        except Exception:
            ders = []
    if not ders:
        leaf = obj.getpeercert(binary_form=True)
        ders = [leaf] if leaf else []
    return ders


def _presented_chain(obj: ssl.SSLObject) -> list[Certificate]:
    return [describe_certificate(d) for d in presented_ders(obj)]


# --- judging certificates at another time (a local clock that is off) -------------------


def load_trust_roots(ca_file: str | None = None) -> list[x509.Certificate]:
    """The trust store OpenSSL uses here (SSL_CERT_FILE / SSL_CERT_DIR, else the default
    file and directory), plus ``ca_file``: for judging chains ourselves."""
    paths = ssl.get_default_verify_paths()
    files = [os.environ.get(paths.openssl_cafile_env) or paths.cafile, ca_file]
    dirs = [os.environ.get(paths.openssl_capath_env) or paths.capath]
    seen: set[bytes] = set()
    roots: list[x509.Certificate] = []

    def add(data: bytes) -> None:
        try:
            with warnings.catch_warnings():  # old roots with non-positive serials still load
                warnings.simplefilter("ignore")
                certs = x509.load_pem_x509_certificates(data)
        except ValueError:
            return
        for c in certs:
            fp = c.fingerprint(hashes.SHA256())
            if fp not in seen:
                seen.add(fp)
                roots.append(c)

    for f in files:
        if f and os.path.isfile(f):
            with open(f, "rb") as fh:
                add(fh.read())
    if not any(f and os.path.isfile(f) for f in files[:1]):
        for d in dirs:
            if d and os.path.isdir(d):
                for name in sorted(os.listdir(d)):
                    path = os.path.join(d, name)
                    if os.path.isfile(path):
                        with open(path, "rb") as fh:
                            add(fh.read())
    return roots


@dataclass
class ClockCorrection:
    """This computer's clock is off by ``skew_s`` (local minus the control's): chains
    are judged here, at the control's time, against these roots."""

    skew_s: float
    roots: list[x509.Certificate]

    def now(self) -> datetime:
        return datetime.now(UTC) - timedelta(seconds=self.skew_s)


def verify_chain(ders: list[bytes], server_name: str, at: datetime, roots: list[x509.Certificate]) -> str | None:
    """None when the chain is valid for ``server_name`` at ``at``, else our failure
    string. As lenient as OpenSSL on leaf extensions (a subjectAltName is required, of
    any criticality), strict on chain building, names and validity periods."""
    from cryptography.x509 import verification as xv

    if not ders or not roots:
        return F.SSL_UNKNOWN_AUTHORITY
    try:
        chain = [x509.load_der_x509_certificate(d) for d in ders]
    except ValueError:
        return F.SSL_INVALID_CERTIFICATE
    name: xv.Subject
    try:
        name = xv.IPAddress(ipaddress.ip_address(server_name.strip("[]")))
    except ValueError:
        name = xv.DNSName(server_name.rstrip(".").lower())
    ee = xv.ExtensionPolicy.permit_all().require_present(x509.SubjectAlternativeName, xv.Criticality.AGNOSTIC, None)
    try:
        verifier = (xv.PolicyBuilder().store(xv.Store(roots)).time(at)
                    .extension_policies(ca_policy=xv.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)
                    .build_server_verifier(name))
        verifier.verify(chain[0], chain[1:])
    except xv.VerificationError as exc:
        text = str(exc)
        if "subjectAltName" in text and "matching" in text:
            return F.SSL_INVALID_HOSTNAME
        if "candidates exhausted" in text:
            return F.SSL_UNKNOWN_AUTHORITY
        return F.SSL_INVALID_CERTIFICATE
    except ValueError:  # e.g. a name the verifier cannot take
        return F.SSL_INVALID_CERTIFICATE
    return None


def verification_error(failure: str) -> ssl.SSLCertVerificationError:
    """An OpenSSL-like error for a failure found by ``verify_chain`` (for aiohttp)."""
    code = {F.SSL_INVALID_HOSTNAME: 62, F.SSL_UNKNOWN_AUTHORITY: 20}.get(failure, 10)
    exc = ssl.SSLCertVerificationError(1, f"certificate verify failed at the control's time: {failure}")
    exc.verify_code = code
    return exc


@dataclass
class _Progress:
    """How far a handshake got: what tells SNI filtering from a bad server."""

    connected: bool = False
    sent: int = 0
    received: int = 0


class _PeerClosed(EOFError):
    """The peer closed the TCP connection in the middle of the handshake."""


async def _handshake(
    ip: str, port: int, server_name: str, ctx: ssl.SSLContext, progress: _Progress
) -> ssl.SSLObject:
    reader, writer = await asyncio.open_connection(ip, port)
    progress.connected = True
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_side=False, server_hostname=server_name or None)  # "": no SNI
    try:
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                data = outgoing.read()
                if data:
                    writer.write(data)
                    await writer.drain()
                    progress.sent += len(data)
                chunk = await reader.read(65536)
                if not chunk:
                    raise _PeerClosed() from None
                progress.received += len(chunk)
                incoming.write(chunk)
        tail = outgoing.read()  # e.g. the client Finished of TLS 1.3
        if tail:
            writer.write(tail)
            progress.sent += len(tail)
        try:
            obj.unwrap()
        except ssl.SSLError:
            pass
        tail = outgoing.read()
        if tail:
            writer.write(tail)
        return obj
    except ssl.SSLError:
        # flush the alert we owe the server, best effort, so it logs a clean failure
        try:
            alert = outgoing.read()
            if alert:
                writer.write(alert)
        except Exception:
            pass
        raise
    finally:
        writer.close()


def _stage(progress: _Progress) -> str:
    if not progress.connected:
        return "tcp_connect"
    if progress.sent == 0:
        return "before_client_hello"
    if progress.received == 0:
        return "after_client_hello"
    return "after_server_hello"


async def tls_handshake(
    ip: str,
    port: int,
    server_name: str,
    *,
    timeout: float,
    context: ssl.SSLContext,
    capture_context: ssl.SSLContext | None = None,
    sni_role: str = "target",
    clock: ClockCorrection | None = None,
) -> TlsHandshake:
    """Connect to ip:port and complete a TLS handshake with SNI ``server_name``. With a
    ``clock`` correction, ``context`` verifies nothing and the chain is judged here, at
    the control's time."""
    sw = Stopwatch()
    progress = _Progress()
    rec = TlsHandshake(ip, port, server_name, sw.started_at, 0.0, False, sni_role=sni_role)
    try:
        obj = await asyncio.wait_for(_handshake(ip, port, server_name, context, progress), timeout)
        rec.success = True
        # a context that verifies nothing (the benign-SNI retry) proves nothing about the certificate
        rec.cert_valid = True if context.verify_mode != ssl.CERT_NONE else None
        rec.tls_version = obj.version()
        rec.cipher = (obj.cipher() or (None,))[0]
        rec.alpn = obj.selected_alpn_protocol()
        ders = presented_ders(obj)
        rec.peer_certificates = [describe_certificate(d) for d in ders]
        if clock is not None and sni_role == "target" and context.verify_mode == ssl.CERT_NONE:
            at = clock.now()
            rec.cert_checked_at = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            failure = verify_chain(ders, server_name, at, clock.roots)
            rec.cert_valid = failure is None
            if failure is not None:
                rec.success, rec.failure, rec.cert_failure = False, failure, failure
                rec.failure_stage = "after_server_hello"
    except Exception as exc:
        rec.failure = F.classify_exception(exc)
        rec.failure_stage = _stage(progress)
        if isinstance(exc, ssl.SSLCertVerificationError):
            rec.cert_valid = False
            rec.cert_failure = rec.failure
            if capture_context is not None:
                await _capture(rec, ip, port, server_name, capture_context, timeout - sw.ms() / 1000)
    rec.bytes_sent, rec.bytes_received = progress.sent, progress.received
    rec.duration_ms = sw.ms()
    return rec


async def _capture(
    rec: TlsHandshake, ip: str, port: int, server_name: str, ctx: ssl.SSLContext, budget: float
) -> None:
    """Handshake again without verification to record the certificate that failed."""
    if budget <= 0:
        return
    try:
        obj = await asyncio.wait_for(_handshake(ip, port, server_name, ctx, _Progress()), budget)
    except Exception:
        return
    rec.tls_version = obj.version()
    rec.cipher = (obj.cipher() or (None,))[0]
    rec.alpn = obj.selected_alpn_protocol()
    rec.peer_certificates = _presented_chain(obj)
