"""Production phones in kept number columns: a mobile stored as a bigint that the policy keeps is PII the
text audit never reads.

The text audit scans only text-like columns; scanning every ID and amount for phone-shaped numbers
would flag ordinary keys. Instead, the values of kept number columns (bigint, numeric, double precision, and
arrays of them) that lie in the range of an
Indian mobile (10 digits from 6000000000, or 12 with the 91 country code) are compared with production's
phone fingerprints. Only a value equal to a real production phone counts. All such columns of a table are
read in one scan per block range, and the range test leaves ordinary IDs and amounts out before anything is
hashed.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from refresh_pipeline.audit.fingerprints import VALUES_READ_ROW, CountedHits, run_counted_probe, token_fingerprint
from refresh_pipeline.masking.catalog import PHONE_NUMBER_TYPES, ColumnInfo, TableInfo
from refresh_pipeline.masking.keys import AUDIT_PURPOSE, MaskingKey
from refresh_pipeline.masking.session_key import key_relation

# Indian mobiles as numbers: national (6xxxxxxxxx-9xxxxxxxxx) and with the country code (91 6... - 91 9...).
PHONE_NUMBER_RANGES = ((6_000_000_000, 9_999_999_999), (916_000_000_000, 919_999_999_999))

_PROBE = """
WITH candidates AS MATERIALIZED (
    SELECT src.ctid AS location, v.column_name, right(v.n::bigint::text, 10) AS national
    FROM (SELECT ctid, * FROM {target} AS src {sample} WHERE {condition} AND ({any_in_range})) AS src,
         LATERAL ({columns}) AS v (column_name, n)
    WHERE ({in_range}) AND v.n = trunc(v.n)
),
hashed AS MATERIALIZED (  -- each fingerprint computed once (see scan.py)
    SELECT c.column_name, c.location, {fingerprint} AS fingerprint FROM candidates AS c CROSS JOIN {key}
)
SELECT h.column_name, count(DISTINCT h.location),
       (array_agg(DISTINCT h.location ORDER BY h.location))[1:%(max_locations)s]::text[]
FROM hashed AS h
WHERE EXISTS (SELECT 1 FROM refresh_pipeline_audit.original_fingerprints f WHERE f.fingerprint = h.fingerprint)
GROUP BY h.column_name
UNION ALL
{values_read}
"""
# The values read, for progress: a second pass over the range's blocks, which the probe has just read.
_VALUES_READ = "SELECT {non_null} FROM {target} AS src {sample} WHERE {condition}"


def kept_number_columns(table: TableInfo, kept_columns: set[str]) -> list[ColumnInfo]:
    """Kept bigint, numeric and double precision columns (and arrays of them) that can hold ten digits before
    the point (integer cannot, nor a numeric(9,6) latitude)."""
    return [
        column
        for column in table.columns
        if column.name in kept_columns
        and not column.pii_number
        and column.base_type in PHONE_NUMBER_TYPES
        and (column.numeric_digits[0] or 10) >= 10
    ]


def phones_in_kept_numbers(
    conn: psycopg.Connection,
    table: TableInfo,
    columns: list[ColumnInfo],
    key: MaskingKey,
    sample: sql.Composable,
    max_locations: int,
    condition: sql.Composable,
) -> CountedHits:
    """Per column, the rows (of those meeting `condition`) whose number (or a number in whose array) equals a
    production phone (needs the fingerprints)."""
    if not columns:
        return CountedHits([], 0)
    values = sql.SQL(" UNION ALL ").join(
        sql.SQL(
            "SELECT {}, e::numeric FROM unnest(src.{}) AS e" if c.is_array else "SELECT {}, src.{}::numeric"
        ).format(sql.Literal(c.name), sql.Identifier(c.name))
        for c in columns
    )

    def in_range(value: sql.Composable) -> sql.Composable:
        return sql.SQL(" OR ").join(
            sql.SQL("{} BETWEEN {} AND {}").format(value, sql.Literal(low), sql.Literal(high))
            for low, high in PHONE_NUMBER_RANGES
        )

    # Filtered on the columns' own types first (bigint comparisons, no cast): most rows stop there. An array is
    # read element by element.
    any_in_range = sql.SQL(" OR ").join(
        sql.SQL("src.{} IS NOT NULL").format(sql.Identifier(c.name))
        if c.is_array
        else in_range(sql.SQL("src.{}").format(sql.Identifier(c.name)))
        for c in columns
    )
    query = sql.SQL(_PROBE).format(
        target=table.own_rows,
        sample=sample,
        condition=condition,
        columns=values,
        any_in_range=any_in_range,
        in_range=in_range(sql.SQL("v.n")),
        key=key_relation(AUDIT_PURPOSE),
        fingerprint=token_fingerprint(sql.Literal("phone"), sql.SQL("c.national")),
        values_read=sql.SQL(VALUES_READ_ROW).format(
            sql.SQL(_VALUES_READ).format(
                non_null=sql.SQL(" + ").join(sql.SQL("count(src.{})").format(sql.Identifier(c.name)) for c in columns),
                target=table.own_rows,
                sample=sample,
                condition=condition,
            )
        ),
    )
    return run_counted_probe(conn, key, query, {"max_locations": max_locations})
