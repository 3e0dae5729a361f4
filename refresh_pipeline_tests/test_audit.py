"""The PII audit on real PostgreSQL: known values anywhere, PII patterns in kept columns, the allowlist."""

import psycopg
import pytest

from refresh_pipeline.audit.fingerprints import drop_fingerprints, fingerprints_present, record_original_fingerprints
from refresh_pipeline.audit.scan import scan_table
from refresh_pipeline.checks.pii_audit import json_masked_paths, kept_columns
from refresh_pipeline.demo.check_digits import verhoeff_check_digit
from refresh_pipeline.masking.catalog import TableInfo, read_tables
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.policy import MaskingPolicy, parse_policy
from refresh_pipeline.masking.runner import install_functions, mask_table
from refresh_pipeline_tests.helpers import database_with

KEY = MaskingKey("audit-test-key-0123456789")
POLICY = parse_policy(
    "tables:\n  tickets:\n    id: keep\n    body: scrub\n    landline: phone\n"
    "    meta: {json: {'$.from': email}}\n    tags: {array: scrub}\n"
)
ALL_COLUMNS = {"id", "body", "landline", "meta", "tags"}


@pytest.fixture
def db(create_database):
    conninfo = create_database("audit")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE tickets (id int PRIMARY KEY, body text, landline text, meta jsonb, tags text[]);"
            "INSERT INTO tickets VALUES "
            "(1, 'call me at +91 98765 43210', '022-2345-6789', '{\"from\": \"ravi@gmail.com\"}',"
            " ARRAY['9123456789@ybl']),"
            "(2, 'bus was late', NULL, '{}', '{}')"
        )
        _fingerprinted(conn, POLICY)
    return conninfo


def _fingerprinted(conn: psycopg.Connection, policy: MaskingPolicy) -> dict[tuple[str, str], TableInfo]:
    """The database's tables, with the audit's functions installed and the originals the policy masks
    fingerprinted, as the restore step leaves them."""
    install_functions(conn)
    tables = read_tables(conn)
    record_original_fingerprints(conn, list(tables.values()), policy, KEY)
    return tables


def _audit(conninfo: str, kept: set[str] = frozenset(), allowlist: tuple[str, ...] = ()):
    with psycopg.connect(conninfo) as conn:
        return scan_table(conn, read_tables(conn)[("public", "tickets")], KEY, set(kept), allowlist)


def test_originals_left_anywhere_are_found_with_row_locations_never_values(db):
    audit = _audit(db)
    assert not audit.passed
    by_column = {f.column: f for f in audit.findings}
    assert set(by_column) == {"body", "landline", "meta", "tags"}
    assert by_column["body"].known_values == 1
    assert by_column["landline"].known_values == 1, "a whole value no pattern recognises"
    assert by_column["meta"].known_values == 1 and by_column["meta"].patterns == {"email": 1}
    assert by_column["tags"].known_values == 2, "the UPI handle and the phone inside it"
    assert by_column["body"].locations == ("(0,1)",)
    assert "98765" not in audit.summary() and "gmail" not in audit.summary()


@pytest.mark.parametrize(
    "body",
    [
        "ring 098765-43210",
        "wa.me/919876543210",
        "call 91 98765 43210",
        "sms 91-9876543210 today",
        "GET /otp?phone=%2B919876543210",
        "GET /sms?text=Call%20me%20at%209876543210",
        "ring 9876 543 210",
        "ring 987-654-3210",
        "ring +91 9876 543210",
        "GET /sms?text=Call%20me%20at%209876-543-210",
    ],
)
def test_a_phone_is_found_in_any_spelling(db, body):
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE tickets SET body = %s, landline = NULL, meta = '{}', tags = '{}' WHERE id = 1", (body,))
    audit = _audit(db)
    assert [(f.column, f.known_values) for f in audit.findings] == [("body", 1)]


def test_masked_table_passes_and_fingerprints_can_be_dropped(db):
    with psycopg.connect(db, autocommit=True) as conn:
        mask_table(conn, POLICY, "tickets", KEY)
    assert _audit(db, kept={"id"}).passed
    with psycopg.connect(db, autocommit=True) as conn:
        drop_fingerprints(conn)
        assert not fingerprints_present(conn)
    assert _audit(db, kept={"id"}).passed, "after promotion only the pattern audit runs, and finds nothing"


@pytest.mark.parametrize(
    ("text", "detector"),
    [
        ("PAN on file: ABCPE1234F", "pan"),
        ("card 4111 1111 1111 1111 was charged", "card"),
        ("mobile 9812345678", "phone"),
        ("mobile 9812 345 678", "phone"),
        ("mobile 981-234-5678", "phone"),
        ("pay to someone@okaxis", "upi"),
        ("write to someone@corp.in", "email"),
        ("GET /signup?email=someone%40corp.in&src=app", "email"),
        ("upi://pay?pa=someone%40okaxis&am=120", "upi"),
        ("wa.me/919812345678", "phone"),
        ("/sms?text=Call%20driver%20at%209812345678", "phone"),
        ("ईमेल: राम@gmail.com", "email"),
        ("“सीता@डाटामेल.भारत” पर लिखें", "email"),
        ("write to ravi@exämple.com", "email"),
    ],
)
def test_pattern_audit_finds_unclassified_pii_in_kept_columns(create_database, text, detector):
    conninfo = create_database("patterns")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO notes VALUES (1, %s), (2, 'nothing to see')", (text,))
        install_functions(conn)
        audit = scan_table(conn, read_tables(conn)[("public", "notes")], KEY, kept_columns={"id", "body"})
    assert [(f.column, f.patterns) for f in audit.findings] == [("body", {detector: 1})]


def test_aadhaar_is_found_only_with_a_valid_check_digit(create_database):
    valid = "23456789012"[:11]
    valid += verhoeff_check_digit(valid)
    invalid = valid[:-1] + str((int(valid[-1]) + 1) % 10)
    conninfo = create_database("aadhaar")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE kyc (id int PRIMARY KEY, doc text)")
        conn.execute(
            "INSERT INTO kyc VALUES (1, %s), (2, %s)",
            (f"aadhaar {valid[:4]} {valid[4:8]} {valid[8:]}", f"ref {invalid}"),
        )
        install_functions(conn)
        audit = scan_table(conn, read_tables(conn)[("public", "kyc")], KEY, kept_columns={"id", "doc"})
    assert [(f.column, f.patterns, f.locations) for f in audit.findings] == [("doc", {"aadhaar": 1}, ("(0,1)",))]


def test_identity_numbers_are_looked_for_in_scrubbed_columns_and_pass_once_scrubbed(db):
    """In a scrubbed column, between its emails, UPI handles and phones: the ones scrub left are found (a PAN in
    an element of an array too, one typed in lower case); the masked ones, beside masked phones, are not."""
    aadhaar = "23456789012" + verhoeff_check_digit("23456789012")
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "UPDATE tickets SET body = %s, tags = ARRAY['9123456789@ybl', 'pan ABCPE1234F'] WHERE id = 1",
            (
                f"wa.me/919876543210 aadhaar {aadhaar[:4]} {aadhaar[4:8]} {aadhaar[8:]}, card 4111 1111 1111 1111,"
                " pan abcpe1234f",
            ),
        )
    scrubbed = {"body", "tags"}
    with psycopg.connect(db) as conn:
        tickets = read_tables(conn)[("public", "tickets")]
        before = scan_table(conn, tickets, KEY, {"id"}, scrubbed_columns=scrubbed)
        unscrubbed = scan_table(conn, tickets, KEY, {"id"})
    assert {f.column: f.patterns for f in before.findings if f.column in scrubbed} == {
        "body": {"aadhaar": 1, "card": 1, "pan": 1},
        "tags": {"pan": 1},
    }
    assert not any(f.patterns for f in unscrubbed.findings if f.column in scrubbed), "masked identifiers, by design"
    with psycopg.connect(db, autocommit=True) as conn:
        mask_table(conn, POLICY, "tickets", KEY)
        assert scan_table(conn, tickets, KEY, {"id"}, scrubbed_columns=scrubbed).passed


def test_what_a_json_columns_path_rules_keep_is_read_by_every_detector(create_database):
    """A payment gateway's response, its payer's email and phones masked by path: a driver's phone, a card
    number and a PAN elsewhere in it are PII nobody classified, and are found (the phones as originals, or by
    their shape once the fingerprints are gone); the masked phones (`+91` and ten digits, a twelve-digit run the
    Aadhaar and card detectors read) are not. A document the paths do not reach (a bare string) is read whole."""
    conninfo = create_database("audit_json_kept_part")
    policy = parse_policy(
        "tables:\n  payments:\n    id: keep\n    response:\n      json:\n        '$.payer.email': email\n"
        "        '$.payer.phone': phone\n        '$.items[*].contact': phone\n"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE payments (id int PRIMARY KEY, response jsonb)")
        conn.execute(
            "INSERT INTO payments SELECT i, jsonb_build_object('payer', jsonb_build_object('email', 'r' || i ||"
            " '@gmail.com', 'phone', '+91' || (9000000000 + i * 7919)), 'items', jsonb_build_array("
            " jsonb_build_object('contact', (8000000000 + i)::text)), 'status', 'ok') FROM generate_series(1, 300) i"
        )
        conn.execute(
            "INSERT INTO payments VALUES (301, %s), (302, %s), (303, %s)",
            (
                '{"payer": {"phone": "+919876543211"}, "driver": {"mobile": "9123456780"}}',
                '{"payer": "walk-in", "card": {"number": "4111 1111 1111 1111"}, "kyc": "PAN ABCPE1234F"}',
                '"callback 9000012345"',
            ),
        )
        tables = _fingerprinted(conn, policy)
        mask_table(conn, policy, "payments", KEY)
        payments = tables[("public", "payments")]
        paths = json_masked_paths(policy.tables[("public", "payments")])
        audit = scan_table(conn, payments, KEY, {"id"}, json_masked_paths=paths)
        whole_only = scan_table(conn, payments, KEY, {"id"})
        drop_fingerprints(conn)
        promoted = scan_table(conn, payments, KEY, {"id"}, json_masked_paths=paths)
    assert [(f.column, f.known_values, f.patterns) for f in audit.findings] == [
        ("response", 2, {"card": 1, "pan": 1})
    ], "the kept phones are originals: the fingerprints hold every token of the documents"
    assert len(audit.findings[0].locations) == 3
    assert [(f.known_values, f.patterns) for f in whole_only.findings] == [(2, {})], (
        "without the paths the card and the PAN were not found at all"
    )
    assert [(f.known_values, f.patterns) for f in promoted.findings] == [(0, {"phone": 2, "card": 1, "pan": 1})]


def test_luhn_invalid_numbers_are_not_cards(create_database):
    conninfo = create_database("luhn")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, ref text)")
        conn.execute("INSERT INTO orders VALUES (1, 'order 4111111111111112')")
        install_functions(conn)
        audit = scan_table(conn, read_tables(conn)[("public", "orders")], KEY, kept_columns={"id", "ref"})
    assert audit.passed


def test_allowlisted_public_values_are_not_reported(create_database):
    conninfo = create_database("allowlist")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE routes (id int PRIMARY KEY, help text)")
        conn.execute("INSERT INTO routes VALUES (1, 'Helpline +91 90000 12345, help@cityflo.com')")
        install_functions(conn)
        table = read_tables(conn)[("public", "routes")]
        record_original_fingerprints(conn, [table], parse_policy("tables:\n  routes: keep\n"), KEY)
        flagged = scan_table(conn, table, KEY, kept_columns={"id", "help"})
        allowed = scan_table(conn, table, KEY, {"id", "help"}, allowlist=("+91 90000 12345", "help@cityflo.com"))
    assert flagged.findings[0].patterns == {"phone": 1, "email": 1}
    assert flagged.findings[0].known_values == 2
    assert allowed.passed


def test_patterns_in_masked_columns_are_left_to_the_known_value_audit(db):
    with psycopg.connect(db, autocommit=True) as conn:
        mask_table(conn, POLICY, "tickets", KEY)
    audit = _audit(db, kept=set())
    assert audit.passed, "masked phones are phone-shaped by design; only originals count there"


def test_sampling_scans_part_of_the_table(create_database):
    conninfo = create_database("sampling")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE big (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 20000) g")
        install_functions(conn)
        audit = scan_table(conn, read_tables(conn)[("public", "big")], KEY, {"id", "note"}, sample_percent=10)
    assert 0 < audit.rows_scanned < 20000
    assert "sampled 10%" in audit.summary()


def test_pooled_audit_in_block_ranges_counts_every_row_like_one_session(create_database):
    conninfo = create_database("audit_pool")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE tickets (id int PRIMARY KEY, body text, landline text, meta jsonb, tags text[]);"
            "INSERT INTO tickets SELECT g, CASE WHEN g % 1000 = 0 THEN 'call 98765 43210' ELSE 'late bus' END,"
            " NULL, jsonb_build_object('from', CASE WHEN g % 500 = 0 THEN 'ravi@gmail.com' ELSE 'nobody' END),"
            " '{}' FROM generate_series(1, 6000) g"
        )
        install_functions(conn)
        table = read_tables(conn)[("public", "tickets")]
        record_original_fingerprints(conn, [table], POLICY, KEY)
        one = scan_table(conn, table, KEY, kept_columns={"id", "body"})
        messages: list[str] = []
        many = scan_table(
            conn,
            table,
            KEY,
            kept_columns={"id", "body"},
            log=messages.append,
            connect=lambda: psycopg.connect(conninfo, autocommit=True),
            workers=2,
            blocks_per_range=3,
        )
        scratch = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'refresh_pipeline_audit' AND tablename LIKE 'tokens%'"
        ).fetchone()[0]
    for audit in (one, many):
        found = {f.column: f for f in audit.findings}
        assert set(found) == {"body", "meta"}
        assert (found["body"].known_values, found["body"].patterns) == (6, {"phone": 6}), "every row, not each value"
        assert (found["meta"].known_values, found["meta"].patterns) == (12, {"email": 12})
        assert len(found["body"].locations) == len(found["meta"].locations) == 5
    assert one.findings == many.findings
    assert any("ETA" in m and "values/s" in m for m in messages)
    comparing = [i for i, m in enumerate(messages) if "with production's fingerprints" in m or "tokens compared" in m]
    assert len(comparing) == 2 and comparing[1] == comparing[0] + 1, "the last phase says when it starts and ends"
    assert scratch == 0, "the audit's token scratch tables are dropped"


def test_a_mostly_distinct_plain_column_is_audited_in_block_ranges_with_the_same_findings(create_database):
    from refresh_pipeline.column_work import text_column_work

    conninfo = create_database("audit_distinct")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE tickets (id int PRIMARY KEY, body text, landline text, meta jsonb, tags text[]);"
            "INSERT INTO tickets SELECT g, 'late bus', '98' || lpad(g::text, 8, '0'), '{}', '{}'"
            " FROM generate_series(1, 6000) g"
        )
        conn.execute("ANALYZE tickets")
        install_functions(conn)
        table = read_tables(conn)[("public", "tickets")]
        record_original_fingerprints(conn, [table], POLICY, KEY)
        work = text_column_work(conn, table, blocks_per_range=3)
        whole = scan_table(conn, table, KEY, kept_columns={"id", "body"})
        split = scan_table(
            conn,
            table,
            KEY,
            kept_columns={"id", "body"},
            connect=lambda: psycopg.connect(conninfo, autocommit=True),
            workers=2,
            blocks_per_range=3,
        )
    items = {column: sum(item.column.name == column for item in work) for column in ("body", "landline")}
    assert items["body"] == 1 and items["landline"] > 1, items
    for audit in (whole, split):
        found = {f.column: f for f in audit.findings}
        assert set(found) == {"landline"}
        assert found["landline"].known_values == 12000, "each landline: as a token and as a whole value"
    assert [f.locations for f in whole.findings] == [f.locations for f in split.findings]


def test_an_original_left_in_several_columns_is_counted_in_each_of_them(db):
    # Fingerprinted once per distinct token, whichever columns hold it; each column still gets its rows.
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "UPDATE tickets SET body = 'mail ravi@gmail.com', landline = NULL, tags = ARRAY['ravi@gmail.com']"
            " WHERE id = 1;"
            "UPDATE tickets SET body = 'or RAVI@gmail.com', meta = '{\"from\": \"ravi@gmail.com\"}' WHERE id = 2"
        )
        table = read_tables(conn)[("public", "tickets")]
        one = scan_table(conn, table, KEY, kept_columns={"id"})
        pooled = scan_table(
            conn, table, KEY, kept_columns={"id"}, connect=lambda: psycopg.connect(db, autocommit=True), workers=2
        )
    for audit in (one, pooled):
        found = {f.column: (f.known_values, f.locations) for f in audit.findings}
        assert found == {
            "body": (2, ("(0,3)", "(0,4)")),
            "meta": (2, ("(0,3)", "(0,4)")),
            "tags": (1, ("(0,3)",)),
        }, found


def test_pii_inside_xml_row_type_and_text_search_columns_is_found(create_database):
    """No transform applies to these types, so a policy keeps them; the audit still reads them as text."""
    conninfo = database_with(
        create_database,
        "other_text",
        "CREATE TYPE contact AS (label text, email text);"
        "CREATE TABLE profiles (id int PRIMARY KEY, card xml, main contact, others contact[], search tsvector);"
        "INSERT INTO profiles VALUES (1, '<c><phone>+91 98765 43210</phone></c>', ROW('me', 'ravi@gmail.com'),"
        " ARRAY[ROW('work', 'asha@corp.in')::contact], to_tsvector('simple', 'mail kiran@yahoo.co.in'))",
    )
    with psycopg.connect(conninfo) as conn:
        table = read_tables(conn)[("public", "profiles")]
        audit = scan_table(conn, table, KEY, kept_columns={"id", "card", "main", "others", "search"})
    found = {f.column: f.patterns for f in audit.findings}
    assert found == {"card": {"phone": 1}, "main": {"email": 1}, "others": {"email": 1}, "search": {"email": 1}}


def test_kept_bytes_are_read_for_pii_without_failing_on_binary_data(create_database):
    conninfo = database_with(
        create_database,
        "audit_bytes",
        "CREATE TABLE files (id int PRIMARY KEY, blob bytea, big bytea);"
        "INSERT INTO files VALUES (1, convert_to('From: ravi@gmail.com, +91 98765 43210', 'UTF8'), NULL),"
        " (2, '\\x00ff80fe0a'::bytea || convert_to('asha@yahoo.com', 'UTF8'), NULL),"
        " (3, '\\x89504e470d0a1a0a'::bytea, NULL),"
        " (4, NULL, convert_to(repeat('x', 70000) || 'late@gmail.com', 'UTF8'))",
    )
    with psycopg.connect(conninfo) as conn:
        audit = scan_table(conn, read_tables(conn)[("public", "files")], KEY, kept_columns={"id", "blob", "big"})
    assert audit.columns_scanned == ["blob", "big"]
    assert [(f.column, f.patterns) for f in audit.findings] == [("blob", {"email": 2, "phone": 1})]
    assert audit.findings[0].locations == ("(0,1)", "(0,2)"), "rows named, values not"


def test_every_value_is_fingerprinted_once_not_once_per_pair_of_rows(create_database, monkeypatch):
    """The probes compare precomputed fingerprints: an HMAC inside a join condition lets the planner hash every
    value once per production fingerprint (a 2,000-row table took 132 s against 24,000 fingerprints)."""
    conninfo = database_with(
        create_database,
        "audit_plans",
        "CREATE TABLE riders (id int PRIMARY KEY, email text, phone text, mobile bigint);"
        "INSERT INTO riders SELECT g, 'rider' || g || '@gmail.com', '+91 98765 ' || lpad(g::text, 5, '0'),"
        " 9876500000 + g FROM generate_series(1, 2000) g;",
    )
    policy = parse_policy("tables:\n  riders: {id: keep, email: email, phone: phone, mobile: keep}\n")
    plans: list[str] = []
    execute = psycopg.Connection.execute

    def explaining(self, query, params=None, **kwargs):
        text = query.as_string(self) if isinstance(query, psycopg.sql.Composable) else str(query)
        if "original_fingerprints f WHERE" in text:
            plans.append("\n".join(row[0] for row in execute(self, "EXPLAIN " + text, params).fetchall()))
        return execute(self, query, params, **kwargs)

    with psycopg.connect(conninfo, autocommit=True) as conn:
        record_original_fingerprints(conn, list(read_tables(conn).values()), policy, KEY)
        mask_table(conn, policy, "riders", KEY)
        monkeypatch.setattr(psycopg.Connection, "execute", explaining)
        audit = scan_table(conn, read_tables(conn)[("public", "riders")], KEY, kept_columns={"id", "mobile"})

    assert [f.column for f in audit.findings] == ["mobile"], "the kept production phones are still found"
    assert len(plans) >= 4, "whole values and tokens of two columns, and the kept numbers"
    conditions = [line for plan in plans for line in plan.splitlines() if "Join Filter" in line or "Cond:" in line]
    assert conditions and not [line for line in conditions if "sha256" in line], "\n\n".join(plans)


def test_a_partitioned_table_is_audited_partition_by_partition_with_exact_counts_and_locations(create_database):
    conninfo = create_database("audit_partitions")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE customers (id int PRIMARY KEY, phone text);"
            "INSERT INTO customers SELECT g, '98765' || lpad(g::text, 5, '0') FROM generate_series(1, 100) g;"
            "CREATE TABLE orders (id int, placed date, legacy_mobile bigint, note text) PARTITION BY RANGE (placed);"
            "CREATE TABLE orders_2025 PARTITION OF orders FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');"
            "CREATE TABLE orders_2026 PARTITION OF orders FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');"
            # Each partition's rows start at ctid (0,1): 60 in 2025, 40 in 2026, every one a customer's phone.
            "INSERT INTO orders SELECT g, CASE WHEN g <= 60 THEN date '2025-06-01' ELSE date '2026-06-01' END,"
            " ('98765' || lpad(g::text, 5, '0'))::bigint, CASE WHEN g = 61 THEN 'call 98765 00061' ELSE 'ok' END"
            " FROM generate_series(1, 100) g"
        )
        tables = _fingerprinted(conn, parse_policy("tables:\n  customers: {id: keep, phone: phone}\n  orders: keep\n"))
        audit = scan_table(
            conn, tables[("public", "orders")], KEY, kept_columns={"id", "placed", "legacy_mobile", "note"}
        )

    found = {f.column: f for f in audit.findings}
    assert audit.table == "public.orders" and audit.rows_scanned == 100
    assert found["legacy_mobile"].known_values == 100, "rows of both partitions, though their ctids repeat"
    assert found["legacy_mobile"].locations[:2] == ("public.orders_2025 (0,1)", "public.orders_2025 (0,2)")
    assert found["note"].locations == ("public.orders_2026 (0,1)",), "the one row, named in its partition"
    assert (found["note"].known_values, found["note"].patterns) == (1, {"phone": 1})


def test_an_inheritance_parent_is_audited_without_its_children(create_database):
    conninfo = create_database("audit_inheritance")
    policy = parse_policy("tables:\n  contacts: {id: keep, email: email}\n  vip_contacts: {id: keep, email: email}\n")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE contacts (id int PRIMARY KEY, email text);"
            "CREATE TABLE vip_contacts () INHERITS (contacts);"
            "INSERT INTO contacts SELECT g, 'c' || g || '@gmail.com' FROM generate_series(1, 30) g;"
            "INSERT INTO vip_contacts SELECT g, 'v' || g || '@gmail.com' FROM generate_series(31, 50) g"
        )
        tables = _fingerprinted(conn, policy)
        mask_table(conn, policy, "contacts", KEY)  # the child is masked in a step of its own, maybe later
        parent = scan_table(conn, tables[("public", "contacts")], KEY, {"id"})
        child = scan_table(conn, tables[("public", "vip_contacts")], KEY, {"id"})

    assert parent.passed and parent.rows_scanned == 30, "its own rows, masked; not the child's, not masked yet"
    assert not child.passed and child.rows_scanned == 20


def test_a_generated_column_of_a_masked_column_is_audited_as_masked(create_database):
    """A search vector of a scrubbed text is recomputed from it, masked phones and all: read as a kept column,
    every masked phone failed the refresh. One computed only from kept columns is still a kept one."""
    conninfo = create_database("audit_generated")
    policy = parse_policy("tables:\n  docs: {id: keep, body: scrub, tsv: keep, label: keep, shout: keep}\n")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE docs (id int PRIMARY KEY, body text, label text,"
            " tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', body)) STORED,"
            " shout text GENERATED ALWAYS AS (upper(label)) STORED);"
            "INSERT INTO docs (id, body, label) SELECT g, 'call 98765' || lpad(g::text, 5, '0'), 'route ' || g"
            " FROM generate_series(1, 40) g;"
            "UPDATE docs SET label = 'helpline 9123456789' WHERE id = 1"
        )
        install_functions(conn)
        info = read_tables(conn)[("public", "docs")]
        record_original_fingerprints(conn, [info], policy, KEY)
        kept = kept_columns(policy.table("docs"), info.columns)
        before = scan_table(conn, info, KEY, kept)
        mask_table(conn, policy, "docs", KEY)
        after = scan_table(conn, info, KEY, kept)

    assert kept == {"id", "label", "shout"}
    assert {f.column: f.known_values for f in before.findings}["tsv"] == 40, "originals in it are still found"
    assert {f.column: f.patterns for f in after.findings} == {"label": {"phone": 1}, "shout": {"phone": 1}}


def test_many_small_partitions_share_one_pool_and_keep_exact_findings(create_database):
    """Daily partitions of 100 rows each got a pool of sessions (and four log lines) of their own: 731 of
    them took 58 s to audit. A partition of one block range now takes a session of one pool shared by all such
    partitions; a bigger one still gets the pool to itself."""
    conninfo = create_database("audit_many_partitions")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE customers (id int PRIMARY KEY, email text);"
            "INSERT INTO customers SELECT g, 'rider' || g || '@gmail.com' FROM generate_series(1, 1000) g;"
            "CREATE TABLE trips (id int, day int, note text, contact text) PARTITION BY RANGE (day);"
        )
        for day in range(30):
            conn.execute(f"CREATE TABLE trips_{day:02} PARTITION OF trips FOR VALUES FROM ({day}) TO ({day + 1})")
        conn.execute(
            "INSERT INTO trips SELECT g, g % 30, 'trip ' || g, 'ok' FROM generate_series(1, 300) g;"
            # The last day: many rows, several block ranges of 2 blocks.
            "INSERT INTO trips SELECT g, 29, repeat('x', 200), 'ok' FROM generate_series(301, 2300) g;"
            "UPDATE trips SET contact = 'mail rider7@gmail.com' WHERE id IN (7, 2299);"
            "UPDATE trips SET note = 'from rider8@gmail.com' WHERE id = 8"
        )
        tables = _fingerprinted(conn, parse_policy("tables:\n  customers: {id: keep, email: email}\n  trips: keep\n"))
        opened: list[psycopg.Connection] = []

        def connect() -> psycopg.Connection:
            opened.append(psycopg.connect(conninfo, autocommit=True))
            return opened[-1]

        logged: list[str] = []
        where = {row[0]: row[1] for row in conn.execute("SELECT id, ctid::text FROM trips WHERE id IN (7, 8, 2299)")}
        audit = scan_table(
            conn,
            tables[("public", "trips")],
            KEY,
            kept_columns={"id", "day", "note", "contact"},
            log=logged.append,
            connect=connect,
            workers=2,
            blocks_per_range=2,
        )

    found = {f.column: f for f in audit.findings}
    assert audit.rows_scanned == 2300
    assert (found["contact"].known_values, found["note"].known_values) == (2, 1)
    assert found["contact"].locations == (f"public.trips_07 {where[7]}", f"public.trips_29 {where[2299]}")
    assert found["note"].locations == (f"public.trips_08 {where[8]}",), "each row named in its own partition"
    assert len(opened) <= 6, "2 for the 29 small partitions, 2 + 2 for the big one's two passes (120 before)"
    assert len(logged) < 20, "progress and the big partition's lines; not four lines per small partition"
