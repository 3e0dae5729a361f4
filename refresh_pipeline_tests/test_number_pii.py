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
        kept = {"id", "referrer_mobile", "code", "lat", "clicks"}
        audit = scan_table(conn, table, KEY, kept_columns=kept)
        messages: list[str] = []
        ranged = scan_table(
            conn,
            table,
            KEY,
            kept_columns=kept,
            log=messages.append,
            connect=lambda: psycopg.connect(conninfo, autocommit=True),
            workers=2,
            blocks_per_range=1,
        )
    found = {f.column: (f.known_values, len(f.locations)) for f in audit.findings}
    assert found == {"referrer_mobile": (10, 5), "code": (1, 1)}, found
    assert audit.columns_scanned == ["id", "referrer_mobile", "code"], "not columns too small for a mobile"
    # Read range by range on a pool: the same findings, and progress counting every number read.
    assert [f.as_metadata() for f in ranged.findings] == [f.as_metadata() for f in audit.findings]
    progress = [m for m in messages if m.startswith("public.referrals: auditing 3 column(s): ")]
    assert progress and "1,010 values (100%)" in progress[-1], messages


# Two customers' phones as a bigint[] (one with the country code) and as a numeric(12,0)[][] (2 x 1).
ARRAYS = """
CREATE TABLE emergency_contacts (id int PRIMARY KEY, phones bigint[], old_numbers numeric(12,0)[], kept bigint[]);
INSERT INTO emergency_contacts SELECT g, ARRAY[c1.phone::bigint, ('91' || c2.phone)::bigint],
    ARRAY[[c1.phone::numeric], [NULL::numeric]], ARRAY[CASE WHEN g = 3 THEN c2.phone::bigint END, 7]
FROM generate_series(1, 4) g,
     LATERAL (SELECT right(regexp_replace(phone, '[^0-9]', '', 'g'), 10) AS phone FROM customers WHERE id = g) c1,
     LATERAL (SELECT right(regexp_replace(phone, '[^0-9]', '', 'g'), 10) AS phone FROM customers WHERE id = g + 10) c2;
"""


def test_arrays_of_numbers_are_masked_as_phones_and_kept_ones_audited(create_database):
    conninfo = database_with(create_database, "number_pii_arrays", SCHEMA + ARRAYS)
    policy = parse_policy(
        "tables:\n  customers: {id: keep, phone: phone}\n  legacy_contacts: keep\n"
        "  emergency_contacts: {id: keep, phones: {array: phone}, old_numbers: {array: phone}, kept: keep}\n"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        tables = read_tables(conn)
        assert find_policy_problems(policy, tables) == []
        snippet = _snippet({key: t for key, t in tables.items() if key[1] == "emergency_contacts"})
        record_originals(conn, list(tables.values()), policy, KEY)
        mask_table(conn, policy, "customers", KEY)
        mask_table(conn, policy, "emergency_contacts", KEY)
        rows = conn.execute(
            "SELECT e.phones, e.old_numbers::text, right(regexp_replace(c1.phone, '[^0-9]', '', 'g'), 10),"
            " right(regexp_replace(c2.phone, '[^0-9]', '', 'g'), 10) FROM emergency_contacts e"
            " JOIN customers c1 ON c1.id = e.id JOIN customers c2 ON c2.id = e.id + 10 ORDER BY e.id"
        ).fetchall()
        original = conn.execute("SELECT kept[1] FROM emergency_contacts WHERE id = 3").fetchone()[0]
        table = with_pii_numbers(read_tables(conn)[("public", "emergency_contacts")], policy)
        audit = scan_table(conn, table, KEY, kept_columns={"id", "kept"})
        conn.execute("UPDATE emergency_contacts SET phones[2] = %s WHERE id = 4", (original,))
        unmasked = scan_table(conn, table, KEY, kept_columns={"id", "kept"})
    assert "    phones: {array: phone}  # REVIEW: bigint[]; named like phone" in snippet
    assert "    old_numbers: keep  # REVIEW: numeric(12,0)[]" in snippet
    for phones, old_numbers, phone1, phone2 in rows:
        assert phones == [int(phone1), int("91" + phone2)], "masked as the customers' own phones are"
        assert old_numbers == f"{{{{{phone1}}},{{NULL}}}}", "shape and NULLs kept"
    found = {f.column: (f.known_values, f.locations) for f in audit.findings}
    assert found == {"kept": (1, ("(0,3)",))}, "a production phone kept in an array is found; 7 is not"
    assert "phones" in {f.column for f in unmasked.findings}, "a production phone left in a masked array too"


def test_phones_imported_as_double_precision_are_masked_suggested_and_audited(create_database):
    conninfo = database_with(
        create_database,
        "number_pii_float",
        SCHEMA + "CREATE TABLE imported_leads (id int PRIMARY KEY, mobile double precision, referrer double precision,"
        " latitude double precision);"
        "INSERT INTO imported_leads SELECT g, l.mobile, CASE WHEN g = 2 THEN l.mobile ELSE 9800000000 + g END,"
        " 19.07 FROM generate_series(1, 3) g JOIN legacy_contacts l ON l.id = g;",
    )
    policy = parse_policy(
        "tables:\n  customers: {id: keep, phone: phone}\n  legacy_contacts: keep\n"
        "  imported_leads: {id: keep, mobile: phone, referrer: keep, latitude: keep}\n"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        tables = read_tables(conn)
        assert find_policy_problems(policy, tables) == []
        before = dict(conn.execute("SELECT id, mobile FROM imported_leads").fetchall())
        record_originals(conn, list(tables.values()), policy, KEY)
        mask_table(conn, policy, "imported_leads", KEY)
        after = dict(conn.execute("SELECT id, mobile FROM imported_leads").fetchall())
        table = with_pii_numbers(read_tables(conn)[("public", "imported_leads")], policy)
        audit = scan_table(conn, table, KEY, kept_columns={"id", "referrer", "latitude"})
    snippet = _snippet({key: t for key, t in tables.items() if key[1] == "imported_leads"})
    assert "    mobile: phone  # REVIEW: double precision; named like phone" in snippet
    assert all(after[i] != before[i] and 6e9 <= after[i] < 1e10 and after[i] == int(after[i]) for i in before)
    found = {f.column: (f.known_values, f.locations) for f in audit.findings}
    assert found == {"referrer": (1, ("(0,2)",))}, "a production phone kept as a float is found; ids are not"
