"""Verdicts: written by analysis (re-derivable, one row per measurement and classifier
version), read by reports and `explain`. One version order for the whole project."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import sqlite_utils

from probe.store.schema import writing


def version_key(version: str | None) -> tuple:
    """Order classifier versions as releases are ordered: numerically ("1.10.0" after
    "1.9.0"), and a pre-release before its release ("1.1.0-rc1" before "1.1.0"). Any
    text compares without error (a piece that is not a number sorts after numbers)."""
    release, _, pre = (version or "").partition("-")

    def pieces(text: str) -> tuple:
        return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in text.split(".") if p != "")

    return (pieces(release), 0 if pre else 1, pieces(pre))


VERDICT_COLUMNS = ("measurement_id", "classifier_version", "verdict", "blocked", "confidence", "layer", "rule_id",
                   "evidence", "layers", "tags", "analyzed_at")
_UPSERT = (f"insert or replace into verdicts ({', '.join(VERDICT_COLUMNS)}) "
           f"values ({', '.join('?' * len(VERDICT_COLUMNS))})")


def save_verdict_tuples(db: sqlite_utils.Database, rows: list[tuple]) -> int:
    """Upsert verdict rows given as tuples in VERDICT_COLUMNS order (see
    analysis.persist.verdict_tuple), in one transaction: one prepared statement."""
    with writing(db):
        db.conn.executemany(_UPSERT, rows)
    return len(rows)


def current_verdicts(db: sqlite_utils.Database, run_id: str, classifier_version: str) -> dict[str, tuple]:
    """measurement id -> (verdict, blocked, confidence) of a run's measurements that
    this classifier version has judged."""
    sql = ("select v.measurement_id, v.verdict, v.blocked, v.confidence from verdicts v "
           "join measurements m using (measurement_id) where m.run_id = ? and v.classifier_version = ?")
    return {r[0]: (r[1], None if r[2] is None else bool(r[2]), r[3])
            for r in db.execute(sql, [run_id, classifier_version]).fetchall()}


def analysis_states(db: sqlite_utils.Database) -> dict[str, dict[str, Any]]:
    """run id -> what its verdicts were last all derived with (signature, inputs, counts)."""
    if "analysis_state" not in db.table_names():
        return {}
    return {r["run_id"]: r for r in db.query("select * from analysis_state")}


def set_analysis_state(db: sqlite_utils.Database, run_id: str, classifier_version: str, signature: str | None,
                       inputs: str | None, analyzed_at: str, low_confidence: float) -> None:
    """Record what a run's verdicts were all derived with, and count them; or, with no
    signature, forget it (only some of them were derived: the run is looked at again)."""
    with writing(db):
        if signature is None:
            db.conn.execute("delete from analysis_state where run_id = ?", [run_id])
            return
        counts = db.conn.execute(
            "select v.verdict, v.blocked, v.confidence < ?, count(*) from verdicts v join measurements m "
            "using (measurement_id) where m.run_id = ? and v.classifier_version = ? group by 1, 2, 3",
            [low_confidence, run_id, classifier_version]).fetchall()
        db.conn.execute("insert or replace into analysis_state (run_id, classifier_version, signature, inputs, counts, "
                        "analyzed_at) values (?, ?, ?, ?, ?, ?)",
                        [run_id, classifier_version, signature, inputs, json.dumps(counts), analyzed_at])


def run_shapes(db: sqlite_utils.Database) -> dict[str, tuple[int, int]]:
    """run id -> (its measurements, the last one's rowid): a run's observations are
    inserted with their measurement and never changed (a control asked again removes
    the measurement's verdicts), so these say whether a run is as it was."""
    return {r[0]: (r[1], r[2]) for r in db.execute(
        "select run_id, count(*), max(rowid) from measurements group by run_id").fetchall()}


def unjudged_counts(db: sqlite_utils.Database, classifier_version: str) -> dict[str, int]:
    """run id -> how many of its measurements this classifier version has not judged."""
    return {r[0]: r[1] for r in db.execute(
        "select m.run_id, count(*) from measurements m where not exists (select 1 from verdicts v "
        "where v.measurement_id = m.measurement_id and v.classifier_version = ?) group by m.run_id",
        [classifier_version]).fetchall()}


def classifier_versions(db: sqlite_utils.Database) -> list[str]:
    """Classifier versions with verdicts in this database, oldest first."""
    if "verdicts" not in db.table_names():
        return []
    found = [r[0] for r in db.execute("select distinct classifier_version from verdicts").fetchall() if r[0]]
    return sorted(found, key=version_key)


def report_rows(db: sqlite_utils.Database, classifier_version: str | None = None,
                urls: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    """One row per classified measurement with what a report needs: url, domain, cc,
    asn, network, measured_at, verdict, blocked, confidence, layer, rule_id, evidence
    (list of {text, fields}). The latest classifier version present is used unless one
    is named; ``urls`` keeps those URLs only (a collector re-judging what a batch touched)."""
    if classifier_version is None:
        versions = classifier_versions(db)
        if not versions:
            return
        classifier_version = versions[-1]
    sql = """
        select m.measurement_id, m.url, m.hostname as domain, m.category, m.started_at as measured_at,
               r.run_id, r.cc, r.asn, r.network_name,
               v.verdict, v.blocked, v.confidence, v.layer, v.rule_id, v.evidence, v.classifier_version, v.tags
        from verdicts v
        join measurements m using (measurement_id)
        join runs r on r.run_id = m.run_id
        where v.classifier_version = ? {only}
        order by m.url, m.started_at
    """
    if urls is not None:
        wanted = sorted(set(urls))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            yield from _rows(db, sql.format(only=f"and m.url in ({','.join('?' * len(chunk))})"),
                             [classifier_version, *chunk])
        return
    yield from _rows(db, sql.format(only=""), [classifier_version])


def _rows(db: sqlite_utils.Database, sql: str, params: list[Any]) -> Iterator[dict[str, Any]]:
    for row in db.query(sql, params):
        row["blocked"] = None if row["blocked"] is None else bool(row["blocked"])
        row["evidence"] = json.loads(row["evidence"] or "[]")
        row["tags"] = json.loads(row["tags"] or "[]")
        yield row


def latest_verdict(db: sqlite_utils.Database, measurement_id: str,
                   classifier_version: str | None = None) -> dict[str, Any] | None:
    """The verdict row of a measurement by the newest classifier (or the one named)."""
    if "verdicts" not in db.table_names():
        return None
    rows = list(db.query("select * from verdicts where measurement_id = ?", [measurement_id]))
    if classifier_version is not None:
        rows = [r for r in rows if r["classifier_version"] == classifier_version]
    if not rows:
        return None
    return max(rows, key=lambda r: version_key(r["classifier_version"]))


def runs_without_verdicts(db: sqlite_utils.Database, classifier_version: str) -> list[str]:
    """Runs with a measurement this classifier version has not judged yet."""
    return [r[0] for r in db.execute(
        "select distinct m.run_id from measurements m where not exists (select 1 from verdicts v "
        "where v.measurement_id = m.measurement_id and v.classifier_version = ?)", [classifier_version])]
