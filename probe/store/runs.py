"""Runs and their target lists: created before measuring, ticked off as each target
finishes, so that a killed run resumes exactly where it stopped."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from probe.core.records import (
    utcnow,
)
from probe.store.schema import writing


@dataclass
class RunTarget:
    url: str
    category: str | None = None
    note: str | None = None


def create_run(db: sqlite_utils.Database, run: dict[str, Any], targets: Iterable[RunTarget]) -> None:
    """Record a new run and the list it will measure, so --resume needs no target file."""
    with writing(db):
        db.table("runs").insert(run)
        db.table("run_targets").insert_all(
            (
                {
                    "run_id": run["run_id"],
                    "position": i,
                    "url": t.url,
                    "category": t.category,
                    "note": t.note,
                    "status": "pending",
                    "measurement_id": None,
                }
                for i, t in enumerate(targets)
            ),
            batch_size=500,
        )


def latest_unfinished_run(db: sqlite_utils.Database) -> dict[str, Any] | None:
    rows = list(
        db.query(
            "select * from runs where status != 'finished' order by started_at desc limit 1"
        )
    )
    return rows[0] if rows else None


def get_run(db: sqlite_utils.Database, run_id: str) -> dict[str, Any] | None:
    rows = list(db.query("select * from runs where run_id = ? or run_id like ?", [run_id, run_id + "%"]))
    return rows[0] if len(rows) == 1 else None


def pending_targets(db: sqlite_utils.Database, run_id: str) -> Iterator[RunTarget]:
    """Targets of the run without a stored measurement, in list order, streamed."""
    for row in db.query(
        "select url, category, note from run_targets where run_id = ? and status != 'done' order by position",
        [run_id],
    ):
        yield RunTarget(row["url"], row["category"], row["note"])


def count_targets(db: sqlite_utils.Database, run_id: str) -> dict[str, int]:
    out = {"pending": 0, "done": 0, "not_measured": 0}
    for row in db.query(
        "select status, count(*) as n from run_targets where run_id = ? group by status", [run_id]
    ):
        out[row["status"]] = row["n"]
    return out


def set_run_status(db: sqlite_utils.Database, run_id: str, status: str, *, finished: bool = True) -> None:
    with writing(db):
        db.table("runs").update(run_id, {"status": status, "finished_at": utcnow() if finished else None})


def split_run(db: sqlite_utils.Database, old_run_id: str, new_run: dict[str, Any]) -> int:
    """The network changed during a run: a new run (``new_run``, for the new network)
    takes over what the old one had not measured, and the targets measured while the
    network was changing, to be measured again; the old run ends. Returns how many
    targets moved."""
    with writing(db):
        rows = list(db.query(
            """select t.url, t.category, t.note from run_targets t
               left join measurements m on m.measurement_id = t.measurement_id
               where t.run_id = ? and (t.status != 'done' or m.network_changed = 1) order by t.position""",
            [old_run_id]))
        db.table("runs").insert(new_run)
        db.table("run_targets").insert_all(
            ({"run_id": new_run["run_id"], "position": i, "url": r["url"], "category": r["category"],
              "note": r["note"], "status": "pending", "measurement_id": None} for i, r in enumerate(rows)),
            batch_size=500)
        db.execute("update run_targets set status = 'moved' where run_id = ? and status != 'done'", [old_run_id])
        db.table("runs").update(old_run_id, {"status": "finished", "finished_at": utcnow()})
    return len(rows)


def mark_not_measured(db: sqlite_utils.Database, run_id: str, urls: Iterable[str]) -> None:
    """Targets cancelled in flight (max runtime, Ctrl-C): left for --resume."""
    with writing(db):
        for url in urls:
            db.execute(
                "update run_targets set status = 'not_measured' where run_id = ? and url = ? and status != 'done'",
                [run_id, url],
            )


def list_runs(db: sqlite_utils.Database, limit: int = 50) -> list[dict[str, Any]]:
    return list(
        db.query(
            """select r.*, (select count(*) from measurements m where m.run_id = r.run_id) as measured
               from runs r order by started_at desc limit ?""",
            [limit],
        )
    )


def runs(db: sqlite_utils.Database, run_id: str | None = None) -> list[dict[str, Any]]:
    """Every run (or the one named), as rows."""
    return list(db.query("select * from runs" + (" where run_id = ?" if run_id else ""), [run_id] if run_id else []))


def update_run(db: sqlite_utils.Database, run_id: str, fields: dict[str, Any]) -> None:
    """Set some columns of a run's row (what an import learns once it has read all)."""
    with writing(db):
        db.table("runs").update(run_id, fields)


def run_exists(db: sqlite_utils.Database, run_id: str) -> bool:
    return bool(list(db.query("select 1 from runs where run_id = ?", [run_id])))


def add_run_targets(db: sqlite_utils.Database, run_id: str, urls: Iterable[str]) -> int:
    """Append to a run's list the URLs it does not hold yet (pending); how many. Only
    these URLs are looked up: an import appends to a long run a batch at a time."""
    wanted = list(dict.fromkeys(urls))
    known = {r[0] for r in db.execute(
        "select url from run_targets where run_id = ? and url in (select value from json_each(?))",
        [run_id, json.dumps(wanted)]).fetchall()} if wanted else set()
    missing = [u for u in wanted if u not in known]
    if not missing:
        return 0
    row = next(iter(db.query("select coalesce(max(position), -1) as p from run_targets where run_id = ?", [run_id])))
    with writing(db):
        db.table("run_targets").insert_all(
            {"run_id": run_id, "position": row["p"] + 1 + i, "url": u, "category": None, "note": None,
             "status": "pending", "measurement_id": None}
            for i, u in enumerate(missing)
        )
    return len(missing)


def paged_targets(db: sqlite_utils.Database, run_id: str, page: int = 200) -> Iterator[RunTarget]:
    """Targets not yet done, in list order, a page at a time (keyset on position), so
    that memory does not grow with the list."""
    last = -1
    while True:
        rows = list(
            db.query(
                "select position, url, category, note from run_targets "
                "where run_id = ? and status != 'done' and position > ? order by position limit ?",
                [run_id, last, page],
            )
        )
        if not rows:
            return
        for row in rows:
            yield RunTarget(row["url"], row["category"], row["note"])
        last = rows[-1]["position"]
