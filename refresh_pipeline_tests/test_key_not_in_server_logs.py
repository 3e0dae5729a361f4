"""The masking key never reaches the database server's logs, even with every statement, its parameters and
its plan logged (as managed databases are often set up to do, shipping the logs to a central store)."""

from collections.abc import Callable, Iterator

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from refresh_pipeline.masking.keys import AUDIT_PURPOSE, MASKING_PURPOSE, MaskingKey
from refresh_pipeline.platforms.local_server import LocalServer
from refresh_pipeline_tests.conftest import TEST_KEY
from refresh_pipeline_tests.graph import materialize, step_failure_messages

VERBOSE_LOGGING = {
    "log_statement": "all",  # every statement, with its bind parameters
    "log_min_duration_statement": "0",
    "session_preload_libraries": "auto_explain",  # plans show parameters as constants
    "auto_explain.log_min_duration": "0",
    "auto_explain.log_verbose": "on",
    "auto_explain.log_nested_statements": "on",  # statements inside the masking functions
}


@pytest.fixture
def server_log_of_verbose_server(pg_server: LocalServer) -> Iterator[Callable[[], str]]:
    """The server logs everything while the test runs; yields a reader of what it logged meanwhile."""
    start = pg_server.log_file.stat().st_size

    def configure(values: dict[str, str | None]) -> None:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute("LOAD 'auto_explain'")  # its settings are unknown to a session without it
            for name, value in values.items():
                if value is None:
                    conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
                else:
                    conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
            conn.execute("SELECT pg_reload_conf()")

    def logged() -> str:
        with pg_server.log_file.open("rb") as log:
            log.seek(start)
            return log.read().decode(errors="replace")

    configure(VERBOSE_LOGGING)
    try:
        yield logged
    finally:
        configure(dict.fromkeys(VERBOSE_LOGGING))


def _secret_forms(secret: str) -> dict[str, str]:
    """Every form in which the key, or a key derived from it, could show up in a log."""
    key = MaskingKey(secret)
    forms = {"masking key": secret}
    for purpose in (MASKING_PURPOSE, AUDIT_PURPOSE):
        pads = key.sql_pads(purpose)
        forms[f"{purpose} key"] = key.derive(purpose).hex()
        forms[f"{purpose} inner pad"] = pads[:64].hex()  # each half alone gives the derived key back
        forms[f"{purpose} outer pad"] = pads[64:].hex()
    return forms


def test_a_refresh_logs_no_form_of_the_masking_key_with_every_statement_and_plan_logged(
    demo_source, write_config, server_log_of_verbose_server
):
    result = materialize(write_config(demo_source), dg.DagsterInstance.ephemeral())

    assert result.success, step_failure_messages(result)
    logged = server_log_of_verbose_server()
    # The logging was on for the statements that use the key: masking (block ranges, and the rewrite of bookings,
    # which reads it from a setting), value maps, fingerprints, audit.
    statements = ("INSERT INTO refresh_pipeline.value_map", "original_fingerprints", "masked_rows_", "Query Text")
    for statement in (*statements, 'ALTER TABLE ONLY "public"."bookings"', "refresh_pipeline.masking_pads"):
        assert statement in logged, statement
    found = [name for name, form in _secret_forms(TEST_KEY).items() if form.lower() in logged.lower()]
    assert found == []
