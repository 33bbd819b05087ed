"""Deep measurements in SQLite: written whole in one transaction per target, read back
as the records of ``probe.core.deep`` (analysis decides what they mean)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import sqlite_utils

from probe.core.deep import DeepResult, HopProbe, PacketSeen, TriggerTest
from probe.store.schema import writing


def save_deep(db: sqlite_utils.Database, r: DeepResult) -> None:
    """Store (or replace: a target examined again) one deep measurement."""
    mid = r.measurement_id
    with writing(db):
        for table in ("deep_trigger_tests", "deep_packets", "deep_hops"):
            db.execute(f"delete from {table} where measurement_id = ?", [mid])
        db.table("deep_results").upsert({
            "measurement_id": mid, "url": r.url, "started_at": r.started_at, "duration_ms": r.duration_ms,
            "verdict": r.verdict, "replayed": r.replayed, "replay_target": r.replay_target,
            "server_ttl": r.server_ttl, "packets_sent": r.packets_sent, "skipped": json.dumps(r.skipped)},
            pk="measurement_id")
        db.table("deep_trigger_tests").insert_all(
            [{"measurement_id": mid, "position": i, **dataclasses.asdict(t), "interfered": int(t.interfered)}
             for i, t in enumerate(r.trigger_tests)])
        db.table("deep_packets").insert_all(
            [{"measurement_id": mid, "position": i, **dataclasses.asdict(p), "answers": json.dumps(p.answers)}
             for i, p in enumerate(r.packets)])
        db.table("deep_hops").insert_all([{"measurement_id": mid, **dataclasses.asdict(h)} for h in r.hops])


def _fields(cls: type, row: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in row.items() if k in names}


def load_deep(db: sqlite_utils.Database, measurement_id: str) -> DeepResult | None:
    """The deep measurement of a measurement, or None when it had none."""
    if "deep_results" not in db.table_names():
        return None
    row = next(iter(db.query("select * from deep_results where measurement_id = ?", [measurement_id])), None)
    if row is None:
        return None
    skipped = json.loads(row.pop("skipped") or "[]")
    r = DeepResult(**_fields(DeepResult, row), skipped=skipped)
    order = "where measurement_id = ? order by {}"
    r.trigger_tests = [TriggerTest(**{**_fields(TriggerTest, t), "interfered": bool(t["interfered"])})
                       for t in db.query("select * from deep_trigger_tests " + order.format("position"), [measurement_id])]
    r.packets = [PacketSeen(**{**_fields(PacketSeen, p), "answers": json.loads(p["answers"] or "[]")})
                 for p in db.query("select * from deep_packets " + order.format("position"), [measurement_id])]
    r.hops = [HopProbe(**_fields(HopProbe, h))
              for h in db.query("select * from deep_hops " + order.format("ttl"), [measurement_id])]
    return r


def deep_measurement_ids(db: sqlite_utils.Database) -> set[str]:
    """The measurements that were examined deeply."""
    if "deep_results" not in db.table_names():
        return set()
    return {r[0] for r in db.execute("select measurement_id from deep_results")}
