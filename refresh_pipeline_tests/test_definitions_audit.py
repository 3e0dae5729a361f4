"""Production PII written into the database's definitions (views, functions, defaults, constraints, policies,
triggers, rules, comments) is found by the no_pii_in_definitions audit, on real PostgreSQL."""

import dagster as dg
import psycopg

from refresh_pipeline.audit.definitions import audit_definitions
from refresh_pipeline.config import load_config
from refresh_pipeline.masking.catalog import read_tables
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.originals import record_originals
from refresh_pipeline.masking.policy import parse_policy
from refresh_pipeline.masking.runner import mask_table
from refresh_pipeline.platforms.local import LocalPlatform
from refresh_pipeline_tests.graph import failed_check_names, materialize, materialized_keys
from refresh_pipeline_tests.helpers import database_with

KEY = MaskingKey("definitions-audit-key-0123456789")
VIP = "ravi.kumar@gmail.com"
PHONE = "9876543210"
SCHEMA = f"""
CREATE EXTENSION hstore;  -- an extension's own functions and comments are not read
CREATE TABLE customers (id int PRIMARY KEY, email text, phone text, tier text DEFAULT 'basic');
INSERT INTO customers VALUES (1, '{VIP}', '+91 {PHONE[:5]} {PHONE[5:]}'), (2, 'asha@yahoo.co.in', '9123456789');
CREATE VIEW vip_customers AS SELECT * FROM customers WHERE email IN ('{VIP}', 'support@cityflo.com');
CREATE FUNCTION notify_vip() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('sms', '{PHONE}'); RETURN NEW; END $$;
CREATE TRIGGER vip_changed AFTER UPDATE ON customers FOR EACH ROW WHEN (NEW.email = '{VIP.upper()}')
    EXECUTE FUNCTION notify_vip();
ALTER TABLE customers ADD CONSTRAINT not_the_ceo CHECK (phone <> '+91 {PHONE}');
COMMENT ON COLUMN customers.email IS 'e.g. {VIP}';
CREATE DOMAIN not_the_vip AS text CHECK (VALUE <> '{VIP}');
COMMENT ON TABLE customers IS 'write to support@cityflo.com';  -- the company's own address: no customer's
CREATE POLICY own_rows ON customers USING (email <> 'asha@yahoo.co.in');
"""
POLICY = "tables:\n  customers: {id: keep, email: email, phone: phone, tier: keep}\n"


def _masked(create_database, prefix: str, schema: str = SCHEMA, policy_text: str = POLICY) -> str:
    """A restored database (`schema`) with production's fingerprints recorded and its one table masked."""
    conninfo = database_with(create_database, prefix, schema)
    policy = parse_policy(policy_text)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        record_originals(conn, list(read_tables(conn).values()), policy, KEY)
        (table,) = policy.tables.values()
        mask_table(conn, policy, table.table, KEY)
    return conninfo


def test_production_values_in_definitions_are_found_and_the_company_s_own_are_not(create_database):
    with psycopg.connect(_masked(create_database, "definitions"), autocommit=True) as conn:
        audit = audit_definitions(conn, KEY, allowlist=())
        allowed = audit_definitions(conn, KEY, allowlist=(VIP.upper(), "+91 98765 43210", "asha@yahoo.co.in"))
    assert audit.findings == {
        "comment on column email of table customers": 1,
        "constraint not_the_ceo on customers": 1,
        "domain not_the_vip": 1,
        "function notify_vip()": 1,
        "policy own_rows on customers": 1,
        "trigger vip_changed on customers": 1,
        "view vip_customers": 1,
    }
    assert audit.objects_read >= 8 and not audit.passed
    assert allowed.passed, "the allowlist applies as for tables, in any spelling"


def test_production_s_scheduled_job_commands_are_read_too(create_database):
    """An RDS restore keeps production's pg_cron jobs (deactivated) with their commands; the instance's clearing
    copies the commands beside the fingerprints, and the audit reads them as definitions."""
    with psycopg.connect(_masked(create_database, "definitions_jobs"), autocommit=True) as conn:
        before = audit_definitions(conn, KEY, allowlist=())
        conn.execute(
            "CREATE TABLE refresh_pipeline_audit.scheduled_job_commands (job text NOT NULL, command text NOT NULL)"
        )
        conn.execute(
            "INSERT INTO refresh_pipeline_audit.scheduled_job_commands VALUES "
            f"('vip-digest in app', 'SELECT send_digest(''{VIP}'')'), ('vacuum in postgres', 'VACUUM')"
        )
        audit = audit_definitions(conn, KEY, allowlist=())
    assert audit.objects_read == before.objects_read + 2
    assert audit.findings == {**before.findings, "pg_cron job vip-digest in app": 1}


def test_a_database_with_no_production_value_in_its_definitions_passes(create_database):
    conninfo = _masked(
        create_database,
        "definitions_clean",
        "CREATE TABLE riders (id int PRIMARY KEY, email text); INSERT INTO riders VALUES (1, 'r@gmail.com');"
        "CREATE VIEW active AS SELECT * FROM riders WHERE email LIKE '%@%';",
        "tables:\n  riders: {id: keep, email: email}\n",
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        audit = audit_definitions(conn, KEY, allowlist=())
    assert audit.passed and audit.known_value_audit and audit.objects_read == 1


def test_a_customer_s_email_in_a_comment_blocks_promotion(create_database, write_config, tmp_path):
    production = database_with(
        create_database,
        "definitions_refresh",
        "CREATE TABLE riders (id int PRIMARY KEY, email text);"
        f"INSERT INTO riders VALUES (1, '{VIP}'), (2, 'asha@yahoo.co.in');"
        f"COMMENT ON COLUMN riders.email IS 'the first rider was {VIP}';",
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  riders: {id: keep, email: email}\n")
    config = write_config(production, policy=policy)

    result = materialize(config, dg.DagsterInstance.ephemeral())

    assert failed_check_names(result) == {"masked_database:no_pii_in_definitions"}
    evaluation = next(e for e in result.get_asset_check_evaluations() if not e.passed)
    assert evaluation.metadata["findings"].value == {"comment on column email of table riders": 1}
    assert "staging_database" not in materialized_keys(result)
    assert LocalPlatform(load_config(config)).promoted() is None
