"""Real local servers for tests: DNS, web, TLS certificates and raw TCP.

Every server binds to a loopback address (127.0.0.0/8 or ::1) on an
ephemeral port, is an async context manager, and never sends traffic
anywhere but back to the loopback peer that talked to it.
"""

from .dns import (
    GARBAGE,
    NXDOMAIN,
    REFUSED,
    SERVFAIL,
    SILENT,
    Answer,
    Behaviour,
    Delayed,
    DnsServer,
    Race,
    Txt,
)
from .tcp import BEHAVIOURS as TCP_BEHAVIOURS
from .tcp import GARBAGE_BYTES, RawTcpServer, unused_port
from .tls import CERT_KINDS, WRONG_HOST, LabPKI
from .web import BLOCKPAGE_TEXT, BLOCKPAGE_TITLE, CP1251_TITLE, HUGE_SIZE, WebServer, site_app

__all__ = [
    "Answer",
    "BLOCKPAGE_TEXT",
    "BLOCKPAGE_TITLE",
    "CP1251_TITLE",
    "Behaviour",
    "CERT_KINDS",
    "Delayed",
    "DnsServer",
    "GARBAGE",
    "GARBAGE_BYTES",
    "HUGE_SIZE",
    "LabPKI",
    "NXDOMAIN",
    "REFUSED",
    "Race",
    "RawTcpServer",
    "SERVFAIL",
    "SILENT",
    "TCP_BEHAVIOURS",
    "Txt",
    "WRONG_HOST",
    "WebServer",
    "site_app",
    "unused_port",
]
