"""Production's customer locations (PostGIS geometry and geography) anywhere after masking.

No pattern tells a person's home from a bus stop, so locations are audited as known values only: at restore,
every location of a column the policy moves with `geo` is fingerprinted (fingerprints.py); after masking,
every geometry and geography column of the table, kept or moved, is compared with those fingerprints. A kept
`pickup_point` copied from `customers.home` fails; a moved column cannot match, since `geo` moves every
location by at least half its radius. A public place that equals a customer's location (a stop chosen as
home) is listed in the policy's allowlist as WKT: 'POINT(72.8777 19.076)'.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from refresh_pipeline.audit.fingerprints import (
    VALUES_READ_ROW,
    CountedHits,
    location_fingerprint,
    location_fingerprints_present,
    location_hex,
    run_counted_probe,
)
from refresh_pipeline.masking.catalog import ColumnInfo, TableInfo
from refresh_pipeline.masking.keys import AUDIT_PURPOSE, MaskingKey
from refresh_pipeline.masking.session_key import key_relation

# Each distinct location hashed once, with how many rows hold it and the first of them (a pickup point copied
# onto every booking of its customer).
_PROBE = """
WITH candidates AS MATERIALIZED (
    SELECT v.column_name, v.ewkb, count(*) AS n, min(src.ctid) AS location
    FROM (SELECT ctid, * FROM {target} AS src {sample} WHERE {condition}) AS src,
         LATERAL (VALUES {columns}) AS v (column_name, ewkb, wkt)
    WHERE v.ewkb IS NOT NULL AND v.wkt <> ALL(%(allowlist)s::text[])
    GROUP BY v.column_name, v.ewkb
),
hashed AS MATERIALIZED (  -- each fingerprint computed once (see scan.py)
    SELECT c.column_name, c.n, c.location, {fingerprint} AS fingerprint FROM candidates AS c CROSS JOIN {key}
)
SELECT h.column_name, sum(h.n)::bigint, (array_agg(h.location ORDER BY h.location))[1:%(max_locations)s]::text[]
FROM hashed AS h
WHERE EXISTS (SELECT 1 FROM refresh_pipeline_audit.location_fingerprints f WHERE f.fingerprint = h.fingerprint)
GROUP BY h.column_name
UNION ALL
{values_read}
"""


def spatial_columns(conn: psycopg.Connection, table: TableInfo) -> list[ColumnInfo]:
    """The table's geometry and geography columns, when the policy moves any location (else nothing to find)."""
    if not location_fingerprints_present(conn):
        return []
    return [column for column in table.columns if column.is_spatial]


def production_locations(
    conn: psycopg.Connection,
    table: TableInfo,
    columns: list[ColumnInfo],
    key: MaskingKey,
    sample: sql.Composable,
    allowlist: list[str],
    max_locations: int,
    condition: sql.Composable,
) -> CountedHits:
    """Per column, the rows (of those meeting `condition`) holding a production customer location (needs the
    fingerprints); values whose lower-case WKT is in `allowlist` are public places."""
    if not columns:
        return CountedHits([], 0)
    values = sql.SQL(", ").join(
        sql.SQL("({}, {}, refresh_pipeline.location_text(src.{}))").format(
            sql.Literal(column.name),
            location_hex(sql.SQL("src.{}").format(sql.Identifier(column.name))),
            sql.Identifier(column.name),
        )
        for column in columns
    )
    query = sql.SQL(_PROBE).format(
        target=table.own_rows,
        sample=sample,
        condition=condition,
        columns=values,
        key=key_relation(AUDIT_PURPOSE),
        fingerprint=location_fingerprint(sql.SQL("c.ewkb")),
        values_read=sql.SQL(VALUES_READ_ROW).format(sql.SQL("SELECT coalesce(sum(n), 0) FROM candidates")),
    )
    return run_counted_probe(conn, key, query, {"allowlist": allowlist, "max_locations": max_locations})
