"""``python -m tests.lab list|up|run|down``: the censorship lab by hand (as root).

* ``list``  every scenario, its URL and the verdict it must get
* ``run``   bring the lab up, measure every scenario from the volunteer's namespace with
            the control helper, ``probe analyze``, print ``probe report`` and how each
            verdict compares with the expected one, tear the lab down (also on Ctrl-C);
            exit 0 when every verdict is the expected one
* ``up``    bring the lab up and leave it running; prints how to enter the volunteer's
            namespace, the probe command, and the state file ``down`` needs
            (``--deep``: also the longer path far -> r1 -> r2 -> r3 -> net, issue 10)
* ``down``  take down the labs named by state files (default: every lab left by ``up``
            or by a run that was killed; ``--force``: any lab namespace on this machine)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.lab` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    __package__ = "tests.lab"

from . import REPO_ROOT
from . import scenarios as S
from .topology import NS_RE, Lab, LabError, missing_commands


def _need_root() -> None:
    if os.geteuid() != 0:
        sys.exit("error: the censorship lab needs root for network namespaces and iptables "
                 "(sudo python -m tests.lab ...)")
    missing = missing_commands()
    if missing:
        sys.exit("error: the censorship lab needs " + ", ".join(missing)
                 + "\n  apt-get install -y iptables dnsmasq-base iproute2 procps")


def _interrupt_on_signals() -> None:
    """Ctrl-C, `kill -INT` (even when started in the background, where SIGINT comes
    ignored) and SIGTERM all raise KeyboardInterrupt, so the lab is torn down."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, handler)


def probe_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m probe ...` on the database only (no network): analyze, report, show."""
    return subprocess.run([sys.executable, "-m", "probe", *args], capture_output=True, text=True,
                          cwd=str(REPO_ROOT), timeout=timeout)


def compare(report: list[dict], scenarios=S.SCENARIOS) -> list[dict]:
    by_url = {r["url"]: r for r in report}
    rows = []
    for s in scenarios:
        r = by_url.get(s.url)
        got = r["verdict"] if r else None
        rows.append({"scenario": s.name, "expected": s.expected, "got": got, "match": got == s.expected,
                     "confidence": r.get("confidence") if r else None,
                     "evidence": [e.get("text") for e in (r or {}).get("evidence", [])][:2]})
    return rows


def cmd_list(args) -> int:
    if args.json:
        print(json.dumps(S.describe_table(), indent=2, ensure_ascii=False))
        return 0
    w = max(len(s.name) for s in S.SCENARIOS)
    for s in S.SCENARIOS:
        print(f"{s.name:<{w}}  {s.expected:<16}  {s.url}")
        print(f"{'':<{w}}  {'':<16}  {s.description}")
        for line in s.isp_dns:
            print(f"{'':<{w}}  {'':<16}  ISP resolver: {line}")
        for line in s.censor_dns:
            print(f"{'':<{w}}  {'':<16}  censor's resolver: {line}")
        for rule in s.rules:
            print(f"{'':<{w}}  {'':<16}  {rule.command()}")
    print(f"\n{len(S.SCENARIOS)} scenarios; VOLIF = the ISP's interface towards the volunteer")
    return 0


def cmd_up(args) -> int:
    _need_root()
    lab = Lab(workdir=args.workdir, keep_workdir=True, deep=args.deep).up()
    lab.detached = True
    lab._save_state()
    print(f"censorship lab {lab.suffix} is up ({lab.up_seconds} s); work dir {lab.workdir}")
    print(f"  namespaces: {', '.join(lab.ns.values())}")
    print(f"  enter the volunteer's network:  ip netns exec {lab.ns['vol']} bash")
    print("  measure every scenario (from the repository root):")
    print("    ip netns exec " + lab.ns["vol"] + " " + " ".join(lab.probe_argv(lab.dir / "probe.db")))
    print(f"  then: python -m probe analyze --db {lab.dir / 'probe.db'}; "
          f"python -m probe report --db {lab.dir / 'probe.db'}")
    if lab.deep:
        print("  the longer path (far -> r1 -> r2 -> r3 -> net; r2 censors and injects): check it with")
        print(f"    ip netns exec {lab.ns['far']} python -m tests.lab.injector check")
        print("  and measure it with")
        print("    ip netns exec " + lab.ns["far"] + " " + " ".join(
            lab.probe_argv(lab.dir / "deep.db", targets=lab.deep_targets_file, extra=("--deep",))))
    print(f"  take it down:  python -m tests.lab down {lab.state_path}")
    return 0


def cmd_down(args) -> int:
    _need_root()
    rc = 0
    known: set[str] = set()
    for path in args.state or Lab.state_files():
        try:
            lab = Lab.from_state(path)
        except (OSError, ValueError, KeyError) as exc:
            print(f"{path}: not a lab state file ({exc})", file=sys.stderr)
            rc = 1
            continue
        known.add(lab.suffix)
        if not args.state and not lab.orphaned():
            print(f"lab {lab.suffix}: in use by process {lab.owner_pid}, left alone")
            continue
        problems = lab.down()
        print(f"lab {lab.suffix}: " + ("down" if not problems else "; ".join(problems)))
        rc |= bool(problems)
    if not args.state:
        # namespaces with no state file in the temp dir (e.g. a pytest lab whose pytest
        # was killed): only with --force, as they may belong to a run still going on
        for suffix in sorted({m.group(1) for ns in Lab.leftovers() if (m := NS_RE.match(ns))} - known):
            if not args.force:
                print(f"lab {suffix}: no state file here (pytest's?); `down --force` takes it down")
                continue
            problems = Lab.adopt(suffix).down()
            print(f"lab {suffix}: " + ("down" if not problems else "; ".join(problems)))
            rc |= bool(problems)
    if not Lab.leftovers():
        print("no lab namespace left")
    return rc


def cmd_run(args) -> int:
    _need_root()
    _interrupt_on_signals()
    scenarios = [S.BY_NAME[n] for n in args.only] if args.only else list(S.SCENARIOS)
    timings: dict[str, float] = {}
    rows: list[dict] = []
    t_all = time.monotonic()
    try:
        with Lab(scenarios, keep_workdir=args.keep or None) as lab:
            timings["up"] = lab.up_seconds
            db = lab.dir / "probe.db"
            print(f"lab {lab.suffix} up in {lab.up_seconds} s ({len(scenarios)} scenarios); "
                  f"probing from {lab.ns['vol']}", file=sys.stderr)
            t = time.monotonic()
            extra = (*(("--concurrency", str(args.concurrency)) if args.concurrency else ()),
                     *(("--timeout-scale", str(args.timeout_scale)) if args.timeout_scale else ()))
            p = lab.run_probe(db, capture=False, timeout=600, extra=extra)
            timings["probe"] = round(time.monotonic() - t, 1)
            if p.returncode != 0:
                print(f"probe run failed with exit code {p.returncode}; logs kept in {lab.workdir}",
                      file=sys.stderr)
                lab.failed = True
                return 1
            t = time.monotonic()
            a = probe_cli("analyze", "--db", str(db))
            timings["analyze"] = round(time.monotonic() - t, 1)
            if a.returncode != 0:
                print(f"probe analyze failed (exit {a.returncode}):\n{a.stderr.strip()}\n"
                      f"database kept in {lab.workdir}", file=sys.stderr)
                lab.failed = True
                return 1
            table = probe_cli("report", "--db", str(db))
            print(table.stdout or table.stderr)
            j = probe_cli("report", "--db", str(db), "--format", "json")
            try:
                report = json.loads(j.stdout)
            except ValueError:
                print(f"probe report --format json gave no JSON:\n{j.stderr.strip()}\n"
                      f"database kept in {lab.workdir}", file=sys.stderr)
                lab.failed = True
                return 1
            rows = compare(report, scenarios)
            if args.keep:
                print(f"work dir kept: {lab.workdir}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ninterrupted: the lab was torn down", file=sys.stderr)
        return 130
    except LabError as exc:
        print(f"lab error: {exc}", file=sys.stderr)
        return 1
    timings["total"] = round(time.monotonic() - t_all, 1)
    w = max(len(r["scenario"]) for r in rows)
    print(f"{'scenario':<{w}}  {'expected':<16}  {'verdict':<16}")
    for r in rows:
        known = S.BY_NAME[r["scenario"]].known_issue
        if r["match"]:
            mark = "ok" + ("  (known issue fixed? remove the note)" if known else "")
        else:
            mark = ("known issue: " + known) if known else "MISMATCH  " + " | ".join(r["evidence"])
        print(f"{r['scenario']:<{w}}  {r['expected']:<16}  {str(r['got']):<16}  {mark}")
    bad = [r for r in rows if not r["match"] and not S.BY_NAME[r["scenario"]].known_issue]
    good = sum(r["match"] for r in rows)
    print(f"\n{good}/{len(rows)} verdicts as expected ({len(rows) - good - len(bad)} known issues); "
          "timings (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list", help="scenarios and expected verdicts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_list)
    p = sub.add_parser("up", help="bring the lab up and leave it running")
    p.add_argument("--workdir", default=None, help="where logs, certificates and the state file go")
    p.add_argument("--deep", action="store_true",
                   help="also the longer path: far behind r1, r2 (the censor, an injector), r3")
    p.set_defaults(fn=cmd_up)
    p = sub.add_parser("down", help="take labs down (default: those left by `up` or by a killed run)")
    p.add_argument("state", nargs="*", help="state.json files printed by `up`")
    p.add_argument("--force", action="store_true",
                   help="also lab namespaces without a state file in the temp dir")
    p.set_defaults(fn=cmd_down)
    p = sub.add_parser("run", help="up, probe every scenario, analyze, report, down")
    p.add_argument("--timeout-scale", type=float, default=None, help="(default: the probe's)")
    p.add_argument("--concurrency", type=int, default=None, help="(default: the probe's)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs, database)")
    p.add_argument("--only", nargs="+", choices=sorted(S.BY_NAME), metavar="SCENARIO")
    p.set_defaults(fn=cmd_run)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
