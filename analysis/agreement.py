"""Agreement with OONI: our verdicts on OONI's own measurements, next to OONI's labels.

OONI's `blocking` is one of false/null/"dns"/"tcp_ip"/"http-failure"/"http-diff" (plus
`accessible`). Ours is finer, so both are reduced to a common family before comparing:
TLS interference is "http-failure" in OONI's vocabulary, a blockpage is "http-diff".
Every disagreement must carry an explanation (EXPLANATIONS), checked by a test that also
keeps the README's table true.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from probe.ooni import ooni_to_measurement

from .classify import classify
from .view import Context

OUR_FAMILY = {
    "ok": "accessible",
    "down": "down",
    "error": "can't tell",
    "dns.nxdomain": "dns", "dns.bogon": "dns", "dns.blockpage": "dns", "dns.injection": "dns", "dns.inconsistent": "dns",
    "tcp.timeout": "tcp_ip", "tcp.reset": "tcp_ip", "tcp.refused": "tcp_ip",
    "tls.reset": "http-failure", "tls.timeout": "http-failure", "tls.mitm": "http-failure",
    "http.reset": "http-failure", "http.timeout": "http-failure",
    "http.blockpage": "http-diff", "http.diff": "http-diff",
}


def ooni_family(blocking: str, accessible: str) -> str:
    b = (blocking or "").strip().strip('"')
    if b in ("", "null", "None"):
        return "can't tell"
    if b == "false":
        return "accessible" if accessible == "true" else "down"
    return b


# Why we differ, case by case. Keys are the file names under tests/data/ooni/.
EXPLANATIONS: dict[str, str] = {}


@dataclass
class Row:
    case: str
    cc: str
    input: str
    ooni_blocking: str
    ooni_accessible: str
    ooni: str
    verdict: str
    confidence: float
    ours: str
    rule: str

    @property
    def agree(self) -> bool:
        return self.ooni == self.ours


def load_doc(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonc":
        text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    return json.loads(text)


def agreement(data_dir: Path) -> list[Row]:
    rows = []
    with (data_dir / "INDEX.csv").open(newline="", encoding="utf-8") as fh:
        index = list(csv.DictReader(fh))
    for entry in index:
        doc = load_doc(data_dir / entry["file"])
        m, meta = ooni_to_measurement(doc)
        v = classify(m, Context(cc=meta.get("cc"), asn=meta.get("asn")))
        rows.append(Row(
            case=entry["file"], cc=entry["probe_cc"], input=entry["input"],
            ooni_blocking=entry["blocking"].strip('"') or "null", ooni_accessible=entry["accessible"] or "null",
            ooni=ooni_family(entry["blocking"], entry["accessible"]),
            verdict=v.verdict, confidence=v.confidence, ours=OUR_FAMILY[v.verdict], rule=f"{v.layer or '-'}:{v.rule_id}",
        ))
    return rows


def markdown(rows: list[Row]) -> str:
    agree = sum(r.agree for r in rows)
    out = [f"{agree} of {len(rows)} agree.", "",
           "| case | OONI `blocking` / `accessible` | our verdict (confidence) | agree? | why we differ |",
           "|---|---|---|---|---|"]
    for r in rows:
        name = Path(r.case).stem.replace("backend-fastpath__", "").replace("probecli-", "")
        why = "" if r.agree else EXPLANATIONS.get(r.case, "**unexplained**")
        out.append(f"| {name} | {r.ooni_blocking} / {r.ooni_accessible} | `{r.verdict}` ({r.confidence:.2f}) | "
                   f"{'yes' if r.agree else '**no**'} | {why} |")
    return "\n".join(out)
