"""Reading production PII at restore on a pool of sessions gives the same fingerprints and value maps as one
session, without deadlocks, with progress logged; no plaintext is left behind."""

import psycopg

from refresh_pipeline.column_work import text_column_work
from refresh_pipeline.masking.catalog import read_tables
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.originals import record_originals
from refresh_pipeline.masking.policy import parse_policy
from refresh_pipeline.masking.runner import install_functions

KEY = MaskingKey("originals-test-key-0123456789")
POLICY = parse_policy(
    "tables:\n  riders:\n    id: keep\n    email: email\n    phone: phone\n"
    "  trips:\n    id: keep\n    rider_email: email\n    receipt: {json: {'$.to': email, '$.sms': phone}}\n"
)
SCHEMA = """
CREATE TABLE riders (id int PRIMARY KEY, email text, phone text);
INSERT INTO riders SELECT g, 'rider' || g || '@mail.com', '+9198' || lpad(g::text, 8, '0')
FROM generate_series(1, 3000) g;
CREATE TABLE trips (id int PRIMARY KEY, rider_email text, receipt jsonb);
INSERT INTO trips SELECT g, 'rider' || (g % 3000 + 1) || '@mail.com',
    jsonb_build_object('to', 'rider' || (g % 3000 + 1) || '@mail.com',
                       'sms', '98' || lpad((g % 3000 + 1)::text, 8, '0'), 'note', 'trip ' || g)
FROM generate_series(1, 20000) g;
"""


def _load(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SCHEMA)
        install_functions(conn)


def _recorded(conninfo: str) -> tuple[list[tuple], list[tuple]]:
    with psycopg.connect(conninfo) as conn:
        fingerprints = conn.execute(
            "SELECT DISTINCT fingerprint, kind FROM refresh_pipeline_audit.original_fingerprints ORDER BY 1, 2"
        ).fetchall()
        value_map = conn.execute(
            "SELECT kind, fingerprint, masked FROM refresh_pipeline.value_map ORDER BY 1, 2"
        ).fetchall()
    return fingerprints, value_map


def test_pool_of_sessions_records_what_one_session_records(create_database):
    single, pooled = create_database("originals_single"), create_database("originals_pooled")
    _load(single)
    _load(pooled)
    with psycopg.connect(single, autocommit=True) as conn:
        one = record_originals(conn, list(read_tables(conn).values()), POLICY, KEY)
    messages: list[str] = []
    with psycopg.connect(pooled, autocommit=True) as conn:
        many = record_originals(
            conn,
            list(read_tables(conn).values()),
            POLICY,
            KEY,
            connect=lambda: psycopg.connect(pooled, autocommit=True),
            workers=2,
            log=messages.append,
            blocks_per_range=5,
        )
        leftovers = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relname IN ('refresh_pipeline_original_tokens', 'original_tokens')"
        ).fetchone()[0]
    assert one == many
    assert many.values_mapped == {"email": 3000, "phone": 3000, "upi": 0}
    assert _recorded(single) == _recorded(pooled)
    assert leftovers == 0, "the plaintext token tables are gone"
    assert any("(100%)" in m and "ETA" in m and "tokens/s" in m for m in messages)
    assert any(m.startswith("fingerprinting and mapping each distinct token once") for m in messages)
    assert any(m.endswith("s") and "3,000 emails mapped, 3,000 phones mapped" in m for m in messages), messages


def test_a_partitioned_table_is_read_partition_by_partition_by_a_pool_as_one_session_reads_it(create_database):
    partitioned = SCHEMA.replace(
        "CREATE TABLE trips (id int PRIMARY KEY, rider_email text, receipt jsonb);",
        "CREATE TABLE trips (id int, rider_email text, receipt jsonb) PARTITION BY RANGE (id);"
        "CREATE TABLE trips_a PARTITION OF trips FOR VALUES FROM (1) TO (12000);"
        "CREATE TABLE trips_b PARTITION OF trips FOR VALUES FROM (12000) TO (20001);",
    )
    single, pooled = create_database("partitioned_single"), create_database("partitioned_pooled")
    for conninfo in (single, pooled):
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(partitioned)
            conn.execute("ANALYZE")
            install_functions(conn)
    with psycopg.connect(single, autocommit=True) as conn:
        one = record_originals(conn, list(read_tables(conn).values()), POLICY, KEY)
    with psycopg.connect(pooled, autocommit=True) as conn:
        tables = read_tables(conn)
        receipts = [
            item for item in text_column_work(conn, tables[("public", "trips")], 5) if item.column.name == "receipt"
        ]
        many = record_originals(
            conn,
            list(tables.values()),
            POLICY,
            KEY,
            connect=lambda: psycopg.connect(pooled, autocommit=True),
            workers=2,
            blocks_per_range=5,
        )
    partitions = {item.block_range.partition.as_string(None) for item in receipts if item.block_range.partition}
    assert partitions == {'ONLY "public"."trips_a"', 'ONLY "public"."trips_b"'} and len(receipts) > 2
    assert one == many and many.values_mapped == {"email": 3000, "phone": 3000, "upi": 0}
    assert _recorded(single) == _recorded(pooled)


def test_values_only_a_partitioned_table_holds_are_read_too(create_database):
    conninfo = create_database("originals_partitioned")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE events (id int, day date, payload jsonb) PARTITION BY RANGE (day);"
            "CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');"
            'INSERT INTO events VALUES (1, \'2025-03-01\', \'{"to": "only.here@mail.in", "sms": "9811122233"}\')'
        )
        install_functions(conn)
        policy = parse_policy("tables:\n  events:\n    id: keep\n    day: keep\n    payload: {json: {'$.to': email}}\n")
        recorded = record_originals(conn, list(read_tables(conn).values()), policy, KEY)
    assert recorded.values_mapped == {"email": 1, "phone": 1, "upi": 0}
    assert recorded.fingerprints >= 2


def test_a_upi_local_part_with_several_banks_is_mapped_once_by_a_pool(create_database):
    conninfo = create_database("originals_upi_pool")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE payers (id int PRIMARY KEY, upi text);"
            "INSERT INTO payers SELECT g, 'payer' || (g % 500) || CASE WHEN g <= 500 THEN '@okaxis' ELSE '@YBL' END"
            " FROM generate_series(1, 1000) g"
        )
        install_functions(conn)
        recorded = record_originals(
            conn,
            list(read_tables(conn).values()),
            parse_policy("tables:\n  payers: {id: keep, upi: upi}\n"),
            KEY,
            connect=lambda: psycopg.connect(conninfo, autocommit=True),
            workers=2,
        )
    assert recorded.values_mapped["upi"] == 500, "each local part once, whichever bank and session"
