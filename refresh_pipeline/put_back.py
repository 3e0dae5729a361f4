"""Settings the refresh changes on the restored tables and puts back before promotion (autovacuum paused,
row-level security no longer forced on the owner). Which tables is remembered in a bookkeeping table of the
database itself, so a re-executed step puts back exactly what was changed, and only that."""

import psycopg
from psycopg import sql


def remember(conn: psycopg.Connection, bookkeeping: str, names: list[str]) -> None:
    """Add `names` to the tables `bookkeeping` (e.g. refresh_pipeline.autovacuum_paused) remembers."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS refresh_pipeline")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {bookkeeping} (table_name text PRIMARY KEY)")
    for name in names:
        conn.execute(f"INSERT INTO {bookkeeping} VALUES (%s) ON CONFLICT DO NOTHING", (name,))


def remembered(conn: psycopg.Connection, bookkeeping: str) -> list[str]:
    if conn.execute("SELECT to_regclass(%s) IS NULL", (bookkeeping,)).fetchone()[0]:
        return []
    return [row[0] for row in conn.execute(f"SELECT table_name FROM {bookkeeping} ORDER BY 1").fetchall()]


def put_back(conn: psycopg.Connection, bookkeeping: str, statement: sql.SQL) -> list[str]:
    """Run `statement` (`{}` standing for the table) on every remembered table that still exists, then forget
    them all; returns them."""
    with conn.transaction():
        names = remembered(conn, bookkeeping)
        for name in names:
            if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]:
                conn.execute(statement.format(sql.SQL(name)))
        conn.execute(f"DROP TABLE IF EXISTS {bookkeeping}")
    return names
