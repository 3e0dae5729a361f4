"""Puts a table's masked rows in place of its originals, inside the caller's transaction.

A table no other table's foreign key points at is emptied with TRUNCATE and its indexes and constraints
are built once, on the masked rows, from their own definitions: no dead rows (staging is no bigger than
production) and no index maintenance row by row (payments at S=1: 4.2 s with DELETE + INSERT, 2.2 s
rebuilt). Its self-referencing foreign keys are re-added and validated. Any other table keeps DELETE +
INSERT and is left for the caller to compact (`Replaced.compact`): TRUNCATE would need the foreign keys
of the tables pointing at it dropped, i.e. those tables locked, while other steps may be reading them
(measured: the swap waited 5 s for payments while payments' audit queued behind it). So does whatever
could not be rebuilt exactly (partitions, inheritance, other tablespaces, index statistics targets).
Most tables other tables point at never get here: the runner masks them with one rewrite (rewrite.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from refresh_pipeline.masking.catalog import TableInfo
from refresh_pipeline.row_data_in_errors import first_line_without_row_data

Log = Callable[[str], None]


_BLOCKERS = """
SELECT reason FROM (
    SELECT CASE WHEN c.relkind <> 'r' OR c.relispartition THEN 'partitioned or a partition'
                ELSE 'inheritance' END AS reason
      FROM pg_class c
     WHERE c.oid = %(table)s::regclass AND (c.relkind <> 'r' OR c.relispartition
           OR EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = c.oid OR inhparent = c.oid))
    UNION ALL
    SELECT 'index ' || i.relname || ' ' || CASE
               WHEN i.reltablespace <> 0 THEN 'is in its own tablespace'
               WHEN NOT (x.indisvalid AND x.indisready) THEN 'is not valid'
               ELSE 'has a statistics target' END
      FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
     WHERE x.indrelid = %(table)s::regclass AND (
           i.reltablespace <> 0 OR NOT (x.indisvalid AND x.indisready)
           OR EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.oid AND coalesce(a.attstattarget, -1) >= 0))
    UNION ALL
    -- An exclusion constraint is re-added from its definition, which leaves out storage parameters.
    SELECT 'exclusion constraint ' || con.conname || ' has storage parameters'
      FROM pg_constraint con JOIN pg_class i ON i.oid = con.conindid
     WHERE con.conrelid = %(table)s::regclass AND con.contype = 'x' AND i.reloptions IS NOT NULL
    UNION ALL
    SELECT %(referenced)s || con.conname || ' on ' || con.conrelid::regclass::text
      FROM pg_constraint con
     WHERE con.contype = 'f' AND con.confrelid = %(table)s::regclass AND con.conrelid <> con.confrelid
       AND con.conparentid = 0  -- a partitioned table's key once, not once more per partition
) AS blockers
"""

_REFERENCED = "referenced by foreign key "
_INDEXES = """
SELECT i.relname, pg_get_indexdef(i.oid), con.conname, con.contype, pg_get_constraintdef(con.oid),
       coalesce(con.condeferrable, false), coalesce(con.condeferred, false), x.indisclustered, x.indisreplident,
       obj_description(i.oid, 'pg_class'), obj_description(con.oid, 'pg_constraint')
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
LEFT JOIN pg_constraint con ON con.conindid = i.oid AND con.conrelid = x.indrelid AND con.contype IN ('p', 'u', 'x')
WHERE x.indrelid = %(table)s::regclass
ORDER BY i.oid
"""

_SELF_REFERENCES = """
SELECT con.conrelid::regclass::text, con.conname, pg_get_constraintdef(con.oid),
       obj_description(con.oid, 'pg_constraint')
FROM pg_constraint con
WHERE con.contype = 'f' AND con.confrelid = %(table)s::regclass AND con.conrelid = con.confrelid
ORDER BY con.conname
"""

_DEFINITIONS = """
SELECT 'index ' || i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
WHERE x.indrelid = %(table)s::regclass
UNION ALL
SELECT 'constraint ' || conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid = %(table)s::regclass AND contype IN ('p', 'u', 'x')
"""

_NOT_VALID = " NOT VALID"

# CHECK constraints production added NOT VALID: its older rows may break them (that is why), and an INSERT
# checks every row it writes, the masked rows of those too. The table's own and its partitions' own (an
# inherited one goes with its parent's), and those a child of plain inheritance has from an ancestor: set
# aside on that ancestor, as a child's copy cannot be dropped alone (the ancestor's own rows are masked by
# its own step, and this one's copy comes back with it).
_UNVALIDATED_CHECKS = """
WITH RECURSIVE ancestors(relid) AS (
    SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = %(table)s::regclass
    UNION
    SELECT i.inhparent FROM pg_inherits i JOIN ancestors a ON i.inhrelid = a.relid
)
SELECT con.conrelid::regclass::text, con.conname, pg_get_constraintdef(con.oid),
       obj_description(con.oid, 'pg_constraint')
FROM pg_constraint con
WHERE con.contype = 'c' AND NOT con.convalidated AND con.coninhcount = 0
  AND (con.conrelid = %(table)s::regclass
       OR con.conrelid IN (SELECT relid FROM pg_partition_tree(%(table)s::regclass))
       OR con.conrelid IN (SELECT relid FROM ancestors) AND EXISTS (
           SELECT 1 FROM pg_constraint mine WHERE mine.conrelid = %(table)s::regclass AND mine.contype = 'c'
              AND mine.conname = con.conname AND mine.coninhcount > 0))
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class _Index:
    name: str
    definition: str
    constraint: str | None  # the PRIMARY KEY, UNIQUE or EXCLUDE constraint it backs
    constraint_type: str | None
    constraint_definition: str | None
    deferrable: bool
    deferred: bool
    clustered: bool
    replica_identity: bool
    comment: str | None
    constraint_comment: str | None


@dataclass(frozen=True)
class _Constraint:
    """A foreign key or a CHECK constraint, dropped and added again around the rows going in."""

    table: str  # the table it is on (for a foreign key, the referencing one), as regclass text
    name: str
    definition: str
    comment: str | None

    @property
    def validated(self) -> bool:
        return not self.definition.endswith(_NOT_VALID)


class _NotRebuiltExactly(Exception):
    """The rebuilt indexes or constraints differ from the originals: the swap falls back."""


@dataclass(frozen=True)
class Replaced:
    removed: int
    inserted: int
    compact: bool  # dead rows left behind: VACUUM FULL once the transaction is committed


def lock_for_swap(conn: psycopg.Connection, info: TableInfo) -> list[_Constraint]:
    """Lock the table (ACCESS EXCLUSIVE, in the caller's transaction) for replace_rows, after the ancestors
    (plain inheritance) whose NOT VALID CHECKs it sets aside for the table, and with them their descendants, in
    the order those ancestors' own steps lock them. Returns the CHECKs to set aside, for replace_rows."""
    unvalidated = [_Constraint(*row) for row in conn.execute(_UNVALIDATED_CHECKS, _params(conn, info)).fetchall()]
    own = conn.execute("SELECT %s::regclass::text", (info.ident.as_string(conn),)).fetchone()[0]
    for ancestor in sorted({check.table for check in unvalidated} - {own}):
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.SQL(ancestor)))
    conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(info.ident))
    return unvalidated


def _params(conn: psycopg.Connection, info: TableInfo) -> dict[str, str]:
    return {"table": info.ident.as_string(conn)}


def replace_rows(
    conn: psycopg.Connection,
    info: TableInfo,
    target: sql.Composable,
    insert: sql.Composable,
    unvalidated: list[_Constraint],
    log: Log,
) -> Replaced:
    """Replace every row of the table with what `insert` inserts. Runs in the caller's transaction, which has
    locked the table with lock_for_swap; `unvalidated`, what that returned, are the CHECK constraints production
    added NOT VALID: they are set aside meanwhile and come back NOT VALID, as the rows production kept despite
    them go back in too."""
    for check in unvalidated:
        _drop_constraint(conn, check)
    replaced = _replace(conn, info, info.ident, target, insert, _params(conn, info), log)
    for check in unvalidated:
        _add_constraint(conn, check)  # NOT VALID, as in production: no row is checked
    return replaced


def _replace(
    conn: psycopg.Connection,
    info: TableInfo,
    table: sql.Composed,
    target: sql.Composable,
    insert: sql.Composable,
    params: dict[str, str],
    log: Log,
) -> Replaced:
    blockers = [row[0] for row in conn.execute(_BLOCKERS, {**params, "referenced": _REFERENCED}).fetchall()]
    if not blockers:
        try:
            with conn.transaction():  # a savepoint: a rebuild that cannot be exact leaves nothing behind
                return _rebuild(conn, info, table, insert, params, log)
        except _NotRebuiltExactly as reason:
            blockers = [str(reason)]
    # Only other tables' keys keep it from a rebuild: its plain indexes can still be built once.
    aside = _drop_plain_indexes(conn, info, table, params, log) if all(_REFERENCED in b for b in blockers) else []
    log(
        f"{info.qualified_name}: rows replaced with DELETE + INSERT ({'; '.join(blockers)})"
        + (f", {len(aside)} plain index(es) rebuilt" if aside else "")
    )
    removed = conn.execute(sql.SQL("DELETE FROM {}").format(target)).rowcount
    inserted = conn.execute(insert).rowcount
    for index in aside:
        _recreate_index(conn, info, table, index)
    return Replaced(removed, inserted, compact=True)


def _drop_plain_indexes(
    conn: psycopg.Connection, info: TableInfo, table: sql.Composed, params: dict[str, str], log: Log
) -> list[_Index]:
    """Drop the indexes no constraint is built on, to build them again after the INSERT; none when the
    database refuses (a foreign key resting on a unique index, an event trigger)."""
    plain = [index for index in _read_indexes(conn, params) if index.constraint is None]
    try:
        with conn.transaction():
            _drop(conn, info, table, plain, keys=[])
    except psycopg.Error as error:
        log(f"{info.qualified_name}: indexes kept up to date row by row ({first_line_without_row_data(error)})")
        return []
    return plain


def _read_indexes(conn: psycopg.Connection, params: dict[str, str]) -> list[_Index]:
    return [_Index(*row) for row in conn.execute(_INDEXES, params).fetchall()]


def _rebuild(
    conn: psycopg.Connection,
    info: TableInfo,
    table: sql.Composed,
    insert: sql.Composable,
    params: dict[str, str],
    log: Log,
) -> Replaced:
    indexes = _read_indexes(conn, params)
    keys = [_Constraint(*row) for row in conn.execute(_SELF_REFERENCES, params).fetchall()]
    definitions = sorted(conn.execute(_DEFINITIONS, params).fetchall())
    with _falls_back_on_ddl_errors():
        _drop(conn, info, table, indexes, keys)
    removed = conn.execute(sql.SQL("SELECT count(*) FROM ONLY {}").format(table)).fetchone()[0]
    conn.execute(sql.SQL("TRUNCATE ONLY {}").format(table))
    inserted = conn.execute(insert).rowcount  # errors of the masked rows themselves are not a reason to fall back
    with _falls_back_on_ddl_errors():
        for index in indexes:
            _recreate_index(conn, info, table, index)
        if sorted(conn.execute(_DEFINITIONS, params).fetchall()) != definitions:
            raise _NotRebuiltExactly("indexes or constraints would not come back exactly as they were")
        for key in keys:
            _restore_foreign_key(conn, key)
    for key in keys:
        _validate(conn, key, log)
    log(f"{info.qualified_name}: rows replaced with TRUNCATE + INSERT, {len(indexes)} index(es) rebuilt")
    return Replaced(removed, inserted, compact=False)


@contextmanager
def _falls_back_on_ddl_errors() -> Iterator[None]:
    """DDL the rebuild runs may meet what the catalog did not show (an event trigger refusing it, an object
    depending on an index): the swap then falls back instead of failing. Not when the masked rows break a
    constraint (a unique index rebuilt on two equal masked values): DELETE + INSERT would fail the same way."""
    try:
        yield
    except psycopg.IntegrityError:
        raise
    except psycopg.Error as error:
        raise _NotRebuiltExactly(first_line_without_row_data(error)) from error


def _drop(
    conn: psycopg.Connection, info: TableInfo, table: sql.Composed, indexes: list[_Index], keys: list[_Constraint]
) -> None:
    for key in keys:
        _drop_constraint(conn, key)
    for index in indexes:
        if index.constraint is not None:
            conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, sql.Identifier(index.constraint)))
        else:
            conn.execute(sql.SQL("DROP INDEX {}.{}").format(sql.Identifier(info.schema), sql.Identifier(index.name)))


def _recreate_index(conn: psycopg.Connection, info: TableInfo, table: sql.Composed, index: _Index) -> None:
    name = sql.Identifier(index.name)
    qualified = sql.SQL("{}.{}").format(sql.Identifier(info.schema), name)
    if index.constraint_type == "x":
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                table, sql.Identifier(index.constraint), sql.SQL(index.constraint_definition)
            )
        )
    else:
        # Built from the index's own definition (storage parameters, INCLUDE, NULLS NOT DISTINCT), then
        # promoted to the constraint it backed.
        conn.execute(sql.SQL(index.definition))
        if index.constraint is not None:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} USING INDEX {}{}{}").format(
                    table,
                    sql.Identifier(index.constraint),
                    sql.SQL("PRIMARY KEY" if index.constraint_type == "p" else "UNIQUE"),
                    name,
                    sql.SQL(" DEFERRABLE" if index.deferrable else ""),
                    sql.SQL(" INITIALLY DEFERRED" if index.deferred else ""),
                )
            )
    if index.clustered:
        conn.execute(sql.SQL("ALTER TABLE {} CLUSTER ON {}").format(table, name))
    if index.replica_identity:
        conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY USING INDEX {}").format(table, name))
    if index.comment is not None:
        conn.execute(sql.SQL("COMMENT ON INDEX {} IS {}").format(qualified, sql.Literal(index.comment)))
    if index.constraint_comment is not None:
        conn.execute(
            sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS {}").format(
                sql.Identifier(index.constraint), table, sql.Literal(index.constraint_comment)
            )
        )


def _restore_foreign_key(conn: psycopg.Connection, key: _Constraint) -> None:
    """Re-add a self-referencing key without checking it row by row as rows go in."""
    _add_constraint(conn, key, key.definition if not key.validated else key.definition + _NOT_VALID)


def _drop_constraint(conn: psycopg.Connection, constraint: _Constraint) -> None:
    conn.execute(
        sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.SQL(constraint.table), sql.Identifier(constraint.name))
    )


def _add_constraint(conn: psycopg.Connection, constraint: _Constraint, definition: str | None = None) -> None:
    """Add the constraint again, from `definition` (its own by default), with its comment."""
    table, name = sql.SQL(constraint.table), sql.Identifier(constraint.name)
    conn.execute(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(table, name, sql.SQL(definition or constraint.definition))
    )
    if constraint.comment is not None:
        conn.execute(
            sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS {}").format(name, table, sql.Literal(constraint.comment))
        )


def _validate(conn: psycopg.Connection, key: _Constraint, log: Log) -> None:
    """Validate a re-added key that was valid; one the masked rows violate stays NOT VALID, for the
    integrity check to report."""
    if not key.validated:
        return
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(sql.SQL(key.table), sql.Identifier(key.name))
            )
    except psycopg.errors.ForeignKeyViolation:
        log(f"foreign key {key.name} on {key.table} stays NOT VALID: the masked rows violate it")


# Sessions that may still see the originals' rows (snapshots older than the swap): VACUUM FULL has to keep
# those rows while they run, so it waits for them, this long at most.
COMPACT_WAIT_SECONDS = 300.0
_OLDER_SESSIONS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND greatest(age(backend_xmin), age(backend_xid)) >= age(%(xid)s::xid)
"""


def compact(conn: psycopg.Connection, info: TableInfo, swap_xid: str, log: Log) -> None:
    """After a DELETE + INSERT swap (transaction `swap_xid`) has committed: rewrite the table without the
    originals' dead rows, so staging is no bigger than production. The table is masked already: if this
    cannot be done, it is only bigger than it needs to be. Needs an autocommit session."""
    started = time.monotonic()
    told = False
    while (older := conn.execute(_OLDER_SESSIONS, {"xid": swap_xid}).fetchone()[0]) > 0:
        if time.monotonic() - started > COMPACT_WAIT_SECONDS:
            log(f"{info.qualified_name}: not compacted: {older} session(s) older than the swap still open")
            return
        if not told:
            log(f"{info.qualified_name}: waiting for {older} session(s) older than the swap before compacting")
            told = True
        time.sleep(0.2)
    try:
        conn.execute(sql.SQL("VACUUM FULL {}").format(info.ident))
    except psycopg.Error as error:
        log(f"{info.qualified_name}: not compacted ({first_line_without_row_data(error)})")
        return
    log(f"{info.qualified_name}: compacted (VACUUM FULL) in {time.monotonic() - started:.1f} s")
