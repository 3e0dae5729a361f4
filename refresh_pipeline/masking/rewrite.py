"""Masks a table other tables' foreign keys point at by rewriting it once, instead of DELETE + INSERT and a
VACUUM FULL afterwards (swap.py).

`ALTER TABLE ... ALTER COLUMN c TYPE <its own type> USING <masked c>` writes every row once into a new heap
and builds each index once, while the table keeps its identity: the foreign keys pointing at it stay as they
are and the tables they are on are not locked. S=1 bookings (1M rows, one masked email), on a quiet server:
DELETE + INSERT + VACUUM FULL 16.5 s and 21 core-s; one rewrite ~10 s on one session.

Only where the masking needs nothing but the row (no value-map join, no array subquery: planner.py) and no
masked column takes part in a foreign key (the rewrite would check it against tables not masked yet). The
table must come back exactly as it was: its catalogue description is compared before and after inside the
transaction, and whatever the database refuses (a view or a policy on a masked column, a generated column
computed from one) or describes differently afterwards rolls the rewrite back, for the masking query and
DELETE + INSERT to do it instead.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from refresh_pipeline.chunked import Connect, Progress
from refresh_pipeline.masking.catalog import ColumnInfo, TableInfo
from refresh_pipeline.masking.keys import MASKING_PURPOSE, MaskingKey
from refresh_pipeline.masking.planner import TableMaskingPlan
from refresh_pipeline.masking.session_key import share_key_in_setting
from refresh_pipeline.row_data_in_errors import first_line_without_row_data

Log = Callable[[str], None]

_SHAPE = """
SELECT c.relkind = 'r' AND NOT c.relispartition
           AND NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = c.oid OR inhparent = c.oid),
       EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.confrelid = c.oid AND f.conrelid <> c.oid),
       EXISTS (SELECT 1 FROM pg_constraint f, pg_attribute a
               WHERE f.contype = 'f' AND a.attrelid = c.oid AND a.attname = ANY(%(masked)s)
                 AND (f.conrelid = c.oid AND a.attnum = ANY(f.conkey)
                      OR f.confrelid = c.oid AND a.attnum = ANY(f.confkey)))
FROM pg_class c WHERE c.oid = %(table)s::regclass
"""

# Everything about the table a rewrite could change. Names and definitions, not OIDs: an index on a masked
# column is built again under its own name.
_DESCRIPTION = """
SELECT 'column ' || a.attname || ': ' || format_type(a.atttypid, a.atttypmod) || ' collation ' || a.attcollation
       || ' storage ' || a.attstorage::text || ' compression ' || {compression}
       || ' statistics ' || coalesce(a.attstattarget::text, '-')
       || ' options ' || coalesce(a.attoptions::text, '-') || ' not null ' || a.attnotnull
       || ' default ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '-') || ' generated ' || a.attgenerated::text
       || ' identity ' || a.attidentity::text || ' privileges ' || coalesce(a.attacl::text, '-')
       || ' comment ' || coalesce(col_description(a.attrelid, a.attnum), '-')
  FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = %(table)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'index ' || i.relname || ': ' || pg_get_indexdef(i.oid) || ' clustered ' || x.indisclustered
       || ' replica identity ' || x.indisreplident || ' valid ' || (x.indisvalid AND x.indisready)
       || ' tablespace ' || i.reltablespace || ' options ' || coalesce(i.reloptions::text, '-')
       || ' statistics ' || coalesce((SELECT string_agg(ia.attstattarget::text, ',' ORDER BY ia.attnum)
                                        FROM pg_attribute ia WHERE ia.attrelid = i.oid), '-')
       || ' comment ' || coalesce(obj_description(i.oid, 'pg_class'), '-')
  FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = %(table)s::regclass
UNION ALL
SELECT 'constraint ' || con.conname || ' on ' || con.conrelid::regclass::text || ': ' || pg_get_constraintdef(con.oid)
       || ' validated ' || con.convalidated || ' comment ' || coalesce(obj_description(con.oid, 'pg_constraint'), '-')
  FROM pg_constraint con WHERE con.conrelid = %(table)s::regclass OR con.confrelid = %(table)s::regclass
UNION ALL
SELECT 'trigger ' || t.tgname || ': ' || pg_get_triggerdef(t.oid) || ' enabled ' || t.tgenabled::text
  FROM pg_trigger t WHERE t.tgrelid = %(table)s::regclass AND NOT t.tgisinternal
UNION ALL
SELECT 'statistics ' || s.stxname || ': ' || pg_get_statisticsobjdef(s.oid)
  FROM pg_statistic_ext s WHERE s.stxrelid = %(table)s::regclass
UNION ALL
SELECT 'table: replica identity ' || c.relreplident::text || ' persistence ' || c.relpersistence::text
       || ' tablespace ' || c.reltablespace
       || ' options ' || coalesce(c.reloptions::text, '-') || ' row security ' || c.relrowsecurity
       || ' comment ' || coalesce(obj_description(c.oid, 'pg_class'), '-')
  FROM pg_class c WHERE c.oid = %(table)s::regclass
ORDER BY 1
"""

_STORAGE = {"p": "PLAIN", "e": "EXTERNAL", "x": "EXTENDED", "m": "MAIN"}
_COMPRESSION = {"p": "pglz", "l": "lz4"}
# A masked column's own settings an ALTER ... TYPE resets to its type's (same statement, so the rewrite
# already writes with them); the collation is named in the TYPE clause.
_COLUMN_SETTINGS = """
SELECT a.attname, a.attcollation::regcollation::text, a.attstorage <> t.typstorage, a.attstorage, {compression}
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = %(table)s::regclass AND a.attname = ANY(%(masked)s)
"""
# The rewrite is one statement: every PROGRESS_SAMPLE-th row, on average, advances a sequence another
# session reads for the progress log (advancing it for every row would cost ~1.7 us a row).
PROGRESS_SAMPLE = 1000
PROGRESS_PREFIX = "rewrite_progress_"
PROGRESS_INTERVAL = 3.0  # seconds between progress lines


@dataclass(frozen=True)
class Rewritten:
    status: str  # "masked", or "already_masked" by another run meanwhile
    rows: int


class _NotRewrittenExactly(Exception):
    """The rewrite would leave the table described differently: it is rolled back."""


NOT_REFERENCED = "no other table's foreign key points at it"


def rewrite_blocker(conn: psycopg.Connection, info: TableInfo, plan: TableMaskingPlan) -> str | None:
    """Why the table is not masked by a rewrite (NOT_REFERENCED: it needs none), or None when it is."""
    masked = [column.name for column, _ in plan.rewrite or []]
    plain, referenced, in_key = conn.execute(_SHAPE, {"table": info.ident.as_string(conn), "masked": masked}).fetchone()
    if not referenced:
        return NOT_REFERENCED
    if not plain:
        return "partitioned, a partition or part of an inheritance tree"
    if plan.rewrite is None:
        return "a masked column needs the masking query: a phone looked up in the value map, or an array"
    if in_key:
        return "a masked column is part of a foreign key"
    return None


def rewrite_table(
    conn: psycopg.Connection,
    info: TableInfo,
    plan: TableMaskingPlan,
    key: MaskingKey,
    record_masked: Callable[[int], int | None],
    log: Log,
    connect: Connect | None = None,
) -> Rewritten | None:
    """Mask the table with one rewrite, in one transaction with `record_masked(rows)` (which returns the
    row count of another run's marker instead, when the table was masked meanwhile). None when the database
    refused the rewrite or it would not leave the table exactly as it was: nothing changed, and the caller
    masks the table the other way."""
    if plan.rewrite is None:
        raise ValueError(f"{info.qualified_name}: its masking needs the masking query, not a rewrite")
    params = {"table": info.ident.as_string(conn), "masked": [column.name for column, _ in plan.rewrite]}
    try:
        with _progress_sequence(conn, connect) as sequence, conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")  # no event triggers on the DDL
            conn.execute(sql.SQL("LOCK TABLE ONLY {} IN ACCESS EXCLUSIVE MODE").format(info.ident))
            rows = conn.execute(sql.SQL("SELECT count(*) FROM ONLY {}").format(info.ident)).fetchone()[0]
            if (other_run := record_masked(rows)) is not None:
                return Rewritten("already_masked", other_run)
            before = _describe(conn, params)
            share_key_in_setting(conn, key, MASKING_PURPOSE)
            statement = _alter_statement(conn, info, plan.rewrite, params, sequence)
            log(f"{info.qualified_name}: masking columns {', '.join(params['masked'])} in one rewrite of {rows:,} rows")
            with _watching(
                connect, sequence, Progress(f"{info.qualified_name}: rewriting", rows, log, PROGRESS_INTERVAL)
            ):
                conn.execute(statement)
            if (after := _describe(conn, params)) != before:
                changed = sorted(set(after) ^ set(before))[0]
                raise _NotRewrittenExactly(f"it would change {changed.split(':')[0]}")
    except _NotRewrittenExactly as reason:
        log(f"{info.qualified_name}: not rewritten ({reason}); masking it block range by block range instead")
        return None
    except psycopg.Error as error:
        if not _refused(error):
            raise
        log(
            f"{info.qualified_name}: not rewritten ({first_line_without_row_data(error)}); "
            "masking it block range by block range instead"
        )
        return None
    return Rewritten("masked", rows)


def _refused(error: psycopg.Error) -> bool:
    """The database will not rewrite the table this way (a view, rule, policy or generated column on a masked
    column; not its owner; an event trigger): not a problem of the masked values, which would fail either way."""
    state = error.sqlstate or ""
    if state == "22001":
        return True  # a masked value too long for its column: the block-range path says which column
    return state[:2] in ("0A", "2B", "42", "55", "P0") and state != "55P03"  # a lock timeout is not a refusal


def _describe(conn: psycopg.Connection, params: dict[str, object]) -> list[str]:
    query = sql.SQL(_DESCRIPTION).format(compression=_compression_column(conn))
    return [row[0] for row in conn.execute(query, params).fetchall()]


def _compression_column(conn: psycopg.Connection) -> sql.SQL:
    """Per-column compression exists from PostgreSQL 14."""
    return sql.SQL("a.attcompression::text" if conn.info.server_version >= 140000 else "''")


def _alter_statement(
    conn: psycopg.Connection,
    info: TableInfo,
    columns: list[tuple[ColumnInfo, sql.Composable]],
    params: dict[str, object],
    sequence: sql.Composed | None,
) -> sql.Composed:
    query = sql.SQL(_COLUMN_SETTINGS).format(compression=_compression_column(conn))
    settings = {row[0]: row[1:] for row in conn.execute(query, params).fetchall()}
    commands: list[sql.Composable] = []
    for position, (column, expression) in enumerate(columns):
        collation, own_storage, storage, compression = settings[column.name]
        ident = sql.Identifier(column.name)
        if position == 0 and sequence is not None:
            expression = sql.SQL(
                "CASE WHEN random() >= {share} OR nextval({sequence}::regclass) > 0 THEN {value} END"
            ).format(
                share=sql.Literal(1 / PROGRESS_SAMPLE),
                sequence=sql.Literal(sequence.as_string(conn)),
                value=expression,
            )
        commands.append(
            sql.SQL("ALTER COLUMN {} TYPE {}{} USING {}").format(
                ident,
                sql.SQL(column.type_name),
                sql.SQL(f" COLLATE {collation}") if collation != "-" else sql.SQL(""),
                expression,
            )
        )
        if own_storage:
            commands.append(sql.SQL("ALTER COLUMN {} SET STORAGE {}").format(ident, sql.SQL(_STORAGE[storage])))
        if compression:
            commands.append(
                sql.SQL("ALTER COLUMN {} SET COMPRESSION {}").format(ident, sql.SQL(_COMPRESSION[compression]))
            )
    return sql.SQL("ALTER TABLE ONLY {} {}").format(info.ident, sql.SQL(", ").join(commands))


@contextmanager
def _progress_sequence(conn: psycopg.Connection, connect: Connect | None) -> Iterator[sql.Composed | None]:
    """A sequence the rewrite advances and another session reads (committed first, so that it can); none
    without a way to open that session."""
    if connect is None:
        yield None
        return
    name = sql.SQL("refresh_pipeline.{}").format(sql.Identifier(f"{PROGRESS_PREFIX}{uuid.uuid4().hex[:12]}"))
    conn.execute(sql.SQL("CREATE SEQUENCE {}").format(name))
    try:
        yield name
    finally:
        if not conn.closed:
            conn.execute(sql.SQL("DROP SEQUENCE IF EXISTS {}").format(name))


@contextmanager
def _watching(connect: Connect | None, sequence: sql.Composed | None, progress: Progress) -> Iterator[None]:
    """Log the rewrite's progress from another session while it runs."""
    if connect is None or sequence is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        seen = 0
        try:
            with connect() as watcher:
                query = sql.SQL("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {}").format(sequence)
                while not done.wait(progress.interval):
                    rows = min(int(progress.total), watcher.execute(query).fetchone()[0] * PROGRESS_SAMPLE)
                    if rows > seen:
                        progress.add(rows - seen, rows - seen)
                        seen = rows
        except psycopg.Error as error:
            progress.log(f"{progress.label}: progress no longer shown ({first_line_without_row_data(error)})")

    thread = threading.Thread(target=watch, name="rewrite-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
