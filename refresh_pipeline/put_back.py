"""What the refresh changes on the restored database and puts back before promotion (autovacuum paused,
row-level security no longer forced on the owner, event triggers off, publications paused, foreign partitions
detached). What was changed is remembered in a bookkeeping table of the database itself, so a re-executed step
puts back exactly what was changed, and only that."""

from collections.abc import Sequence

import psycopg
from psycopg import sql

_TABLE_NAME = ("table_name",)


def remember_rows(conn: psycopg.Connection, bookkeeping: str, columns: Sequence[str], rows: list[tuple]) -> None:
    """Add `rows` (their first column the key; a key remembered already keeps its first row) to `bookkeeping`
    (e.g. refresh_pipeline.autovacuum_paused), a text table of `columns` created for the first of them."""
    if not rows:
        return
    conn.execute("CREATE SCHEMA IF NOT EXISTS refresh_pipeline")
    key, *others = columns
    definition = ", ".join([f"{key} text PRIMARY KEY", *(f"{column} text NOT NULL" for column in others)])
    conn.execute(f"CREATE TABLE IF NOT EXISTS {bookkeeping} ({definition})")
    placeholders = ", ".join(["%s"] * len(columns))
    for row in rows:
        conn.execute(f"INSERT INTO {bookkeeping} VALUES ({placeholders}) ON CONFLICT DO NOTHING", row)


def remembered_rows(conn: psycopg.Connection, bookkeeping: str, columns: Sequence[str]) -> list[tuple]:
    """Every row `bookkeeping` remembers, by key; none when nothing was remembered."""
    if conn.execute("SELECT to_regclass(%s) IS NULL", (bookkeeping,)).fetchone()[0]:
        return []
    return conn.execute(f"SELECT {', '.join(columns)} FROM {bookkeeping} ORDER BY 1").fetchall()


def forget(conn: psycopg.Connection, bookkeeping: str) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {bookkeeping}")


def remember(conn: psycopg.Connection, bookkeeping: str, names: list[str]) -> None:
    """Add the tables `names` to those `bookkeeping` remembers."""
    remember_rows(conn, bookkeeping, _TABLE_NAME, [(name,) for name in names])


def remembered(conn: psycopg.Connection, bookkeeping: str) -> list[str]:
    return [row[0] for row in remembered_rows(conn, bookkeeping, _TABLE_NAME)]


def put_back(conn: psycopg.Connection, bookkeeping: str, statement: sql.SQL) -> list[str]:
    """Run `statement` (`{}` standing for the table) on every remembered table that still exists, then forget
    them all; returns them."""
    with conn.transaction():
        names = remembered(conn, bookkeeping)
        for name in names:
            if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]:
                conn.execute(statement.format(sql.SQL(name)))
        forget(conn, bookkeeping)
    return names
