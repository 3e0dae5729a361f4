"""The PII audit on real PostgreSQL: it finds originals that survive anywhere and foreign emails."""

import psycopg
import pytest

from refresh_pipeline.audit.fingerprints import drop_fingerprints, fingerprints_present, record_original_fingerprints
from refresh_pipeline.audit.scan import scan_table
from refresh_pipeline.masking.catalog import read_tables
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.policy import parse_policy
from refresh_pipeline.masking.runner import install_functions, mask_table

KEY = MaskingKey("audit-test-key-0123456789")


@pytest.fixture
def db(create_database):
    conninfo = create_database("audit")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE tickets (id int PRIMARY KEY, body text, meta jsonb, tags text[]);"
            "INSERT INTO tickets VALUES "
            "(1, 'call me at +91 98765 43210', '{\"from\": \"ravi@gmail.com\"}', ARRAY['9123456789@ybl']),"
            "(2, 'bus was late', '{}', '{}')"
        )
        install_functions(conn)
        record_original_fingerprints(conn, list(read_tables(conn).values()), KEY)
    return conninfo


def _audit(conninfo: str):
    with psycopg.connect(conninfo) as conn:
        return scan_table(conn, read_tables(conn)[("public", "tickets")], KEY)


def test_originals_left_in_text_json_and_arrays_are_found_with_row_locations(db):
    audit = _audit(db)
    assert not audit.passed
    by_column = {f.column: f for f in audit.findings}
    assert set(by_column) == {"body", "meta", "tags"}
    assert by_column["body"].known_values == 1
    assert by_column["meta"].foreign_emails == 1
    assert by_column["tags"].known_values == 2, "the UPI handle and the phone inside it"
    assert by_column["body"].locations == ("(0,1)",)
    assert "98765" not in audit.summary()


def test_a_phone_is_found_in_any_spelling(db):
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE tickets SET body = 'ring 098765-43210', meta = '{}', tags = '{}' WHERE id = 1")
    audit = _audit(db)
    assert [(f.column, f.known_values) for f in audit.findings] == [("body", 1)]


def test_masked_table_passes_and_fingerprints_can_be_dropped(db):
    policy = parse_policy(
        "tables:\n  tickets:\n    id: keep\n    body: scrub\n"
        "    meta: {json: {'$.from': email}}\n    tags: {array: scrub}\n"
    )
    with psycopg.connect(db, autocommit=True) as conn:
        mask_table(conn, policy, "tickets", KEY)
    assert _audit(db).passed
    with psycopg.connect(db, autocommit=True) as conn:
        drop_fingerprints(conn)
        assert not fingerprints_present(conn)
