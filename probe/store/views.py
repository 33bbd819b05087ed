"""SQL views for people who browse a probe database (Datasette, the sqlite3 shell):
which site, which network, which verdict, and the evidence in words, without a join.

Why views and not a table: verdicts are re-derived (`probe analyze`), so a table of
"latest verdicts" would go stale; a view is always what the rows say. Why in the file
(not TEMP): Datasette and other readers open the file themselves. Views are created on
every writable open when missing or different (``schema.ensure_views``), outside the
numbered migrations: an older probe reads the file as before, and a database on a
read-only disk keeps working without them (``probe browse`` then serves the same
SELECTs as canned queries: ``fallback_queries``).

Why the version order is SQL: classifier versions sort as releases do
(``verdicts.version_key``: "1.10.0" after "1.9.0", "1.1.0-rc1" before "1.1.0"), which
plain text order gets wrong. ``version_key_sql`` builds a text key with the same order,
so any reader picks the newest classifier without our Python.
"""

from __future__ import annotations

from probe.core.verdicts import CANT_TELL, TAGS

# Text keys: a piece ends with \x02 and a tuple with \x01, both below any character of a
# piece, so a shorter tuple (or piece) sorts first, as Python compares tuples.
_PIECE_END = "char(2)"
_TUPLE_END = "char(1)"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _piece(expr: str) -> str:
    """One dot-separated piece as ``version_key`` orders it: numbers (0, n) before text
    (1, text); a number by its length without leading zeros, then its digits."""
    digits = f"ltrim({expr}, '0')"
    return (f"CASE WHEN {expr} = '' THEN '' "
            f"WHEN {expr} NOT GLOB '*[^0-9]*' THEN '0' || printf('%04d', length({digits})) || {digits} || {_PIECE_END} "
            f"ELSE '1' || {expr} || {_PIECE_END} END")


def version_key_sql(source: str) -> str:
    """A SELECT of (classifier_version, version_key) for every distinct version in
    ``source`` (a subquery or table with a ``classifier_version`` column): sorting by
    version_key in SQL orders versions as ``probe.store.verdicts.version_key`` does.

    A recursive walk over the pieces: the release ("1.2.0") in phase 0, then the
    pre-release after the first "-" ("rc1") in phase 1; a version without one sorts
    after its pre-releases (flag '1' over '0'), as a release follows its candidates."""
    first_dash = "instr(classifier_version, '-')"
    release = (f"CASE WHEN {first_dash} > 0 THEN substr(classifier_version, 1, {first_dash} - 1) "
               "ELSE classifier_version END")
    pre = f"CASE WHEN {first_dash} > 0 THEN substr(classifier_version, {first_dash} + 1) ELSE '' END"
    piece = "substr(rest, 1, instr(rest, '.') - 1)"
    return f"""WITH RECURSIVE version_walk(classifier_version, rest, phase, pre, walked) AS (
    SELECT classifier_version, {release} || '.', 0, {pre}, ''
    FROM (SELECT DISTINCT classifier_version FROM {source} WHERE classifier_version IS NOT NULL)
    UNION ALL
    SELECT classifier_version,
           CASE WHEN rest <> '' THEN substr(rest, instr(rest, '.') + 1) WHEN phase = 0 THEN pre || '.' ELSE '' END,
           CASE WHEN rest <> '' THEN phase ELSE phase + 1 END,
           pre,
           walked || CASE WHEN rest <> '' THEN {_piece(piece)}
                       WHEN phase = 0 THEN {_TUPLE_END} || CASE WHEN pre <> '' THEN '0' ELSE '1' END
                       ELSE {_TUPLE_END} END
    FROM version_walk WHERE phase < 2
)
SELECT classifier_version, walked AS version_key FROM version_walk WHERE phase = 2"""


# network_of() of probe.report.model, in SQL: the censor's policy follows country and ASN.
_NETWORK = ("CASE WHEN coalesce(r.cc, '') = '' AND coalesce(r.asn, '') = '' THEN 'unknown' "
            "ELSE coalesce(nullif(r.cc, ''), '??') || '/' || coalesce(nullif(r.asn, ''), 'AS?') END")

# Evidence is JSON [{"text": ..., "fields": {...}}, ...]: people read the texts, one a line.
_EVIDENCE = """(SELECT group_concat(line, char(10)) FROM (
        SELECT CASE WHEN e.type = 'object' THEN json_extract(e.value, '$.text') ELSE e.value END AS line
        FROM json_each(CASE WHEN json_valid(v.evidence) THEN v.evidence ELSE '[]' END) e ORDER BY e.key))"""


def _tags() -> str:
    labels = " ".join(f"WHEN {_quote(tag)} THEN {_quote(label)}" for tag, (label, _) in TAGS.items())
    return f"""(SELECT group_concat(label, ', ') FROM (
        SELECT CASE t.value {labels} ELSE t.value END AS label
        FROM json_each(CASE WHEN json_valid(v.tags) THEN v.tags ELSE '[]' END) t ORDER BY t.key))"""


COLUMNS = ("url", "network", "verdict", "blocked", "confidence", "evidence", "measured_at", "tags", "host",
           "category", "network_name", "cc", "asn", "layer", "rule_id", "classifier_version", "measurement_id",
           "run_id")

# The newest measurement first; an unparseable time (julianday NULL) counts as oldest.
NEWEST_FIRST = "julianday(measured_at) DESC, measured_at DESC, measurement_id DESC"


def _judged() -> str:
    """Common table expressions ending in ``judged``: every classified measurement with
    the raw verdict row of the newest classifier that judged it, its site and network."""
    return f"""version_keys AS (
    {version_key_sql("verdicts")}
),
newest AS (
    SELECT v.measurement_id, v.classifier_version, v.verdict, v.blocked, v.confidence, v.evidence, v.tags, v.layer,
           v.rule_id, row_number() OVER (
        PARTITION BY v.measurement_id ORDER BY k.version_key DESC, v.classifier_version DESC) AS newness
    FROM verdicts v JOIN version_keys k ON k.classifier_version = v.classifier_version
),
judged AS (
    SELECT m.url, {_NETWORK} AS network, m.started_at AS measured_at, m.hostname AS host, m.category,
           r.network_name, r.cc, r.asn, m.measurement_id, m.run_id,
           v.verdict, v.blocked, v.confidence, v.evidence, v.tags, v.layer, v.rule_id, v.classifier_version
    FROM newest v
    JOIN measurements m ON m.measurement_id = v.measurement_id
    JOIN runs r ON r.run_id = m.run_id
    WHERE v.newness = 1
)"""


def _readable(source: str) -> str:
    """The view's columns from rows of ``judged``: words instead of 0/1 and JSON. Done
    last, so that latest_verdicts turns only the rows it keeps into text."""
    return f"""SELECT v.url, v.network, v.verdict,
       CASE v.blocked WHEN 1 THEN 'yes' WHEN 0 THEN 'no' ELSE {_quote(CANT_TELL)} END AS blocked,
       v.confidence,
       {_EVIDENCE} AS evidence,
       v.measured_at,
       {_tags()} AS tags,
       v.host, v.category, v.network_name, v.cc, v.asn, v.layer, v.rule_id, v.classifier_version,
       v.measurement_id, v.run_id
FROM {source} v"""


def site_verdicts_sql() -> str:
    """Every classified measurement, judged by the newest classifier that judged it."""
    return f"WITH {_judged()}\n{_readable('judged')}"


def latest_verdicts_sql() -> str:
    """One row per site (URL) and network: its newest classified measurement."""
    return f"""WITH {_judged()},
latest AS (
    SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY url, network ORDER BY {NEWEST_FIRST}) AS newest_first
                   FROM judged)
    WHERE newest_first = 1
)
{_readable('latest')}
ORDER BY v.url, v.network"""


def views() -> dict[str, str]:
    """Name -> the CREATE VIEW statement. Each stands alone (no view reads another),
    so ``with_views`` can inline them."""
    return {
        "site_verdicts": f"CREATE VIEW site_verdicts AS\n{site_verdicts_sql()}",
        "latest_verdicts": f"CREATE VIEW latest_verdicts AS\n{latest_verdicts_sql()}",
    }


def with_views(select: str) -> str:
    """``select`` with the views as common table expressions: the same rows from a
    database that has no views (read-only, written by an older probe)."""
    return (f"WITH site_verdicts AS (\n{site_verdicts_sql()}\n),\n"
            f"latest_verdicts AS (\n{latest_verdicts_sql()}\n)\n{select}")
