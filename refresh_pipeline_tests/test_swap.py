"""Swapping masked rows in, on real PostgreSQL: the table is rebuilt (no dead rows, indexes built once) and
comes back with exactly its indexes, constraints, comments and flags; foreign keys pointing at it are set
aside and validated once both sides are masked; what cannot be rebuilt exactly keeps DELETE + INSERT."""

import threading

import psycopg
import pytest

from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.policy import parse_policy
from refresh_pipeline.masking.runner import install_functions, mask_table

KEY = MaskingKey("swap-test-key-0123456789")

# Everything a rebuild must put back as it was.
SCHEMA = """
CREATE TABLE members (
    id int,
    email text,
    phone text NOT NULL,
    region text NOT NULL,
    sponsor_id int,
    CONSTRAINT members_pk PRIMARY KEY (id) WITH (fillfactor = 70),
    CONSTRAINT members_email_key UNIQUE NULLS NOT DISTINCT (email) INCLUDE (region),
    CONSTRAINT members_phone_excl EXCLUDE USING btree (phone WITH =) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT members_sponsor_fk FOREIGN KEY (sponsor_id) REFERENCES members (id)
);
CREATE INDEX members_region_lower ON members (lower(region)) WHERE id > 10;
CREATE INDEX members_region ON members (region);
CREATE UNIQUE INDEX members_phone_region ON members (phone, region);
ALTER TABLE members CLUSTER ON members_region;
ALTER TABLE members REPLICA IDENTITY USING INDEX members_phone_region;
COMMENT ON INDEX members_region_lower IS 'for the regional report';
COMMENT ON CONSTRAINT members_email_key ON members IS 'one account per email';
CREATE TABLE visits (
    id int PRIMARY KEY,
    member_id int CONSTRAINT visits_member_fk REFERENCES members ON DELETE CASCADE DEFERRABLE,
    phone text
);
COMMENT ON CONSTRAINT visits_member_fk ON visits IS 'visits go with their member';
CREATE TABLE notes (id int PRIMARY KEY, member_id int);
INSERT INTO notes VALUES (1, 1), (2, 999999);
ALTER TABLE notes ADD CONSTRAINT notes_member_fk FOREIGN KEY (member_id) REFERENCES members NOT VALID;
INSERT INTO members
    SELECT g, 'member' || g || '@mail.in', '98' || lpad(g::text, 8, '0'), 'region ' || (g % 7),
           CASE WHEN g > 1 THEN g - 1 END
    FROM generate_series(1, 3000) g;
INSERT INTO visits SELECT g, g % 3000 + 1, '98' || lpad((g % 3000 + 1)::text, 8, '0') FROM generate_series(1, 6000) g;
"""
POLICY = """
tables:
  members: {id: keep, email: email, phone: phone, region: keep, sponsor_id: keep}
  visits: {id: keep, member_id: keep, phone: phone}
  notes: keep
"""

_CATALOG = """
SELECT 'index ' || i.relname || ': ' || pg_get_indexdef(i.oid) || ' clustered=' || x.indisclustered
       || ' replica_identity=' || x.indisreplident || ' valid=' || x.indisvalid
       || ' comment=' || coalesce(obj_description(i.oid, 'pg_class'), '-')
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
WHERE t.relnamespace = 'public'::regnamespace
UNION ALL
SELECT 'constraint ' || conname || ' on ' || conrelid::regclass::text || ': ' || pg_get_constraintdef(oid)
       || ' validated=' || convalidated || ' comment=' || coalesce(obj_description(oid, 'pg_constraint'), '-')
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'table ' || relname || ': replica identity ' || relreplident::text
FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'
ORDER BY 1
"""


def _catalog(conn: psycopg.Connection) -> list[str]:
    return [row[0] for row in conn.execute(_CATALOG).fetchall()]


def _heap_pages(conn: psycopg.Connection, table: str) -> int:
    return conn.execute(
        "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int", (table,)
    ).fetchone()[0]


@pytest.fixture
def members(create_database):
    conninfo = create_database("swap")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute("VACUUM ANALYZE")
        install_functions(conn)
    return conninfo


def test_a_masked_table_has_no_dead_rows_and_is_no_bigger_than_before(members):
    with psycopg.connect(members, autocommit=True) as conn:
        before = _heap_pages(conn, "visits")
        messages: list[str] = []
        mask_table(conn, parse_policy(POLICY), "visits", KEY, log=messages.append)
        after = _heap_pages(conn, "visits")
        dead = conn.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'visits'").fetchone()[0]
    assert any("TRUNCATE + INSERT" in m for m in messages), messages
    assert after <= before, f"{after} pages after masking, {before} before: the originals' rows are still there"
    assert dead == 0


def test_indexes_constraints_comments_and_flags_come_back_exactly(members):
    policy = parse_policy(POLICY)
    with psycopg.connect(members, autocommit=True) as conn:
        before = _catalog(conn)
        emails_before = conn.execute("SELECT count(DISTINCT email) FROM members").fetchone()[0]
        messages: list[str] = []
        for table in ("members", "visits"):
            mask_table(conn, policy, table, KEY, log=messages.append)
        after = _catalog(conn)
        emails = conn.execute(
            "SELECT count(DISTINCT email), count(*) FILTER (WHERE email LIKE '%@mail.in') FROM members"
        )
        distinct, unmasked = emails.fetchone()
        set_aside = conn.execute("SELECT to_regclass('refresh_pipeline.set_aside_foreign_keys')").fetchone()[0]
    assert sum("TRUNCATE + INSERT" in m for m in messages) == 2, messages
    assert after == before
    assert (distinct, unmasked) == (emails_before, 0)
    assert set_aside is None, "the bookkeeping of set-aside keys goes once none is left"
    assert any("members_sponsor_fk" in line and "validated=true" in line for line in after)
    assert any("notes_member_fk" in line and "NOT VALID" in line for line in after), "stays as production had it"


def test_a_foreign_key_on_a_masked_key_is_validated_once_both_sides_are_masked(create_database):
    conninfo = create_database("swap_keys")
    policy = parse_policy("tables:\n  accounts: {phone: phone, owner: keep}\n  calls: {id: keep, phone: phone}\n")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE accounts (phone text PRIMARY KEY, owner text);"
            "CREATE TABLE calls (id int PRIMARY KEY, phone text REFERENCES accounts);"
            "INSERT INTO accounts SELECT '98765' || lpad(g::text, 5, '0'), 'o' FROM generate_series(1, 50) g;"
            "INSERT INTO calls SELECT g, '98765' || lpad((g % 50 + 1)::text, 5, '0') FROM generate_series(1, 200) g;"
        )
        install_functions(conn)
        validated = "SELECT convalidated FROM pg_constraint WHERE conname = 'calls_phone_fkey'"
        messages: list[str] = []
        mask_table(conn, policy, "accounts", KEY, log=messages.append)
        halfway = conn.execute(validated).fetchone()[0]
        mask_table(conn, policy, "calls", KEY, log=messages.append)
        finally_valid = conn.execute(validated).fetchone()[0]
        pending = conn.execute("SELECT to_regclass('refresh_pipeline.set_aside_foreign_keys')").fetchone()[0]
        orphans = conn.execute(
            "SELECT count(*) FROM calls c WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.phone = c.phone)"
        ).fetchone()[0]
    assert halfway is False, "calls still holds production phones while only accounts is masked"
    assert any("calls_phone_fkey on calls stays NOT VALID" in m for m in messages)
    assert finally_valid is True and pending is None and orphans == 0


def test_tables_that_cannot_be_rebuilt_exactly_keep_delete_and_insert(create_database):
    conninfo = create_database("swap_fallback")
    policy = parse_policy("tables:\n  tagged: {id: keep, email: email}\n  events: {id: keep, email: email}\n")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE tagged (id int PRIMARY KEY, email text);"
            "CREATE INDEX tagged_lower ON tagged (lower(email));"
            "ALTER INDEX tagged_lower ALTER COLUMN 1 SET STATISTICS 500;"
            "CREATE TABLE events (id int, email text) PARTITION BY RANGE (id);"
            "CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM (0) TO (100);"
            "INSERT INTO tagged SELECT g, 'u' || g || '@mail.in' FROM generate_series(1, 50) g;"
            "INSERT INTO events SELECT g, 'u' || g || '@mail.in' FROM generate_series(1, 50) g;"
        )
        install_functions(conn)
        before = _catalog(conn)
        messages: list[str] = []
        for table in ("tagged", "events"):
            mask_table(conn, policy, table, KEY, log=messages.append)
        unmasked = conn.execute(
            "SELECT (SELECT count(*) FROM tagged WHERE email LIKE '%@mail.in')"
            " + (SELECT count(*) FROM events WHERE email LIKE '%@mail.in')"
        ).fetchone()[0]
        after = _catalog(conn)
    assert any("DELETE + INSERT (index tagged_lower has a statistics target)" in m for m in messages), messages
    assert any("DELETE + INSERT (partitioned or a partition)" in m for m in messages), messages
    assert unmasked == 0 and after == before


def test_tables_pointing_at_each_other_mask_at_the_same_time(create_database):
    conninfo = create_database("swap_mutual")
    policy = parse_policy("tables:\n  left_side: {id: keep, other: keep, email: email}\n"
                          "  right_side: {id: keep, other: keep, email: email}\n")  # fmt: skip
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE left_side (id int PRIMARY KEY, other int, email text);"
            "CREATE TABLE right_side (id int PRIMARY KEY, other int REFERENCES left_side, email text);"
            "ALTER TABLE left_side ADD FOREIGN KEY (other) REFERENCES right_side;"
            "INSERT INTO left_side SELECT g, NULL, 'l' || g || '@mail.in' FROM generate_series(1, 20000) g;"
            "INSERT INTO right_side SELECT g, g, 'r' || g || '@mail.in' FROM generate_series(1, 20000) g;"
            "UPDATE left_side SET other = id;"
        )
        install_functions(conn)
        before = _catalog(conn)
    errors: list[BaseException] = []

    def mask(table: str) -> None:
        try:
            with psycopg.connect(conninfo, autocommit=True) as session:
                mask_table(session, policy, table, KEY)
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=mask, args=(table,)) for table in ("left_side", "right_side")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        after = _catalog(conn)
        masked = conn.execute("SELECT count(*) FROM refresh_pipeline.masked_tables").fetchone()[0]
    assert errors == []
    assert masked == 2 and after == before


def test_a_rebuild_the_database_refuses_falls_back_to_delete_and_insert(create_database):
    conninfo = create_database("swap_refused")
    policy = parse_policy("tables:\n  frozen: {id: keep, email: email}\n")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE frozen (id int PRIMARY KEY, email text UNIQUE);"
            "INSERT INTO frozen SELECT g, 'u' || g || '@mail.in' FROM generate_series(1, 50) g;"
        )
        install_functions(conn)
        conn.execute(
            "CREATE FUNCTION refuse_ddl() RETURNS event_trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'schema changes are frozen'; END $$;"
            "CREATE EVENT TRIGGER frozen_schema ON ddl_command_start WHEN TAG IN ('ALTER TABLE', 'DROP INDEX') "
            "EXECUTE FUNCTION refuse_ddl();"
            "ALTER EVENT TRIGGER frozen_schema ENABLE ALWAYS;"
        )
        before = _catalog(conn)
        messages: list[str] = []
        mask_table(conn, policy, "frozen", KEY, log=messages.append)
        unmasked = conn.execute("SELECT count(*) FROM frozen WHERE email LIKE '%@mail.in'").fetchone()[0]
        rows = conn.execute("SELECT count(*) FROM frozen").fetchone()[0]
        after = _catalog(conn)
    assert any("DELETE + INSERT (RaiseException: schema changes are frozen)" in m for m in messages), messages
    assert (unmasked, rows) == (0, 50) and after == before
