"""What production's role cannot read of what a local snapshot dumps, asked by `validate` before a refresh.

pg_dump reads every table's rows and every sequence's state as the source role, and stops at the first it may
not read: `permission denied for table t` after the rows before it, typically a schema added since the read-only
role's grants. With row-level security on a table, a role that neither owns it nor bypasses it stops it too
(pg_dump turns row_security off rather than dump part of a table). An RDS snapshot reads nothing through a role,
so only the local platform asks.
"""

import psycopg

from refresh_pipeline.masking.catalog import USER_SCHEMA

_UNREADABLE = f"""
SELECT format('%%I.%%I', n.nspname, c.relname),
       CASE WHEN NOT has_schema_privilege(n.oid, 'USAGE') THEN 'no USAGE on its schema'
            WHEN c.relkind = 'S' AND NOT has_sequence_privilege(c.oid, 'SELECT') THEN 'no SELECT on the sequence'
            WHEN c.relkind = 'r' AND NOT has_table_privilege(c.oid, 'SELECT') THEN 'no SELECT'
            ELSE 'row-level security, neither owned nor bypassed' END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'S') AND {USER_SCHEMA}
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
  AND (NOT has_schema_privilege(n.oid, 'USAGE')
       OR c.relkind = 'S' AND NOT has_sequence_privilege(c.oid, 'SELECT')
       OR c.relkind = 'r' AND NOT has_table_privilege(c.oid, 'SELECT')
       OR c.relkind = 'r' AND c.relrowsecurity AND NOT pg_has_role(c.relowner, 'USAGE')
          AND NOT (SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user))
ORDER BY 1
"""
LISTED = 10  # named in the problem; the rest counted


def snapshot_access_problem(production: psycopg.Connection) -> str | None:
    """Why the session's role (production's, read-only) cannot dump everything; None when it can."""
    unreadable = production.execute(_UNREADABLE, {}).fetchall()
    if not unreadable:
        return None
    role = production.execute("SELECT current_user").fetchone()[0]
    named = ", ".join(f"{relation} ({why})" for relation, why in unreadable[:LISTED])
    more = f" and {len(unreadable) - LISTED} more" if len(unreadable) > LISTED else ""
    return (
        f"production's role {role} cannot read {named}{more}, which the snapshot dumps: pg_dump would stop there. "
        f"Grant it what it lacks (GRANT USAGE ON SCHEMA, GRANT SELECT ON ALL TABLES IN SCHEMA and ON ALL "
        f"SEQUENCES IN SCHEMA, or the role pg_read_all_data; BYPASSRLS for row-level security)"
    )
