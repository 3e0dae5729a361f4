"""Autovacuum paused on the restored database's tables while the refresh rewrites them, resumed before
promotion. Masking rewrites every PII table right after the restore, so autovacuum's passes over the
freshly restored and freshly masked tables would compete with the refresh for the server's CPU (~10 of
~180 s of server CPU at scale 1) only for the rows to change again. Statistics are gathered once after
the restore and once before promotion instead; autovacuum resumes on staging."""

import psycopg
from psycopg import sql

from refresh_pipeline.masking.catalog import OWN_SCHEMAS, USER_SCHEMA
from refresh_pipeline.put_back import put_back, remember

_PAUSED = "refresh_pipeline.autovacuum_paused"
# Tables the refresh may pause: ordinary tables and partitions of the restored data, not our own.
_PAUSABLE = f"""
SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND {USER_SCHEMA} AND n.nspname <> ALL(%(own)s)
  AND NOT EXISTS (SELECT 1 FROM unnest(c.reloptions) AS o WHERE o LIKE 'autovacuum\\_enabled=%%')
ORDER BY 1
"""


def pause_autovacuum(conn: psycopg.Connection) -> list[str]:
    """Turn autovacuum off on every table that does not set it itself (a production choice is left as it
    is), and remember which, so that resume_autovacuum puts back exactly what production had."""
    with conn.transaction():
        names = [row[0] for row in conn.execute(_PAUSABLE, {"own": list(OWN_SCHEMAS)}).fetchall()]
        for name in names:
            conn.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(sql.SQL(name)))
        remember(conn, _PAUSED, names)
    return names


def resume_autovacuum(conn: psycopg.Connection) -> list[str]:
    """Give back autovacuum to the tables pause_autovacuum paused; returns them."""
    return put_back(conn, _PAUSED, sql.SQL("ALTER TABLE {} RESET (autovacuum_enabled)"))
