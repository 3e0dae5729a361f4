"""Phones and Aadhaar numbers stored as numbers (bigint, numeric), on real PostgreSQL: masked like their
text spellings and consistently with them, collected into the value map and the fingerprints at restore,
and audited."""

import psycopg
import pytest

from refresh_pipeline.audit.scan import scan_table
from refresh_pipeline.masking.catalog import read_tables, with_pii_numbers
from refresh_pipeline.masking.coverage import find_uncovered, policy_snippet
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.originals import record_originals
from refresh_pipeline.masking.policy import parse_policy
from refresh_pipeline.masking.runner import install_functions, mask_table
from refresh_pipeline.masking.validation import find_policy_problems
from refresh_pipeline_tests.helpers import database_with

KEY = MaskingKey("number-pii-test-key-0123456789")
# Rows 1-2000 share their phone with a customer (as text); rows 2001-2500 exist only as numbers.
SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, phone text);
INSERT INTO customers SELECT g, '+91 98' || lpad(g::text, 3, '0') || ' ' || lpad(g::text, 5, '0')
FROM generate_series(1, 2000) g;
CREATE TABLE legacy_contacts (id int PRIMARY KEY, mobile bigint, mobile_cc numeric(12,0), aadhaar bigint);
INSERT INTO legacy_contacts
SELECT g, ('98' || lpad(g::text, 3, '0') || lpad(g::text, 5, '0'))::bigint,
       ('9198' || lpad(g::text, 3, '0') || lpad(g::text, 5, '0'))::numeric, 234500000000 + g
FROM generate_series(1, 2500) g;
"""
POLICY = parse_policy(
    "tables:\n  customers: {id: keep, phone: phone}\n"
    "  legacy_contacts: {id: keep, mobile: phone, mobile_cc: phone, aadhaar: aadhaar}\n"
)


@pytest.fixture
def restored(create_database) -> str:
    conninfo = database_with(create_database, "number_pii", SCHEMA)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        install_functions(conn)
        record_originals(conn, list(read_tables(conn).values()), POLICY, KEY)
    return conninfo


def test_numbers_mask_like_their_text_spelling_and_never_to_a_production_phone(restored):
    with psycopg.connect(restored, autocommit=True) as conn:
        before = dict(conn.execute("SELECT id, mobile FROM legacy_contacts").fetchall())
        mapped = conn.execute("SELECT count(*) FROM refresh_pipeline.value_map WHERE kind = 'phone'").fetchone()[0]
        mask_table(conn, POLICY, "customers", KEY)
        mask_table(conn, POLICY, "legacy_contacts", KEY)
        rows = conn.execute(
            "SELECT l.id, l.mobile, l.mobile_cc::text, l.aadhaar, right(regexp_replace(c.phone, '[^0-9]', '', 'g'), 10)"
            " FROM legacy_contacts l LEFT JOIN customers c USING (id) ORDER BY l.id"
        ).fetchall()
    assert mapped == 2500, "phones held only as numbers are in the value map too"
    masked = {row[1] for row in rows}
    assert len(masked) == 2500 and not masked & set(before.values()), "distinct, and never a production phone"
    for row_id, mobile, mobile_cc, aadhaar, customer_phone in rows:
        assert len(str(mobile)) == 10 and str(mobile)[0] == "9"
        assert mobile_cc == f"91{mobile}", "the country code kept, the national number masked alike"
        if row_id <= 2000:
            assert str(mobile) == customer_phone, "consistent with the same phone stored as text"
        assert len(str(aadhaar)) == 12 and str(aadhaar)[0] == "2" and aadhaar != 234500000000 + row_id


def test_the_audit_reads_number_columns_masked_as_phones(restored):
    with psycopg.connect(restored, autocommit=True) as conn:
        original = conn.execute("SELECT mobile FROM legacy_contacts WHERE id = 2100").fetchone()[0]  # number only
        mask_table(conn, POLICY, "legacy_contacts", KEY)
        table = with_pii_numbers(read_tables(conn)[("public", "legacy_contacts")], POLICY)
        assert scan_table(conn, table, KEY, kept_columns={"id"}).passed
        conn.execute("UPDATE legacy_contacts SET mobile = %s WHERE id = 2100", (original,))
        audit = scan_table(conn, table, KEY, kept_columns={"id"})
    assert not audit.passed
    (finding,) = audit.findings
    assert finding.column == "mobile" and finding.known_values > 0, "found as a token and as a whole value"
    assert len(finding.locations) == 1


def _tables(create_database, prefix: str, schema: str):
    with psycopg.connect(database_with(create_database, prefix, schema)) as conn:
        return read_tables(conn)


def _snippet(tables) -> str:
    """The policy snippet for every column of `tables`, none of which the policy names."""
    return policy_snippet(find_uncovered(parse_policy("tables:\n  x: keep\n"), tables))


def test_phone_and_aadhaar_apply_to_whole_numbers_only(create_database):
    tables = _tables(
        create_database,
        "number_pii_types",
        "CREATE TABLE t (id int PRIMARY KEY, a bigint, b numeric(12,0), c numeric, d numeric(12,2), e integer);",
    )
    policy = parse_policy("tables:\n  t: {id: keep, a: phone, b: aadhaar, c: phone, d: phone, e: aadhaar}\n")
    problems = find_policy_problems(policy, tables)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "public.t.d (numeric(12,2)): `phone` needs whole numbers, not numeric(12,2)",
        "public.t.e (integer): `aadhaar` needs a text column, not integer",
    ]
    assert "    a: keep  # REVIEW: bigint" in _snippet(tables)


def test_number_columns_named_like_phones_are_suggested_as_phones(create_database):
    snippet = _snippet(
        _tables(
            create_database,
            "number_pii_names",
            "CREATE TABLE people (id bigint PRIMARY KEY, mobile_no bigint, aadhaar_number numeric(12,0),"
            " route_id int);",
        )
    )
    assert "    mobile_no: phone  # REVIEW: bigint; named like phone" in snippet
    assert "    aadhaar_number: aadhaar  # REVIEW: numeric(12,0); named like aadhaar" in snippet
    assert "    id: keep" in snippet and "    route_id: keep" in snippet


def test_production_phones_kept_in_number_columns_are_found_and_ids_are_not(create_database):
    conninfo = database_with(
        create_database,
        "number_pii_kept",
        SCHEMA + "CREATE TABLE referrals (id bigint PRIMARY KEY, referrer_mobile bigint, code numeric(12,0),"
        " lat numeric(9,6), clicks int);"
        # ids in the mobile range that are nobody's phone; ten referrers' real mobiles, once with 91 before
        "INSERT INTO referrals SELECT 9800000000 + g, CASE WHEN g <= 10 THEN l.mobile END,"
        " CASE WHEN g = 1 THEN 910000000000 + l.mobile ELSE g END, 19.07, g"
        " FROM generate_series(1, 500) g JOIN legacy_contacts l ON l.id = g;",
    )
    policy = parse_policy(
        "tables:\n  customers: {id: keep, phone: phone}\n  legacy_contacts: keep\n"
        "  referrals: {id: keep, referrer_mobile: keep, code: keep, lat: keep, clicks: keep}\n"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        install_functions(conn)
        record_originals(conn, list(read_tables(conn).values()), policy, KEY)
        table = read_tables(conn)[("public", "referrals")]
        audit = scan_table(conn, table, KEY, kept_columns={"id", "referrer_mobile", "code", "lat", "clicks"})
    found = {f.column: (f.known_values, len(f.locations)) for f in audit.findings}
    assert found == {"referrer_mobile": (10, 5), "code": (1, 1)}, found
    assert audit.columns_scanned == ["id", "referrer_mobile", "code"], "not columns too small for a mobile"
