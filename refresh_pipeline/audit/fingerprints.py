"""Keyed fingerprints of the original PII, recorded on the restored database before anything is masked."""

from dataclasses import dataclass

import psycopg
from psycopg import sql

from refresh_pipeline.masking.catalog import ColumnInfo, TableInfo, column_text, with_pii_numbers
from refresh_pipeline.masking.coordinates import coordinate_pairs, in_degrees
from refresh_pipeline.masking.keys import AUDIT_PURPOSE, MaskingKey
from refresh_pipeline.masking.policy import MaskingPolicy, TransformRule
from refresh_pipeline.masking.session_key import key_column, key_relation, share_key
from refresh_pipeline.masking.value_map import (
    ALL_ROWS,
    ORIGINAL_TOKENS,
    collect_original_tokens,
    original_tokens_collected,
)

AUDIT_SCHEMA = "refresh_pipeline_audit"
# Whole values of columns masked with these are audited too (e.g. a landline no pattern would catch).
# Not names (drawn from public lists, so a masked name may equal a real one), nor scrub/JSON columns
# (partly kept, so an unchanged value is expected).
WHOLE_VALUE_TRANSFORMS = frozenset({"email", "phone", "upi", "hash", "redact", "address", "null"})
MIN_WHOLE_VALUE_LENGTH = 8

# Appended to without an index (several sessions, duplicates allowed: a probe only asks whether a
# fingerprint is there), then indexed once by index_fingerprints: ~3x cheaper than keeping a primary key
# up to date with ON CONFLICT for every one of a few million rows.
_CREATE = """
CREATE SCHEMA IF NOT EXISTS refresh_pipeline_audit;
CREATE TABLE IF NOT EXISTS refresh_pipeline_audit.original_fingerprints (
    fingerprint bytea NOT NULL,
    kind text NOT NULL
);
"""
_INDEX = "original_fingerprints_lookup"


def _fingerprint_sql(kind_and_value: sql.Composable) -> sql.Composed:
    """HMAC under the audit key of '<kind>:<normalised value>': the only form in which originals are kept."""
    return sql.SQL("refresh_pipeline.hmac({key}, {value})").format(key=key_column(AUDIT_PURPOSE), value=kind_and_value)


def normalised_whole_value(column: sql.Composable) -> sql.Composed:
    return sql.SQL("lower(btrim({}))").format(column_text(column))


def token_fingerprint(kind: sql.Composable, token: sql.Composable) -> sql.Composed:
    """The fingerprint of a normalised token of a kind: recorded and audited alike."""
    return _fingerprint_sql(sql.SQL("{} || ':' || {}").format(kind, token))


def whole_value_fingerprint(normalised: sql.Composable) -> sql.Composed:
    """The fingerprint of a whole value, given in its normalised form: recorded and audited alike."""
    return _fingerprint_sql(sql.SQL("'whole:' || {}").format(normalised))


@dataclass(frozen=True)
class ColumnHits:
    """What a probe of the fingerprints found in one column."""

    column: str
    rows: int
    locations: list[str]  # ctids of the first rows; never the values


@dataclass(frozen=True)
class CountedHits:
    """What a probe over part of a table found, and how many values it read there (for progress)."""

    hits: list[ColumnHits]
    values_read: int


# The last row of a counted probe: no column, the values read.
VALUES_READ_ROW = "SELECT NULL::text, ({})::bigint, ARRAY[]::text[]"


def _probe_rows(
    conn: psycopg.Connection, key: MaskingKey, query: sql.Composable, params: dict[str, object]
) -> list[tuple[str | None, int, list[str]]]:
    with conn.transaction():
        share_key(conn, key, AUDIT_PURPOSE)
        return conn.execute(query, params).fetchall()


def run_fingerprint_probe(
    conn: psycopg.Connection, key: MaskingKey, query: sql.Composable, params: dict[str, object]
) -> list[ColumnHits]:
    """Run a probe returning (column, rows, first rows' ctids) per column, with the audit key shared."""
    return [
        ColumnHits(name, count, list(locations)) for name, count, locations in _probe_rows(conn, key, query, params)
    ]


def run_counted_probe(
    conn: psycopg.Connection, key: MaskingKey, query: sql.Composable, params: dict[str, object]
) -> CountedHits:
    """Run a probe like run_fingerprint_probe whose query ends with a VALUES_READ_ROW."""
    rows = _probe_rows(conn, key, query, params)
    hits = [ColumnHits(name, count, list(locations)) for name, count, locations in rows if name is not None]
    return CountedHits(hits, sum(count for name, count, _locations in rows if name is None))


def location_hex(column: sql.Composable) -> sql.Composed:
    """A geometry or geography as hex EWKB (NULL when EMPTY): a geography copy of a geometry reads the same."""
    return sql.SQL("refresh_pipeline.location_hex({})").format(column)


def location_fingerprint(ewkb_hex: sql.Composable) -> sql.Composed:
    """The fingerprint of a location given as hex EWKB: recorded and audited alike."""
    return _fingerprint_sql(sql.SQL("'location:' || {}").format(ewkb_hex))


def coordinates_fingerprint(latitude: sql.Composable, longitude: sql.Composable) -> sql.Composed:
    """The fingerprint of a place given as two numbers (to 6 decimals, ~0.1 m: a numeric(9,6) and a double
    precision copy of it read the same): recorded and audited alike."""
    return _fingerprint_sql(
        sql.SQL("'coordinates:' || round(CAST({} AS numeric), 6) || ',' || round(CAST({} AS numeric), 6)").format(
            latitude, longitude
        )
    )


def _moved_location_columns(policy: MaskingPolicy, table: TableInfo) -> list[str]:
    """The table's geometry and geography columns the policy moves with `geo`: customers' locations."""
    table_policy = policy.tables.get((table.schema, table.name))
    if table_policy is None:
        return []
    return [
        column.name
        for column in table.columns
        if column.is_spatial
        and isinstance(rule := table_policy.columns.get(column.name), TransformRule)
        and rule.transform == "geo"
    ]


def _moved_coordinate_pairs(policy: MaskingPolicy, table: TableInfo) -> list[tuple[sql.Composable, sql.Composable]]:
    """The table's latitude/longitude number pairs (masking/coordinates.py) the policy moves with `geo`, each
    coordinate in degrees (a rule's `scale` taken out)."""
    table_policy = policy.tables.get((table.schema, table.name))
    if table_policy is None:
        return []

    def moved(column: ColumnInfo) -> TransformRule | None:
        rule = table_policy.columns.get(column.name)
        return rule if isinstance(rule, TransformRule) and rule.transform == "geo" else None

    return [
        (
            in_degrees(sql.Identifier(lat.name), lat_rule.param_dict.get("scale")),
            in_degrees(sql.Identifier(lon.name), lon_rule.param_dict.get("scale")),
        )
        for lat, lon in coordinate_pairs(table.columns)
        if (lat_rule := moved(lat)) and (lon_rule := moved(lon))
    ]


def _whole_value_columns(policy: MaskingPolicy, table: TableInfo) -> list[str]:
    table_policy = policy.tables.get((table.schema, table.name))
    if table_policy is None:
        return []
    marked = with_pii_numbers(table, policy)
    return [
        name
        for name, rule in table_policy.columns.items()
        if isinstance(rule, TransformRule)
        and rule.transform in WHOLE_VALUE_TRANSFORMS
        and (column := marked.column(name)) is not None
        and column.scalar_text
    ]


def create_fingerprint_table(conn: psycopg.Connection) -> None:
    conn.execute(_CREATE)


def start_fingerprints(conn: psycopg.Connection) -> None:
    """An empty, unindexed fingerprint table, ready for sessions to append to."""
    create_fingerprint_table(conn)
    conn.execute(sql.SQL("DROP INDEX IF EXISTS {}.{}").format(sql.Identifier(AUDIT_SCHEMA), sql.Identifier(_INDEX)))
    conn.execute("TRUNCATE refresh_pipeline_audit.original_fingerprints")


def index_fingerprints(conn: psycopg.Connection) -> int:
    """Index the recorded fingerprints for the audit's lookups; returns how many distinct ones there are."""
    conn.execute(
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON refresh_pipeline_audit.original_fingerprints (fingerprint)").format(
            sql.Identifier(_INDEX)
        )
    )
    conn.execute("ANALYZE refresh_pipeline_audit.original_fingerprints")
    return conn.execute(
        "SELECT count(DISTINCT fingerprint) FROM refresh_pipeline_audit.original_fingerprints"
    ).fetchone()[0]


def fingerprint_tokens(conn: psycopg.Connection, key: MaskingKey, source: sql.Composable | None = None) -> None:
    """Fingerprint collected tokens: `source` yields (kind, token) rows (default: this session's temporary
    token table)."""
    share_key(conn, key, AUDIT_PURPOSE)
    conn.execute(
        sql.SQL(
            "INSERT INTO refresh_pipeline_audit.original_fingerprints (fingerprint, kind) "
            "SELECT DISTINCT {fingerprint}, kind FROM {tokens} AS t CROSS JOIN {key}"
        ).format(
            fingerprint=token_fingerprint(sql.SQL("kind"), sql.SQL("token")),
            tokens=source if source is not None else sql.Identifier(ORIGINAL_TOKENS),
            key=key_relation(AUDIT_PURPOSE),
        )
    )


def fingerprint_whole_values(
    conn: psycopg.Connection,
    tables: list[TableInfo],
    policy: MaskingPolicy,
    key: MaskingKey,
    condition: sql.Composable = ALL_ROWS,
    columns: frozenset[str] | None = None,
    source: sql.Composable | None = None,
) -> None:
    """Fingerprint the whole values of masked PII columns (one ordered statement per column; of `source`, one
    partition of the one table, when given)."""
    params = {"min_length": MIN_WHOLE_VALUE_LENGTH}
    share_key(conn, key, AUDIT_PURPOSE)
    for table in tables:
        target = source if source is not None else table.ident
        for name in _whole_value_columns(policy, table):
            if columns is not None and name not in columns:
                continue
            column = sql.Identifier(name)
            conn.execute(
                # Each distinct value hashed once (an email repeats on every booking of its customer).
                sql.SQL(
                    "INSERT INTO refresh_pipeline_audit.original_fingerprints (fingerprint, kind) "
                    "SELECT {fingerprint}, 'whole' FROM (SELECT DISTINCT {normalised} AS v FROM {target} "
                    "WHERE length(btrim({column}::text)) >= %(min_length)s AND {condition} "
                    # Masks keep placeholders ('--------'): not a production value to look for.
                    "AND NOT refresh_pipeline.is_placeholder({column}::text)) AS distinct_values "
                    "CROSS JOIN {key}"
                ).format(
                    key=key_relation(AUDIT_PURPOSE),
                    fingerprint=whole_value_fingerprint(sql.SQL("v")),
                    normalised=normalised_whole_value(column),
                    target=target,
                    column=column,
                    condition=condition,
                ),
                params,
            )


# Locations have a table of their own, made only when the policy moves some: without it the audit skips
# every geometry column at once (a kept vehicle-position table need not be hashed row by row for nothing).
LOCATION_FINGERPRINTS = sql.SQL("refresh_pipeline_audit.location_fingerprints")


def _fingerprint_places(
    conn: psycopg.Connection, places: sql.Composable, key: MaskingKey, inserts: list[sql.Composable]
) -> None:
    """(Re)make the table `places` from `inserts` (each a SELECT of fingerprints), or leave it absent without
    any: its absence tells the audit there is nothing to compare."""
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(places))
    if not inserts:
        return
    share_key(conn, key, AUDIT_PURPOSE)
    conn.execute(sql.SQL("CREATE TABLE {} (fingerprint bytea NOT NULL)").format(places))
    for select in inserts:
        conn.execute(sql.SQL("INSERT INTO {} {}").format(places, select))
    conn.execute(sql.SQL("CREATE INDEX ON {} (fingerprint)").format(places))
    conn.execute(sql.SQL("ANALYZE {}").format(places))


def fingerprint_locations(
    conn: psycopg.Connection, tables: list[TableInfo], policy: MaskingPolicy, key: MaskingKey
) -> None:
    """Fingerprint each distinct location of every column the policy moves with `geo` (audit/locations.py)."""
    selects: list[sql.Composable] = [
        sql.SQL(
            "SELECT {fingerprint} FROM (SELECT DISTINCT {ewkb} AS ewkb FROM {target}) AS d "
            "CROSS JOIN {key} WHERE d.ewkb IS NOT NULL"
        ).format(
            fingerprint=location_fingerprint(sql.SQL("d.ewkb")),
            ewkb=location_hex(sql.Identifier(name)),
            target=table.ident,
            key=key_relation(AUDIT_PURPOSE),
        )
        for table in tables
        for name in _moved_location_columns(policy, table)
    ]
    _fingerprint_places(conn, LOCATION_FINGERPRINTS, key, selects)


# As locations: made only when the policy moves some pair, so that without it no number pair is hashed.
COORDINATE_FINGERPRINTS = sql.SQL("refresh_pipeline_audit.coordinate_fingerprints")


def fingerprint_coordinates(
    conn: psycopg.Connection, tables: list[TableInfo], policy: MaskingPolicy, key: MaskingKey
) -> None:
    """Fingerprint each distinct place of every latitude/longitude pair the policy moves with `geo`
    (audit/coordinates.py)."""
    selects: list[sql.Composable] = [
        sql.SQL(
            "SELECT {fingerprint} FROM (SELECT DISTINCT {lat} AS lat, {lon} AS lon FROM {target} "
            "WHERE {lat} IS NOT NULL AND {lon} IS NOT NULL) AS d CROSS JOIN {key}"
        ).format(
            fingerprint=coordinates_fingerprint(sql.SQL("d.lat"), sql.SQL("d.lon")),
            lat=latitude,
            lon=longitude,
            target=table.ident,
            key=key_relation(AUDIT_PURPOSE),
        )
        for table in tables
        for latitude, longitude in _moved_coordinate_pairs(policy, table)
    ]
    _fingerprint_places(conn, COORDINATE_FINGERPRINTS, key, selects)


def _audit_table_present(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{AUDIT_SCHEMA}.{name}",)).fetchone()[0]


def coordinate_fingerprints_present(conn: psycopg.Connection) -> bool:
    return _audit_table_present(conn, "coordinate_fingerprints")


def location_fingerprints_present(conn: psycopg.Connection) -> bool:
    return _audit_table_present(conn, "location_fingerprints")


def record_original_fingerprints(
    conn: psycopg.Connection, tables: list[TableInfo], policy: MaskingPolicy, key: MaskingKey
) -> None:
    """Fingerprint every email, phone and UPI token in every text/JSON/array column of every table (kept
    columns too), the whole values of masked PII columns and the locations and coordinates `geo` moves, in one
    transaction."""
    with conn.transaction():
        if not original_tokens_collected(conn):
            collect_original_tokens(conn, tables, policy)
        start_fingerprints(conn)
        fingerprint_tokens(conn, key)
        fingerprint_whole_values(conn, tables, policy, key)
        fingerprint_locations(conn, tables, policy, key)
        fingerprint_coordinates(conn, tables, policy, key)
        index_fingerprints(conn)


def fingerprints_present(conn: psycopg.Connection) -> bool:
    return _audit_table_present(conn, "original_fingerprints")


def drop_fingerprints(conn: psycopg.Connection) -> None:
    """Remove the audit schema; done before promotion so no fingerprint reaches staging users."""
    with conn.transaction():
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(AUDIT_SCHEMA)))
