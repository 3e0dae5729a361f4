"""Production's per-database settings, which pg_dump leaves out, on real PostgreSQL: carried to the restored
database, and never able to stop the refresh's own sessions (timeouts of a millisecond, read-only)."""

import psycopg
import pytest
from psycopg import sql

from refresh_pipeline.platforms.database_settings import DatabaseSetting, _list_items, apply_settings
from refresh_pipeline_tests.helpers import database_with, refresh_through_cli

# Each would stop a refresh whose sessions took production's settings as they are.
HOSTILE = {
    "statement_timeout": "1ms",
    "lock_timeout": "1ms",
    "idle_in_transaction_session_timeout": "1ms",
    "idle_session_timeout": "1s",
    "default_transaction_read_only": "on",
    "default_transaction_isolation": "serializable",
}
POLICY = "tables:\n  '\"billing-v2\".invoices': {id: keep, email: email, contact: email}\n"


def _settings(conn: psycopg.Connection, database: str) -> set[tuple[str | None, str]]:
    rows = conn.execute(
        "SELECT r.rolname, unnest(s.setconfig) FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole "
        "WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = %s)",
        (database,),
    ).fetchall()
    return set(rows)


@pytest.mark.parametrize(
    ("stored", "items"),
    [
        ('"billing-v2", public', ["billing-v2", "public"]),
        ('"$user", public', ["$user", "public"]),
        ('"a,b", "say ""hi"""', ["a,b", 'say "hi"']),
        ("public", ["public"]),
        ('""', []),  # an empty search_path: set as ''
    ],
)
def test_list_settings_are_split_into_their_names(stored, items):
    assert _list_items(stored) == items


def test_a_setting_this_server_cannot_take_is_a_note_naming_it_never_its_value(create_database, pg_server):
    name = database_with(create_database, "settings_notes", "SELECT 1").rsplit("dbname=", 1)[1]
    settings = [
        DatabaseSetting(None, "search_path", '"billing-v2", public'),
        DatabaseSetting("ghost_role", "work_mem", "8MB"),
        DatabaseSetting(None, "no_such_setting", "s3cret-value"),
        DatabaseSetting(None, "app.api_token", "s3cret-token"),
    ]
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        notes = apply_settings(conn, name, settings)
        applied = _settings(conn, name)
    assert applied == {(None, 'search_path="billing-v2", public'), (None, "app.api_token=s3cret-token")}
    assert notes == [
        'production\'s work_mem setting for role ghost_role was not carried over (role "ghost_role" does not exist)',
        "production's no_such_setting setting for the database was not carried over "
        '(unrecognized configuration parameter "no_such_setting")',
    ]
    assert "s3cret" not in " ".join(notes)


# An empty search_path leaves extensions' types (citext in public) off the path: they print qualified.
@pytest.mark.parametrize("search_path", ['"billing-v2", public', "''"])
def test_a_refresh_carries_productions_settings_and_is_not_stopped_by_them(
    create_database, pg_server, write_config, tmp_path, capsys, search_path
):
    production = create_database("settings_production")
    database = production.rsplit("dbname=", 1)[1]
    with psycopg.connect(production, autocommit=True) as conn:
        conn.execute(
            'CREATE EXTENSION IF NOT EXISTS citext; CREATE SCHEMA "billing-v2";'
            'CREATE TABLE "billing-v2".invoices (id int PRIMARY KEY, email text, contact citext);'
            "INSERT INTO \"billing-v2\".invoices SELECT g, 'rider' || g || '@gmail.com', 'Rider' || g || '@Gmail.com' "
            "FROM generate_series(1, 200) g"
        )
        role = conn.execute("SELECT current_user").fetchone()[0]
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        alter = sql.SQL("ALTER DATABASE {} SET ").format(sql.Identifier(database))
        conn.execute(alter + sql.SQL("search_path = " + search_path))
        conn.execute(alter + sql.SQL("\"TimeZone\" = 'Asia/Kolkata'"))
        conn.execute(alter + sql.SQL("app.region = 'mumbai'"))
        for name, value in HOSTILE.items():
            conn.execute(alter + sql.SQL("{} = {}").format(sql.Identifier(name), sql.Literal(value)))
        conn.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} SET work_mem = '8MB'").format(
                sql.Identifier(role), sql.Identifier(database)
            )
        )
        production_settings = _settings(conn, database)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    config = write_config(production, policy)

    staging = refresh_through_cli(config, capsys)
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        assert _settings(conn, staging) == production_settings
        assert len(production_settings) == 10
        for name in HOSTILE:  # the staging users' sessions get them, as production's do
            conn.execute(sql.SQL("ALTER DATABASE {} RESET {}").format(sql.Identifier(staging), sql.Identifier(name)))
    with psycopg.connect(pg_server.dsn(staging)) as conn:
        masked = conn.execute(
            'SELECT count(*) FROM "billing-v2".invoices '
            "WHERE email LIKE '%@example.com' AND contact::text LIKE '%@example.com'"
        ).fetchone()[0]
        assert masked == 200
        assert conn.execute("SHOW TimeZone").fetchone()[0] == "Asia/Kolkata"
