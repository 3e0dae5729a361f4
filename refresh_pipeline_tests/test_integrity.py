"""The integrity check on real PostgreSQL: it passes on a faithful masking and names every kind of damage."""

import psycopg
import pytest

from refresh_pipeline.audit.integrity import check_integrity, record_baseline
from refresh_pipeline.masking.catalog import count_rows, read_tables
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.policy import parse_policy
from refresh_pipeline.masking.runner import install_functions, mask_table

KEY = MaskingKey("integrity-test-key-0123456789")
SCHEMA = """
CREATE TABLE accounts (phone text PRIMARY KEY, owner text NOT NULL, credit int CHECK (credit >= 0));
CREATE TABLE calls (id serial PRIMARY KEY, phone text NOT NULL REFERENCES accounts, seconds int);
CREATE INDEX calls_phone ON calls (phone);
INSERT INTO accounts SELECT '98765' || lpad(g::text, 5, '0'), 'owner ' || g, g FROM generate_series(1, 200) g;
INSERT INTO calls (phone, seconds)
    SELECT '98765' || lpad((g % 200 + 1)::text, 5, '0'), g FROM generate_series(1, 1000) g;
"""
CONSISTENT = "tables:\n  accounts:\n    phone: phone\n    owner: name\n    credit: keep\n" \
             "  calls:\n    id: keep\n    phone: phone\n    seconds: keep\n"  # fmt: skip


@pytest.fixture
def db(create_database):
    conninfo = create_database("integrity")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SCHEMA)
        _record_restore(conn)
    return conninfo


def _record_restore(conn: psycopg.Connection) -> None:
    """What the restore step records of a restored database: row counts, then the baseline."""
    install_functions(conn)
    for info in read_tables(conn).values():
        conn.execute(
            "INSERT INTO refresh_pipeline.restored_row_counts VALUES (%s, %s)",
            (info.qualified_name, count_rows(conn, info)),
        )
    record_baseline(conn)


def _mask(conninfo: str, policy_text: str) -> None:
    policy = parse_policy(policy_text)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for table in ("accounts", "calls"):
            mask_table(conn, policy, table, KEY)


def _check(conninfo: str):
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return check_integrity(conn)


def test_consistent_masking_of_a_key_that_is_pii_keeps_every_constraint(db):
    _mask(db, CONSISTENT)
    report = _check(db)
    assert report.passed, report.problems
    assert report.constraints_validated == 4  # 2 primary keys, 1 foreign key, 1 CHECK
    assert report.tables_counted == 2


def test_inconsistent_masking_of_a_foreign_key_is_caught(db):
    _mask(db, CONSISTENT.replace("    phone: phone\n    seconds", "    phone: hash\n    seconds"))
    report = _check(db)
    assert not report.passed
    assert any(
        "foreign key calls_phone_fkey on calls: 1000 row(s) point at no accounts row" in p for p in report.problems
    )


def test_a_dropped_constraint_or_index_is_caught(db):
    _mask(db, CONSISTENT)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("ALTER TABLE calls DROP CONSTRAINT calls_phone_fkey")
        conn.execute("DROP INDEX calls_phone")
    problems = _check(db).problems
    assert any(p.startswith("constraint public.calls.calls_phone_fkey is missing") for p in problems)
    assert any(p.startswith("index public.calls_phone is missing") for p in problems)


def test_changed_sequences_and_row_counts_are_caught(db):
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SELECT setval('calls_id_seq', 5000)")
        conn.execute("DELETE FROM calls WHERE id <= 10")
    problems = _check(db).problems
    assert any(p.startswith("sequence public.calls_id_seq changed: 1000 -> 5000") for p in problems)
    assert "public.calls has 990 rows; 1000 were restored" in problems


def test_check_constraints_are_revalidated_on_the_data(db):
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("ALTER TABLE calls ADD CONSTRAINT positive_seconds CHECK (seconds > 500) NOT VALID")
        conn.execute("INSERT INTO refresh_pipeline.restored_constraints VALUES "
                     "('public.calls', 'positive_seconds', 'CHECK ((seconds > 500)) NOT VALID')")  # fmt: skip
    problems = _check(db).problems
    assert "check constraint positive_seconds on calls: 500 row(s) violate it" in problems


def test_revalidation_spread_over_a_pool_reports_what_one_session_does(db):
    _mask(db, CONSISTENT.replace("    phone: phone\n    seconds", "    phone: hash\n    seconds"))
    with psycopg.connect(db, autocommit=True) as conn:
        alone = check_integrity(conn)
        pooled = check_integrity(conn, connect=lambda: psycopg.connect(db, autocommit=True), workers=2)
    assert pooled.problems == alone.problems and not pooled.passed
    assert pooled.constraints_validated == alone.constraints_validated == 4


def test_a_key_pointing_at_a_partitioned_table_is_revalidated_once_as_a_whole(create_database):
    conninfo = create_database("integrity_partitioned")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE lines (phone text, region text, PRIMARY KEY (phone, region)) PARTITION BY LIST (region);"
            "CREATE TABLE lines_north PARTITION OF lines FOR VALUES IN ('north');"
            "CREATE TABLE lines_rest PARTITION OF lines DEFAULT;"
            "INSERT INTO lines SELECT '98765' || lpad(g::text, 5, '0'), (ARRAY['north', 'south'])[1 + g % 2]"
            " FROM generate_series(1, 100) g;"
            # PostgreSQL adds one internal key per partition of `lines` (each pointing at a partition only).
            "CREATE TABLE bills (id int PRIMARY KEY, phone text, region text,"
            " FOREIGN KEY (phone, region) REFERENCES lines);"
            "INSERT INTO bills SELECT row_number() OVER (), phone, region FROM lines"
        )
        _record_restore(conn)
        report = check_integrity(conn)
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE bills SET phone = '9000000000' WHERE id = 1")
        broken = check_integrity(conn)
    assert report.passed, report.problems
    assert not broken.passed
    assert any("bills_phone_region_fkey on bills: 1 row(s) point at no lines row" in p for p in broken.problems)


def test_rows_breaking_a_not_valid_constraint_in_production_are_not_the_maskings(create_database):
    """Production added a key and a CHECK NOT VALID over older rows breaking them: those rows are allowed, one
    more is not."""
    conninfo = create_database("integrity_not_valid")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE riders (id int PRIMARY KEY, legacy text);"
            "INSERT INTO riders SELECT g, CASE WHEN g % 10 = 0 THEN 'bad' ELSE 'good' END"
            " FROM generate_series(1, 100) g;"
            "ALTER TABLE riders ADD CONSTRAINT legacy_ok CHECK (legacy = 'good') NOT VALID;"
            "CREATE TABLE trips (id int PRIMARY KEY, rider_id int);"
            "INSERT INTO trips SELECT g, g FROM generate_series(1, 105) g;"
            "ALTER TABLE trips ADD CONSTRAINT trips_rider FOREIGN KEY (rider_id) REFERENCES riders NOT VALID;"
        )
        _record_restore(conn)
        report = check_integrity(conn)
        conn.execute("SET session_replication_role = replica")
        conn.execute(  # a masking breaking it one more time, as it would with the constraint set aside
            "ALTER TABLE riders DROP CONSTRAINT legacy_ok; UPDATE riders SET legacy = 'worse' WHERE id = 1;"
            "ALTER TABLE riders ADD CONSTRAINT legacy_ok CHECK (legacy = 'good') NOT VALID"
        )
        conn.execute("UPDATE trips SET rider_id = 1000 WHERE id = 2")
        broken = check_integrity(conn)
    assert report.passed, report.problems
    assert report.constraints_validated == 4
    assert report.broken_as_restored == {"riders legacy_ok": 10, "trips trips_rider": 5}, "said, not failed"
    assert sorted(broken.problems) == [
        "check constraint legacy_ok on riders: 11 row(s) violate it (10 at restore: NOT VALID)",
        "foreign key trips_rider on trips: 6 row(s) point at no riders row (5 at restore: NOT VALID)",
    ]
