"""The masking engine on real PostgreSQL: determinism, consistency, formats, uniqueness, exactly-once."""

import hashlib
import hmac
import json
import random
import re
from dataclasses import dataclass

import psycopg
import pytest

from refresh_pipeline.audit.scan import scan_table
from refresh_pipeline.chunked import BlockRange
from refresh_pipeline.demo.check_digits import luhn_check_digit, verhoeff_check_digit
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.masking import staging
from refresh_pipeline.masking.catalog import read_tables
from refresh_pipeline.masking.coverage import describe_uncovered, find_uncovered
from refresh_pipeline.masking.keys import MASKING_PURPOSE, MaskingKey
from refresh_pipeline.masking.originals import record_originals
from refresh_pipeline.masking.policy import parse_policy
from refresh_pipeline.masking.runner import TableMaskingResult, install_functions, mask_table
from refresh_pipeline_tests.helpers import database_with

KEY = MaskingKey("unit-test-key-0123456789")
OTHER_KEY = MaskingKey("another-key-9876543210")

SCHEMA = """
CREATE TABLE customers (
    id int PRIMARY KEY,
    name text,
    email text NOT NULL UNIQUE,
    phone varchar(20) UNIQUE,
    born date,
    profile jsonb,
    aliases text[],
    note text
);
CREATE TABLE bookings (id int PRIMARY KEY, customer_id int REFERENCES customers, passenger_email text);
INSERT INTO customers VALUES
    (1, 'Ravi Kumar', 'Ravi.Kumar@gmail.com', '+91 98765 43210', '1990-05-17',
     '{"contact": {"email": "ravi.kumar@gmail.com", "phone": 9876543210}, "vip": true}',
     ARRAY['ravi.kumar@gmail.com', '09876543210'], 'Call 98765-43210 or ravi.kumar@gmail.com'),
    (2, 'Asha', 'asha@yahoo.co.in', '9123456789', NULL, NULL, NULL, ''),
    (3, '', 'empty@x.in', NULL, '2001-01-01', '{}', '{}', NULL);
INSERT INTO bookings VALUES (10, 1, 'ravi.kumar@gmail.com'), (11, 2, 'ASHA@YAHOO.CO.IN'), (12, 3, 'nobody@x.in');
"""

POLICY = """
tables:
  customers:
    id: keep
    name: name
    email: email
    phone: phone
    born: date
    profile:
      json:
        "$.contact.email": email
        "$.contact.phone": phone
    aliases: {array: scrub}
    note: scrub
  bookings:
    id: keep
    customer_id: keep
    passenger_email: email
"""


@pytest.fixture
def db(create_database):
    conninfo = create_database("masking")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SCHEMA)
        install_functions(conn)
    return conninfo


def _mask_all(conninfo: str, key: MaskingKey = KEY, policy_text: str = POLICY) -> None:
    policy = parse_policy(policy_text)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for table in ("customers", "bookings"):
            mask_table(conn, policy, table, key)


def _rows(conninfo: str, query: str) -> list[tuple]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(query).fetchall()


def test_sql_hmac_is_real_hmac_sha256(db):
    with psycopg.connect(db) as conn:
        got = conn.execute("SELECT refresh_pipeline.hmac(%s, 'hello')", (KEY.sql_pads(MASKING_PURPOSE),)).fetchone()[0]
    assert bytes(got) == hmac.new(KEY.derive(MASKING_PURPOSE), b"hello", hashlib.sha256).digest()


def test_same_key_gives_identical_output_other_key_differs(create_database):
    copies = []
    for _ in range(3):
        conninfo = create_database("determinism")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(SCHEMA)
        copies.append(conninfo)
    _mask_all(copies[0])
    _mask_all(copies[1])
    _mask_all(copies[2], key=OTHER_KEY)
    query = "SELECT * FROM customers ORDER BY id"
    assert _rows(copies[0], query) == _rows(copies[1], query)
    assert [r[2] for r in _rows(copies[0], query)] != [r[2] for r in _rows(copies[2], query)]


def test_value_masked_in_two_tables_still_joins_including_case_insensitively(db):
    pairs_before = _rows(
        db, "SELECT b.id, c.id FROM bookings b JOIN customers c ON lower(c.email) = lower(b.passenger_email)"
    )
    _mask_all(db)
    pairs_after = _rows(
        db, "SELECT b.id, c.id FROM bookings b JOIN customers c ON lower(c.email) = lower(b.passenger_email)"
    )
    assert sorted(pairs_after) == sorted(pairs_before) == [(10, 1), (11, 2)]


def test_one_value_masks_alike_in_columns_json_arrays_and_free_text(db):
    _mask_all(db)
    email, phone, profile, aliases, note = _rows(
        db, "SELECT email, phone, profile, aliases, note FROM customers WHERE id = 1"
    )[0]
    national = "".join(ch for ch in phone if ch.isdigit())[-10:]
    assert profile["contact"]["email"] == email.lower()
    assert profile["contact"]["phone"] == int(national), "a phone stored as a JSON number stays a number"
    assert profile["vip"] is True
    assert aliases == [email.lower(), "0" + national]
    assert note == f"Call {national[:5]}-{national[5:]} or {email.lower()}"


def test_masked_values_keep_their_format(db):
    _mask_all(db)
    rows = _rows(db, "SELECT id, name, email, phone, born FROM customers ORDER BY id")
    (_, name1, email1, phone1, born1), (_, _, _, phone2, born2), (_, name3, _, phone3, born3) = rows
    assert email1.endswith("@example.com") and "ravi" not in email1
    assert phone1.startswith("+91 9") and len(phone1) == len("+91 98765 43210") and phone1[9] == " "
    assert phone1 != "+91 98765 43210"
    assert len(phone2) == 10 and phone2.isdigit() and phone2[0] == "9"
    assert phone3 is None and born2 is None, "NULL stays NULL"
    assert name3 == "", "empty stays empty"
    assert born1.year == 1990 and born3.year == 2001
    assert name1 != "Ravi Kumar" and " " in name1


def test_addresses_and_networks_keep_their_prefix_length_and_stay_valid(create_database):
    conninfo = database_with(
        create_database,
        "networks",
        "CREATE TABLE logins (id int PRIMARY KEY, host inet, network cidr, seen_from text, networks cidr[],"
        " devices uuid[]);"
        "INSERT INTO logins VALUES (1, '49.36.1.7', '49.36.0.0/16', 'N/A', '{49.36.0.0/16, NULL}',"
        " '{5f0c6a55-1f6e-4c8e-9a43-2b8f0f5d1e11}'), (2, '2401:4900::7/64', '2401:4900::/32', '49.36.1.7/24', NULL,"
        " NULL)",
    )
    policy = parse_policy(
        "tables:\n  logins: {id: keep, host: ip, network: ip, seen_from: ip, networks: {array: ip},"
        " devices: {array: fpe}}\n"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        mask_table(conn, policy, "logins", KEY)
        rows = conn.execute(
            "SELECT host::text, network::text, seen_from, networks::text[], devices::text[] FROM logins ORDER BY id"
        ).fetchall()
    (host1, network1, text1, networks, devices), (host2, network2, text2, _, _) = rows
    assert host1.startswith("10.") and host1 != "49.36.1.7"
    assert network1.startswith("10.") and network1.endswith(".0.0/16"), "a network: host bits cleared"
    assert networks == [network1, None], "in an array too, masked alike"
    assert len(devices) == 1 and devices[0] != "5f0c6a55-1f6e-4c8e-9a43-2b8f0f5d1e11"
    assert host2.startswith("fd") and host2.endswith("/64")
    assert network2.startswith("fd") and network2.endswith("::/32")
    assert "/" not in text1, "'N/A' is no address with a prefix length 'A'"
    assert text2.startswith("10.") and text2.endswith("/24")


def test_unique_phones_stay_unique_with_many_near_identical_values(create_database):
    conninfo = create_database("unique")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE subscribers (id int PRIMARY KEY, phone text UNIQUE NOT NULL)")
        conn.execute(
            "INSERT INTO subscribers SELECT g, '+9198765' || lpad(g::text, 5, '0') FROM generate_series(0, 99999) g"
        )
        mask_table(conn, parse_policy("tables:\n  subscribers:\n    id: keep\n    phone: phone\n"), "subscribers", KEY)
        distinct, total, unchanged = conn.execute(
            "SELECT count(DISTINCT phone), count(*), "
            "count(*) FILTER (WHERE phone = '+9198765' || lpad(id::text, 5, '0')) FROM subscribers"
        ).fetchone()
    assert distinct == total == 100_000
    assert unchanged < 10, "a keyed permutation leaves almost nothing in place"


def test_masking_twice_is_a_no_op_and_a_changed_policy_is_refused(db):
    _mask_all(db)
    once = _rows(db, "SELECT * FROM customers ORDER BY id")
    policy = parse_policy(POLICY)
    with psycopg.connect(db, autocommit=True) as conn:
        result = mask_table(conn, policy, "customers", KEY)
        assert result.status == "already_masked"
        with pytest.raises(RefreshError, match="already masked under different rules"):
            mask_table(conn, parse_policy(POLICY.replace("name: name", "name: hash")), "customers", KEY)
    assert _rows(db, "SELECT * FROM customers ORDER BY id") == once


def test_masking_does_not_fire_triggers_and_leaves_them_enabled(db):
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE TABLE customer_audit (email text)")
        conn.execute(
            "CREATE FUNCTION copy_email() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO customer_audit VALUES (NEW.email); RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER audit_customers AFTER INSERT OR UPDATE ON customers "
            "FOR EACH ROW EXECUTE FUNCTION copy_email()"
        )
    _mask_all(db)
    assert _rows(db, "SELECT count(*) FROM customer_audit") == [(0,)]
    assert _rows(db, "SELECT tgenabled FROM pg_trigger WHERE tgname = 'audit_customers'") == [("O",)]


def test_sequences_and_identity_columns_survive_masking(create_database):
    conninfo = create_database("identity")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE people (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text, "
            "domain text GENERATED ALWAYS AS (split_part(email, '@', 2)) STORED)"
        )
        conn.execute("INSERT INTO people (email) SELECT 'p' || g || '@corp.in' FROM generate_series(1, 50) g")
        before = conn.execute("SELECT last_value FROM people_id_seq").fetchone()
        mask_table(
            conn, parse_policy("tables:\n  people:\n    id: keep\n    email: email\n    domain: keep\n"), "people", KEY
        )
        assert conn.execute("SELECT last_value FROM people_id_seq").fetchone() == before
        assert conn.execute("SELECT DISTINCT domain FROM people").fetchall() == [("example.com",)]
        assert conn.execute("SELECT min(id), max(id) FROM people").fetchone() == (1, 50)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("id: phone", "public.customers.id (integer): `phone` needs a text column"),
        ("profile: {array: email}", "an array rule with `email` needs a text array column, not jsonb"),
        ("note: {json: {'$.a': email}}", "a JSON path rule needs a json/jsonb column, not text"),
        ("ghost: email", "column public.customers.ghost does not exist"),
        ('email: "null"', "`null` on a NOT NULL column"),
        (
            "born: {transform: geo}",
            "`geo` needs a numeric, real, double precision, geometry or geography column, not date",
        ),
        ("email: {transform: number, min: 1, max: 9}", "`number` needs a numeric or integer column, not text"),
        (
            "id: geo",  # moved by less than 1 as degrees, an integer would round back to the original
            "`geo` on a whole-number column needs the scale its values are degrees times: "
            "{transform: geo, scale: 1000000} if 19.072830 is stored as 19072830",
        ),
        ("id: {transform: geo, scale: 0}", "geo scale must be a positive number"),
        ("profile: {json: {'$.contact.mail': email}}", "JSON path $.contact.mail matches no value in any row"),
    ],
)
def test_rules_that_cannot_apply_are_refused_before_any_data_changes(db, rule, expected):
    policy_text = "tables:\n  customers:\n    " + rule + "\n"
    before = _rows(db, "SELECT * FROM customers ORDER BY id")
    with psycopg.connect(db, autocommit=True) as conn, pytest.raises(RefreshError) as error:
        mask_table(conn, parse_policy(policy_text, source="p.yaml"), "customers", KEY)
    assert expected in str(error.value)
    assert "p.yaml, line 3" in str(error.value)
    assert _rows(db, "SELECT * FROM customers ORDER BY id") == before


def test_uncovered_columns_are_named_with_a_snippet_that_covers_them(db):
    customers_only = POLICY.split("  bookings:")[0]
    with psycopg.connect(db) as conn:
        tables = read_tables(conn)
    uncovered = find_uncovered(parse_policy(customers_only), tables)
    assert [c.qualified_name for c in uncovered] == [
        "public.bookings.id",
        "public.bookings.customer_id",
        "public.bookings.passenger_email",
    ]
    message = describe_uncovered(uncovered, "p.yaml")
    snippet = message.split("review each line):\n", 1)[1]
    assert "    passenger_email: email  # REVIEW: text; named like email" in snippet and "    id: keep" in snippet
    assert find_uncovered(parse_policy(customers_only + snippet), tables) == []


def _staging_tables(conn: psycopg.Connection) -> list[str]:
    """Staging tables and the views over them."""
    return [r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relname LIKE 'masked\\_rows\\_%'")]


@dataclass
class _AloneAndPooled:
    """One table masked twice: on one session in one database, on a pool of two in block ranges in another."""

    alone: str
    pooled: str
    alone_result: TableMaskingResult
    pooled_result: TableMaskingResult
    messages: list[str]


def _mask_alone_and_pooled(create_database, schema: str, policy_text: str, table: str) -> _AloneAndPooled:
    policy = parse_policy(policy_text)
    alone, pooled = create_database("masked_alone"), create_database("masked_pooled")
    for conninfo in (alone, pooled):
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(schema)
    with psycopg.connect(alone, autocommit=True) as conn:
        alone_result = mask_table(conn, policy, table, KEY)
    messages: list[str] = []
    with psycopg.connect(pooled, autocommit=True) as conn:
        pooled_result = mask_table(
            conn,
            policy,
            table,
            KEY,
            log=messages.append,
            connect=lambda: psycopg.connect(pooled, autocommit=True),
            workers=2,
            blocks_per_range=10,
        )
        assert _staging_tables(conn) == []
    return _AloneAndPooled(alone, pooled, alone_result, pooled_result, messages)


def test_block_ranges_on_a_session_pool_give_the_same_rows_with_progress_and_eta(create_database):
    schema = (
        "CREATE TABLE riders (id int PRIMARY KEY, email text UNIQUE, phone text, note text);"
        "INSERT INTO riders SELECT g, 'rider' || g || '@mail.com', '+9198' || lpad(g::text, 8, '0'), "
        "'call 98' || lpad(g::text, 8, '0') FROM generate_series(1, 20000) g"
    )
    policy = "tables:\n  riders:\n    id: keep\n    email: email\n    phone: phone\n    note: scrub\n"

    masked = _mask_alone_and_pooled(create_database, schema, policy, "riders")

    assert masked.alone_result.rows == masked.pooled_result.rows == 20000
    assert "in 1 block range(s)" not in " ".join(masked.messages)
    progress = [m for m in masked.messages if "ETA" in m]
    assert len(progress) >= 1 and "rows/s" in progress[-1] and "(100%)" in progress[-1]
    in_place = "SELECT ctid::text, * FROM riders ORDER BY ctid"
    assert _rows(masked.alone, in_place) == _rows(masked.pooled, in_place), "the same rows in the same places"


@pytest.mark.parametrize("staging_tables", [64, 2], ids=["a table per range", "ranges sharing 2 tables"])
def test_a_partitioned_table_is_masked_partition_by_partition_on_a_session_pool(
    create_database, monkeypatch, staging_tables
):
    monkeypatch.setattr(staging, "MAX_STAGING_TABLES", staging_tables)
    schema = (
        "CREATE TABLE trips (id int, taken date, email text, note text) PARTITION BY RANGE (taken);"
        "CREATE TABLE trips_2025 PARTITION OF trips FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');"
        "CREATE TABLE trips_2026 PARTITION OF trips FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
        " PARTITION BY RANGE (taken);"  # a sub-partitioned partition: its leaves hold the rows
        "CREATE TABLE trips_2026_h1 PARTITION OF trips_2026 FOR VALUES FROM ('2026-01-01') TO ('2026-07-01');"
        "CREATE TABLE trips_2026_h2 PARTITION OF trips_2026 FOR VALUES FROM ('2026-07-01') TO ('2027-01-01');"
        "INSERT INTO trips SELECT g, date '2025-01-01' + g % 700, 'rider' || g % 900 || '@mail.com',"
        " 'call 98' || lpad(g::text, 8, '0') FROM generate_series(1, 9000) g"
    )
    policy = "tables:\n  trips:\n    id: keep\n    taken: keep\n    email: email\n    note: scrub\n"

    masked = _mask_alone_and_pooled(create_database, schema, policy, "trips")

    (started,) = [m for m in masked.messages if "masking columns" in m]
    ranges = int(re.search(r"in (\d+) block range\(s\) on 2 session\(s\)", started)[1])
    assert ranges > 3, "the three leaf partitions' blocks, split into ranges"
    assert masked.alone_result.rows == masked.pooled_result.rows == 9000
    query = "SELECT tableoid::regclass::text, ctid::text, * FROM trips ORDER BY tableoid, ctid"
    pooled_rows = _rows(masked.pooled, query)
    assert _rows(masked.alone, query) == pooled_rows, "each row masked once, in its partition, in its place"
    assert not any("@mail.com" in str(row) for row in pooled_rows)


def test_a_failed_swap_leaves_the_table_as_it_was_and_no_staging_behind(create_database):
    conninfo = create_database("failed_swap")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE contacts (id int PRIMARY KEY, email text CHECK (email LIKE '%.in'))")
        conn.execute("INSERT INTO contacts VALUES (1, 'a@b.in'), (2, 'c@d.in')")
        before = conn.execute("SELECT * FROM contacts ORDER BY id").fetchall()
        policy = parse_policy("tables:\n  contacts:\n    id: keep\n    email: email\n")
        with pytest.raises(RefreshError, match=r"fail check constraint contacts_email_check CHECK .*%\.in"):
            mask_table(conn, policy, "contacts", KEY)  # masked emails end in example.com
        assert conn.execute("SELECT * FROM contacts ORDER BY id").fetchall() == before
        assert conn.execute("SELECT count(*) FROM refresh_pipeline.masked_tables").fetchone()[0] == 0
        assert _staging_tables(conn) == []


def test_only_emails_a_conflict_moved_are_looked_up_and_the_list_goes_with_the_map(create_database):
    from refresh_pipeline.masking.value_map import build_value_maps, clear_value_maps, collect_original_tokens

    conninfo = create_database("moved_emails")
    pads = KEY.sql_pads(MASKING_PURPOSE)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        install_functions(conn)
        taken = conn.execute("SELECT refresh_pipeline.email_candidate(%s, 'a@mail.in')", (pads,)).fetchone()[0]
        conn.execute("CREATE TABLE people (id int PRIMARY KEY, email text)")
        conn.execute("INSERT INTO people VALUES (1, 'a@mail.in'), (2, 'b@mail.in'), (3, %s)", (taken,))
        tables = list(read_tables(conn).values())
        with conn.transaction():
            collect_original_tokens(conn, tables, parse_policy("tables:\n  people:\n    id: keep\n    email: email\n"))
            build_value_maps(conn, KEY)
        moved = conn.execute("SELECT cardinality(refresh_pipeline.moved_emails())").fetchone()[0]
        a, b = conn.execute(
            "SELECT refresh_pipeline.mask_email(%s, 'a@mail.in'), refresh_pipeline.mask_email(%s, 'b@mail.in')",
            (pads, pads),
        ).fetchone()
        b_first = conn.execute("SELECT refresh_pipeline.email_candidate(%s, 'b@mail.in')", (pads,)).fetchone()[0]
        clear_value_maps(conn)
        cleared = conn.execute("SELECT refresh_pipeline.moved_emails() IS NULL").fetchone()[0]
    assert moved == 1, "only a@mail.in, whose first candidate is a production value, moved"
    assert a != taken and a.endswith("@example.com")
    assert b == b_first, "an email without conflict keeps its first candidate"
    assert cleared, "no fingerprint of a production value stays behind for staging"


def test_value_map_conflicts_are_resolved_round_after_round_until_no_value_collides(create_database):
    """A masked value equal to a production value moves; of two originals with the same masked value the one
    with the higher fingerprint moves; a value that moves onto a third one's masked value collides again in the
    next round."""
    from refresh_pipeline.masking.value_map import resolve_value_maps, start_value_maps

    pads = KEY.sql_pads(MASKING_PURPOSE)
    with psycopg.connect(create_database("value_map_rounds"), autocommit=True) as conn:
        install_functions(conn)

        def fingerprint(value: str) -> bytes:
            return conn.execute("SELECT refresh_pipeline.map_fingerprint(%s, 'email', %s)", (pads, value)).fetchone()[0]

        def retry(masked: str) -> str:
            query = "SELECT refresh_pipeline.hmac_letters(%s, 'email:retry:' || %s, 16) || '@example.com'"
            return conn.execute(query, (pads, masked)).fetchone()[0]

        start_value_maps(conn)
        taken = "taken@example.com"
        low, high, third = sorted(fingerprint(f"o{i}@mail.in") for i in range(3))
        entries = {
            "production": (fingerprint(taken), "p@example.com"),  # its original is "taken@example.com"
            "collides_with_production": (fingerprint("c@mail.in"), taken),
            "keeps": (low, "same@example.com"),
            "moves_twice": (high, "same@example.com"),
            "already_there": (third, retry("same@example.com")),
        }
        for entry, masked in entries.values():
            conn.execute(
                "INSERT INTO refresh_pipeline.value_map (kind, fingerprint, masked) VALUES ('email', %s, %s)",
                (entry, masked),
            )
        resolve_value_maps(conn, KEY)
        rows = dict(conn.execute("SELECT fingerprint, masked FROM refresh_pipeline.value_map").fetchall())
        rounds = dict(conn.execute("SELECT fingerprint, moved_in_round FROM refresh_pipeline.value_map").fetchall())
        moved_from_taken, moved_once = retry(taken), retry("same@example.com")
        moved_twice = retry(moved_once)
    final = {name: rows[entry] for name, (entry, _masked) in entries.items()}
    assert final["collides_with_production"] == moved_from_taken
    assert rounds[entries["collides_with_production"][0]] == 1
    assert final["keeps"] == "same@example.com" and rounds[low] == 0
    if third < high:  # the value already there has the lower fingerprint: the mover moves again
        assert (final["already_there"], final["moves_twice"]) == (moved_once, moved_twice)
        assert rounds[high] == 2
    else:
        assert (final["moves_twice"], final["already_there"]) == (moved_once, moved_twice)
        assert rounds[third] == 2
    assert len(set(final.values())) == len(final), "every masked value is unique"


def _calls(conn: psycopg.Connection, function: str) -> int:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT calls FROM pg_stat_user_functions WHERE schemaname = 'refresh_pipeline' AND funcname = %s", (function,)
    ).fetchone()
    return row[0] if row else 0


def test_phones_are_looked_up_in_the_value_map_by_one_join_with_the_same_result(create_database):
    from refresh_pipeline.masking.value_map import build_value_maps, collect_original_tokens

    conninfo = create_database("phone_join")
    policy = parse_policy("tables:\n  riders:\n    id: keep\n    phone: phone\n    doc: {json: {'$.phone': phone}}\n")
    phones = ["+919876543210", "9876543211", "+91 98765 43212", "098765-43213", "(+91) 98-765-432-14", "12", "none", ""]
    docs = ['{"phone": "+91 98765 43215"}', '{"phone": 9876543216}', '{"phone": {"home": "9876543217"}}', "{}"]
    docs += [None, '{"phone": null}']
    pads = KEY.sql_pads(MASKING_PURPOSE)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        install_functions(conn)
        conn.execute("CREATE TABLE riders (id int PRIMARY KEY, phone text, doc jsonb)")
        for i, phone in enumerate([*phones, None, None]):
            conn.execute("INSERT INTO riders VALUES (%s, %s, %s)", (i, phone, docs[i % len(docs)]))
        with conn.transaction():
            collect_original_tokens(conn, list(read_tables(conn).values()), policy)
            build_value_maps(conn, KEY)
        expected = conn.execute(
            "SELECT id, refresh_pipeline.mask_text(%s, 'phone', phone, '{}'),"
            " refresh_pipeline.mask_jsonb(%s, doc, '{phone}', 'phone', '{}') FROM riders ORDER BY id",
            (pads, pads),
        ).fetchall()
        conn.execute("SET track_functions = 'all'")
        before = _calls(conn, "mapped_value")
        mask_table(conn, policy, "riders", KEY)
        conn.execute("SELECT pg_stat_force_next_flush()")
        looked_up = _calls(conn, "mapped_value") - before
        masked = conn.execute("SELECT id, phone, doc FROM riders ORDER BY id").fetchall()
    assert masked == expected
    assert masked[0][1] != phones[0] and masked[0][1].startswith("+919")
    # Only the phones inside an object the path selects (two rows) are looked up one by one, by mask_jsonb.
    assert looked_up == 2, looked_up


def test_columns_of_a_domain_are_masked_and_audited_as_the_type_under_it(create_database):
    """`CREATE DOMAIN email_address AS varchar(64)`: masked like varchar(64) (its CHECK still holds), and a
    kept one holding PII is scanned by the audit like any text column."""
    conninfo = database_with(
        create_database,
        "domains",
        "CREATE DOMAIN email_address AS varchar(64) CHECK (VALUE LIKE '%@%');"
        "CREATE DOMAIN remark AS text;"
        "CREATE TABLE members (id int PRIMARY KEY, email email_address, aliases email_address[], note remark);"
        "INSERT INTO members VALUES (1, 'ravi.kumar@gmail.com', ARRAY['ravi@yahoo.in'], 'call 98765 43210'),"
        " (2, 'asha@yahoo.co.in', NULL, NULL)",
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        snippet = describe_uncovered(find_uncovered(parse_policy("tables: {}"), read_tables(conn)), "p.yaml")
        policy = parse_policy("tables:\n  members: {id: keep, email: email, aliases: {array: email}, note: keep}\n")
        mask_table(conn, policy, "members", KEY)
        masked = conn.execute("SELECT email, aliases::text[] FROM members ORDER BY id").fetchall()
        audit = scan_table(conn, read_tables(conn)[("public", "members")], KEY, kept_columns={"id", "note"})
    assert all(email.endswith("@example.com") for email, _ in masked)
    assert masked[0][1][0].endswith("@example.com")
    assert [(f.column, f.patterns) for f in audit.findings] == [("note", {"phone": 1})]
    assert "    email: email  # REVIEW: email_address; named like email" in snippet
    assert "    note: scrub  # REVIEW: remark; named like free text" in snippet


def test_an_email_or_upi_handle_in_a_phone_field_is_masked_as_one(create_database):
    conninfo = database_with(
        create_database,
        "typos",
        "CREATE TABLE riders (id int PRIMARY KEY, email text, phone text);"
        "INSERT INTO riders VALUES (1, 'rider6@gmail.com', 'rider6@gmail.com'), (2, NULL, 'ravi@ybl'),"
        " (3, NULL, 'N/A'), (4, NULL, '+91 98765 43210')",
    )
    policy = parse_policy("tables:\n  riders: {id: keep, email: email, phone: phone}\n")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        mask_table(conn, policy, "riders", KEY)
        rows = conn.execute("SELECT email, phone FROM riders ORDER BY id").fetchall()
    assert rows[0][1] == rows[0][0] and rows[0][1].endswith("@example.com"), "as the email column masks it"
    assert rows[1][1].endswith("@ybl") and "ravi" not in rows[1][1]
    assert rows[2][1] == "N/A"
    assert rows[3][1].startswith("+91 9") and rows[3][1] != "+91 98765 43210"


PLACEHOLDERS = [" ", "  ", "-", "  --  ", "--------", "N/A"]


def test_placeholders_stay_as_they_are_and_are_no_known_value_to_the_audit(create_database):
    """A customer without an email keeps none: ' ' became an email (the same one as '  ', which a unique index
    then refused)."""
    rows = ", ".join(f"({i}, %(v{i})s, %(v{i})s, %(v{i})s, %(v{i})s, %(v{i})s, %(v{i})s)" for i in range(6))
    conninfo = database_with(
        create_database,
        "placeholders",
        "CREATE TABLE riders (id int PRIMARY KEY, email text UNIQUE, name text, address text, upi text,"
        " hashed text, redacted text)",
    )
    policy = parse_policy(
        "tables:\n  riders: {id: keep, email: email, name: name, address: address, upi: upi, hashed: hash,"
        " redacted: redact}\n"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"INSERT INTO riders VALUES {rows}", {f"v{i}": value for i, value in enumerate(PLACEHOLDERS)})
        record_originals(conn, list(read_tables(conn).values()), policy, KEY)
        mask_table(conn, policy, "riders", KEY)
        masked = conn.execute("SELECT email, name, address, upi, hashed, redacted FROM riders ORDER BY id").fetchall()
        audit = scan_table(conn, read_tables(conn)[("public", "riders")], KEY, kept_columns={"id"})
    for placeholder, (email, name, address, upi, hashed, redacted) in zip(PLACEHOLDERS[:5], masked, strict=False):
        assert (email, name, address, upi) == (placeholder,) * 4
        assert hashed != placeholder and redacted == "REDACTED"
    email, name, address, upi, _, _ = masked[5]  # a word placeholder could be a name: masked
    assert email.endswith("@example.com") and "N/A" not in (name, address, upi)
    assert audit.passed, audit.summary()


def test_files_are_redacted_to_the_redact_texts_bytes_and_nulls_stay_null(create_database):
    conninfo = database_with(
        create_database,
        "files",
        "CREATE TABLE kyc (id int PRIMARY KEY, scan bytea NOT NULL, selfie bytea, signature bytea);"
        "INSERT INTO kyc VALUES (1, convert_to('AADHAAR 2345 6789 0123 ravi.kumar@gmail.com', 'UTF8'),"
        " '\\x89504e470d0a1a0a'::bytea, '\\xffd8ffe0'::bytea), (2, '\\x25504446'::bytea, NULL, NULL)",
    )
    policy = parse_policy(
        "tables:\n  kyc: {id: keep, scan: redact, selfie: {transform: redact, value: ''}, signature: \"null\"}\n"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        mask_table(conn, policy, "kyc", KEY)
        rows = conn.execute("SELECT id, scan, selfie, signature FROM kyc ORDER BY id").fetchall()
    assert rows == [(1, b"REDACTED", b"", None), (2, b"REDACTED", None, None)]


def test_arrays_keep_their_dimensions_and_bounds(create_database):
    conninfo = create_database("array_shapes")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE contacts (id int PRIMARY KEY, grid text[], shifted varchar(40)[]);"
            """INSERT INTO contacts VALUES
               (1, '{{ravi@gmail.com,"a, \\"quoted\\" {x}"},{NULL,"back\\\\slash"}}', '[0:1]={ravi@gmail.com,NULL}'),
               (2, '{plain,ravi@gmail.com}', '{}'), (3, NULL, NULL)"""
        )
        policy = parse_policy("tables:\n  contacts: {id: keep, grid: {array: scrub}, shifted: {array: email}}\n")
        mask_table(conn, policy, "contacts", KEY)
        rows = conn.execute(
            "SELECT id, array_dims(grid), grid[1][2], grid[2][1], grid[2][2], grid[1][1] LIKE '%@example.com',"
            " array_dims(shifted), shifted[0] LIKE '%@example.com', shifted[1] IS NULL, grid[1], grid[2]"
            " FROM contacts ORDER BY id"
        ).fetchall()
    assert rows[0][:9] == (1, "[1:2][1:2]", 'a, "quoted" {x}', None, "back\\slash", True, "[0:1]", True, True)
    assert rows[1][1] == "[1:2]" and rows[1][9] == "plain" and rows[1][10].endswith("@example.com")
    assert rows[1][6] is None and rows[2][1] is None, "empty and NULL arrays stay so"


def test_whole_documents_are_scrubbed_and_stay_valid(create_database):
    conninfo = create_database("scrub_documents")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE EXTENSION IF NOT EXISTS hstore;"
            "CREATE TABLE webhooks (id int PRIMARY KEY, body jsonb, raw json, page xml, tags hstore);"
            """INSERT INTO webhooks VALUES (1,
                 '{"payer": {"contact": "Ravi <ravi@gmail.com>", "mobile": 9876543210}, "amount": 120, "ok": true}',
                 '{"note": "call +91 98765 43210", "n": [1, 2]}',
                 '<p>mail <b>ravi@gmail.com</b> or 9876543210@ybl</p>',
                 'email=>ravi@gmail.com, plan=>gold'),
               (2, NULL, NULL, NULL, NULL)"""
        )
        policy = parse_policy("tables:\n  webhooks: {id: keep, body: scrub, raw: scrub, page: scrub, tags: scrub}\n")
        mask_table(conn, policy, "webhooks", KEY)
        body, raw, page, tags, nulls = conn.execute(
            "SELECT body, raw::text, page::text, tags -> 'email', (SELECT body IS NULL AND tags IS NULL FROM webhooks"
            " WHERE id = 2) FROM webhooks WHERE id = 1"
        ).fetchone()
    assert body["amount"] == 120 and body["ok"] is True, "the rest of the document is kept"
    assert re.fullmatch(r"Ravi <[a-p]{16}@example\.com>", body["payer"]["contact"])
    assert isinstance(body["payer"]["mobile"], int) and body["payer"]["mobile"] != 9876543210
    assert raw.startswith('{"note": "call +91 ') and "98765 43210" not in raw and '"n": [1, 2]' in raw
    assert page.startswith("<p>mail <b>") and "ravi@gmail.com" not in page and "9876543210" not in page
    assert tags.endswith("@example.com") and nulls


def test_free_text_phones_with_the_country_code_and_no_plus_are_masked_like_the_number(create_database):
    """919876543210 (a WhatsApp link, an SMS gateway's log) is +91 98765 43210: masked to the same number."""
    conninfo = create_database("scrub_country_code")
    pads = KEY.sql_pads(MASKING_PURPOSE)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        install_functions(conn)
        masked, link, spaced = conn.execute(
            "SELECT refresh_pipeline.mask_phone(%(k)s, '+919876543210'),"
            " refresh_pipeline.scrub(%(k)s, 'chat on wa.me/919876543210'),"
            " refresh_pipeline.scrub(%(k)s, 'call 91 98765 43210 or 91-9876543210')",
            {"k": pads},
        ).fetchone()
    national = masked[-10:]
    assert link == f"chat on wa.me/91{national}"
    assert spaced == f"call 91 {national[:5]} {national[5:]} or 91-{national}"


def test_phones_in_other_groupings_are_masked_like_the_number_and_other_numbers_stay(create_database):
    """4-3-3, 3-3-4 and 4-6 (`9876 543 210`, `987-654-3210`, `9876 543210`): no five digits in a row, so the cheap
    test before the pattern has to let them through too. Dates, lists and an 11-digit reference stay."""
    conninfo = create_database("scrub_phone_groupings")
    kept = "on 2026-11-29 stops 7 8 9 10 11 12, ref 9123 456 7890, seats 701 702 703"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        install_functions(conn)
        n, four_three_three, three_three_four, four_six, untouched = conn.execute(
            "SELECT refresh_pipeline.mask_phone(%(k)s, '9876543210'),"
            " refresh_pipeline.scrub(%(k)s, 'call 9876 543 210.'), refresh_pipeline.scrub(%(k)s, 'call 987-654-3210'),"
            " refresh_pipeline.scrub(%(k)s, 'call +91 9876 543210'), refresh_pipeline.scrub(%(k)s, %(kept)s)",
            {"k": KEY.sql_pads(MASKING_PURPOSE), "kept": kept},
        ).fetchone()
    assert four_three_three == f"call {n[:4]} {n[4:7]} {n[7:]}."
    assert three_three_four == f"call {n[:3]}-{n[3:6]}-{n[6:]}"
    assert four_six == f"call +91 {n[:4]} {n[4:]}"
    assert untouched == kept


def test_a_text_of_many_tokens_is_scrubbed_as_its_lines_are_one_by_one(create_database):
    """An uploaded CSV of riders: past 32 tokens the pieces are joined once (appending to the text went
    quadratic), in the same order, with nothing lost."""
    conninfo = create_database("scrub_many_tokens")
    lines = [f"emp{i},Emp {i},emp{i}@corp.in,+91 98{i:03d} {i:05d}" for i in range(1, 201)]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        install_functions(conn)
        whole, by_line = conn.execute(
            "SELECT refresh_pipeline.scrub(%(k)s, array_to_string(%(lines)s::text[], E'\\n')),"
            " (SELECT string_agg(refresh_pipeline.scrub(%(k)s, line), E'\\n' ORDER BY i)"
            "  FROM unnest(%(lines)s::text[]) WITH ORDINALITY AS l(line, i))",
            {"k": KEY.sql_pads(MASKING_PURPOSE), "lines": lines},
        ).fetchone()
    assert whole == by_line and whole.count("\n") == 199
    assert whole.count("@example.com") == 200 and "emp7@corp.in" not in whole and "emp7,Emp 7," in whole


def test_emails_phones_and_upi_handles_in_urls_are_masked_and_stay_encoded(create_database):
    """A logged request URL or a payment link holds '@' as '%40' and '+' as '%2B'."""
    conninfo = create_database("scrub_urls")
    pads = KEY.sql_pads(MASKING_PURPOSE)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        install_functions(conn)
        email, phone, upi, url, link = conn.execute(
            "SELECT refresh_pipeline.mask_email(%(k)s, 'ravi@gmail.com'), refresh_pipeline.mask_phone(%(k)s,"
            " '+919876543210'), refresh_pipeline.mask_upi(%(k)s, 'ravi.k@okaxis'),"
            " refresh_pipeline.scrub(%(k)s, '/signup?email=ravi%%40gmail.com&phone=%%2B919876543210&src=app'),"
            " refresh_pipeline.scrub(%(k)s, 'upi://pay?pa=ravi.k%%40okaxis&am=120')",
            {"k": pads},
        ).fetchone()
    local, domain = email.split("@")
    assert url == f"/signup?email={local}%40{domain}&phone=%2B91{phone[-10:]}&src=app", "masked as unencoded"
    assert link == f"upi://pay?pa={upi.replace('@', '%40')}&am=120"


def test_a_phone_after_a_urls_encoded_separator_is_masked(create_database):
    """`Call%20driver%20at%209876543210` (an SMS gateway's logged request): the number follows a digit."""
    conninfo = create_database("scrub_url_separator")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        install_functions(conn)
        phone, url = conn.execute(
            "SELECT refresh_pipeline.mask_phone(%(k)s, '9876543210'),"
            " refresh_pipeline.scrub(%(k)s, '/sms?to=x&text=Call%%20driver%%20at%%209876543210%%2C%%20now')",
            {"k": KEY.sql_pads(MASKING_PURPOSE)},
        ).fetchone()
    assert url == f"/sms?to=x&text=Call%20driver%20at%20{phone}%2C%20now"


@pytest.mark.parametrize(
    ("text", "address", "around"),
    [
        ("mail राम@gmail.com now", "राम@gmail.com", ("mail ", " now")),
        ("राम.kumar@gmail.com", "राम.kumar@gmail.com", ("", "")),
        ("ईमेल: “सीता@डाटामेल.भारत”", "सीता@डाटामेल.भारत", ("ईमेल: “", "”")),
        ("write to Ravi@Exämple.com।", "Ravi@Exämple.com", ("write to ", "।")),
    ],
    ids=["devanagari local part", "mixed local part", "devanagari domain in quotes", "accented domain, danda"],
)
def test_email_addresses_in_letters_beyond_ascii_are_masked_whole(create_database, text, address, around):
    """In free text an address in Devanagari or with an accented letter is masked as the email column masks
    it (equality joins hold), up to the punctuation of the sentence around it."""
    conninfo = create_database("scrub_unicode_email")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        install_functions(conn)
        email, scrubbed = conn.execute(
            "SELECT refresh_pipeline.mask_email(%(k)s, %(address)s), refresh_pipeline.scrub(%(k)s, %(text)s)",
            {"k": KEY.sql_pads(MASKING_PURPOSE), "address": address, "text": text},
        ).fetchone()
    assert email.lower().endswith("@example.com")
    assert scrubbed == around[0] + email + around[1]


def test_identity_numbers_in_free_text_are_masked_into_forms_no_detector_takes_for_one(create_database):
    """A PAN, an Aadhaar number (spaced and in one run) and a card number in a ticket: masked, in their spelling,
    the Aadhaar's first eleven digits as the `aadhaar` column masks them; a number identifying no one stays."""
    conninfo = create_database("scrub_identity_numbers")
    text = (
        "PAN ABCPE1234F, aadhaar 2345 6789 0124 (234567890124), card 4111-1111-1111-1111; "
        "booking 2023 ref 1234567890123"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        install_functions(conn)
        scrubbed, aadhaar, pan = conn.execute(
            "SELECT refresh_pipeline.scrub(%(k)s, %(t)s), refresh_pipeline.mask_aadhaar(%(k)s, '234567890124'),"
            " refresh_pipeline.mask_pan(%(k)s, 'ABCPE1234F')",
            {"k": KEY.sql_pads(MASKING_PURPOSE), "t": text},
        ).fetchone()
        found = [
            conn.execute(
                "SELECT array_agg(detector ORDER BY detector) FROM refresh_pipeline.id_findings(%s)", (v,)
            ).fetchone()[0]
            for v in (text, scrubbed)
        ]
    assert found == [["aadhaar", "aadhaar", "card", "pan"], None]
    match = re.fullmatch(
        r"PAN (\w{10}), aadhaar (\d{4}) (\d{4}) (\d{4}) \((\d{12})\), card (\d{4}-\d{4}-\d{4}-\d{4}); "
        r"booking 2023 ref 1234567890123",
        scrubbed,
    )
    assert match, scrubbed
    assert match[1] == pan[:3] + "X" + pan[4:], "as `pan` masks it, the holder type X"
    assert (match[2] + match[3] + match[4])[:11] == aadhaar[:11] and match[5] == match[2] + match[3] + match[4]
    assert match[6] != "4111-1111-1111-1111"


def test_a_pan_typed_in_lower_case_is_masked_in_its_case_and_read_as_one_in_free_text_only(create_database):
    """`my pan is abcpe1234f`: masked as its upper-case spelling, each letter in the original's case, holder type
    X. Free text is read case-blind; a kept column upper-case only, where `kumar1234a` is as likely a username."""
    conninfo = create_database("scrub_lower_case_pan")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        install_functions(conn)
        upper, lower, mixed, before, after, kept = conn.execute(
            "SELECT refresh_pipeline.scrub(%(k)s, 'PAN ABCPE1234F'), refresh_pipeline.scrub(%(k)s, %(t)s),"
            " refresh_pipeline.scrub(%(k)s, 'pan: Abcpe1234f'),"
            " (SELECT count(*) FROM refresh_pipeline.scrubbed_id_findings(%(t)s)),"
            " (SELECT count(*) FROM refresh_pipeline.scrubbed_id_findings(refresh_pipeline.scrub(%(k)s, %(t)s))),"
            " (SELECT count(*) FROM refresh_pipeline.id_findings('login kumar1234a'))",
            {"k": KEY.sql_pads(MASKING_PURPOSE), "t": "my pan is abcpe1234f."},
        ).fetchone()
    masked = upper.removeprefix("PAN ")
    assert masked[3] == "X" and lower == f"my pan is {masked.lower()}."
    assert mixed == f"pan: {masked[0]}{masked[1:].lower()}"
    assert (before, after, kept) == (1, 0, 0)


def test_no_identity_number_is_found_between_the_tokens_of_scrubbed_text(create_database):
    """Masked phones next to digits (wa.me/91..., a PNR before a number) and masked identity numbers: the
    audit's detector between the tokens finds what scrub left, which is nothing."""
    conninfo = create_database("scrub_identity_numbers_many")
    rng = random.Random(7)

    def aadhaar() -> str:  # from 2 to 8: 91 and ten digits in one run are a phone to scrub (and masked as one)
        body = str(rng.randint(2, 8)) + "".join(str(rng.randint(0, 9)) for _ in range(10))
        number = body + verhoeff_check_digit(body)
        return f"{number[:4]} {number[4:8]} {number[8:]}" if rng.random() < 0.5 else number

    def card() -> str:
        body = "4" + "".join(str(rng.randint(0, 9)) for _ in range(14))
        return " ".join((body + luhn_check_digit(body))[i : i + 4] for i in range(0, 16, 4))

    texts = [
        f"wa.me/91{rng.randint(6_000_000_000, 9_999_999_999)} PNR {rng.randint(1000, 9999)} "
        f"{rng.randint(6_000_000_000, 9_999_999_999)} aadhaar {aadhaar()} card {card()}"
        for _ in range(500)
    ]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        install_functions(conn)
        before, after = conn.execute(
            "SELECT (SELECT count(*) FROM unnest(%(t)s::text[]) AS v, refresh_pipeline.scrubbed_id_findings(v)),"
            " (SELECT count(*) FROM unnest(%(t)s::text[]) AS v,"
            "  refresh_pipeline.scrubbed_id_findings(refresh_pipeline.scrub(%(k)s, v)))",
            {"k": KEY.sql_pads(MASKING_PURPOSE), "t": texts},
        ).fetchone()
    assert (before, after) == (1000, 0)


def test_card_numbers_kept_as_json_numbers_keep_their_digits_once_scrubbed(create_database):
    """A scrubbed document holding card numbers as JSON numbers: each masked keeps its first digit (its network)
    and its length, so no leading 0 is lost, and the audit reads none of them as a card."""
    conninfo = create_database("scrub_json_numbers")
    rng = random.Random(11)
    cards = []
    for _ in range(200):
        body = str(rng.randint(3, 6)) + "".join(str(rng.randint(0, 9)) for _ in range(14))
        cards.append(int(body + luhn_check_digit(body)))
    doc = json.dumps({"refunds": [{"card": card, "note": f"card {card}"} for card in cards]})
    with psycopg.connect(conninfo, autocommit=True) as conn:
        install_functions(conn)
        masked, found = conn.execute(
            "WITH m AS (SELECT refresh_pipeline.mask_json_value(%(k)s, %(doc)s::jsonb, 'scrub', '{}') AS d)"
            " SELECT d, (SELECT count(*) FROM refresh_pipeline.scrubbed_id_findings(d::text)) FROM m",
            {"k": KEY.sql_pads(MASKING_PURPOSE), "doc": doc},
        ).fetchone()
    numbers = [refund["card"] for refund in masked["refunds"]]
    assert [len(str(n)) for n in numbers] == [16] * 200 and not set(numbers) & set(cards)
    assert [str(n)[0] for n in numbers] == [str(c)[0] for c in cards], "the network stays"
    assert [r["note"] for r in masked["refunds"]] == [f"card {n}" for n in numbers], "as in text"
    assert found == 0


def test_upi_local_parts_go_through_the_value_map_and_stay_distinct(create_database):
    """A local part whose letters equal another handle's local part in production moves on; every other keeps
    its first candidate with no lookup; the same local part masks alike with any bank, in a column, a JSON
    document and free text; a phone-shaped one masks like that phone."""
    conninfo = create_database("upi_value_map")
    pads = KEY.sql_pads(MASKING_PURPOSE)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        install_functions(conn)
        taken = conn.execute("SELECT refresh_pipeline.upi_candidate(%s, 'ravi.k')", (pads,)).fetchone()[0]
        conn.execute("CREATE TABLE payers (id int PRIMARY KEY, upi text UNIQUE, doc jsonb, note text)")
        conn.execute(
            "INSERT INTO payers VALUES (1, 'ravi.k@okaxis', '{\"vpa\": \"ravi.k@ybl\"}', 'paid by Ravi.K@okaxis'),"
            " (2, %(taken)s || '@ybl', NULL, NULL), (3, 'asha@oksbi', NULL, 'asha'),"
            " (4, '9876543210@ybl', NULL, 'call 98765 43210'), (5, 'ravi.k', NULL, NULL)",
            {"taken": taken},
        )
        policy = parse_policy("tables:\n  payers: {id: keep, upi: upi, doc: {json: {'$.vpa': upi}}, note: scrub}\n")
        record_originals(conn, list(read_tables(conn).values()), policy, KEY)
        moved = conn.execute("SELECT cardinality(refresh_pipeline.moved_upis())").fetchone()[0]
        asha_first = conn.execute("SELECT refresh_pipeline.upi_candidate(%s, 'asha')", (pads,)).fetchone()[0]
        mask_table(conn, policy, "payers", KEY)
        rows = dict(conn.execute("SELECT id, upi FROM payers").fetchall())
        vpa, note, phone_note = conn.execute(
            "SELECT (SELECT doc ->> 'vpa' FROM payers WHERE id = 1), (SELECT note FROM payers WHERE id = 1),"
            " (SELECT note FROM payers WHERE id = 4)"
        ).fetchone()
    ravi = rows[1].split("@")[0]
    assert moved == 1, "only ravi.k, whose first candidate is another handle's local part, moved"
    assert ravi != taken and re.fullmatch(r"[a-p]{10}", ravi) and rows[1].endswith("@okaxis")
    assert rows[3] == f"{asha_first}@oksbi", "a local part without conflict keeps its first candidate"
    assert vpa == f"{ravi}@ybl" and note == f"paid by {ravi}@okaxis" and rows[5] == ravi, "alike everywhere"
    assert rows[4] == f"{phone_note.split()[1]}{phone_note.split()[2]}@ybl", "a phone-shaped one masks as the phone"
    assert len(set(rows.values())) == 5


def test_many_ranges_share_at_most_so_many_staging_tables_in_order():
    ranges = [BlockRange(i * 10, (i + 1) * 10, 10 if i % 7 else 100) for i in range(200)]

    groups = staging.group_ranges(ranges, most=64)

    assert 1 < len(groups) <= 64
    assert [r for group in groups for r in group] == ranges, "every range once, in order"
    assert staging.group_ranges(ranges[:5], most=64) == [(r,) for r in ranges[:5]]
