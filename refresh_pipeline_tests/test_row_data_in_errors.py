"""Errors never carry production rows into Dagster, the CLI or exceptions: real server errors that quote
data come out with the values withheld and what failed kept."""

import subprocess
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from refresh_pipeline.config import load_config
from refresh_pipeline.definitions import build_definitions
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.platforms.local import LocalPlatform
from refresh_pipeline.row_data_in_errors import WITHHELD, log_tail_without_row_data, withhold_row_data
from refresh_pipeline_tests.graph import materialize, materialized_keys, step_failure_messages

SECRET_EMAIL = "ravi.kumar@gmail.com"
SECRET_PHONE = "98765432101"
DEMO_POLICY = Path(__file__).parents[1] / "refresh_pipeline" / "demo" / "policy.yaml"


def _server_error(conninfo: str, statement: str, params: tuple[object, ...] = (), copy: str | None = None) -> str:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS people (id int PRIMARY KEY, email text UNIQUE, note text"
            " CHECK (note NOT LIKE '%%call%%'), friend int REFERENCES people (id), born date)"
        )
        conn.execute(
            "CREATE OR REPLACE FUNCTION refuse(e text) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN"
            " RAISE EXCEPTION 'bad email %', e USING DETAIL = 'the email ' || e, HINT = 'fix ' || e; END $$"
        )
        conn.execute(
            "CREATE OR REPLACE FUNCTION own_refusal(transform text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN"
            " RAISE EXCEPTION 'refresh_pipeline.mask_text: unknown transform %', transform; END $$"
        )
        conn.execute("TRUNCATE people")
        conn.execute("INSERT INTO people (id, email) VALUES (1, %s)", (SECRET_EMAIL,))
        with pytest.raises(psycopg.Error) as raised:
            if copy is None:
                conn.execute(statement, params)
            else:
                with conn.cursor().copy(statement) as copying:
                    copying.write(copy)
    return str(raised.value)


@pytest.mark.parametrize(
    ("statement", "params", "copy", "kept"),
    [
        ("INSERT INTO people (id, email) VALUES (2, %s)", (SECRET_EMAIL,), None, "Key (email)=(withheld) already"),
        ("INSERT INTO people (id, friend) VALUES (2, %s)", (int(SECRET_PHONE[:9]),), None, "is not present in table"),
        (
            "INSERT INTO people (id, note) VALUES (2, %s)",
            (f"please call\n{SECRET_EMAIL} on {SECRET_PHONE}",),
            None,
            'violates check constraint "people_note_check"',
        ),
        ("SELECT %s::date", (SECRET_EMAIL,), None, "invalid input syntax for type date"),
        ("SELECT %s::int", (SECRET_PHONE,), None, "is out of range for type integer"),
        ("SELECT %s::text[]", ("{" + SECRET_EMAIL,), None, "malformed array literal"),
        ("SELECT %s::jsonb", (f'{{"email": "{SECRET_EMAIL}" x}}',), None, "JSON data, line 1"),
        ("COPY people (id, email) FROM STDIN", (), f"2\t{SECRET_EMAIL}\textra\n", "COPY people, line 1"),
        ("COPY people (id, born) FROM STDIN", (), f"2\t{SECRET_EMAIL}\n", "COPY people, line 1, column born"),
        ("CREATE UNIQUE INDEX people_note ON people (note)", (), None, "Key (note)=(withheld) is duplicated"),
        ("SELECT refuse(%s)", (SECRET_EMAIL,), None, "(withheld) (raised by a database function)"),
    ],
    ids=[
        "unique",
        "foreign-key",
        "check-multiline",
        "input",
        "range",
        "array",
        "json",
        "copy",
        "copy-col",
        "index",
        "raised-by-a-function",
    ],
)
def test_server_errors_keep_what_failed_and_lose_the_values(create_database, statement, params, copy, kept):
    conninfo = create_database("errors")
    if statement.startswith("CREATE UNIQUE INDEX"):
        with psycopg.connect(conninfo, autocommit=True) as conn:
            _server_error(conninfo, "SELECT 1/0")  # creates the table
            conn.execute("INSERT INTO people (id, note) VALUES (2, %s), (3, %s)", (SECRET_EMAIL, SECRET_EMAIL))
            with pytest.raises(psycopg.Error) as raised:
                conn.execute(statement)
        message = str(raised.value)
    else:
        message = _server_error(conninfo, statement, params, copy)
    secret = {"SELECT %s::int": SECRET_PHONE, "INSERT INTO people (id, friend) VALUES (2, %s)": SECRET_PHONE[:9]}.get(
        statement, SECRET_EMAIL
    )
    assert secret in message, "the server quotes the value: the case tests something"

    withheld = withhold_row_data(message)

    assert secret not in withheld and SECRET_PHONE not in withheld
    assert kept in withheld
    assert WITHHELD in withheld


def test_messages_our_own_functions_raise_are_kept(create_database):
    message = _server_error(create_database("errors"), "SELECT own_refusal('frobnicate')")

    assert withhold_row_data(message).startswith("refresh_pipeline.mask_text: unknown transform frobnicate")


def test_server_log_tail_withholds_values_even_when_the_read_starts_inside_one(tmp_path: Path):
    log = tmp_path / "server.log"
    prefix = "2026-11-29 22:14:59.106 UTC [5135] "
    log.write_text(
        f"{prefix}ERROR:  new row violates check constraint\n"
        f"{prefix}DETAIL:  Failing row contains (1, first line\nsecond line {SECRET_EMAIL}\n"
        f"third line {SECRET_PHONE}).\n"
        f"{prefix}LOG:  checkpoint starting: time\n"
    )
    whole = "\n".join(log_tail_without_row_data(log))
    cut = "\n".join(log_tail_without_row_data(log, read_bytes=len(log.read_bytes()) - 130))

    for tail in (whole, cut):
        assert SECRET_EMAIL not in tail and SECRET_PHONE not in tail
    assert "Failing row contains (withheld)." in whole
    assert "checkpoint starting" in cut


def _production_with_one_customer(create_database: Callable[[str], str], prefix: str, schema: str) -> str:
    """A database with `schema` (defining `customers (customer_id, full_name, email)`) and one customer."""
    conninfo = create_database(prefix)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(schema)
        conn.execute("INSERT INTO customers VALUES (1, 'Ravi Kumar', %s)", (SECRET_EMAIL,))
    return conninfo


@pytest.fixture
def trapped_production(create_database) -> str:
    """A production database that dumps fine and fails to restore on a row: its CHECK calls a function whose
    unqualified table name does not resolve under pg_restore's empty search_path (a common trap)."""
    return _production_with_one_customer(
        create_database,
        "prod_trap",
        "CREATE TABLE allowed_domains (domain text PRIMARY KEY);"
        " INSERT INTO allowed_domains VALUES ('gmail.com');"
        " CREATE FUNCTION domain_allowed(e text) RETURNS boolean LANGUAGE sql IMMUTABLE"
        " AS $$ SELECT EXISTS (SELECT 1 FROM allowed_domains WHERE domain = split_part(e, '@', 2)) $$;"
        " CREATE TABLE customers (customer_id int PRIMARY KEY, full_name text,"
        "  email text CHECK (domain_allowed(email)))",
    )


def test_a_failed_restore_names_the_table_and_the_cause_without_its_rows(trapped_production, write_config):
    platform = LocalPlatform(load_config(write_config(trapped_production)))
    snapshot = platform.snapshot()

    with pytest.raises(RefreshError) as raised:
        platform.restore(snapshot, platform.new_database_name())

    message = str(raised.value)
    assert 'COPY failed for table "customers"' in message
    assert 'relation "allowed_domains" does not exist' in message
    assert "COPY customers, line 1: (withheld)" in message
    assert SECRET_EMAIL not in message and "Ravi Kumar" not in message
    assert platform.list_managed() == [], "the half-restored database is dropped"


def test_a_restore_stopped_by_a_function_raising_with_the_row_withholds_what_it_said(create_database, write_config):
    """A CHECK function that raises only under pg_restore's empty search_path, quoting the value."""
    source = _production_with_one_customer(
        create_database,
        "prod_raise",
        "CREATE FUNCTION email_ok(e text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN"
        " IF current_setting('search_path') = '' THEN"
        "  RAISE EXCEPTION 'no search path for %', e USING DETAIL = 'row of ' || e; END IF;"
        " RETURN true; END $$;"
        " CREATE TABLE customers (customer_id int PRIMARY KEY, full_name text, email text CHECK (email_ok(email)))",
    )
    platform = LocalPlatform(load_config(write_config(source)))

    with pytest.raises(RefreshError) as raised:
        platform.restore(platform.snapshot(), platform.new_database_name())

    message = str(raised.value)
    assert 'COPY failed for table "customers": ERROR:  (withheld) (raised by a database function)' in message
    assert "DETAIL:  (withheld)" in message
    assert "PL/pgSQL function public.email_ok(text) line 1 at RAISE" in message
    assert SECRET_EMAIL not in message and "Ravi Kumar" not in message


def _run_text(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(dg.serialize_value(record) for record in instance.all_logs(run_id))


def test_a_failed_restore_leaves_no_production_row_in_the_dagster_event_log(trapped_production, write_config, tmp_path):
    policy = tmp_path / "trap_policy.yaml"
    policy.write_text(
        "version: 1\ntables:\n  allowed_domains: keep\n"
        "  customers: {customer_id: keep, full_name: name, email: email}\n"
    )
    instance = dg.DagsterInstance.ephemeral()

    result = materialize(write_config(trapped_production, policy=policy), instance)

    assert not result.success
    assert "customers" in step_failure_messages(result)["restored_instance"]
    logged = _run_text(instance, result.run_id)
    assert "COPY customers, line 1: (withheld)" in logged
    assert SECRET_EMAIL not in logged and "Ravi Kumar" not in logged


def test_a_database_error_in_a_masking_step_leaves_no_production_row_in_dagster(
    demo_source, create_database, write_config, tmp_path
):
    """The masked customers violate a CHECK, whose database error quotes the whole new row, including a column
    the policy (wrongly) keeps: the production phone must not reach Dagster's event log."""
    source = create_database("prod_check")
    subprocess.run(f"pg_dump -d '{demo_source}' | psql -q -d '{source}'", shell=True, check=True)
    with psycopg.connect(source) as conn:
        # Two columns: the coverage check's trial of `email` (the other columns NULL) passes it, so the masking
        # step is the one to meet it.
        conn.execute(
            "ALTER TABLE customers ADD CONSTRAINT no_masked_emails"
            " CHECK (customer_id < 0 OR email NOT LIKE '%@example.com')"
        )
        # A view on a masked column: customers is masked block range by block range (a rewrite's CHECK error
        # names no row), so the INSERT of the masked rows meets the CHECK.
        conn.execute("CREATE VIEW customer_emails AS SELECT email FROM customers")
        phones = {row[0] for row in conn.execute("SELECT phone FROM customers")}
    policy = tmp_path / "keeps_phone.yaml"
    text = DEMO_POLICY.read_text()
    assert "    phone: phone\n" in text
    policy.write_text(text.replace("    phone: phone\n", "    phone: keep\n"))
    instance = dg.DagsterInstance.ephemeral()

    result = materialize(write_config(source, policy=policy), instance)

    assert "masked/customers" not in materialized_keys(result)
    failure = step_failure_messages(result)["masked__customers"]
    assert "public.customers: masked values fail check constraint no_masked_emails CHECK" in failure
    assert "Failing row" not in failure, "the constraint is named, the row is not quoted"
    logged = _run_text(instance, result.run_id)
    assert not {phone for phone in phones if phone in logged}


def test_every_step_function_withholds_row_data(demo_source, write_config):
    defs = build_definitions(write_config(demo_source))
    computes = [a.op.compute_fn.decorated_fn for a in defs.assets] + [
        c.op.compute_fn.decorated_fn for c in defs.asset_checks
    ]
    assert computes
    assert [fn.__name__ for fn in computes if not getattr(fn, "withholds_row_data", False)] == []
