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
from refresh_pipeline.masking.catalog import OWN_SCHEMAS, USER_SCHEMA
from refresh_pipeline.put_back import put_back, remember, remembered

_LIFTED = "refresh_pipeline.row_security_lifted"
# Tables of the restored data whose policies apply to the connecting role (none for a superuser or BYPASSRLS).
_APPLYING = f"""
SELECT format('%%I.%%I', n.nspname, c.relname), pg_has_role(c.relowner, 'USAGE'), pg_get_userbyid(c.relowner)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relrowsecurity AND {USER_SCHEMA} AND n.nspname <> ALL(%(own)s)
  AND NOT (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user)
  AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE'))
ORDER BY 1
"""


def lift_forced_row_security(conn: psycopg.Connection) -> list[str]:
    """Stop forcing row-level security on the tables the connecting role owns, remembering which; returns
    every table lifted so far (a re-executed restore step finds them lifted already). Refuses when policies
    apply to tables the role does not own."""
    with conn.transaction():
        applying = conn.execute(_APPLYING, {"own": list(OWN_SCHEMAS)}).fetchall()
        foreign = [f"{table} (owner {owner})" for table, owned, owner in applying if not owned]
        if foreign:
            role = conn.execute("SELECT current_user").fetchone()[0]
            raise RefreshError(
                f"row-level security hides rows of {', '.join(foreign)} from {role}, which neither owns these "
                "tables nor has BYPASSRLS: masking would lose the rows it cannot see. Connect as a superuser or "
                f"a role with BYPASSRLS, or make {role} a member of each owner (GRANT <owner> TO {role})."
            )
        names = [name for name, _owned, _owner in applying]
        for name in names:
            conn.execute(sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(sql.SQL(name)))
        remember(conn, _LIFTED, names)
        return remembered(conn, _LIFTED)


def force_row_security_again(conn: psycopg.Connection) -> list[str]:
    """Force row-level security again where lift_forced_row_security stopped it; returns those tables."""
    return put_back(conn, _LIFTED, sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY"))
