"""Masked values and the length limits of their columns (varchar(n), char(n))."""

from __future__ import annotations

import psycopg
from psycopg import sql

from refresh_pipeline.masking.catalog import ColumnInfo, TableInfo
from refresh_pipeline.masking.policy import TransformRule

# The longest value these transforms produce (from their lists in functions.sql; a test holds them to it).
# In a shorter column their trailing words are dropped until the value fits: `Lakshmi Srinivasan` is
# `Lakshmi` in a varchar(14), `12, Gandhi Nagar Lane, Andheri East` `12, Gandhi Nagar Lane` in a varchar(24).
FITTED_MAX_LENGTHS = {"first_name": 7, "last_name": 10, "name": 18, "address": 36}


def fitted(column: ColumnInfo, rule: TransformRule, expression: sql.Composable) -> sql.Composable:
    """`expression` cut to the column's length by whole words, when its transform could overflow it."""
    longest = FITTED_MAX_LENGTHS.get(rule.transform)
    if longest is None or column.max_length is None or column.max_length >= longest:
        return expression
    return sql.SQL("refresh_pipeline.fit_words({}, {})").format(expression, sql.Literal(column.max_length))


def too_long_for_their_columns(
    conn: psycopg.Connection, table: TableInfo, masked: list[str], staging: sql.Composable
) -> list[str]:
    """For masked rows computed into `staging` (text columns), which masked columns hold values longer than
    the table's column allows: how many and how long, never the values."""
    limited = [c for c in table.columns if c.name in masked and c.max_length is not None and not c.is_array]
    if not limited:
        return []
    measures = sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE length({c}::text) > {n}), max(length({c}::text))").format(
            c=sql.Identifier(c.name), n=sql.Literal(c.max_length)
        )
        for c in limited
    )
    row = conn.execute(sql.SQL("SELECT {} FROM {}").format(measures, staging)).fetchone()
    return [
        f"{table.qualified_name}.{column.name}: {too_long:,} masked value(s) longer than its {column.max_length} "
        f"characters (up to {longest})"
        for column, too_long, longest in zip(limited, row[0::2], row[1::2], strict=True)
        if too_long
    ]
