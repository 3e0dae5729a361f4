"""What of production only a superuser can restore, asked before a local restore whose role is not one.

The staging server's role needs CREATEDB, and session_replication_role granted to mask (runner.py); pg_restore
then creates everything as that role (--no-owner). Not an event trigger, a publication of all tables or of whole
schemas, or an untrusted extension (postgres_fdw, plpython3u): PostgreSQL lets only a superuser create those, and
the restore failed at the first one, after restoring every row (event triggers come last: restore_passes.py).
`validate` names them all from production's catalog. The restore step refuses before restoring anything when
the snapshot has event triggers or untrusted extensions; its listing does not say which publications are of all
tables, so those still stop pg_restore itself ("must be superuser to create FOR ALL TABLES publication").
An RDS restore brings the whole instance, so only the local platform asks.
"""

import psycopg

from refresh_pipeline.errors import RefreshError

_EVENT_TRIGGERS = "SELECT 'event trigger ' || quote_ident(evtname) FROM pg_event_trigger ORDER BY evtname"
_PUBLICATIONS = (
    "SELECT 'publication ' || quote_ident(pubname) || ' (FOR ALL TABLES)' FROM pg_publication WHERE puballtables"
)
# PostgreSQL 15+: publications of whole schemas.
_SCHEMA_PUBLICATIONS = (
    "SELECT DISTINCT 'publication ' || quote_ident(p.pubname) || ' (FOR TABLES IN SCHEMA)' FROM pg_publication p"
    " JOIN pg_publication_namespace n ON n.pnpubid = p.oid"
)
_UNTRUSTED = (
    "SELECT 'extension ' || quote_ident(name) || ' (untrusted)' FROM pg_available_extensions a WHERE name = ANY(%s)"
    " AND NOT EXISTS (SELECT FROM pg_available_extension_versions v WHERE v.name = a.name AND v.trusted)"
    " ORDER BY name"
)


def is_superuser(conn: psycopg.Connection) -> bool:
    return bool(conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0])


def superuser_only_objects(production: psycopg.Connection) -> list[str]:
    """Production's event triggers and publications of all tables or whole schemas, described."""
    found = [row[0] for row in production.execute(_EVENT_TRIGGERS).fetchall()]
    found += sorted(row[0] for row in production.execute(_PUBLICATIONS).fetchall())
    if production.info.server_version >= 150000:
        found += sorted(row[0] for row in production.execute(_SCHEMA_PUBLICATIONS).fetchall())
    return found


def untrusted_extensions(staging_server: psycopg.Connection, names: list[str]) -> list[str]:
    """Those of the extensions `names` the server lets only a superuser create, described."""
    return [row[0] for row in staging_server.execute(_UNTRUSTED, (names,)).fetchall()]


def superuser_problem(staging_server: psycopg.Connection, needed: list[str]) -> str | None:
    """Why the staging server's role cannot restore `needed` (what only a superuser can create); None if it can."""
    if not needed or is_superuser(staging_server):
        return None
    role = staging_server.execute("SELECT current_user").fetchone()[0]
    return (
        f"the staging server's role {role} is not a superuser, and only a superuser can restore production's "
        f"{', '.join(needed)}: the restore would stop there. Connect local.server_dsn as a superuser (the embedded "
        "server's role is one)"
    )


def refuse_without_superuser(staging_server: psycopg.Connection, needed: list[str]) -> None:
    """Raise before a restore that would stop at what only a superuser can create."""
    if problem := superuser_problem(staging_server, needed):
        raise RefreshError(problem)
