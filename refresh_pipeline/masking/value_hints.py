"""What a sample of an unclassified column's values says it holds: emails, phones, UPI handles or PANs as
whole values, or emails, phones and UPI handles inside free text; for a JSON column, the paths of its documents'
keys. Read on the server, through the caller's session (read-only on production): no value reaches Python, only
counts and key paths."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from refresh_pipeline.masking.catalog import (
    PHONE_NUMBER_TYPES,
    TEXT_TYPES,
    ColumnInfo,
    TableInfo,
    column_text,
    column_words,
)
from refresh_pipeline.masking.patterns import ANY_PII_PATTERN, PAN_WHOLE, PHONE_SHAPED_UPI_LOCAL, pii_kind

SAMPLE_SIZE = 1000
# A column is taken for one kind when this share of its sampled values are that kind whole.
WHOLE_SHARE = 0.8
# A sample stops there: a mostly-NULL column of a large table must not turn validate into a full scan.
SAMPLE_TIMEOUT_MS = 5000
# ... and many slow columns must not hold up validate or the coverage check for long either.
SAMPLES_BUDGET_S = 60

_IDENTIFIER = re.compile(r"(^|_)(id|ids|key|seq|serial)$")
_KIND_NAMES = {"email": "emails", "phone": "phone numbers", "upi": "UPI handles", "pan": "PANs"}

# The first non-blank values (or array elements) of one column, each trimmed.
_SAMPLE = """
SELECT btrim(v) AS v FROM (SELECT {value} AS v FROM {source}) AS s WHERE btrim(v) <> '' LIMIT %(size)s
"""
_SCALAR_SOURCE = "(SELECT {column} FROM {table} WHERE {column} IS NOT NULL LIMIT %(size)s) AS t"
_ARRAY_SOURCE = (
    "(SELECT {column} FROM {table} WHERE {column} IS NOT NULL LIMIT %(size)s) AS t, unnest(t.{column}) AS e(element)"
)
# Whole values of the PII pattern by kind (patterns.pii_kind, a URL's '%40' read as '@'). Not
# patterns.url_decoded_at: its '%40' is a literal, which a query taking parameters reads as a placeholder.
_COUNTS = """
WITH sample AS ({sample}),
whole AS (
    SELECT {kind} AS kind FROM (SELECT replace(v, '%%40', '@') AS t FROM sample WHERE v ~ %(whole)s) AS decoded
)
SELECT (SELECT count(*) FROM sample),
       (SELECT count(*) FROM sample WHERE v ~ %(pattern)s),
       (SELECT count(*) FROM whole WHERE kind = 'email'),
       (SELECT count(*) FROM whole WHERE kind = 'phone'),
       (SELECT count(*) FROM whole WHERE kind = 'upi'),
       (SELECT count(*) FROM sample WHERE v !~ '[0-9]'),
       (SELECT count(*) FROM sample WHERE upper(v) ~ %(pan)s)
"""
# The paths of the strings and numbers in a column's first documents (keys only: no value leaves the server).
_JSON_PATHS = """
WITH RECURSIVE docs AS (
    SELECT {column}::jsonb AS doc FROM {table} WHERE {column} IS NOT NULL LIMIT %(documents)s
),
walk(steps, value, depth) AS (
    SELECT ARRAY[]::text[], doc, 0 FROM docs
    UNION ALL
    SELECT w.steps || child.step, child.value, w.depth + 1
    FROM walk AS w, LATERAL (
        SELECT e.key AS step, e.value FROM jsonb_each(CASE WHEN jsonb_typeof(w.value) = 'object' THEN w.value END) AS e
        UNION ALL
        SELECT '*', a.value FROM jsonb_array_elements(CASE WHEN jsonb_typeof(w.value) = 'array' THEN w.value END) AS a
    ) AS child
    WHERE w.depth < %(depth)s
)
SELECT DISTINCT steps FROM walk WHERE jsonb_typeof(value) IN ('string', 'number') LIMIT %(paths)s
"""
_JSON_LIMITS = {"documents": 200, "depth": 8, "paths": 500}

# A whole number holding a phone: 10 digits from 6-9, maybe after 91 or 0.
_NUMBER_COUNTS = """
WITH sample AS ({sample})
SELECT (SELECT count(*) FROM sample), (SELECT count(*) FROM sample WHERE v ~ %(phone)s)
"""


@dataclass(frozen=True)
class ValueHint:
    """What the sample says: the transform its values call for (None: the name decides, the note informs the
    reviewer) and why, in counts."""

    transform: str | None  # email | phone | upi, or None
    note: str
    # A JSON column's: the paths (steps, `*` for array elements) of its sampled documents' strings and numbers.
    json_paths: tuple[tuple[str, ...], ...] = ()
    # A CHECK of the column (or its domain) refuses `email`'s @example.com (check_conflicts.py).
    refuses_masked_emails: bool = False


def worth_sampling(column: ColumnInfo) -> bool:
    """A text column or text array (PII as its values) or a whole-number column that is no identifier (a phone
    as a number; an id counting past 6,000,000,000 would look like phones)."""
    if column.generated or column.composite:
        return False
    if column.unqualified_type in TEXT_TYPES or column.is_json:
        return True
    return (
        not column.is_array
        and column.base_type in PHONE_NUMBER_TYPES
        and column.numeric_digits[1] == 0
        and not column.identity_always
        and not _IDENTIFIER.search(column_words(column.name))
    )


def hint_from_counts(sampled: int, holding: int, whole: dict[str, int], without_digits: int) -> ValueHint | None:
    """What the counts of a sample call for, or None when no sampled value is PII.

    One kind whole in WHOLE_SHARE of the values: its transform, which replaces every value (`phone` only when
    every value has a digit: it keeps one without, a name say, as it is). PII inside free text: a note only,
    as `scrub` would keep the rest of the text (names too) where the name's suggestion may be `redact`."""
    kind, count = max(whole.items(), key=lambda item: item[1], default=("", 0))
    if count and count >= WHOLE_SHARE * sampled:
        said = f"values: {count:,} of {sampled:,} sampled are {_KIND_NAMES[kind]}"
        if kind == "phone" and without_digits:
            return ValueHint(None, f"{said}, {without_digits:,} have no digit (`phone` keeps such a value as it is)")
        return ValueHint(kind, said)
    if holding == 0:
        return None
    return ValueHint(None, f"values: {holding:,} of {sampled:,} sampled hold an email, phone or UPI handle")


def _limited(conn: psycopg.Connection, query: sql.Composable, params: dict[str, object]) -> list[tuple] | None:
    """The query's rows, or None when they cannot be read in SAMPLE_TIMEOUT_MS (a hint is a convenience: the
    audit is the guarantee)."""
    try:
        # Rolled back either way, so the timeout ends with the sample, even inside the caller's transaction.
        with conn.transaction(force_rollback=True):
            conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(SAMPLE_TIMEOUT_MS)))
            return conn.execute(query, params).fetchall()
    except (psycopg.errors.QueryCanceled, psycopg.errors.InsufficientPrivilege):
        return None


def _json_hint(conn: psycopg.Connection, table: TableInfo, column: ColumnInfo) -> ValueHint | None:
    query = sql.SQL(_JSON_PATHS).format(column=sql.Identifier(column.name), table=table.ident)
    rows = _limited(conn, query, _JSON_LIMITS)
    return ValueHint(None, "", tuple(tuple(steps) for (steps,) in rows)) if rows else None


def sample_hint(conn: psycopg.Connection, table: TableInfo, column: ColumnInfo) -> ValueHint | None:
    """What the column's first SAMPLE_SIZE non-blank values (array elements) say, or a JSON column's
    documents' paths; None when they hold no PII or cannot be read in time."""
    if column.is_json:
        return _json_hint(conn, table, column)
    ident = sql.Identifier(column.name)
    value = column_text(sql.SQL("e.element") if column.is_array else ident)
    source = sql.SQL(_ARRAY_SOURCE if column.is_array else _SCALAR_SOURCE).format(column=ident, table=table.ident)
    sample = sql.SQL(_SAMPLE).format(value=value, source=source)
    is_number = column.unqualified_type not in TEXT_TYPES
    counts = _NUMBER_COUNTS if is_number else _COUNTS
    query = sql.SQL(counts).format(sample=sample, kind=pii_kind(sql.Identifier("t")))
    params = {
        "size": SAMPLE_SIZE,
        "whole": f"^(?:{ANY_PII_PATTERN})$",
        "pattern": ANY_PII_PATTERN,
        "phone": PHONE_SHAPED_UPI_LOCAL,
        "pan": PAN_WHOLE,
    }
    rows = _limited(conn, query, params)
    if rows is None:
        return None
    (row,) = rows
    if is_number:
        sampled, phones = row
        return hint_from_counts(sampled, phones, {"phone": phones}, without_digits=0)
    sampled, holding, emails, phones, upis, without_digits, pans = row
    whole = {"email": emails, "phone": phones, "upi": upis, "pan": pans}
    return hint_from_counts(sampled, holding, whole, without_digits)


def sample_hints(
    conn: psycopg.Connection,
    columns: Iterable[tuple[TableInfo, ColumnInfo]],
    log: Callable[[str], None] = lambda _message: None,
) -> dict[tuple[str, str, str], ValueHint]:
    """Hints for the columns worth sampling, keyed by (schema, table, column)."""
    wanted = [(table, column) for table, column in columns if worth_sampling(column)]
    if wanted:
        log(f"sampling the values of {len(wanted)} unclassified column(s) for PII (up to {SAMPLE_SIZE:,} each)")
    hints = {}
    deadline = time.monotonic() + SAMPLES_BUDGET_S
    for done, (table, column) in enumerate(wanted):
        if time.monotonic() > deadline:
            left = len(wanted) - done
            log(f"sampling stopped after {SAMPLES_BUDGET_S} s: {left} column(s) suggested from their names only")
            break
        if (hint := sample_hint(conn, table, column)) is not None:
            hints[(table.schema, table.name, column.name)] = hint
    return hints
