"""Login roles of a promoted instance that has roles of its own (an RDS or Aurora restore): production's
passwords do not open staging.

An RDS restore brings production's roles with production's passwords, so production credentials would log in
to staging, and staging apps would need them. Before promotion every login role but the connecting one
(the master user), superusers and RDS's own either gets its staging password (`aws.staging_logins`: role ->
secret) or loses its login and its password. The password reaches the server as a SCRAM-SHA-256 verifier
computed here, never as itself, so statement logging shows no password.

Not for the local platform: its roles are the server's, which production's database may share.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from refresh_pipeline.errors import RefreshError

_LOGIN_ROLES = """
SELECT rolname FROM pg_roles
WHERE rolcanlogin AND NOT rolsuper AND rolname <> current_user
  AND rolname !~ '^(pg_|rds)'  -- RDS's own: rdsadmin, rdsrepladmin, rdstopmgr, rds_*
ORDER BY 1
"""


@dataclass(frozen=True)
class LoginChanges:
    staging_passwords: list[str]  # roles that log in with their staging password
    closed: list[str]  # roles that no longer log in

    def as_metadata(self) -> dict[str, list[str]]:
        return {"staging_passwords": self.staging_passwords, "logins_closed": self.closed}


def missing_roles_problem(conn: psycopg.Connection, roles: list[str]) -> str | None:
    """The configured staging logins this server (production's, or its restored copy) has no role for."""
    present = {row[0] for row in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
    if missing := sorted(set(roles) - present):
        return (
            f"aws.staging_logins names role(s) the database does not have: {', '.join(missing)}; "
            "remove them from the config or create them in production"
        )
    return None


def staging_logins_problem(conn: psycopg.Connection, roles: list[str]) -> str | None:
    """Why the configured staging logins cannot be set on this database (checked right after the restore,
    and again before promotion), or None."""
    if problem := missing_roles_problem(conn, roles):
        return problem
    master = conn.execute("SELECT current_user").fetchone()[0]
    if master in roles:
        return (
            f"aws.staging_logins names {master}, the master user, whose staging password is "
            "aws.staging_password_secret's; remove it from aws.staging_logins"
        )
    return None


def set_staging_logins(conn: psycopg.Connection, passwords: dict[str, str]) -> LoginChanges:
    """Give each role in `passwords` its staging password (and LOGIN); take login and password from every
    other login role. Refuses, changing nothing, when a configured role cannot be given one."""
    with conn.transaction():
        if problem := staging_logins_problem(conn, list(passwords)):
            raise RefreshError(problem)
        roles = [row[0] for row in conn.execute(_LOGIN_ROLES).fetchall()]
        for role in sorted(passwords):
            verifier = conn.pgconn.encrypt_password(passwords[role].encode(), role.encode(), b"scram-sha-256")
            conn.execute(
                sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier.decode()))
            )
        closed = [role for role in roles if role not in passwords]
        for role in closed:
            conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN PASSWORD NULL").format(sql.Identifier(role)))
    return LoginChanges(sorted(passwords), closed)
