"""Materialized views hold copies of table data: after masking they are refreshed, in dependency order."""

from graphlib import TopologicalSorter

import psycopg
from psycopg import sql

from refresh_pipeline.masking.catalog import USER_SCHEMA

_VIEWS = f"""
SELECT format('%%I.%%I', n.nspname, c.relname), c.relispopulated
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'm' AND {USER_SCHEMA}
"""

# (materialized view, relation it reads), directly or through views of the kinds `through` ('v': plain views;
# 'v', 'm': materialized ones too).
_READS = """
WITH RECURSIVE reads (view, relation) AS (
    SELECT r.ev_class, d.refobjid
    FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
    JOIN pg_class v ON v.oid = r.ev_class AND v.relkind = 'm'
    WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class
  UNION
    SELECT reads.view, d.refobjid
    FROM reads JOIN pg_class u ON u.oid = reads.relation AND u.relkind IN ({through})
    JOIN pg_rewrite r ON r.ev_class = u.oid
    JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
    WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid <> u.oid
)
"""

# Materialized views another one reads, directly or through plain views: a view read through a plain view that
# is refreshed after the one reading it leaves that one with its originals (and which went first changed from
# run to run: the audit of materialized views failed every other refresh).
_DEPENDENCIES = (
    _READS.format(through="'v'")
    + """
SELECT DISTINCT format('%I.%I', vn.nspname, v.relname), format('%I.%I', un.nspname, u.relname)
FROM reads
JOIN pg_class v ON v.oid = reads.view JOIN pg_namespace vn ON vn.oid = v.relnamespace
JOIN pg_class u ON u.oid = reads.relation AND u.relkind = 'm' AND u.oid <> v.oid
JOIN pg_namespace un ON un.oid = u.relnamespace
"""
)

# Materialized views reading a foreign table, directly or through other views: the restored database's
# foreign servers point nowhere (links_to_production.py), so they cannot be refreshed from staging.
_READING_FOREIGN_TABLES = (
    _READS.format(through="'v', 'm'")
    + """
SELECT DISTINCT n.nspname, v.relname, format('%I.%I', n.nspname, v.relname)
FROM reads JOIN pg_class f ON f.oid = reads.relation AND f.relkind = 'f'
JOIN pg_class v ON v.oid = reads.view JOIN pg_namespace n ON n.oid = v.relnamespace
ORDER BY 1, 2
"""
)


def views_reading_foreign_tables(conn: psycopg.Connection) -> list[tuple[str, str, str]]:
    """(schema, name, quoted qualified name) of the materialized views that read a foreign table, directly or
    through views."""
    return [(schema, name, qualified) for schema, name, qualified in conn.execute(_READING_FOREIGN_TABLES).fetchall()]


def empty_views_over_foreign_tables(conn: psycopg.Connection) -> list[str]:
    """Materialized views that read a foreign table hold what production's foreign server returned; they
    are emptied (WITH NO DATA: querying one says it is not populated) rather than kept or refreshed."""
    views = sorted(qualified for _schema, _name, qualified in views_reading_foreign_tables(conn))
    for name in views:
        conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {} WITH NO DATA").format(sql.SQL(name)))
    return views


def materialized_view_reads(conn: psycopg.Connection) -> dict[str, set[str]]:
    """Per materialized view (quoted qualified name), the materialized views it reads, directly or through plain
    views."""
    reads: dict[str, set[str]] = {}
    for view, read in conn.execute(_DEPENDENCIES).fetchall():
        reads.setdefault(view, set()).add(read)
    return reads


def refresh_materialized_views(conn: psycopg.Connection) -> list[str]:
    """Refresh every populated materialized view, views they read from first; returns them in that order.
    (A view created WITH NO DATA stays unpopulated, as in production; so does one emptied because it reads a
    foreign table.)"""
    populated = {name for name, is_populated in conn.execute(_VIEWS, {}).fetchall() if is_populated}
    graph = {
        view: {read for read in reads if read in populated}
        for view, reads in materialized_view_reads(conn).items()
        if view in populated
    }
    order = list(TopologicalSorter({name: graph.get(name, set()) for name in populated}).static_order())
    for name in order:
        conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.SQL(name)))
    return order
