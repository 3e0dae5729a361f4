"""Masked values and the length limits of their columns (varchar(n), char(n))."""

from __future__ import annotations

import psycopg
from psycopg import sql

from refresh_pipeline.masking.catalog import ColumnInfo, TableInfo
from refresh_pipeline.masking.policy import REDACTED, TransformRule

# Transforms whose every value is this long (email) or as long as asked (hash): a shorter column is refused
# by the policy check before any work.
EMAIL_LENGTH = 28
# The longest value these transforms produce (from their lists in functions.sql; a test holds them to it).
# In a shorter column their trailing words are dropped until the value fits: `Lakshmi Srinivasan` is
# `Lakshmi` in a varchar(14), `12, Gandhi Nagar Lane, Andheri East` `12, Gandhi Nagar Lane` in a varchar(24).
FITTED_MAX_LENGTHS = {"first_name": 7, "last_name": 10, "name": 18, "address": 36}


def length_problem(column: ColumnInfo, rule: TransformRule) -> str | None:
    """A transform whose values never fit the column (or an array's elements): refused before any work."""
    if column.max_length is None:
        return None
    minimum = {"email": EMAIL_LENGTH, "hash": rule.param_dict.get("length", 64)}.get(rule.transform)
    if minimum and column.max_length < minimum:
        return f"`{rule.transform}` produces up to {minimum} characters; the column holds {column.max_length}"
    if rule.transform == "redact":
        value = rule.param_dict.get("value", REDACTED)
        if len(value) > column.max_length:
            return f"the redact value is {len(value)} characters; the column holds {column.max_length}"
    return None


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
    the table's column allows (for arrays: an element longer than the elements' limit): how many rows and
    how long, never the values."""
    limited = [c for c in table.columns if c.name in masked and c.max_length is not None]
    if not limited:
        return []

    def longest(column: ColumnInfo) -> sql.Composable:
        if column.is_array:  # the longest element of each row's array
            return sql.SQL("(SELECT max(length(e)) FROM unnest({}::text[]) AS e)").format(sql.Identifier(column.name))
        return sql.SQL("length({}::text)").format(sql.Identifier(column.name))

    measures = sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE {v} > {n}), max({v})").format(v=longest(c), n=sql.Literal(c.max_length))
        for c in limited
    )
    row = conn.execute(sql.SQL("SELECT {} FROM {}").format(measures, staging)).fetchone()
    return [
        f"{table.qualified_name}.{column.name}: {too_long:,} masked value(s) longer than its {column.max_length} "
        f"characters (up to {length})"
        for column, too_long, length in zip(limited, row[0::2], row[1::2], strict=True)
        if too_long
    ]
