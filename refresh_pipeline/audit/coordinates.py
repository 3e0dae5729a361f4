"""Production's customer coordinates, kept as latitude/longitude number pairs anywhere after masking.

As for PostGIS locations (locations.py), no pattern tells a home from a stop, so places are audited as known
values only: at restore, every place of a number pair the policy moves with `geo` is fingerprinted
(fingerprints.py); after masking, every pair of kept number columns named as one (masking/coordinates.py) is
compared with those fingerprints. Kept `pickup_lat`/`pickup_lng` copied from `customers.home_lat`/`home_lng`
fail. A kept pair of whole-number columns is compared as degrees times 10^5, 10^6 and 10^7 (how GPS
coordinates are stored as integers); a moved one is fingerprinted in degrees, by its rule's `scale`. A
public place that equals a customer's (a stop chosen as home) is listed in the allowlist as WKT, longitude
first: 'POINT(72.8777 19.076)'.
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
from refresh_pipeline.masking.coordinates import COMMON_SCALES, coordinate_pairs, in_degrees, is_whole_number
from refresh_pipeline.masking.keys import AUDIT_PURPOSE, MaskingKey
from refresh_pipeline.masking.session_key import key_relation

# Each distinct place hashed once per pair, with how many rows hold it and the first of them.
_PROBE = """
WITH candidates AS MATERIALIZED (
    SELECT v.pair, v.lat, v.lon, v.counted, count(*) AS n, min(src.ctid) AS location
    FROM (SELECT ctid, * FROM {target} AS src {sample} WHERE {condition}) AS src,
         LATERAL (VALUES {pairs}) AS v (pair, lat, lon, counted)
    WHERE v.lat IS NOT NULL AND v.lon IS NOT NULL
    GROUP BY v.pair, v.lat, v.lon, v.counted
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


def _scales_to_try(latitude: ColumnInfo, longitude: ColumnInfo) -> list[tuple[bool, int | None]]:
    """(first?, scale) for each way a kept pair may store degrees: as they are, or, in whole-number columns,
    times each common scale (nothing says which)."""
    if not (is_whole_number(latitude) or is_whole_number(longitude)):
        return [(True, None)]
    return [(i == 0, scale) for i, scale in enumerate(COMMON_SCALES)]


def _degrees(column: ColumnInfo, scale: int | None) -> sql.Composable:
    return in_degrees(sql.SQL("src.{}").format(sql.Identifier(column.name)), scale if is_whole_number(column) else None)


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
        sql.SQL("({}, {}, {}, {})").format(
            sql.Literal(pair_name(latitude, longitude)),
            _degrees(latitude, scale),
            _degrees(longitude, scale),
            sql.Literal(first),  # a row's values are counted once, however many scales are tried
        )
        for latitude, longitude in pairs
        for first, scale in _scales_to_try(latitude, longitude)
    )
    query = sql.SQL(_PROBE).format(
        target=table.own_rows,
        sample=sample,
        condition=condition,
        pairs=values,
        key=key_relation(AUDIT_PURPOSE),
        fingerprint=coordinates_fingerprint(sql.SQL("c.lat"), sql.SQL("c.lon")),
        values_read=sql.SQL(VALUES_READ_ROW).format(
            sql.SQL("SELECT coalesce(sum(n), 0) FROM candidates WHERE counted")
        ),
    )
    return run_counted_probe(conn, key, query, {"allowlist": allowlist, "max_locations": max_locations})
