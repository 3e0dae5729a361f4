"""The whole refresh on the local platform, end to end, on real PostgreSQL."""

import configparser
import json
import re
import subprocess
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from refresh_pipeline.checks.records import latest_outcome
from refresh_pipeline.config import load_config
from refresh_pipeline.platforms.local import LocalPlatform
from refresh_pipeline_tests.graph import failed_check_names, materialize, materialized_keys, step_failure_messages
from refresh_pipeline_tests.helpers import (
    data_dump,
    leaked_identifiers,
    production_identifiers,
    row_counts,
    statistics_dump,
    table_fingerprint,
)

OPERATIONAL_TABLES = ["routes", "stops", "route_stops", "trips", "vehicles"]
DEMO_POLICY = Path(__file__).parents[1] / "refresh_pipeline" / "demo" / "policy.yaml"
_TICKET_IDENTITY_NUMBERS = re.compile(r"Aadhaar is (\d{4} \d{4} \d{4})|card (\d{4} \d{4} \d{4} \d{4})")


def _platform(config_path: Path) -> LocalPlatform:
    return LocalPlatform(load_config(config_path))


def _source_fingerprint(conninfo: str) -> dict[str, str]:
    return {table: table_fingerprint(conninfo, table) for table in row_counts(conninfo)}


def test_refresh_promotes_a_pii_free_copy_with_operational_data_identical(demo_source, write_config):
    config = write_config(demo_source)
    source_before = _source_fingerprint(demo_source)

    result = materialize(config, dg.DagsterInstance.ephemeral())

    assert result.success, step_failure_messages(result)
    platform = _platform(config)
    staging = platform.promoted()
    assert staging is not None and staging.startswith(load_config(config).database_prefix)
    staging_dsn = platform.conninfo(staging)
    emails, local_parts, phones = production_identifiers(demo_source)
    dump = data_dump(staging_dsn)
    leaks = leaked_identifiers(dump, emails, local_parts, phones)
    assert leaks == {"emails": set(), "local_parts": set(), "phones": set()}
    written, masked = _ticket_identity_numbers(data_dump(demo_source)), _ticket_identity_numbers(dump)
    assert written and len(masked) == len(written), "the tickets' Aadhaar and card numbers keep their shape"
    assert not {number for number in written if number in dump}, "and none of them is left"
    statistics = statistics_dump(staging_dsn)
    assert "@example.com" in statistics, "ANALYZE sampled the masked emails"
    sampled_leaks = leaked_identifiers(statistics, emails, local_parts, phones)
    assert sampled_leaks == {"emails": set(), "local_parts": set(), "phones": set()}, "nor the planner's samples"
    for table in OPERATIONAL_TABLES:
        assert table_fingerprint(staging_dsn, table) == table_fingerprint(demo_source, table), table
    assert row_counts(staging_dsn) == row_counts(demo_source)
    assert _source_fingerprint(demo_source) == source_before, "production must never be modified"
    with psycopg.connect(staging_dsn) as conn:
        audit_schema = conn.execute("SELECT to_regnamespace('refresh_pipeline_audit')").fetchone()[0]
        mapped = conn.execute("SELECT count(*) FROM refresh_pipeline.value_map").fetchone()[0]
        moved_listed = conn.execute("SELECT refresh_pipeline.moved_emails()").fetchone()[0]
        scratch = conn.execute(
            "SELECT array_agg(relname) FROM pg_class WHERE relnamespace = 'refresh_pipeline'::regnamespace "
            "AND relkind = 'r' AND relname NOT IN ('value_map', 'masked_tables', 'restored_row_counts', "
            "'restored_constraints', 'restored_indexes', 'restored_sequences', 'restored_comments',"
            " 'restored_violations')"
        ).fetchone()[0]
    assert audit_schema is None, "fingerprints must not reach the promoted database"
    assert mapped == 0 and moved_listed is None, "nor the value map's fingerprints of production values"
    assert scratch is None, "no scratch table (plaintext tokens, staged rows) reaches the promoted database"
    assert _storage_options(staging_dsn) == _storage_options(demo_source), "autovacuum resumed as in production"
    (tickets_audit,) = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "no_pii_left" and e.asset_key.path[-1] == "support_tickets"
    ]
    assert "callback_number" in tickets_audit.metadata["columns_scanned"].value, "a phone kept as bigint is audited"


def _ticket_identity_numbers(dump: str) -> set[str]:
    """The Aadhaar and card numbers the demo's customers write into tickets, as spelled there."""
    return {aadhaar or card for aadhaar, card in _TICKET_IDENTITY_NUMBERS.findall(dump)}


def _storage_options(conninfo: str) -> dict[str, list[str] | None]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT relname, reloptions FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
        ).fetchall()
    return dict(rows)


def test_staging_service_name_reaches_the_promoted_database(demo_source, write_config):
    config = write_config(demo_source)
    assert materialize(config, dg.DagsterInstance.ephemeral()).success
    platform = _platform(config)

    out = subprocess.run(
        ["psql", "service=staging", "-Atc", "SELECT current_database()"],
        env={"PGSERVICEFILE": str(platform.service_file), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )

    assert out.stdout.strip() == platform.promoted()


def test_second_refresh_promotes_a_new_database_and_drops_the_previous(demo_source, write_config):
    config = write_config(demo_source)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(config, instance).success
    platform = _platform(config)
    first = platform.promoted()

    assert materialize(config, instance).success

    second = platform.promoted()
    assert second != first
    assert [db.name for db in platform.list_managed()] == [second]
    assert len(platform.list_snapshots()) == 1


def test_a_previous_staging_the_pipeline_did_not_create_is_left_in_place_and_named(
    demo_source, write_config, pg_server
):
    config = write_config(demo_source)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(config, instance).success
    platform = _platform(config)
    hand_made = platform.promoted()
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:  # as if made by hand: no marker
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS NULL").format(sql.Identifier(hand_made)))

    result = materialize(config, instance)

    assert result.success, step_failure_messages(result)
    assert platform.promoted() != hand_made
    with psycopg.connect(platform.conninfo(hand_made)) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == hand_made, "still there"
    (retired,) = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["retired_staging"]]
    metadata = retired.materialization.metadata
    assert metadata["left_in_place"].value == [hand_made] and metadata["retired_databases"].value == []
    warnings = [r.user_message for r in instance.all_logs(result.run_id) if r.step_key == "retired_staging"]
    assert any(f"previous staging database {hand_made} was not created by refresh_pipeline" in m for m in warnings)


def test_names_and_policy_values_holding_a_percent_sign_refresh(create_database, write_config, tmp_path):
    source = create_database("percent_names")
    with psycopg.connect(source, autocommit=True) as conn:  # psycopg reads a bare % as a placeholder
        conn.execute(
            'CREATE TABLE "growth%" (id int PRIMARY KEY, "rate%" text, "email%" text, note text);'
            "INSERT INTO \"growth%\" SELECT g, g || '%', 'p' || g || '@gmail.com',"
            " 'call 98765 ' || lpad(g::text, 5, '0') FROM generate_series(1, 50) g"
        )
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        'tables:\n  "growth%":\n    id: keep\n    "rate%": keep\n    "email%": email\n'
        '    note: {transform: redact, value: "100% redacted"}\n'
    )
    config = write_config(source, policy=policy)

    result = materialize(config, dg.DagsterInstance.ephemeral())

    assert result.success, step_failure_messages(result)
    with psycopg.connect(_platform(config).conninfo(_platform(config).promoted())) as conn:
        rows = conn.execute('SELECT "rate%", "email%", note FROM "growth%" ORDER BY id LIMIT 1').fetchall()
    ((rate, email, note),) = rows
    assert (rate, note) == ("1%", "100% redacted") and email.endswith("@example.com")


def test_a_sampled_audit_promotes_and_says_what_share_it_read(demo_source, write_config):
    config = write_config(demo_source, audit_sample_percent=30)

    result = materialize(config, dg.DagsterInstance.ephemeral())

    assert result.success, step_failure_messages(result)
    (payments,) = [
        e for e in result.get_asset_check_evaluations() if e.asset_key == dg.AssetKey(["masked", "payments"])
    ]
    with psycopg.connect(demo_source) as conn:
        total = conn.execute("SELECT count(*) FROM payments").fetchone()[0]
    assert payments.metadata["sample_percent"].value == 30
    assert 0 < payments.metadata["rows_scanned"].value < total, "part of the rows read, the row count taken apart"


def test_uncovered_production_column_blocks_promotion(demo_source, create_database, write_config, pg_server):
    source = create_database("prod_extra_column")
    subprocess.run(f"pg_dump -d '{demo_source}' | psql -q -d '{source}'", shell=True, check=True)
    with psycopg.connect(source) as conn:
        conn.execute("ALTER TABLE customers ADD COLUMN passport_number text DEFAULT 'P1234567'")
        conn.execute("ALTER TABLE customers ADD COLUMN alt_contact text")
        conn.execute("UPDATE customers SET alt_contact = email")
        conn.execute("CREATE UNIQUE INDEX customers_name_id ON customers (full_name, customer_id)")
        emails = [row[0] for row in conn.execute("SELECT email FROM customers")]
    config = write_config(source)
    instance = dg.DagsterInstance.ephemeral()

    result = materialize(config, instance)

    assert not result.success
    assert "restored_instance:policy_covers_every_column" in failed_check_names(result)
    audit = latest_outcome(instance, dg.AssetCheckKey(dg.AssetKey(["masked", "customers"]), "no_pii_left"), "any")
    assert (audit.passed, audit.reason) == (None, f"not run: run {result.run_id} ended (failure) before reaching it")
    assert "staging_database" not in materialized_keys(result)
    assert not any(k.startswith("masked/") for k in materialized_keys(result)), (
        "nothing is masked after a failed coverage check"
    )
    assert _platform(config).promoted() is None
    evaluation = next(e for e in result.get_asset_check_evaluations() if not e.passed)
    assert evaluation.metadata["uncovered_columns"].value == [
        "public.customers.passport_number",
        "public.customers.alt_contact",
    ]
    snippet = evaluation.metadata["policy_snippet"].value
    assert "passport_number: redact" in snippet
    sampled = f"{len(emails):,} of {len(emails):,} sampled are emails"
    assert f"alt_contact: email  # REVIEW: text; values: {sampled}" in snippet
    assert not any(email in snippet for email in emails), "counts only, no value"
    (warning,) = evaluation.metadata["unique_index_warnings"].value
    assert warning.startswith("public.customers: unique index customers_name_id on (full_name, customer_id)")


@pytest.fixture
def leaky_policy(tmp_path: Path) -> Path:
    policy = tmp_path / "leaky_policy.yaml"
    policy.write_text(DEMO_POLICY.read_text().replace("passenger_email: email", "passenger_email: keep"))
    return policy


def test_pii_left_in_a_kept_column_fails_the_check_and_blocks_promotion(demo_source, write_config, leaky_policy):
    config = write_config(demo_source, policy=leaky_policy)

    result = materialize(config, dg.DagsterInstance.ephemeral())

    assert failed_check_names(result) == {"masked/bookings:no_pii_left"}
    assert "staging_database" not in materialized_keys(result)
    assert _platform(config).promoted() is None
    evaluation = next(e for e in result.get_asset_check_evaluations() if not e.passed)
    findings = evaluation.metadata["findings"].value
    assert findings["passenger_email"]["original_values"] > 0
    assert findings["passenger_email"]["email"] > 0


@pytest.mark.parametrize(
    ("change", "failing_check", "column"),
    [
        (('        "$.customer.phone": phone\n', ""), "masked/payments:no_pii_left", "gateway_response"),
        (("    body: scrub", "    body: keep"), "masked/support_tickets:no_pii_left", "body"),
        (("    upi_handle: upi", "    upi_handle: keep"), "masked/payments:no_pii_left", "upi_handle"),
    ],
    ids=["json-path-left-out", "phone-in-free-text-kept", "upi-column-kept"],
)
def test_each_kind_of_leak_fails_its_check_and_is_not_promoted(
    demo_source, write_config, tmp_path, change, failing_check, column
):
    policy = tmp_path / "leaky.yaml"
    text = DEMO_POLICY.read_text()
    assert change[0] in text
    policy.write_text(text.replace(*change))
    config = write_config(demo_source, policy=policy)

    result = materialize(config, dg.DagsterInstance.ephemeral())

    assert failed_check_names(result) == {failing_check}
    evaluation = next(e for e in result.get_asset_check_evaluations() if not e.passed)
    assert evaluation.metadata["findings"].value[column]["original_values"] > 0
    assert _platform(config).promoted() is None


def _masked_not_audited(config: Path, instance: dg.DagsterInstance) -> str:
    """Snapshot, restore and the masked tables (with their checks) on `instance`, not the masked database nor
    promotion; returns the restored database's conninfo."""
    upstream = dg.AssetSelection.assets("production_snapshot", "restored_instance") | dg.AssetSelection.key_prefixes(
        "masked"
    )
    assert materialize(config, instance, selection=upstream).success
    restored = json.loads((load_config(config).work_dir / "state.json").read_text())["restored"]["database"]
    return _platform(config).conninfo(restored)


def test_an_identity_number_in_a_scrubbed_column_after_masking_fails_its_check(demo_source, write_config):
    """scrub masks the Aadhaar and card numbers in free text into forms no detector takes for one, so the audit
    looks for them there: one written into a masked ticket (no production fingerprint has it) fails."""
    config = write_config(demo_source)
    instance = dg.DagsterInstance.ephemeral()
    with psycopg.connect(_masked_not_audited(config, instance), autocommit=True) as conn:
        conn.execute("UPDATE support_tickets SET body = body || ' Aadhaar 2345 6789 0124.' WHERE ticket_id = 1")

    result = materialize(config, instance, selection="masked/support_tickets")

    assert failed_check_names(result) == {"masked/support_tickets:no_pii_left"}
    evaluation = next(e for e in result.get_asset_check_evaluations() if not e.passed)
    assert evaluation.metadata["findings"].value["body"]["aadhaar"] == 1


def test_a_dropped_foreign_key_fails_integrity_and_blocks_promotion(demo_source, write_config):
    config = write_config(demo_source)
    instance = dg.DagsterInstance.ephemeral()
    with psycopg.connect(_masked_not_audited(config, instance), autocommit=True) as conn:
        conn.execute("ALTER TABLE bookings DROP CONSTRAINT bookings_customer_id_fkey")

    result = materialize(config, instance, selection=["masked_database", "staging_database"])

    assert failed_check_names(result) == {"masked_database:integrity_intact"}
    assert "staging_database" not in materialized_keys(result)
    evaluation = result.get_asset_check_evaluations()[0]
    assert any("bookings_customer_id_fkey is missing" in p for p in evaluation.metadata["problems"].value)
    assert _platform(config).promoted() is None


def test_audit_report_is_written_for_a_promoted_and_for_a_refused_database(demo_source, write_config, leaky_policy):
    good = write_config(demo_source)
    assert materialize(good, dg.DagsterInstance.ephemeral()).success
    promoted = _platform(good).promoted()
    report = json.loads((load_config(good).work_dir / "reports" / promoted / "audit_report.json").read_text())
    assert report["passed"] is True and report["database"] == promoted
    assert {c["check"] for c in report["checks"]} >= {
        "masked/customers:no_pii_left",
        "masked_database:integrity_intact",
    }
    customers = next(t for t in report["tables"] if t["table"] == "public.customers")
    assert customers["rules"]["email"] == "email" and customers["status"] == "masked"
    markdown = (load_config(good).work_dir / "reports" / promoted / "audit_report.md").read_text()
    assert "Verdict: **PASSED**" in markdown

    bad = write_config(demo_source, policy=leaky_policy)
    instance = dg.DagsterInstance.ephemeral()
    assert not materialize(bad, instance).success
    assert not materialize(bad, instance, selection=[dg.AssetKey("staging_database")]).success
    restored = json.loads((load_config(bad).work_dir / "state.json").read_text())["restored"]["database"]
    refused = json.loads((load_config(bad).work_dir / "reports" / restored / "audit_report.json").read_text())
    assert refused["passed"] is False
    bookings = next(c for c in refused["checks"] if c["check"] == "masked/bookings:no_pii_left")
    assert bookings["passed"] is False and bookings["findings"]["passenger_email"]["original_values"] > 0
    assert "@" not in json.dumps(bookings["findings"]), "findings carry counts and locations, never values"


def test_promotion_in_a_later_run_is_refused_after_a_failed_check(demo_source, write_config, leaky_policy):
    config = write_config(demo_source, policy=leaky_policy)
    instance = dg.DagsterInstance.ephemeral()
    assert not materialize(config, instance).success

    result = materialize(config, instance, selection=[dg.AssetKey("staging_database")])

    assert not result.success
    message = step_failure_messages(result)["staging_database"]
    assert "refusing to promote" in message
    assert "masked/bookings:no_pii_left: failed" in message
    assert _platform(config).promoted() is None


def test_promotion_is_refused_when_checks_audited_another_database(demo_source, write_config):
    config = write_config(demo_source)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(config, instance).success
    # A new restore that nobody audited yet: the old (passing) evaluations must not vouch for it.
    assert materialize(config, instance, selection=["production_snapshot", "restored_instance"]).success

    result = materialize(config, instance, selection=[dg.AssetKey("staging_database")])

    assert not result.success
    assert "last evaluated on" in step_failure_messages(result)["staging_database"]


def test_rematerializing_one_table_does_not_mask_it_twice(demo_source, write_config):
    config = write_config(demo_source)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(config, instance).success
    staging_dsn = _platform(config).conninfo(_platform(config).promoted())
    before = table_fingerprint(staging_dsn, "customers")

    result = materialize(config, instance, selection="masked/customers")

    assert result.success
    assert materialized_keys(result) == {"masked/customers"}
    assert result.asset_materializations_for_node("masked__customers")[0].metadata["status"].value == "already_masked"
    assert table_fingerprint(staging_dsn, "customers") == before


def test_service_file_keeps_other_entries_and_holds_no_password(demo_source, write_config):
    config = write_config(demo_source)
    platform = _platform(config)
    platform.service_file.parent.mkdir(parents=True, exist_ok=True)
    platform.service_file.write_text("[analytics]\nhost=db.internal\ndbname=warehouse\n")

    assert materialize(config, dg.DagsterInstance.ephemeral()).success

    services = configparser.ConfigParser()
    services.read(platform.service_file)
    assert services["analytics"]["dbname"] == "warehouse"
    assert services["staging"]["dbname"] == platform.promoted()
    assert "password" not in services["staging"]


QUOTED_SCHEMA = """
CREATE SCHEMA "Sales";
CREATE DOMAIN "Sales".email_address AS varchar(80) CHECK (VALUE LIKE '%@%');
CREATE TYPE "Sales".contact AS (label text, email text);
CREATE TABLE "Sales"."Customer Accounts" (
    "Account ID" int PRIMARY KEY, "E-mail" "Sales".email_address NOT NULL, "Full Name" text, extra "Sales".contact
);
CREATE TABLE "Sales"."Orders" (id int PRIMARY KEY, "Account ID" int REFERENCES "Sales"."Customer Accounts",
                               "Contact's Email" text);
INSERT INTO "Sales"."Customer Accounts"
    SELECT g, 'user' || g || '@gmail.com', 'User ' || g, ROW('home', 'h' || g || '@home.in')::"Sales".contact
    FROM generate_series(1, 300) g;
INSERT INTO "Sales"."Orders"
    SELECT g, 1 + g % 300, 'user' || (1 + g % 300) || '@gmail.com' FROM generate_series(1, 900) g;
"""
QUOTED_POLICY = """
tables:
  Sales.Customer Accounts: {Account ID: keep, E-mail: email, Full Name: name, extra: keep}
  Sales.Orders: {id: keep, Account ID: keep, Contact's Email: email}
"""


def test_tables_named_in_any_way_are_refreshed_and_a_row_type_left_with_pii_stops_promotion(
    create_database, write_config, tmp_path
):
    """Spaces, hyphens and quotes in names (Dagster takes none of them: the assets get safe names), a domain,
    and a row type the policy wrongly keeps: its emails are found and staging is not promoted."""
    source = create_database("quoted_names")
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(QUOTED_SCHEMA)
    policy = tmp_path / "quoted.yaml"
    policy.write_text(QUOTED_POLICY)
    config = write_config(source, policy=policy)

    result = materialize(config, dg.DagsterInstance.ephemeral())
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(QUOTED_POLICY.replace("extra: keep", "extra: null"))
    fixed_result = materialize(write_config(source, policy=fixed), dg.DagsterInstance.ephemeral())

    assert failed_check_names(result) == {"masked/Sales__Customer_Accounts_c7a9db26:no_pii_left"}
    assert "masked/Sales__Orders" in materialized_keys(result)
    assert fixed_result.success, step_failure_messages(fixed_result)
    staging = _platform(config).promoted()
    with psycopg.connect(_platform(config).conninfo(staging)) as conn:
        left = conn.execute(
            'SELECT count(*) FROM "Sales"."Customer Accounts" a JOIN "Sales"."Orders" o USING ("Account ID")'
            ' WHERE a."E-mail" LIKE \'%@gmail.com\' OR o."Contact\'s Email" <> a."E-mail" OR a.extra IS NOT NULL'
        ).fetchone()[0]
    assert left == 0, "masked, still joining on the masked email, and the row type nulled"
