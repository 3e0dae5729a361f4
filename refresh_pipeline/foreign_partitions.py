"""Partitions that are foreign tables (old bookings archived on another server) are detached from their
partitioned table for the refresh and attached again before promotion. Reading, masking or auditing the
partitioned table would read them too, through production's foreign server, whose link the restore cuts
(links_to_production.py): every step on the table failed. They hold none of this database's rows; staging
gets them back attached, as production has them (querying one fails there, as any cut foreign table does).

Which partitions, of which table and with which bounds, is remembered in a bookkeeping table of the database
itself, so a re-executed restore step detaches no more than is attached and promotion attaches each once.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

_BOOKKEEPING = "refresh_pipeline.foreign_partitions_detached"
_ATTACHED = """
SELECT c.oid::regclass::text, i.inhparent::regclass::text, pg_get_expr(c.relpartbound, c.oid)
FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid
WHERE c.relkind = 'f' AND c.relispartition
ORDER BY 1
"""


def _remembered(conn: psycopg.Connection) -> list[tuple[str, str, str]]:
    if conn.execute("SELECT to_regclass(%s) IS NULL", (_BOOKKEEPING,)).fetchone()[0]:
        return []
    return conn.execute(f"SELECT partition, parent, bound FROM {_BOOKKEEPING} ORDER BY 1").fetchall()


def detach_foreign_partitions(conn: psycopg.Connection) -> list[str]:
    """Detach every foreign-table partition, remembering where it was; returns all detached ones."""
    with conn.transaction():
        attached = conn.execute(_ATTACHED).fetchall()
        if attached:
            conn.execute("CREATE SCHEMA IF NOT EXISTS refresh_pipeline")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {_BOOKKEEPING} (partition text PRIMARY KEY, parent text NOT NULL, "
                "bound text NOT NULL)"
            )
        for partition, parent, bound in attached:
            conn.execute(
                f"INSERT INTO {_BOOKKEEPING} VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", (partition, parent, bound)
            )
            conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(sql.SQL(parent), sql.SQL(partition)))
        return [partition for partition, _parent, _bound in _remembered(conn)]


def attach_foreign_partitions_again(conn: psycopg.Connection) -> list[str]:
    """Attach the detached partitions again, with their bounds, and forget them; returns them."""
    with conn.transaction():
        detached = _remembered(conn)
        for partition, parent, bound in detached:
            conn.execute(
                sql.SQL("ALTER TABLE {} ATTACH PARTITION {} {}").format(
                    sql.SQL(parent), sql.SQL(partition), sql.SQL(bound)
                )
            )
        conn.execute(f"DROP TABLE IF EXISTS {_BOOKKEEPING}")
    return [partition for partition, _parent, _bound in detached]
