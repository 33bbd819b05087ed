"""A generator of realistic measurements, for benchmarks at scale.

    python benchmarks/generate.py OUT.db N [--seed S]

Writes N measurements into a probe database (the real schema, through the store),
with the shapes a volunteer in Belarus records (the lab's scenarios): working sites
with real-size pages (20-64 KiB kept, as the probe keeps them, some behind a redirect),
DNS NXDOMAIN and the MTS DNS forward to a blockpage, TCP timeouts and resets, TLS
resets after the ClientHello (SNI) and timeouts, a MITM certificate, the Beltelecom,
MTS and A1 blockpages, sites down for everyone, runs whose control was lost; and the
OONI corpus's own measurements (tests/data/ooni) as they decode. Each has its control
side as the helper returns it. Runs of 1,000 measurements on 12 networks over days.

A base of up to 20,000 measurements is built record by record; larger databases copy
it in SQL with new run and measurement ids (and later days), since what costs the
classifier is the rows, not their novelty. Not a test: see analyze_benchmark.py.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlite_utils  # noqa: E402

from probe import store  # noqa: E402
from probe.core.records import (  # noqa: E402
    Certificate,
    ControlResult,
    DnsAnswer,
    DnsQuery,
    HttpRequest,
    Measurement,
    TcpConnect,
    TlsHandshake,
    new_id,
)

RUN_SIZE = 1000
BASE_MAX = 20_000
NETWORKS = [("BY", "AS6697"), ("BY", "AS25106"), ("BY", "AS42772"), ("BY", "AS21274"), ("BY", "AS44087"),
            ("BY", "AS12406"), ("BY", "AS31143"), ("BY", "AS56740"), ("KZ", "AS9198"), ("RU", "AS12389"),
            ("DE", "AS3320"), ("LT", "AS8764")]
SERVER_IP = "93.184.216.{n}"
RESOLVER = "192.0.2.53:53"
WORDS = ("Минск Беларусь новости навіны падзеі сёння палітыка эканоміка грамадства культура спорт "
         "заявил сообщает источник агентство рэдакцыя article news report opposition election court").split()

# (weight, shape): about the mix of an independent-press list measured inside Belarus
SHAPES = [
    (40, "ok"), (5, "ok_redirect"), (7, "dns_nxdomain"), (2, "dns_forward"), (7, "tcp_timeout"), (3, "tcp_reset"),
    (10, "tls_reset"), (3, "tls_timeout"), (1, "tls_mitm"), (8, "http_blockpage"), (5, "down"), (4, "no_control"),
    (5, "ooni"),
]

BLOCKPAGES = [
    ("<html><head><title>Доступ ограничен</title></head><body><div class=\"text\">Доступ к информационному ресурсу "
     "ограничен на основании решения Министерства информации Республики Беларусь в соответствии с Законом "
     "Республики Беларусь от 17 июля 2008 года «О средствах массовой информации\"</div></body></html>"),
    ("<html><head><title>MTS</title></head><body>Ресурс заблокирован. <a href=\"https://help.mts.by/hc/ru/requests/new"
     "\">Обратиться</a></body></html>"),
    ("<html><head><link rel=\"stylesheet\" href=\"https://www.velcom.by/mininfo/css/main.css\"><title>A1</title></head>"
     "<body>Доступ ограничен решением Министерства информации Республики Беларусь</body></html>"),
]


def page(rng: random.Random, size: int) -> bytes:
    """A news site's front page: markup, links and text, ``size`` bytes (compresses
    about as well as a real one, 4-6 times)."""
    parts = ["<!doctype html><html><head><meta charset=\"utf-8\"><title>Навіны</title>"
             "<script src=\"/static/app.js\"></script></head><body><nav>"]
    n = 0
    while n < size:
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30)))
        slug = rng.randrange(10**6)
        chunk = (f"<article class=\"news-item\"><a href=\"/news/{slug}.html\"><h2>{words[:60]}</h2></a>"
                 f"<p class=\"lead\">{words}</p><span class=\"date\">{rng.randint(1, 28)}.11.2026</span></article>\n")
        parts.append(chunk)
        n += len(chunk.encode())
    return "".join(parts).encode()[:size]


class Shapes:
    """Builds a measurement of one shape for one site at one time, local and control."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.pages = [page(rng, rng.choice([20_000, 35_000, 50_000, 65_536, 65_536])) for _ in range(48)]
        self.ooni = _ooni_templates()

    def build(self, shape: str, host: str, n: int, t: str) -> Measurement:
        if shape == "ooni" and self.ooni:
            m = copy.deepcopy(self.rng.choice(self.ooni))
            m.measurement_id, m.started_at = new_id(), t
            for q in [*m.dns, *(m.control.dns if m.control else [])]:
                q.query_id = new_id()
            for h in [*m.http, *(m.control.http if m.control else [])]:
                h.request_id = new_id()
            return m
        url = f"https://{host}/"
        ip = SERVER_IP.format(n=n % 250 + 1)
        m = Measurement(url=url, hostname=host, scheme="https", port=443, started_at=t, category="NEWS",
                        finished_at=t, duration_ms=self.rng.uniform(200, 3000), addresses=[ip], network_epoch=1)
        local_ip = {"dns_forward": "134.17.0.7"}.get(shape, ip)
        m.dns = self._dns(host, local_ip, nxdomain=shape in ("dns_nxdomain",), t=t)
        if shape == "dns_nxdomain":
            m.addresses = []
            m.http = [HttpRequest(url, "main", 0, t, 30.0, failure="dns_nxdomain_error")]
        elif shape == "dns_forward":
            m.addresses = [local_ip]
            m.tcp = [TcpConnect(local_ip, 443, t, 15.0, False, "connection_refused"),
                     TcpConnect(local_ip, 80, t, 15.0, True)]
            m.http = [HttpRequest(f"http://{host}/", "main", 0, t, 60.0, address=f"{local_ip}:80", status=200,
                                  reason="OK", http_version="HTTP/1.1", headers=[["Content-Type", "text/html; charset=utf-8"]],
                                  **self._body(BLOCKPAGES[0].encode()))]
        elif shape in ("tcp_timeout", "tcp_reset", "down"):
            failure = {"tcp_timeout": "generic_timeout_error", "tcp_reset": "connection_reset"}.get(shape,
                                                                                                  "connection_refused")
            m.tcp = [TcpConnect(ip, 443, t, 5000.0 if "timeout" in failure else 20.0, False, failure)]
            # as the probe records it: a fetch to an address whose connect timed out is not sent
            m.http = [HttpRequest(url, "main", 0, t, 5000.0, failure=failure, attempted="timeout" not in failure)]
        else:
            m.tcp = [TcpConnect(ip, 443, t, self.rng.uniform(10, 80), True)]
            self._tls_and_http(m, shape, host, ip, url, t)
        m.control = self._control(m, shape, host, ip, url, t)
        return m

    def _dns(self, host: str, ip: str, nxdomain: bool, t: str) -> list[DnsQuery]:
        answers = [] if nxdomain else [DnsAnswer("A", ip, 300)]
        failure = "dns_nxdomain_error" if nxdomain else None
        rcode = "NXDOMAIN" if nxdomain else "NOERROR"
        return [DnsQuery("system", None, host, "ANY", t, 12.0, failure, None, None, list(answers)),
                DnsQuery("udp", RESOLVER, host, "A", t, 14.0, failure, rcode, RESOLVER.split(":")[0], list(answers)),
                DnsQuery("udp", RESOLVER, host, "AAAA", t, 14.0, None if not nxdomain else failure, rcode,
                         RESOLVER.split(":")[0], [])]

    def _body(self, body: bytes) -> dict:
        title = body.split(b"<title>")[1].split(b"</title>")[0].decode() if b"<title>" in body else None
        return {"body_length": len(body) * (3 if len(body) >= 65_536 else 1), "body_truncated": len(body) >= 65_536,
                "title": title, "body_head": body, "body_sha256": f"{hash(body) & (2**64 - 1):016x}"}

    def _tls_and_http(self, m: Measurement, shape: str, host: str, ip: str, url: str, t: str) -> None:
        if shape in ("tls_reset", "tls_timeout"):
            failure = "connection_reset" if shape == "tls_reset" else "generic_timeout_error"
            m.tls = [TlsHandshake(ip, 443, host, t, 30.0, False, failure, failure_stage="after_client_hello",
                                  bytes_sent=517)]
            m.http = [HttpRequest(url, "main", 0, t, 30.0, failure=failure)]
            return
        valid = shape != "tls_mitm"
        issuer = "CN=R11, O=Let's Encrypt" if valid else "CN=Beltelecom DPI"
        cert = Certificate(subject=f"CN={host}", issuer=issuer, sans=[host], not_before="2026-10-01T00:00:00Z",
                           not_after="2026-12-30T00:00:00Z", serial=f"{self.rng.getrandbits(64):x}",
                           sha256=f"{self.rng.getrandbits(256):064x}", der_b64="MIIF" + "A" * 1700)
        bad_cert = None if valid else "ssl_unknown_authority"  # as the probe records an untrusted certificate
        m.tls = [TlsHandshake(ip, 443, host, t, 45.0, valid, bad_cert, failure_stage=None if valid else
                              "after_server_hello", bytes_sent=517, bytes_received=4100, tls_version="TLSv1.3",
                              cipher="TLS_AES_128_GCM_SHA256", alpn="http/1.1", cert_valid=valid,
                              cert_failure=bad_cert, peer_certificates=[cert])]
        if shape == "tls_mitm":
            m.http = [HttpRequest(url, "main", 0, t, 45.0, failure=bad_cert)]
            return
        if shape == "http_blockpage":
            body = self.rng.choice(BLOCKPAGES).encode()
        else:
            body = self.rng.choice(self.pages)
        hops = []
        if shape == "ok_redirect":
            hops.append(HttpRequest(f"http://{host}/", "main", 0, t, 40.0, address=f"{ip}:80", status=301,
                                    reason="Moved Permanently", http_version="HTTP/1.1",
                                    headers=[["Location", url]], location=url, body_length=0))
        hops.append(HttpRequest(url, "main", len(hops), t, self.rng.uniform(150, 900), address=f"{ip}:443",
                                status=200, reason="OK", http_version="HTTP/1.1",
                                headers=[["Content-Type", "text/html; charset=utf-8"], ["Server", "nginx"]],
                                **self._body(body)))
        m.http = hops

    def _control(self, m: Measurement, shape: str, host: str, ip: str, url: str, t: str) -> ControlResult:
        c = ControlResult("https://control.example/", t, 900.0)
        if shape == "no_control":
            c.failure, c.reason = "generic_timeout_error", "timeout"
            return c
        if shape == "down":
            c.dns = self._dns(host, ip, False, t)[:2]
            c.tcp = [TcpConnect(ip, 443, t, 20.0, False, "connection_refused")]
            c.http = [HttpRequest(url, "main", 0, t, 20.0, failure="connection_refused")]
            return c
        body = self.pages[hash(host) % len(self.pages)] if shape != "ok" else None
        final = next((h for h in reversed(m.http) if h.status == 200), None)
        length = final.body_length if final is not None and shape in ("ok", "ok_redirect", "no_control") else \
            len(body or b"") * 3
        title = final.title if final is not None and shape in ("ok", "ok_redirect") else "Навіны"
        c.dns = self._dns(host, ip, False, t)[:2]
        c.tcp = [TcpConnect(ip, 443, t, 20.0, True)]
        c.tls = [TlsHandshake(ip, 443, host, t, 40.0, True, tls_version="TLSv1.3", cert_valid=True)]
        c.http = [HttpRequest(url, "main", 0, t, 300.0, status=200, reason="OK", http_version="HTTP/1.1",
                              headers=[["Content-Type", "text/html; charset=utf-8"], ["Server", "nginx"]],
                              body_length=length, title=title)]
        return c


def _ooni_templates() -> list[Measurement]:
    """The OONI corpus's web_connectivity measurements, decoded as an import would."""
    from probe.ooni.common import OoniFormatError
    from probe.ooni.decode import ooni_to_measurement

    out = []
    for path in sorted((ROOT / "tests" / "data" / "ooni").rglob("*.json")):
        try:
            m, _ = ooni_to_measurement(json.loads(path.read_text()), fallback_key=path.name)
        except (OoniFormatError, ValueError, KeyError, TypeError):
            continue
        out.append(m)
    return out


def _shape_of(rng: random.Random) -> str:
    return rng.choices([s for _, s in SHAPES], weights=[w for w, _ in SHAPES])[0]


def new_run(db: sqlite_utils.Database, cc: str, asn: str, started_at: str = "2026-11-01T00:00:00Z",
            count: int = RUN_SIZE) -> str:
    """A finished run of ``count`` targets on one network."""
    run_id = new_id()
    store.create_run(db, {"run_id": run_id, "started_at": started_at, "status": "finished", "probe_version": "bench",
                          "targets_source": "generate.py", "target_count": count, "cc": cc, "asn": asn,
                          "network_name": f"ISP {asn}", "config": json.dumps({"dns_timeout": 4.0}), "notes": "[]",
                          "resolvers": json.dumps([RESOLVER])}, [])
    return run_id


def build_base(db_path: Path, n: int, seed: int) -> None:
    """``n`` measurements, record by record, in runs of RUN_SIZE on NETWORKS."""
    rng = random.Random(seed)
    shapes = Shapes(rng)
    db = store.open_db(db_path)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    try:
        for r, first in enumerate(range(0, n, RUN_SIZE)):
            cc, asn = NETWORKS[r % len(NETWORKS)]
            day = start + timedelta(hours=6 * r)
            count = min(RUN_SIZE, n - first)
            run_id = new_run(db, cc, asn, day.isoformat().replace("+00:00", "Z"), count)
            ms = []
            for i in range(count):
                t = (day + timedelta(seconds=i)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                ms.append(shapes.build(_shape_of(rng), f"site{i}.example.by", i, t))
            store.add_run_targets(db, run_id, [m.url for m in ms])
            for start_at in range(0, len(ms), 200):
                store.save_measurements(db, run_id, ms[start_at:start_at + 200])
    finally:
        store.close(db)


# per table: the columns rewritten in a copy ("{k}" is the copy's number)
_COPY = {
    "runs": {"run_id": "run_id || '-{k}'", "started_at": "strftime('%Y-%m-%dT%H:%M:%fZ', started_at, '+{k} days')"},
    "measurements": {"measurement_id": "measurement_id || '-{k}'", "run_id": "run_id || '-{k}'",
                     "started_at": "strftime('%Y-%m-%dT%H:%M:%fZ', started_at, '+{k} days')"},
    "dns_queries": {"query_id": "query_id || '-{k}'", "measurement_id": "measurement_id || '-{k}'"},
    "dns_answers": {"query_id": "query_id || '-{k}'", "measurement_id": "measurement_id || '-{k}'"},
    "tcp_connects": {"id": "null", "measurement_id": "measurement_id || '-{k}'"},
    "tls_handshakes": {"id": "null", "measurement_id": "measurement_id || '-{k}'"},
    "http_requests": {"request_id": "request_id || '-{k}'", "measurement_id": "measurement_id || '-{k}'"},
    "control_results": {"measurement_id": "measurement_id || '-{k}'"},
}


def scale(db_path: Path, base: int, n: int) -> None:
    """Copy the base rows until the database holds ``n`` measurements."""
    conn = sqlite3.connect(db_path)
    conn.execute("pragma journal_mode=wal")
    copies = -(-n // base) - 1
    for k in range(1, copies + 1):
        keep = min(base, n - k * base)
        with conn:
            conn.execute("create temp table if not exists pick (measurement_id text primary key)")
            conn.execute("delete from pick")
            conn.execute("insert into pick select measurement_id from measurements where measurement_id not like '%-%-%-%-%-%' "
                         "order by rowid limit ?", [keep])
            for table, rewrite in _COPY.items():
                cols = [r[1] for r in conn.execute(f"pragma table_info({table})")]
                select = ", ".join(rewrite.get(c, c).format(k=k) for c in cols)
                where = ("run_id in (select distinct m.run_id from measurements m join pick using (measurement_id))"
                         if table == "runs" else "measurement_id in (select measurement_id from pick)")
                # in rowid order: each copied run's rows stay together, as a probe writes them
                conn.execute(f"insert into {table} ({', '.join(cols)}) select {select} from {table} where {where} "
                             "order by rowid")
        print(f"copy {k}/{copies}", file=sys.stderr, flush=True)
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("n", type=int)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--base", type=int, default=BASE_MAX, help="measurements built one by one; the rest are copies")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists")
    t0 = time.monotonic()
    base = min(args.n, args.base)
    build_base(args.out, base, args.seed)
    t1 = time.monotonic()
    if args.n > base:
        scale(args.out, base, args.n)
    print(json.dumps({"measurements": args.n, "base": base, "base_s": round(t1 - t0, 1),
                      "scale_s": round(time.monotonic() - t1, 1),
                      "db_mib": round(args.out.stat().st_size / 2**20)}))


if __name__ == "__main__":
    main()
