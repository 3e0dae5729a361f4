"""Row-level security on the restored database: the refresh must read and rewrite every row.

Every session the pipeline opens runs with `row_security = off` (connections.py), so a policy that would
hide rows makes the query fail instead of silently masking, auditing and swapping in only the visible rows
(the hidden ones would be lost from staging). Policies do not apply to a superuser, a role with BYPASSRLS
or the table's owner, unless the table FORCEs them on its owner too. So right after the restore:
- a table the connecting role owns (or is a member of the owner of) and that forces its policies stops
  forcing them for the refresh (`NO FORCE ROW LEVEL SECURITY`), and forces them again before promotion;
- a table with policies the role neither owns nor bypasses fails the restore step, naming it and the fix.
"""

import psycopg
from psycopg import sql

from refresh_pipeline.errors import RefreshError

_LIFTED = "refresh_pipeline.row_security_lifted"
# Tables of the restored data whose policies apply to the connecting role (none for a superuser or BYPASSRLS).
_APPLYING = """
SELECT format('%I.%I', n.nspname, c.relname), pg_has_role(c.relowner, 'USAGE'), pg_get_userbyid(c.relowner)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relrowsecurity
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'refresh_pipeline', 'refresh_pipeline_audit')
  AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user)
  AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE'))
ORDER BY 1
"""


def lift_forced_row_security(conn: psycopg.Connection) -> list[str]:
    """Stop forcing row-level security on the tables the connecting role owns, remembering which; returns
    every table lifted so far (a re-executed restore step finds them lifted already). Refuses when policies
    apply to tables the role does not own."""
    with conn.transaction():
        applying = conn.execute(_APPLYING).fetchall()
        foreign = [f"{table} (owner {owner})" for table, owned, owner in applying if not owned]
        if foreign:
            role = conn.execute("SELECT current_user").fetchone()[0]
            raise RefreshError(
                f"row-level security hides rows of {', '.join(foreign)} from {role}, which neither owns these "
                "tables nor has BYPASSRLS: masking would lose the rows it cannot see. Connect as a superuser or "
                f"a role with BYPASSRLS, or make {role} a member of each owner (GRANT <owner> TO {role})."
            )
        if applying:
            conn.execute("CREATE SCHEMA IF NOT EXISTS refresh_pipeline")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {_LIFTED} (table_name text PRIMARY KEY)")
        for name, _owned, _owner in applying:
            conn.execute(sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(sql.SQL(name)))
            conn.execute(f"INSERT INTO {_LIFTED} VALUES (%s) ON CONFLICT DO NOTHING", (name,))
        if conn.execute("SELECT to_regclass(%s) IS NULL", (_LIFTED,)).fetchone()[0]:
            return []
        return [row[0] for row in conn.execute(f"SELECT table_name FROM {_LIFTED} ORDER BY 1").fetchall()]


def force_row_security_again(conn: psycopg.Connection) -> list[str]:
    """Force row-level security again where lift_forced_row_security stopped it; returns those tables."""
    with conn.transaction():
        if conn.execute("SELECT to_regclass(%s) IS NULL", (_LIFTED,)).fetchone()[0]:
            return []
        names = [row[0] for row in conn.execute(f"SELECT table_name FROM {_LIFTED} ORDER BY 1").fetchall()]
        for name in names:
            if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]:
                conn.execute(sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(sql.SQL(name)))
        conn.execute(f"DROP TABLE {_LIFTED}")
    return names
