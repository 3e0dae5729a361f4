"""Large objects (pg_largeobject), on real PostgreSQL: files beside the tables that no column rule masks. The
policy must say `remove` or `keep`; removed ones are gone before masking starts, kept ones are audited."""

import psycopg
import pytest

from refresh_pipeline.audit.large_objects import scan_large_objects
from refresh_pipeline.cli import main
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.masking import large_objects
from refresh_pipeline.masking.catalog import read_tables
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.large_objects import large_objects_problem, read_large_objects, remove_large_objects
from refresh_pipeline.masking.originals import record_originals
from refresh_pipeline.masking.policy import parse_policy
from refresh_pipeline_tests.helpers import database_with, refresh_through_cli

KEY = MaskingKey("large-objects-test-key-0123456789")
# Documents 1-20 quote their customer's email and phone; 21-25 hold nothing personal; 26 a stranger's email.
SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, email text, phone text);
INSERT INTO customers SELECT g, 'rider' || g || '@gmail.com', '+91 98765 ' || lpad(g::text, 5, '0')
FROM generate_series(1, 20) g;
CREATE TABLE kyc_documents (id int PRIMARY KEY, customer_id int REFERENCES customers, scan oid);
INSERT INTO kyc_documents
SELECT g, g, lo_from_bytea(0, convert_to('KYC of rider' || g || '@gmail.com, mobile 98765' || lpad(g::text, 5, '0')
                                         || ' ' || repeat('scanned page ', 50), 'UTF8'))
FROM generate_series(1, 20) g;
SELECT lo_from_bytea(0, '\\x89504e470d0a1a0a00000000'::bytea || convert_to('route map, stop 12', 'UTF8'))
FROM generate_series(21, 25);
SELECT lo_from_bytea(0, convert_to('forwarded by a.stranger@yahoo.com', 'UTF8'));
"""
POLICY_TEXT = """
tables:
  customers: {id: keep, email: email, phone: phone}
  kyc_documents: {id: keep, customer_id: keep, scan: keep}
"""


def _policy(choice: str | None):
    return parse_policy((f"large_objects: {choice}\n" if choice else "") + POLICY_TEXT)


@pytest.fixture
def restored(create_database) -> str:
    conninfo = database_with(create_database, "large_objects", SCHEMA)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        record_originals(conn, list(read_tables(conn).values()), _policy("keep"), KEY)
    return conninfo


def test_the_policy_must_say_what_becomes_of_large_objects(restored, create_database):
    with psycopg.connect(restored) as conn:
        found = read_large_objects(conn, read_tables(conn))
    problem = large_objects_problem(_policy(None), found)
    assert found.count == 26
    assert problem and "26 large object(s)" in problem and "public.kyc_documents.scan" in problem
    assert "large_objects: remove" in problem and "large_objects: keep" in problem
    assert large_objects_problem(_policy("remove"), found) is None
    assert large_objects_problem(_policy("keep"), found) is None
    without = database_with(create_database, "no_large_objects", "CREATE TABLE t (id int)")
    with psycopg.connect(without) as conn:
        assert large_objects_problem(_policy(None), read_large_objects(conn, read_tables(conn))) is None


def test_large_objects_takes_remove_or_keep_only():
    with pytest.raises(RefreshError, match=r"line 1: large_objects must be `remove` .* or `keep`"):
        parse_policy("large_objects: drop\n" + POLICY_TEXT)


def test_remove_unlinks_every_large_object_a_batch_at_a_time(restored, monkeypatch):
    monkeypatch.setattr(large_objects, "UNLINK_BATCH", 7)
    messages: list[str] = []
    with psycopg.connect(restored, autocommit=True) as conn:
        removed = remove_large_objects(conn, messages.append)
        left = conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0]
        again = remove_large_objects(conn, messages.append)
    assert (removed, left, again) == (26, 0, 0)
    assert messages and messages[-1].startswith("removing large objects: 26 large objects (100%)")


def test_the_audit_names_the_large_objects_holding_production_pii(restored):
    with psycopg.connect(restored, autocommit=True) as conn:
        holding = conn.execute("SELECT scan::text FROM kyc_documents ORDER BY scan LIMIT 5").fetchall()
        audit = scan_large_objects(conn, KEY, allowlist=(), log=lambda _m: None)
        scratch_left = conn.execute("SELECT to_regclass('refresh_pipeline_audit.large_object_heads')").fetchone()[0]
    assert audit.large_objects == 26 and not audit.passed
    assert audit.findings.known_values == 40, "each of the 20 documents: its customer's email and phone"
    assert audit.findings.patterns == {"email": 21, "phone": 20}, "the stranger's email is email-shaped"
    assert list(audit.findings.locations) == [oid for (oid,) in holding]
    assert scratch_left is None


def test_large_objects_without_pii_pass_the_audit(restored):
    with psycopg.connect(restored, autocommit=True) as conn:
        conn.execute("SELECT lo_unlink(scan) FROM kyc_documents")
        conn.execute("SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE lo_get(oid) LIKE '%stranger%'")
        audit = scan_large_objects(conn, KEY, allowlist=(), log=lambda _m: None)
    assert audit.large_objects == 5 and audit.passed


def _production(create_database) -> str:
    conninfo = create_database("lo_production")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SCHEMA)
    return conninfo


def test_a_refresh_removes_them_or_fails_on_the_kept_ones(create_database, pg_server, write_config, tmp_path, capsys):
    production = _production(create_database)
    policies = {}
    for choice in ("keep", "remove"):
        policies[choice] = tmp_path / f"{choice}.yaml"
        policies[choice].write_text(f"large_objects: {choice}\n" + POLICY_TEXT)

    assert main(["run", "--config", str(write_config(production, policies["keep"])), "--in-process"]) == 1
    err = capsys.readouterr().err
    assert "failed check: masked_database:no_pii_in_large_objects: PII in large objects (" in err
    assert "the first large objects holding it:" in err

    config = write_config(production, policies["remove"])
    staging = refresh_through_cli(config, capsys)
    with psycopg.connect(pg_server.dsn(staging)) as conn:
        assert conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0] == 0
    with psycopg.connect(production) as conn:
        assert conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0] == 26, "production untouched"
