"""Rebuild probe/analysis/fingerprints.csv from the public fingerprint lists.

    python scripts/import_fingerprints.py OONI_FINGERPRINTS_DIR CENSOREDPLANET_DIR

OONI_FINGERPRINTS_DIR holds ooni/blocking-fingerprints' fingerprints_dns.csv and
fingerprints_http.csv; CENSOREDPLANET_DIR holds censoredplanet-analysis'
blockpage_signatures.json and false_positive_signatures.json (JSON lines). Our own
rows (BYNET_ROWS below) are appended. Run it by hand when the upstream lists change;
the probe never reads the upstream files at run time.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

COLUMNS = ["name", "location", "pattern_type", "pattern", "scope", "countries", "source", "first_seen", "notes"]
OONI_SOURCE = "ooni/blocking-fingerprints@171641e6"
CP_SOURCE = "censoredplanet-analysis@31830c6e"
CP_SCOPES = {"a_prod": "prod", "b_nat": "nat", "c_isp": "isp", "d_corp": "inst", "e_unk": "vbw", "f_gen": "vbw"}
_DATE = re.compile(r"/measurement/(\d{4})(\d{2})(\d{2})T")

# Belarus rows of our own (research notes, peers.md section 4.3; texts from Citizen Lab's
# filtering-annotations blockpage_meta/isp_by_*.html at fad90899).
BYNET_ROWS = [
    {
        "name": "bynet.by_mininform_text",
        "location": "body",
        "pattern_type": "contains",
        "pattern": "решения Министерства информации Республики Беларусь",
        "scope": "nat",
        "countries": "BY",
        "source": "bynet-probe: Ministry of Information blocking notice shown by Beltelecom, MTS and A1",
        "first_seen": "2018-01-24",
        "notes": "matches all three ISPs' pages; OONI's Beltelecom row misses A1, whose page writes 'cредствах' with a Latin c",
    },
    {
        "name": "bynet.by_a1_block_text",
        "location": "body",
        "pattern_type": "contains",
        "pattern": "&laquo;О cредствах массовой информации&raquo;",
        "scope": "isp",
        "countries": "BY",
        "source": "bynet-probe: A1 (AS42772) blockpage, Citizen Lab isp_by_a1_block.html",
        "first_seen": "2020-08-09",
        "notes": "the 'c' of 'cредствах' is Latin U+0063 on A1's page",
    },
    {
        "name": "bynet.by_a1_title",
        "location": "title",
        "pattern_type": "full",
        "pattern": "Доступ ограничен",
        "scope": "vbw",
        "countries": "BY",
        "source": "bynet-probe: A1 (AS42772) blockpage title, Citizen Lab isp_by_a1_block.html",
        "first_seen": "2020-08-09",
        "notes": "a vague blocking word: counts only when the control sees another page",
    },
]


def ooni_rows(folder: Path) -> list[dict]:
    out = []
    for fname in ("fingerprints_dns.csv", "fingerprints_http.csv"):
        with (folder / fname).open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                m = _DATE.search(row.get("exp_url") or "")
                out.append(
                    {
                        "name": row["name"],
                        "location": row["location_found"],
                        "pattern_type": row["pattern_type"],
                        "pattern": row["pattern"],
                        "scope": row["scope"],
                        "countries": (row["expected_countries"] or "").replace(" ", ""),
                        "source": f"{OONI_SOURCE} ({row['source']})" if row["source"] else OONI_SOURCE,
                        "first_seen": "-".join(m.groups()) if m else "",
                        "notes": " ".join(x for x in (row.get("notes") or "", row.get("exp_url") or "") if x),
                    }
                )
    return out


def cp_rows(folder: Path) -> list[dict]:
    out = []
    for fname, fp in (("blockpage_signatures.json", False), ("false_positive_signatures.json", True)):
        for line in (folder / fname).read_text(encoding="utf-8").split("\n"):  # not splitlines: patterns hold U+2028
            if not line.strip():
                continue
            d = json.loads(line)
            name = d["fingerprint"]
            scope = "fp" if fp else next((v for k, v in CP_SCOPES.items() if name.startswith(k)), "vbw")
            out.append(
                {
                    "name": f"cp.{name}",
                    "location": "response",
                    "pattern_type": "regexp",
                    "pattern": d["pattern"],
                    "scope": scope,
                    "countries": "",
                    "source": CP_SOURCE,
                    "first_seen": "",
                    "notes": "false-positive signature: a match means NOT a blockpage" if fp else "",
                }
            )
    return out


def main() -> None:
    ooni_dir, cp_dir = (Path(a) for a in sys.argv[1:3])
    ooni = ooni_rows(ooni_dir)
    # OONI's list already carries many Censored Planet signatures under "cp." names
    # (as body/contains rows); keep the analysis repo's regexp only for the others.
    known = {r["name"] for r in ooni}
    cp = [r for r in cp_rows(cp_dir) if r["name"] not in known]
    rows = ooni + cp + BYNET_ROWS
    out = Path(__file__).resolve().parent.parent / "probe" / "analysis" / "fingerprints.csv"
    with out.open("w", newline="", encoding="utf-8") as fh:
        # "\r\n" rows: the csv module then quotes any field holding \r or \n (some
        # patterns do), so the file reads back exactly; read it with newline="".
        w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\r\n")
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(rows)} fingerprints to {out} ({len(ooni)} OONI, {len(cp)} Censored Planet, {len(BYNET_ROWS)} ours)")


if __name__ == "__main__":
    main()
