"""Integrity of the masked database against what was restored: constraints, indexes, sequences,
comments, row counts — and every FK, unique and CHECK constraint re-validated on the data itself."""

import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from refresh_pipeline.chunked import Connect, raise_work_mem, run_ranges
from refresh_pipeline.masking.catalog import OWN_SCHEMAS, USER_SCHEMA, count_rows, read_tables

_USER_RELATION = f"""
    {USER_SCHEMA} AND n.nspname <> ALL(%(own)s)
"""

_CONSTRAINTS = f"""
SELECT format('%%I.%%I', n.nspname, c.relname), con.conname, pg_get_constraintdef(con.oid)
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {_USER_RELATION} AND con.conislocal
"""

_INDEXES = f"""
SELECT format('%%I.%%I', n.nspname, i.relname), pg_get_indexdef(i.oid), x.indisvalid AND x.indisready
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_namespace n ON n.oid = i.relnamespace
WHERE {_USER_RELATION}
"""

_SEQUENCES = f"""
SELECT format('%%I.%%I', s.schemaname, s.sequencename), s.last_value FROM pg_sequences s
JOIN pg_namespace n ON n.nspname = s.schemaname
WHERE {_USER_RELATION}
"""

_COMMENTS = f"""
SELECT format('%%I.%%I', n.nspname, c.relname) || coalesce('.' || quote_ident(a.attname), ''), d.description
FROM pg_description d
JOIN pg_class c ON d.classoid = 'pg_class'::regclass AND d.objoid = c.oid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid AND d.objsubid > 0
WHERE {_USER_RELATION}
"""

# Re-validation queries, one per constraint, built from the catalog (never from user input).
_FOREIGN_KEYS = f"""
SELECT con.conname, con.conrelid::regclass::text, con.convalidated, con.confrelid::regclass::text,
       array(SELECT quote_ident(attname) FROM unnest(con.conkey) WITH ORDINALITY k(attnum, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY i),
       array(SELECT quote_ident(attname) FROM unnest(con.confkey) WITH ORDINALITY k(attnum, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY i)
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE con.contype = 'f' AND NOT c.relispartition AND {_USER_RELATION}
  -- A key pointing at a partitioned table once: PostgreSQL adds one per partition of it (conparentid set),
  -- each of which most rows, pointing at another partition, do not meet.
  AND con.conparentid = 0
"""

_UNIQUES = f"""
SELECT con.conname, con.conrelid::regclass::text,
       array(SELECT quote_ident(attname) FROM unnest(con.conkey) WITH ORDINALITY k(attnum, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY i)
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE con.contype IN ('p', 'u') AND NOT c.relispartition AND {_USER_RELATION}
"""

_CHECKS = f"""
SELECT con.conname, con.conrelid::regclass::text, con.convalidated, pg_get_expr(con.conbin, con.conrelid)
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE con.contype = 'c' AND con.conislocal AND {_USER_RELATION}
"""


@dataclass
class IntegrityReport:
    problems: list[str] = field(default_factory=list)
    constraints_validated: int = 0
    indexes_checked: int = 0
    sequences_checked: int = 0
    tables_counted: int = 0
    # NOT VALID constraints (as '<table> <constraint>') rows break as they did at restore: production's rows.
    broken_as_restored: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.problems


def record_baseline(conn: psycopg.Connection) -> None:
    """Remember constraints, indexes, sequences and comments as restored (before any masking), and the rows
    breaking a constraint production added NOT VALID."""
    params = {"own": list(OWN_SCHEMAS)}
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO refresh_pipeline.restored_constraints VALUES (%s, %s, %s)",
            conn.execute(_CONSTRAINTS, params).fetchall(),
        )
        cur.executemany(
            "INSERT INTO refresh_pipeline.restored_indexes VALUES (%s, %s)",
            [(name, definition) for name, definition, _ in conn.execute(_INDEXES, params).fetchall()],
        )
        cur.executemany(
            "INSERT INTO refresh_pipeline.restored_sequences (sequence_name, last_value) VALUES (%s, %s)",
            conn.execute(_SEQUENCES, params).fetchall(),
        )
        cur.executemany(
            "INSERT INTO refresh_pipeline.restored_comments VALUES (%s, %s)",
            conn.execute(_COMMENTS, params).fetchall(),
        )
        _record_restored_violations(conn)


def _compare(kind: str, before: dict, after: dict) -> list[str]:
    problems = [f"{kind} {name} is missing (was: {before[name]})" for name in sorted(set(before) - set(after))]
    problems += [f"{kind} {name} is new: {after[name]}" for name in sorted(set(after) - set(before))]
    problems += [
        f"{kind} {name} changed: {before[name]} -> {after[name]}"
        for name in sorted(set(before) & set(after))
        if before[name] != after[name]
    ]
    return problems


def _count(conn: psycopg.Connection, query: sql.Composable) -> int:
    return conn.execute(query).fetchone()[0]


@dataclass(frozen=True)
class _Probe:
    """One re-validation query counting what violates a constraint, and how to say so when it finds any."""

    query: sql.Composable
    problem: str  # with {count}
    constraint: str  # '<table> <constraint>'
    validated: bool = True  # False: added NOT VALID in production, whose rows may break it

    def problem_after(self, count: int, at_restore: int) -> str | None:
        """What to report for `count` violations now, `at_restore` of them production's own; None if nothing."""
        if count <= at_restore:
            return None
        return self.problem.format(count=count) + (f" ({at_restore} at restore: NOT VALID)" if at_restore else "")


def _revalidation_probes(conn: psycopg.Connection) -> list[_Probe]:
    params = {"own": list(OWN_SCHEMAS)}
    probes = []
    for name, child, validated, parent, child_cols, parent_cols in conn.execute(_FOREIGN_KEYS, params).fetchall():
        pairs = sql.SQL(" AND ").join(
            sql.SQL("p.{} = c.{}").format(sql.SQL(pc), sql.SQL(cc))
            for pc, cc in zip(parent_cols, child_cols, strict=True)
        )
        not_null = sql.SQL(" AND ").join(sql.SQL("c.{} IS NOT NULL").format(sql.SQL(cc)) for cc in child_cols)
        query = sql.SQL(
            "SELECT count(*) FROM {child} c WHERE {not_null} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {pairs})"
        ).format(child=sql.SQL(child), parent=sql.SQL(parent), not_null=not_null, pairs=pairs)
        problem = f"foreign key {name} on {child}: {{count}} row(s) point at no {parent} row"
        probes.append(_Probe(query, problem, f"{child} {name}", validated))
    for name, table, columns in conn.execute(_UNIQUES, params).fetchall():
        cols = sql.SQL(", ").join(sql.SQL(c) for c in columns)
        not_null = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.SQL(c)) for c in columns)
        query = sql.SQL(
            "SELECT count(*) FROM (SELECT 1 FROM {t} WHERE {nn} GROUP BY {cols} HAVING count(*) > 1) d"
        ).format(t=sql.SQL(table), nn=not_null, cols=cols)
        problem = f"unique constraint {name} on {table}: {{count}} duplicated value(s)"
        probes.append(_Probe(query, problem, f"{table} {name}"))
    for name, table, validated, expression in conn.execute(_CHECKS, params).fetchall():
        query = sql.SQL("SELECT count(*) FROM {} WHERE NOT ({})").format(sql.SQL(table), sql.SQL(expression))
        problem = f"check constraint {name} on {table}: {{count}} row(s) violate it"
        probes.append(_Probe(query, problem, f"{table} {name}", validated))
    return probes


def _record_restored_violations(conn: psycopg.Connection) -> None:
    """Count what breaks each constraint production added NOT VALID (a key or CHECK added without checking
    older rows, which may break it): those rows are production's, and the integrity check allows them."""
    for probe in _revalidation_probes(conn):
        if not probe.validated:
            conn.execute(
                "INSERT INTO refresh_pipeline.restored_violations VALUES (%s, %s)",
                (probe.constraint, _count(conn, probe.query)),
            )


def _revalidate(conn: psycopg.Connection, report: IntegrityReport, connect: Connect | None, workers: int) -> None:
    probes = _revalidation_probes(conn)
    at_restore = dict(conn.execute("SELECT constraint_name, violations FROM refresh_pipeline.restored_violations"))
    found: dict[int, int] = {}

    def run(session: psycopg.Connection, index: int) -> int:
        with session.transaction():
            # A foreign key's anti-join hashes the parent's keys: 1M bookings spill in the default 4 MB
            # (S=1 payments -> bookings: 1.3 -> 0.8 s).
            raise_work_mem(session)
            found[index] = _count(session, probes[index].query)
        return 0

    run_ranges(list(range(len(probes))), run, conn, connect, workers)
    report.constraints_validated += len(probes)
    for index, probe in enumerate(probes):
        restored = at_restore.get(probe.constraint, 0)
        if problem := probe.problem_after(found[index], restored):
            report.problems.append(problem)
        elif found[index]:
            report.broken_as_restored[probe.constraint] = found[index]


def check_integrity(conn: psycopg.Connection, connect: Connect | None = None, workers: int = 1) -> IntegrityReport:
    """Everything that must be as restored, and every constraint re-validated on the data (the re-validation
    queries spread over `workers` sessions from `connect` when given)."""
    started = time.monotonic()
    report = IntegrityReport()
    params = {"own": list(OWN_SCHEMAS)}
    before = {(t, n): d for t, n, d in conn.execute("SELECT * FROM refresh_pipeline.restored_constraints").fetchall()}
    after = {(t, n): d for t, n, d in conn.execute(_CONSTRAINTS, params).fetchall()}
    report.problems += _compare(
        "constraint", {f"{t}.{n}": d for (t, n), d in before.items()}, {f"{t}.{n}": d for (t, n), d in after.items()}
    )

    indexes = conn.execute(_INDEXES, params).fetchall()
    report.indexes_checked = len(indexes)
    report.problems += _compare(
        "index",
        dict(conn.execute("SELECT * FROM refresh_pipeline.restored_indexes").fetchall()),
        {name: definition for name, definition, _ in indexes},
    )
    report.problems += [f"index {name} is not valid" for name, _, valid in indexes if not valid]

    sequences_before = dict(conn.execute("SELECT sequence_name, last_value FROM refresh_pipeline.restored_sequences"))
    sequences_after = dict(conn.execute(_SEQUENCES, params).fetchall())
    report.sequences_checked = len(sequences_after)
    report.problems += _compare("sequence", sequences_before, sequences_after)

    report.problems += _compare(
        "comment on",
        dict(conn.execute("SELECT object_name, comment FROM refresh_pipeline.restored_comments").fetchall()),
        dict(conn.execute(_COMMENTS, params).fetchall()),
    )

    tables = {info.qualified_name: info for info in read_tables(conn).values()}
    for table, expected in conn.execute("SELECT table_name, row_count FROM refresh_pipeline.restored_row_counts"):
        report.tables_counted += 1
        info = tables.get(table)
        if info is None:
            report.problems.append(f"{table} no longer exists; {expected} rows were restored")
            continue
        actual = count_rows(conn, info)
        if actual != expected:
            report.problems.append(f"{table} has {actual} rows; {expected} were restored")

    _revalidate(conn, report, connect, workers)
    report.seconds = time.monotonic() - started
    return report
