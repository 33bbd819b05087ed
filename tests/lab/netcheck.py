"""Wait until lab services answer, from inside a lab namespace.

``python netcheck.py --deadline 20 tcp:10.77.1.80:8080 dns:10.77.0.1:53:ok.lab.test=10.77.2.10``

Each check is retried until it passes or the deadline is over: ``tcp:IP:PORT`` (a
connect succeeds) or ``dns:IP:PORT:NAME[=ADDRESS]`` (an A query gets an answer, with
that address when given). Exit 0 when all passed, else 1 with what failed.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

import dns.message
import dns.rdatatype


def tcp_ok(ip: str, port: int) -> str | None:
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return None
    except OSError as exc:
        return f"connect: {exc}"


def dns_ok(ip: str, port: int, name: str, expect: str | None) -> str | None:
    q = dns.message.make_query(name, "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        try:
            s.sendto(q.to_wire(), (ip, port))
            data, _ = s.recvfrom(4096)
        except OSError as exc:
            return f"query: {exc}"
    msg = dns.message.from_wire(data)
    got = [r.address for rrset in msg.answer if rrset.rdtype == dns.rdatatype.A for r in rrset]
    if expect is not None and expect not in got:
        return f"answer {got} (rcode {msg.rcode()}), expected {expect}"
    return None


def run(check: str) -> str | None:
    kind, _, rest = check.partition(":")
    if kind == "tcp":
        ip, port = rest.rsplit(":", 1)
        return tcp_ok(ip, int(port))
    if kind == "dns":
        ip, port, query = rest.split(":", 2)
        name, _, expect = query.partition("=")
        return dns_ok(ip, int(port), name, expect or None)
    return f"unknown check kind {kind!r}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deadline", type=float, default=20.0)
    ap.add_argument("checks", nargs="+")
    args = ap.parse_args()
    end = time.monotonic() + args.deadline
    pending = {c: "not tried" for c in args.checks}
    while pending:
        for c in list(pending):
            err = run(c)
            if err is None:
                del pending[c]
            else:
                pending[c] = err
        if not pending or time.monotonic() > end:
            break
        time.sleep(0.1)
    for c, err in pending.items():
        print(f"netcheck: {c}: {err}", file=sys.stderr)
    return 1 if pending else 0


if __name__ == "__main__":
    sys.exit(main())
