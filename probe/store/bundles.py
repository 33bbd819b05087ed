"""Whole measurements between databases: ``bundle`` reads one (with its run and target)
as JSON for a collector, ``save_bundle`` writes one received, through the same
``save_measurement`` a local run uses, so a collector's rows are exactly the volunteer's.

What never leaves the volunteer's database, however it was stored:
- ``runs.probe_ip`` (the public address, kept only with --store-ip): not sent;
- the file paths of their machine, which can hold a user name
  (``/home/ivan/lists/news.txt``): ``targets_source`` and the configuration's
  ``ca_file`` travel as file names only;
- the configuration's ``own_addresses`` (never stored; dropped again in case an older or
  edited database holds them).
Columns added to ``runs`` later travel only once named in ``probe.core.bundle.RUN_FIELDS``.
- the address inside pages: a run without --store-ip replaced it before storing; one
  with it kept pages as they came, so ``bundle`` replaces it (``core.scrub``, every
  spelling) in the bundle's pages, headers, titles and redirect URLs. The body hash
  stays that of the page as stored.
"""

from __future__ import annotations

import json
from pathlib import PureWindowsPath
from typing import Any

import sqlite_utils

from probe.core.bundle import RUN_FIELDS, Bundle, BundleError, make_bundle, read_bundle
from probe.core.records import Measurement
from probe.core.scrub import Scrubber, scrub_measurement
from probe.store.observations import has_measurement, load_measurement, save_measurement
from probe.store.runs import run_exists
from probe.store.schema import writing


def _file_name(path: str | None) -> str | None:
    """A path's last part (either separator: the volunteer may run Windows)."""
    if not path or not any(sep in path for sep in "/\\"):
        return path
    return PureWindowsPath(path).name or None


def public_run(row: dict[str, Any]) -> dict[str, Any]:
    """The run row as it may leave the volunteer's machine (the module's docstring says
    what is dropped and why)."""
    out = {k: row.get(k) for k in RUN_FIELDS}
    out["targets_source"] = _file_name(out["targets_source"])
    if out["config"]:
        config = json.loads(out["config"])
        if isinstance(config, dict):
            config.pop("own_addresses", None)
            if isinstance(config.get("ca_file"), str):
                config["ca_file"] = _file_name(config["ca_file"])
            out["config"] = json.dumps(config, sort_keys=True)
    return out


def bundle(db: sqlite_utils.Database, measurement_id: str) -> dict[str, Any]:
    """One stored measurement as a bundle (``probe.core.bundle``): JSON-safe, every
    observation of both sides, the run's public columns and the target's list entry.
    KeyError when there is no such measurement."""
    m = load_measurement(db, measurement_id)
    if m is None:
        raise KeyError(measurement_id)
    run_id = next(iter(db.query("select run_id from measurements where measurement_id = ?", [measurement_id])))["run_id"]
    run = next(iter(db.query("select * from runs where run_id = ?", [run_id])))
    if run.get("probe_ip"):
        scrub_measurement(m, Scrubber([run["probe_ip"]]))
    target = next(iter(db.query(
        "select url, category, note, position from run_targets where run_id = ? and url = ?", [run_id, m.url])), None)
    return make_bundle(public_run(run), m, target or {"url": m.url, "category": m.category})


def _ids_taken(db: sqlite_utils.Database, m: Measurement) -> bool:
    """Whether another measurement's local rows already use one of this one's record ids
    (keys of the whole table): a collector must refuse that, not half-write it."""
    for table, column, ids in (("dns_queries", "query_id", [q.query_id for q in m.dns]),
                               ("http_requests", "request_id", [r.request_id for r in m.http])):
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            sql = f"select 1 from {table} where {column} in ({','.join('?' * len(chunk))}) limit 1"
            if db.execute(sql, chunk).fetchone():
                return True
    return False


def save_bundle(db: sqlite_utils.Database, data: Any) -> bool:
    """Store a received bundle in one write transaction: its run (when this database does
    not hold it yet, with the status it was sent with), its target and the measurement
    with every observation. False, writing nothing, when the measurement is already
    here (a retried upload); BundleError, writing nothing, for a bundle that is not one
    (newer, malformed, oversize, or reusing another measurement's record ids). A
    ``Bundle`` already checked by ``read_bundle`` is taken as it is."""
    b = data if isinstance(data, Bundle) else read_bundle(data)
    m = b.measurement
    run_id = b.run["run_id"]
    with writing(db):
        if has_measurement(db, m.measurement_id):
            return False
        if _ids_taken(db, m):
            raise BundleError("bundle.measurement: its record ids belong to another measurement")
        if not run_exists(db, run_id):
            db.table("runs").insert({**b.run, "probe_ip": None})
        position = b.target["position"]
        if position is None:
            position = db.execute("select coalesce(max(position), -1) + 1 from run_targets where run_id = ?",
                                  [run_id]).fetchone()[0]
        # pending until save_measurement marks it done, as in a local run
        db.execute(
            "insert or ignore into run_targets (run_id, position, url, category, note, status, measurement_id) "
            "values (?, ?, ?, ?, ?, 'pending', null)",
            [run_id, position, m.url, b.target["category"], b.target["note"]])
        save_measurement(db, run_id, m)
    return True
