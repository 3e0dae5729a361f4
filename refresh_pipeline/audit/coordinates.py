"""Production's customer coordinates, kept as latitude/longitude number pairs anywhere after masking.

As for PostGIS locations (locations.py), no pattern tells a home from a stop, so places are audited as known
values only: at restore, every place of a number pair the policy moves with `geo` is fingerprinted
(fingerprints.py); after masking, every pair of kept number columns named as one (masking/coordinates.py) is
compared with those fingerprints. Kept `pickup_lat`/`pickup_lng` copied from `customers.home_lat`/`home_lng`
fail. A public place that equals a customer's (a stop chosen as home) is listed in the allowlist as WKT,
longitude first: 'POINT(72.8777 19.076)'.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from refresh_pipeline.audit.fingerprints import (
    VALUES_READ_ROW,
    CountedHits,
    coordinate_fingerprints_present,
    coordinates_fingerprint,
    run_counted_probe,
)
from refresh_pipeline.masking.catalog import ColumnInfo, TableInfo
from refresh_pipeline.masking.coordinates import coordinate_pairs
from refresh_pipeline.masking.keys import AUDIT_PURPOSE, MaskingKey
from refresh_pipeline.masking.session_key import key_relation

# Each distinct place hashed once per pair, with how many rows hold it and the first of them.
_PROBE = """
WITH candidates AS MATERIALIZED (
    SELECT v.pair, v.lat, v.lon, count(*) AS n, min(src.ctid) AS location
    FROM (SELECT ctid, * FROM {target} AS src {sample} WHERE {condition}) AS src,
         LATERAL (VALUES {pairs}) AS v (pair, lat, lon)
    WHERE v.lat IS NOT NULL AND v.lon IS NOT NULL
    GROUP BY v.pair, v.lat, v.lon
),
hashed AS MATERIALIZED (  -- each fingerprint computed once (see scan.py)
    SELECT c.pair, c.n, c.location, {fingerprint} AS fingerprint FROM candidates AS c CROSS JOIN {key}
    WHERE 'point(' || trim_scale(c.lon) || ' ' || trim_scale(c.lat) || ')' <> ALL(%(allowlist)s::text[])
)
SELECT h.pair, sum(h.n)::bigint, (array_agg(h.location ORDER BY h.location))[1:%(max_locations)s]::text[]
FROM hashed AS h
WHERE EXISTS (SELECT 1 FROM refresh_pipeline_audit.coordinate_fingerprints f WHERE f.fingerprint = h.fingerprint)
GROUP BY h.pair
UNION ALL
{values_read}
"""


def pair_name(latitude: ColumnInfo, longitude: ColumnInfo) -> str:
    """How findings name a pair: `pickup_lat/pickup_lng`."""
    return f"{latitude.name}/{longitude.name}"


def kept_coordinate_pairs(
    conn: psycopg.Connection, table: TableInfo, kept_columns: set[str]
) -> list[tuple[ColumnInfo, ColumnInfo]]:
    """The table's latitude/longitude pairs the policy keeps both of, when it moves any (else nothing to find)."""
    if not coordinate_fingerprints_present(conn):
        return []
    kept = [column for column in table.columns if column.name in kept_columns]
    return coordinate_pairs(kept)


def production_coordinates(
    conn: psycopg.Connection,
    table: TableInfo,
    pairs: list[tuple[ColumnInfo, ColumnInfo]],
    key: MaskingKey,
    sample: sql.Composable,
    allowlist: list[str],
    max_locations: int,
    condition: sql.Composable,
) -> CountedHits:
    """Per pair (pair_name), the rows (of those meeting `condition`) holding a production customer's place
    (needs the fingerprints); places whose lower-case WKT is in `allowlist` are public."""
    if not pairs:
        return CountedHits([], 0)
    values = sql.SQL(", ").join(
        sql.SQL("({}, CAST(src.{} AS numeric), CAST(src.{} AS numeric))").format(
            sql.Literal(pair_name(latitude, longitude)), sql.Identifier(latitude.name), sql.Identifier(longitude.name)
        )
        for latitude, longitude in pairs
    )
    query = sql.SQL(_PROBE).format(
        target=table.ident,
        sample=sample,
        condition=condition,
        pairs=values,
        key=key_relation(AUDIT_PURPOSE),
        fingerprint=coordinates_fingerprint(sql.SQL("c.lat"), sql.SQL("c.lon")),
        values_read=sql.SQL(VALUES_READ_ROW).format(sql.SQL("SELECT coalesce(sum(n), 0) FROM candidates")),
    )
    return run_counted_probe(conn, key, query, {"allowlist": allowlist, "max_locations": max_locations})
