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

_DEPENDENCIES = """
SELECT DISTINCT format('%I.%I', vn.nspname, v.relname), format('%I.%I', un.nspname, u.relname)
FROM pg_class v
JOIN pg_namespace vn ON vn.oid = v.relnamespace
JOIN pg_rewrite r ON r.ev_class = v.oid
JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
JOIN pg_class u ON u.oid = d.refobjid AND u.relkind = 'm' AND u.oid <> v.oid
JOIN pg_namespace un ON un.oid = u.relnamespace
WHERE v.relkind = 'm'
"""


def refresh_materialized_views(conn: psycopg.Connection) -> list[str]:
    """Refresh every populated materialized view, views they read from first; returns them in that order.
    (A view created WITH NO DATA stays unpopulated, as in production.)"""
    populated = {name for name, is_populated in conn.execute(_VIEWS, {}).fetchall() if is_populated}
    graph: dict[str, set[str]] = {name: set() for name in populated}
    for view, uses in conn.execute(_DEPENDENCIES).fetchall():
        if view in graph and uses in populated:
            graph[view].add(uses)
    order = list(TopologicalSorter(graph).static_order())
    for name in order:
        conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.SQL(name)))
    return order
