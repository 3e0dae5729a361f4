"""PostGIS locations (geometry and geography), on real PostgreSQL with PostGIS: `geo` moves customers'
locations by a keyed offset, and the audit finds a production location kept in any spatial column."""

import psycopg
import pytest

from refresh_pipeline.audit.scan import scan_table
from refresh_pipeline.cli import main
from refresh_pipeline.masking.catalog import read_tables
from refresh_pipeline.masking.coverage import find_uncovered, policy_snippet
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.originals import record_originals
from refresh_pipeline.masking.policy import parse_policy
from refresh_pipeline.masking.runner import mask_table
from refresh_pipeline.masking.validation import find_policy_problems
from refresh_pipeline_tests.helpers import database_with, refresh_through_cli

KEY = MaskingKey("spatial-test-key-0123456789abcdef")
# Customers 1-200 have a home (4326), an office (geography), a last position (SRID 0 in degrees) and a
# commute (a line in metres, 3857); customer 7 lives exactly at stop 3, customers 1-10 share home 1's point.
# Bookings copy the home into `pickup` (as geometry) and `pickup_geog` (as geography).
SCHEMA = """
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE TABLE stops (id int PRIMARY KEY, name text NOT NULL, location geometry(Point, 4326) NOT NULL);
INSERT INTO stops SELECT g, 'Stop ' || g, ST_SetSRID(ST_MakePoint(72.70 + g * 0.001, 19.00 + g * 0.001), 4326)
FROM generate_series(1, 20) g;
CREATE TABLE customers (
    id int PRIMARY KEY, email text,
    home geometry(Point, 4326), office geography(Point, 4326), last_seen geometry,
    commute geometry(LineString, 3857), survey_plot geometry(Point, 2263)
);
INSERT INTO customers
SELECT g, 'rider' || g || '@gmail.com',
       CASE WHEN g = 7 THEN (SELECT location FROM stops WHERE id = 3)
            ELSE ST_SetSRID(ST_MakePoint(72.85 + g * 0.0001, 19.05 + g * 0.0001), 4326) END,
       ST_SetSRID(ST_MakePoint(72.90 + g * 0.0001, 19.10 + g * 0.0001), 4326)::geography,
       CASE WHEN g % 50 = 0 THEN NULL ELSE ST_MakePoint(72.95 + g * 0.0001, 19.20) END,
       ST_SetSRID(ST_MakeLine(ST_MakePoint(8110000 + g, 2160000), ST_MakePoint(8120000, 2170000 + g)), 3857),
       ST_SetSRID(ST_MakePoint(980000 + g, 190000 + g), 2263)
FROM generate_series(1, 200) g;
UPDATE customers SET home = (SELECT home FROM customers WHERE id = 1) WHERE id BETWEEN 2 AND 6;
UPDATE customers SET last_seen = 'POINT EMPTY'::geometry WHERE id = 199;
CREATE TABLE bookings (id int PRIMARY KEY, customer_id int REFERENCES customers, pickup geometry(Point, 4326),
                       pickup_geog geography);
INSERT INTO bookings SELECT g, 1 + g % 200, c.home, c.home::geography
FROM generate_series(1, 600) g JOIN customers c ON c.id = 1 + g % 200;
"""
MOVED = "home: geo, office: {transform: geo, radius_m: 300}, last_seen: geo, commute: geo, survey_plot: geo"
POLICY_TEXT = f"""
tables:
  stops: {{id: keep, name: keep, location: keep}}
  customers: {{id: keep, email: email, {MOVED}}}
  bookings: {{id: keep, customer_id: keep, pickup: keep, pickup_geog: keep}}
"""
# The unit tests keep a copy of the customers as they were in production, to measure the moves.
POLICY = parse_policy(POLICY_TEXT + "  originals: keep\n")


@pytest.fixture(scope="module", autouse=True)
def _postgis_installed(pg_server) -> None:
    with psycopg.connect(pg_server.dsn("postgres")) as conn:
        available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'").fetchone()
    if available is None:
        pytest.fail(
            "PostGIS is not installed for the test server: `make test` installs it (scripts/ensure-postgres.sh)"
        )


@pytest.fixture
def restored(create_database) -> str:
    conninfo = database_with(create_database, "spatial", SCHEMA + "CREATE TABLE originals AS SELECT * FROM customers;")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        record_originals(conn, list(read_tables(conn).values()), POLICY, KEY)
    return conninfo


# How far each column's value moved from the original, in metres.
_DISTANCES = {
    "home": "ST_Distance(c.home::geography, o.home::geography)",
    "office": "ST_Distance(c.office, o.office)",
    "last_seen": "ST_Distance(ST_SetSRID(c.last_seen, 4326)::geography, ST_SetSRID(o.last_seen, 4326)::geography)",
    "commute": "ST_Distance(ST_StartPoint(c.commute), ST_StartPoint(o.commute))",
    "survey_plot": "ST_Distance(c.survey_plot, o.survey_plot) * 1200 / 3937",  # US survey feet
}


def _moves(conn: psycopg.Connection) -> dict[str, tuple[float, float]]:
    """Per column, the shortest and the longest move from the original, in metres."""
    ranges = ", ".join(f"min({d}), max({d})" for d in _DISTANCES.values())
    row = conn.execute(
        f"SELECT {ranges} FROM customers c JOIN originals o USING (id) WHERE NOT ST_IsEmpty(c.last_seen)"
    ).fetchone()
    return {name: (row[2 * i], row[2 * i + 1]) for i, name in enumerate(_DISTANCES)}


def test_geo_moves_every_location_by_half_to_all_of_its_radius(restored):
    with psycopg.connect(restored, autocommit=True) as conn:
        types_before = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'customers'::regclass AND attnum > 0 ORDER BY attnum"
        ).fetchall()
        mask_table(conn, POLICY, "customers", KEY)
        moves = _moves(conn)
        types_after = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'customers'::regclass AND attnum > 0 ORDER BY attnum"
        ).fetchall()
        shapes = conn.execute(
            "SELECT max(abs(ST_Length(c.commute) - ST_Length(o.commute))), "
            "       count(*) FILTER (WHERE ST_SRID(c.last_seen) <> ST_SRID(o.last_seen)), "
            "       count(*) FILTER (WHERE c.last_seen IS NULL), "
            "       count(*) FILTER (WHERE ST_IsEmpty(c.last_seen)), "
            "       count(DISTINCT c.home) FILTER (WHERE id <= 6) "
            "FROM customers c JOIN originals o USING (id)"
        ).fetchone()
    # Degrees are converted with 111.32 km per degree; the spheroid differs from that by under 1%.
    for column, radius in [("home", 500), ("office", 300), ("last_seen", 500), ("commute", 500), ("survey_plot", 500)]:
        shortest, longest = moves[column]
        assert radius / 2 * 0.99 <= shortest and longest <= radius * 1.01, (column, shortest, longest)
    assert types_after == types_before, "the type modifiers (Point, 4326) stay"
    assert shapes[0] < 1e-6, "a line moves as a whole: its length is unchanged"
    assert shapes[1:] == (0, 4, 1, 1), "SRIDs kept, NULL and EMPTY stay, one point moves to one point"


def test_the_same_location_moves_to_the_same_place_under_one_key_only(restored, create_database):
    other = database_with(create_database, "spatial_other_key", SCHEMA + "CREATE TABLE originals (id int);")
    with psycopg.connect(restored, autocommit=True) as conn:
        mask_table(conn, POLICY, "customers", KEY)
        first = conn.execute("SELECT id, home::text FROM customers ORDER BY id").fetchall()
    with psycopg.connect(other, autocommit=True) as conn:
        record_originals(conn, list(read_tables(conn).values()), POLICY, MaskingKey("another-key-0123456789abcdefghij"))
        mask_table(conn, POLICY, "customers", MaskingKey("another-key-0123456789abcdefghij"))
        second = conn.execute("SELECT id, home::text FROM customers ORDER BY id").fetchall()
    assert len({home for _id, home in first}) == 200 - 5
    assert not {home for _id, home in first} & {home for _id, home in second}, "another key moves them elsewhere"


def test_a_location_whose_units_are_unknown_fails_naming_the_srid_only(restored):
    with psycopg.connect(restored, autocommit=True) as conn:
        conn.execute("UPDATE customers SET last_seen = ST_MakePoint(8111111, 2161111) WHERE id = 1")
        with pytest.raises(psycopg.Error) as failure:
            mask_table(conn, POLICY, "customers", KEY)
        left = conn.execute("SELECT count(*) FROM customers c JOIN originals o USING (id) WHERE c.home = o.home")
        unchanged = left.fetchone()[0]
    message = str(failure.value)
    assert "geo cannot move a geometry of SRID 0" in message and "set its SRID" in message
    assert "8111111" not in message and "2161111" not in message
    assert unchanged == 200, "nothing is swapped in when one row fails"


def test_the_audit_finds_production_locations_kept_in_any_spatial_column(restored):
    with psycopg.connect(restored, autocommit=True) as conn:
        tables = read_tables(conn)
        unmasked = scan_table(conn, tables[("public", "customers")], KEY, kept_columns={"id"})
        mask_table(conn, POLICY, "customers", KEY)
        masked = scan_table(conn, tables[("public", "customers")], KEY, kept_columns={"id"})
        bookings = scan_table(conn, tables[("public", "bookings")], KEY, kept_columns={"id", "customer_id"})
        stop_at_home = conn.execute("SELECT ST_AsText(location) FROM stops WHERE id = 3").fetchone()[0]
        stops = scan_table(conn, tables[("public", "stops")], KEY, kept_columns={"id", "name", "location"})
        allowed = scan_table(
            conn, tables[("public", "stops")], KEY, kept_columns={"id", "location"}, allowlist=(stop_at_home,)
        )
        ctid_of_stop = conn.execute("SELECT ctid::text FROM stops WHERE id = 3").fetchone()[0]
    moved = {f.column: f.known_values for f in unmasked.findings if f.column in ("home", "office", "commute")}
    assert moved == {"home": 200, "office": 200, "commute": 200}, "before masking every location is production's"
    assert masked.passed, masked.summary()
    assert {f.column: f.known_values for f in bookings.findings} == {"pickup": 600, "pickup_geog": 600}
    assert "pickup (600 original value(s))" in bookings.summary()
    (stop,) = stops.findings
    assert (stop.column, stop.known_values, stop.locations) == ("location", 1, (ctid_of_stop,))
    assert allowed.passed, "a public place listed in the allowlist as WKT is not a finding"


def test_kept_locations_are_audited_block_range_by_block_range_on_the_pool_with_progress(restored):
    """A kept vehicle-position table holds millions of locations: they are hashed range by range on every session
    of the pool, with progress, and the ranges' findings add up to those of one scan."""
    opened: list[psycopg.Connection] = []

    def connect() -> psycopg.Connection:
        opened.append(psycopg.connect(restored, autocommit=True))
        return opened[-1]

    messages: list[str] = []
    with psycopg.connect(restored, autocommit=True) as conn:
        mask_table(conn, POLICY, "customers", KEY)
        bookings = read_tables(conn)[("public", "bookings")]
        kept = {"id", "customer_id"}
        whole = scan_table(conn, bookings, KEY, kept_columns=kept)
        ranged = scan_table(
            conn, bookings, KEY, kept_columns=kept, log=messages.append, connect=connect, workers=2, blocks_per_range=1
        )
        blocks = conn.execute("SELECT pg_relation_size('bookings') / 8192").fetchone()[0]
        first_rows = [  # the first row holding each location, the first five of those
            row[0]
            for row in conn.execute("SELECT min(ctid)::text FROM bookings GROUP BY pickup ORDER BY min(ctid) LIMIT 5")
        ]
    assert blocks > 2, "the table spans several ranges"
    assert len(opened) == 4, "a pool of two read the ranges (another of two compares the tokens found afterwards)"
    found = {f.column: (f.known_values, list(f.locations)) for f in ranged.findings}
    assert found == {"pickup": (600, first_rows), "pickup_geog": (600, first_rows)}
    assert [f.as_metadata() for f in ranged.findings] == [f.as_metadata() for f in whole.findings]
    progress = [m for m in messages if m.startswith("public.bookings: auditing 2 column(s): ")]
    assert progress and "1,200 values (100%)" in progress[-1], messages


def test_without_moved_locations_no_geometry_column_is_hashed(create_database):
    """A policy that moves no location leaves nothing to compare: the audit skips every geometry column (a kept
    vehicle-position table is not hashed row by row for nothing)."""
    conninfo = database_with(create_database, "spatial_kept", SCHEMA)
    kept = parse_policy(POLICY_TEXT.replace(MOVED, "home: keep, office: keep, last_seen: keep, commute: keep, "
                                            "survey_plot: keep"))  # fmt: skip
    with psycopg.connect(conninfo, autocommit=True) as conn:
        tables = read_tables(conn)
        record_originals(conn, list(tables.values()), kept, KEY)
        audit = scan_table(conn, tables[("public", "stops")], KEY, kept_columns={"id", "name", "location"})
        location_table = conn.execute("SELECT to_regclass('refresh_pipeline_audit.location_fingerprints')").fetchone()
    assert audit.columns_scanned == ["name"] and audit.passed
    assert location_table == (None,)


def test_locations_are_suggested_moved_and_the_snippet_applies(restored):
    with psycopg.connect(restored, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE homes (id int PRIMARY KEY, latitude numeric(9,6), lng double precision, "
            "lap_count int, spots geometry[])"
        )
        tables = read_tables(conn)
    snippet = policy_snippet(find_uncovered(parse_policy("tables: {}"), tables))
    assert "    home: geo  # REVIEW: geometry(Point,4326); a location:" in snippet
    assert "    office: geo  # REVIEW: geography(Point,4326)" in snippet
    assert "    latitude: geo  # REVIEW: numeric(9,6)" in snippet and "    lng: geo  # REVIEW: double" in snippet
    assert "    lap_count: keep" in snippet and "    spots: keep" in snippet
    assert find_policy_problems(parse_policy("tables:\n" + snippet), tables) == [], snippet
    wrong = parse_policy("tables:\n  homes: {id: keep, latitude: geo, lng: geo, lap_count: keep, spots: geo}\n")
    (problem,) = find_policy_problems(wrong, tables)
    assert "`geo` needs a numeric, real, double precision, geometry or geography column, not geometry[]" in problem


def _production(create_database) -> str:
    conninfo = create_database("spatial_production")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SCHEMA)
    return conninfo


def test_a_refresh_fails_on_a_kept_copy_and_promotes_once_it_is_moved(
    create_database, pg_server, write_config, tmp_path, capsys
):
    production = _production(create_database)
    with psycopg.connect(production) as conn:
        stop_at_home = conn.execute("SELECT ST_AsText(location) FROM stops WHERE id = 3").fetchone()[0]
    kept, moved = tmp_path / "kept.yaml", tmp_path / "moved.yaml"
    kept.write_text(POLICY_TEXT)
    moved.write_text(
        f"allowlist: ['{stop_at_home}']  # stop 3, which a customer gave as home\n"
        + POLICY_TEXT.replace("pickup: keep, pickup_geog: keep", "pickup: geo, pickup_geog: geo")
    )

    assert main(["run", "--config", str(write_config(production, kept)), "--in-process"]) == 1
    err = capsys.readouterr().err
    assert "public.bookings: PII left in pickup (600 original value(s)); pickup_geog (600 original value(s))" in err
    assert "public.stops: PII left in location (1 original value(s))" in err, "the stop a customer gave as home"
    assert "public.bookings: public.bookings:" not in err, "the table is named once"

    config = write_config(production, moved)
    staging = refresh_through_cli(config, capsys)
    query = (
        "SELECT (SELECT string_agg(location::text, ',' ORDER BY id) FROM stops), "
        "(SELECT array_agg(home::text ORDER BY id) FROM customers), "
        "(SELECT count(*) FROM bookings b JOIN customers c ON c.id = b.customer_id WHERE b.pickup = c.home)"
    )
    with psycopg.connect(pg_server.dsn(staging)) as conn:
        stops, homes, pickups_at_home = conn.execute(query).fetchone()
    with psycopg.connect(production) as conn:
        production_stops, production_homes, _ = conn.execute(query).fetchone()
    assert stops == production_stops, "operational locations stay exactly as in production"
    assert not set(homes) & set(production_homes) and len(homes) == 200, "every home moved"
    assert pickups_at_home == 600, "a pickup copied from a home moves to the same place as the home"
