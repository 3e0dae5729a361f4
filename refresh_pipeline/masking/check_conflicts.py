"""CHECK constraints a mask cannot pass, found before anything is masked.

A mask that gives every value one shape (`email`: <16 letters>@example.com, unless it keeps each address's
domain; `hash`; `redact`; `null`) is
tried against each CHECK on its column and against the column's domain, in a statement that reads no row and
writes nothing (it runs on production's read-only session too). A CHECK that refuses the shape would stop the
refresh at that table (`CHECK (work_email LIKE '%@busco.in')` under `email`), so it is a problem to fix in the
policy first, not a surprise at the weekly run."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from refresh_pipeline.masking.catalog import ColumnInfo, TableInfo
from refresh_pipeline.masking.policy import REDACTED, MaskingPolicy, TransformRule, describe_rule

_HEX = "0123456789abcdef"

# Every CHECK of the table: name, definition, expression (as SELECT can evaluate it) and the columns it reads.
_CHECKS = """
SELECT c.conname, pg_get_constraintdef(c.oid), pg_get_expr(c.conbin, c.conrelid),
       array(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)
             ORDER BY a.attnum)
FROM pg_constraint c
WHERE c.conrelid = %s::regclass AND c.contype = 'c'
ORDER BY c.conname
"""


@dataclass(frozen=True)
class _Shape:
    """The one value a mask gives every non-empty value (None: NULL), and how to say it."""

    value: str | None
    said: str


def _shape(rule: TransformRule) -> _Shape | None:
    """The shape of every value of a fixed-shape mask; None when values vary (names, phones, dates ...)."""
    params = rule.param_dict
    if rule.transform == "email" and not rule.keeps_domains:
        return _Shape("abcdefghijklmnop@example.com", "<16 letters>@example.com")
    if rule.transform == "hash":
        length = int(params.get("length", 64))
        return _Shape((_HEX * 4)[:length], f"{length} hex digits")
    if rule.transform == "redact":
        value = str(params.get("value", REDACTED))
        return _Shape(value, repr(value))
    if rule.transform == "null":
        return _Shape(None, "NULL")
    return None


def _passes(conn: psycopg.Connection, query: sql.Composable) -> bool:
    """Whether the trial passes; one the database cannot run (a function it lacks) counts as passing. Without
    parameters, so a `%` in a CHECK's LIKE pattern is not taken for one."""
    try:
        with conn.transaction(force_rollback=True):
            row = conn.execute(query).fetchone()
    except (psycopg.errors.CheckViolation, psycopg.errors.NotNullViolation):
        return False
    except psycopg.Error:
        return True
    return bool(row[0])


def _table_check_fails(
    conn: psycopg.Connection, table: TableInfo, column: ColumnInfo, shape: _Shape, expression: str, reads: list[str]
) -> bool:
    """The CHECK's expression on a row holding the masked shape in `column` and NULL in the others it reads
    (a NULL makes a CHECK pass, so only this column can fail it)."""
    values = sql.SQL(", ").join(
        sql.SQL("CAST({} AS {}) AS {}").format(
            sql.Literal(shape.value) if name == column.name else sql.NULL,
            sql.SQL(other.type_name),
            sql.Identifier(name),
        )
        for name in reads
        if (other := table.column(name)) is not None
    )
    query = sql.SQL("SELECT ({}) IS NOT FALSE FROM (SELECT {}) AS masked_row").format(sql.SQL(expression), values)
    return not _passes(conn, query)


def _domain_fails(conn: psycopg.Connection, column: ColumnInfo, shape: _Shape) -> bool:
    """The shape cast to the column's declared type: a domain's CHECK (or NOT NULL) refuses it there."""
    # num_nulls() makes the cast run (`... OR true` would be folded away before it does).
    query = sql.SQL("SELECT num_nulls(CAST({} AS {})) >= 0").format(sql.Literal(shape.value), sql.SQL(column.type_name))
    return not _passes(conn, query)


def _refusals(
    conn: psycopg.Connection, table: TableInfo, checks: list[tuple], column: ColumnInfo, shape: _Shape
) -> list[str]:
    """What refuses `shape` in `column`, described: each CHECK of `checks` (the table's) reading it, its domain."""
    refused = [
        f"check constraint {constraint} {definition}"
        for constraint, definition, expression, reads in checks
        if column.name in reads and _table_check_fails(conn, table, column, shape, expression, reads)
    ]
    if _domain_fails(conn, column, shape):
        refused.append(f"its domain {column.type_name}")
    return refused


def refuse_masked_emails(conn: psycopg.Connection, table: TableInfo, columns: list[ColumnInfo]) -> list[str]:
    """Which of the table's (text) columns a CHECK of the table or of their domain refuses `email`'s
    @example.com in, reading no row."""
    shape = _shape(TransformRule("email"))
    assert shape is not None
    checks = conn.execute(_CHECKS, (table.ident.as_string(conn),)).fetchall() if columns else []
    return [column.name for column in columns if _refusals(conn, table, checks, column, shape)]


def find_check_conflicts(
    conn: psycopg.Connection, policy: MaskingPolicy, tables: dict[tuple[str, str], TableInfo]
) -> list[str]:
    """Problems: a masked column whose every masked value fails a CHECK of its table or of its domain."""
    problems = []
    for key, table in sorted(tables.items()):
        table_policy = policy.tables.get(key)
        if table_policy is None or table_policy.keep_all:
            continue
        shaped = [
            (column, shape)
            for name, rule in table_policy.masked_columns.items()
            if isinstance(rule, TransformRule)
            and (shape := _shape(rule)) is not None
            and (column := table.column(name)) is not None
            and not column.is_array
        ]
        if not shaped:
            continue
        checks = conn.execute(_CHECKS, (table.ident.as_string(conn),)).fetchall()
        for column, shape in shaped:
            name = column.name
            if refused := _refusals(conn, table, checks, column, shape):
                rule = table_policy.columns[name]
                choose = (
                    "`{transform: email, keep_domain: true}` masks the address at its own domain"
                    if isinstance(rule, TransformRule) and rule.transform == "email"
                    else "Choose a transform whose values pass it"
                )
                problems.append(
                    f"{table.qualified_name}.{name}: `{describe_rule(rule)}` masks every value to {shape.said}, "
                    f"which fails {' and '.join(refused)}: the refresh would stop at this table. {choose} (or keep "
                    "the column, if it holds no personal data)."
                )
    return problems
