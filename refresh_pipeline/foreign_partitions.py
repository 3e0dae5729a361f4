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

from refresh_pipeline.put_back import forget, remember_rows, remembered_rows

_BOOKKEEPING = "refresh_pipeline.foreign_partitions_detached"
_COLUMNS = ("partition", "parent", "bound")
_ATTACHED = """
SELECT c.oid::regclass::text, i.inhparent::regclass::text, pg_get_expr(c.relpartbound, c.oid)
FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid
WHERE c.relkind = 'f' AND c.relispartition
ORDER BY 1
"""


def detach_foreign_partitions(conn: psycopg.Connection) -> list[str]:
    """Detach every foreign-table partition, remembering where it was; returns all detached ones."""
    with conn.transaction():
        attached = conn.execute(_ATTACHED).fetchall()
        remember_rows(conn, _BOOKKEEPING, _COLUMNS, attached)
        for partition, parent, _bound in attached:
            conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(sql.SQL(parent), sql.SQL(partition)))
        return [partition for partition, _parent, _bound in remembered_rows(conn, _BOOKKEEPING, _COLUMNS)]


def attach_foreign_partitions_again(conn: psycopg.Connection) -> list[str]:
    """Attach the detached partitions again, with their bounds, and forget them; returns them."""
    with conn.transaction():
        detached = remembered_rows(conn, _BOOKKEEPING, _COLUMNS)
        for partition, parent, bound in detached:
            conn.execute(
                sql.SQL("ALTER TABLE {} ATTACH PARTITION {} {}").format(
                    sql.SQL(parent), sql.SQL(partition), sql.SQL(bound)
                )
            )
        forget(conn, _BOOKKEEPING)
    return [partition for partition, _parent, _bound in detached]
