"""Latitude/longitude kept as number pairs, on real PostgreSQL: the pairs are told by their names, production
places moved by `geo` are fingerprinted at restore, and a kept pair holding one fails the audit."""

import psycopg
import pytest

from refresh_pipeline.audit.scan import scan_table
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.masking.catalog import ColumnInfo, read_tables
from refresh_pipeline.masking.coordinates import coordinate_pairs, scale_in_name
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.originals import record_originals
from refresh_pipeline.masking.policy import parse_policy
from refresh_pipeline.masking.runner import mask_table
from refresh_pipeline_tests.helpers import database_with

KEY = MaskingKey("coordinates-test-key-0123456789")
# Customers 1-200 have a home; customer 7 lives exactly at stop 3. Bookings copy the home into a pickup pair of
# other types (double precision, numeric(10,7)) and hold a drop-off at a stop.
SCHEMA = """
CREATE TABLE stops (id int PRIMARY KEY, name text NOT NULL, lat numeric(9,6) NOT NULL, lon numeric(9,6) NOT NULL);
INSERT INTO stops SELECT g, 'Stop ' || g, 19.000000 + g * 0.001, 72.700000 + g * 0.001 FROM generate_series(1, 20) g;
CREATE TABLE customers (id int PRIMARY KEY, email text, home_lat numeric(9,6), home_lng numeric(9,6));
INSERT INTO customers SELECT g, 'rider' || g || '@gmail.com',
    CASE WHEN g = 7 THEN 19.003 ELSE 19.050000 + g * 0.000137 END,
    CASE WHEN g = 7 THEN 72.703 ELSE 72.850000 + g * 0.000151 END
FROM generate_series(1, 200) g;
UPDATE customers SET home_lat = NULL WHERE id = 200;
CREATE TABLE bookings (id int PRIMARY KEY, customer_id int REFERENCES customers,
                       "pickupLatitude" double precision, "pickupLongitude" numeric(10,7),
                       drop_lat numeric(9,6), drop_lon numeric(9,6), fare_latest numeric(9,2));
INSERT INTO bookings SELECT g, c.id, c.home_lat, c.home_lng, s.lat, s.lon, 10.5
FROM generate_series(1, 600) g JOIN customers c ON c.id = 1 + g % 200 JOIN stops s ON s.id = 1 + g % 20;
"""
POLICY = parse_policy("""
tables:
  stops: keep
  customers: {id: keep, email: email, home_lat: geo, home_lng: geo}
  bookings: keep
""")
KEPT = {
    "stops": {"id", "name", "lat", "lon"},
    "bookings": {"id", "customer_id", "pickupLatitude", "pickupLongitude", "drop_lat", "drop_lon", "fare_latest"},
}


def _column(name: str, base_type: str = "numeric", is_array: bool = False) -> ColumnInfo:
    return ColumnInfo(name, base_type, base_type, is_array, True, False, False, None)


def test_latitude_and_longitude_columns_are_paired_by_their_names():
    columns = [
        _column("home_lat"), _column("home_lng"), _column("pickupLatitude", "double precision"),
        _column("pickupLongitude", "real"), _column("lat"), _column("lon"), _column("office_lat"),
        _column("school_lon"), _column("latest_lat"), _column("latest_lon", "text"),
        _column("route_lat", is_array=True), _column("route_lon", is_array=True), _column("lat_lon_lat"),
        _column("lat_lon_lon"),
    ]  # fmt: skip
    pairs = [(latitude.name, longitude.name) for latitude, longitude in coordinate_pairs(columns)]
    assert pairs == [("home_lat", "home_lng"), ("pickupLatitude", "pickupLongitude"), ("lat", "lon")]


def _restored(create_database) -> str:
    conninfo = database_with(create_database, "coordinates", SCHEMA)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        record_originals(conn, list(read_tables(conn).values()), POLICY, KEY)
    return conninfo


def test_a_kept_pair_holding_a_production_place_fails_the_audit(create_database):
    conninfo = _restored(create_database)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        tables = read_tables(conn)
        unmasked = scan_table(conn, tables[("public", "customers")], KEY, kept_columns={"id", "home_lat", "home_lng"})
        mask_table(conn, POLICY, "customers", KEY)
        masked = scan_table(conn, tables[("public", "customers")], KEY, kept_columns={"id"})
        bookings = scan_table(conn, tables[("public", "bookings")], KEY, kept_columns=KEPT["bookings"])
        ranged = scan_table(
            conn,
            tables[("public", "bookings")],
            KEY,
            kept_columns=KEPT["bookings"],
            connect=lambda: psycopg.connect(conninfo, autocommit=True),
            workers=2,
            blocks_per_range=1,
        )
        stops = scan_table(conn, tables[("public", "stops")], KEY, kept_columns=KEPT["stops"])
        allowed = scan_table(
            conn, tables[("public", "stops")], KEY, kept_columns=KEPT["stops"], allowlist=("POINT(72.703 19.003)",)
        )
        ctid_of_stop = conn.execute("SELECT ctid::text FROM stops WHERE id = 3").fetchone()[0]
        moved = conn.execute("SELECT count(*) FROM customers WHERE home_lat IS NOT NULL AND home_lng IS NOT NULL")
        moved_homes = moved.fetchone()[0]

    before = {f.column: f.known_values for f in unmasked.findings}
    assert before["home_lat/home_lng"] == 199, "before masking every home but the NULL one is production's"
    assert masked.passed, masked.summary()
    assert masked.columns_scanned == ["email"], "a moved pair is not audited as kept"
    assert moved_homes == 199
    found = {f.column: f.known_values for f in bookings.findings}
    # Every pickup but the NULL home's, in other types; and the drop-offs at stop 3, where customer 7 lives.
    assert found == {"pickupLatitude/pickupLongitude": 597, "drop_lat/drop_lon": 30}
    assert "pickupLatitude/pickupLongitude (597 original value(s))" in bookings.summary()
    # Range by range on a pool: the same counts (each range names its own first rows).
    assert {f.column: f.known_values for f in ranged.findings} == found
    (stop,) = stops.findings
    assert (stop.column, stop.known_values, stop.locations) == ("lat/lon", 1, (ctid_of_stop,))
    assert allowed.passed, "a public place listed in the allowlist as WKT is not a finding"


def test_without_moved_coordinates_no_pair_is_hashed(create_database):
    conninfo = database_with(create_database, "coordinates_kept", SCHEMA)
    kept = parse_policy(
        "tables:\n  stops: keep\n  customers: {id: keep, email: email, home_lat: keep, home_lng: keep}\n"
        "  bookings: keep\n"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        tables = read_tables(conn)
        record_originals(conn, list(tables.values()), kept, KEY)
        audit = scan_table(conn, tables[("public", "bookings")], KEY, kept_columns=KEPT["bookings"])
        table = conn.execute("SELECT to_regclass('refresh_pipeline_audit.coordinate_fingerprints')").fetchone()
    assert audit.columns_scanned == ["pickupLatitude"] and audit.passed, "as a number a phone could be; no pair"
    assert table == (None,)


def test_whole_number_coordinates_pair_and_say_their_scale():
    columns = [_column("home_lat_e6", "integer"), _column("home_lng_e6", "integer"), _column("latE7", "bigint"),
               _column("lonE7", "bigint"), _column("lat_count", "integer")]  # fmt: skip
    pairs = [(latitude.name, longitude.name) for latitude, longitude in coordinate_pairs(columns)]
    assert pairs == [("home_lat_e6", "home_lng_e6"), ("latE7", "lonE7")]
    assert [scale_in_name(column) for column in columns] == [10**6, 10**6, 10**7, 10**7, None]


# Homes stored as integers (degrees times 10^6); bookings copy them in degrees (double precision), in bigint
# times 10^7 and in integers times 10^5 (~1 m, so only homes with 5 decimals survive the copy).
WHOLE_SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, home_lat_e6 int, home_lng_e6 int);
INSERT INTO customers SELECT g, 19050000 + g * 130 + CASE WHEN g % 10 = 0 THEN 3 ELSE 0 END, 72850000 + g * 150
FROM generate_series(1, 200) g;
CREATE TABLE bookings (id int PRIMARY KEY, pickup_lat double precision, pickup_lon double precision,
                       drop_lat bigint, drop_lng bigint, seen_lat int, seen_lon int);
INSERT INTO bookings SELECT g, c.home_lat_e6 / 1e6, c.home_lng_e6 / 1e6, c.home_lat_e6::bigint * 10,
    c.home_lng_e6::bigint * 10, round(c.home_lat_e6 / 10.0), round(c.home_lng_e6 / 10.0)
FROM generate_series(1, 400) g JOIN customers c ON c.id = 1 + g % 200;
"""


def test_whole_number_coordinates_are_moved_by_their_scale_and_their_copies_found(create_database):
    conninfo = database_with(create_database, "whole_coordinates", WHOLE_SCHEMA)
    policy = parse_policy(
        "tables:\n  customers:\n    id: keep\n    home_lat_e6: {transform: geo, scale: 1000000}\n"
        "    home_lng_e6: {transform: geo, scale: 1000000, radius_m: 500}\n  bookings: keep\n"
    )
    kept = {"id", "pickup_lat", "pickup_lon", "drop_lat", "drop_lng", "seen_lat", "seen_lon"}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        tables = read_tables(conn)
        record_originals(conn, list(tables.values()), policy, KEY)
        before = dict(conn.execute("SELECT id, (home_lat_e6, home_lng_e6)::text FROM customers").fetchall())
        mask_table(conn, policy, "customers", KEY)
        moved = conn.execute(
            "SELECT count(*) FILTER (WHERE (home_lat_e6, home_lng_e6)::text <> ALL(%s)),"
            " max(abs(home_lat_e6 - 19050000 - id * 130 - CASE WHEN id %% 10 = 0 THEN 3 ELSE 0 END)),"
            " pg_typeof(min(home_lat_e6))::text FROM customers",
            (list(before.values()),),
        ).fetchone()
        masked = scan_table(conn, tables[("public", "customers")], KEY, kept_columns={"id"})
        bookings = scan_table(conn, tables[("public", "bookings")], KEY, kept_columns=kept)

    assert moved[0] == 200, "every home moved"
    assert 0 < moved[1] <= 500 / 111320 * 1e6, "by at most radius_m, in millionths of a degree"
    assert moved[2] == "integer"
    assert masked.passed, masked.summary()
    found = {f.column: f.known_values for f in bookings.findings}
    # In degrees and at 10^7: every copy. At 10^5: the homes whose sixth decimal is 0 (all but every tenth).
    assert found == {"pickup_lat/pickup_lon": 400, "drop_lat/drop_lng": 400, "seen_lat/seen_lon": 360}


COARSE_SCHEMA = """
CREATE TABLE places (id int PRIMARY KEY, lat numeric(9,3), lon numeric(9,3), town_lat numeric(6,2),
                     lat_e4 int);
INSERT INTO places SELECT g, 19.000 + g * 0.001, 72.000 + g * 0.001, 19.00 + (g % 90) * 0.01, 190000 + g
FROM generate_series(1, 500) g;
"""


def test_a_moved_coordinate_never_rounds_back_and_a_column_too_coarse_for_the_radius_is_refused(create_database):
    conninfo = database_with(create_database, "coarse_coordinates", COARSE_SCHEMA)
    policy = parse_policy(
        "tables:\n  places:\n    id: keep\n    lat: geo\n    lon: geo\n"
        "    town_lat: {transform: geo, radius_m: 1500}\n    lat_e4: {transform: geo, scale: 10000}\n"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        before = conn.execute("SELECT id, lat, lon, town_lat, lat_e4 FROM places ORDER BY id").fetchall()
        with pytest.raises(RefreshError) as refused:
            mask_table(conn, parse_policy("tables:\n  places:\n    town_lat: geo\n"), "places", KEY)
        mask_table(conn, policy, "places", KEY)
        after = conn.execute("SELECT id, lat, lon, town_lat, lat_e4 FROM places ORDER BY id").fetchall()

    assert (
        "`geo` moves a coordinate by 250 to 500 m, but numeric(6,2) keeps it to ~1113 m, so it would round back "
        "to the original: set radius_m above 1113" in str(refused.value)
    )
    for column in (1, 2, 3, 4):  # kept to ~111 m, ~1,113 m (radius 1,500 m), ~11 m: every value moved
        unchanged = [row[0] for row, moved in zip(before, after, strict=True) if row[column] == moved[column]]
        assert unchanged == [], f"column {column}: {len(unchanged)} value(s) rounded back to the original"
    assert max(abs(float(a[1]) - float(b[1])) for a, b in zip(before, after, strict=True)) <= 0.0045 + 0.0005
