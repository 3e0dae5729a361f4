"""Links from a restored database back to production, cut right after the restore: foreign servers
(postgres_fdw, dblink and the like) would let staging read and write production's live tables, their user
mappings hold production credentials, and a logical replication subscription would pull from production's
publication (on RDS a restored subscription is even enabled, and takes production's replication slot).

Foreign tables and the views over them stay, so the schema is production's; querying one fails instead of
reaching production."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from refresh_pipeline.errors import RefreshError

# A name that never resolves (RFC 2606), for the host of every foreign server.
DISCONNECTED_HOST = "refresh-pipeline-disconnected.invalid"

_SERVERS = """
SELECT s.srvname, coalesce(s.srvoptions, '{}')
FROM pg_foreign_server AS s
WHERE NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_foreign_server'::regclass
                  AND d.objid = s.oid AND d.deptype = 'e')
ORDER BY 1
"""
_USER_MAPPINGS = "SELECT srvname, usename FROM pg_user_mappings ORDER BY 1, 2"
_SUBSCRIPTIONS = (
    "SELECT subname FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database "
    "WHERE datname = current_database()) ORDER BY 1"
)


@dataclass(frozen=True)
class CutLinks:
    foreign_servers: tuple[str, ...]  # their hosts now point nowhere
    user_mappings: int  # dropped, with the credentials in their options
    subscriptions: tuple[str, ...]  # dropped, without touching the publisher's replication slot

    def __bool__(self) -> bool:
        return bool(self.foreign_servers or self.user_mappings or self.subscriptions)

    def as_metadata(self) -> dict[str, object]:
        return {
            "foreign_servers": list(self.foreign_servers),
            "user_mappings_dropped": self.user_mappings,
            "subscriptions_dropped": list(self.subscriptions),
        }


def _option_changes(options: list[str]) -> sql.Composable | None:
    """ALTER SERVER options that point its connection nowhere: `host` replaced, `hostaddr` dropped (libpq would
    connect to a hostaddr without resolving the host). A server without either (file_fdw) is left alone."""
    names = {option.split("=", 1)[0] for option in options}
    changes = []
    if "host" in names or "hostaddr" in names:
        verb = "SET" if "host" in names else "ADD"
        changes.append(sql.SQL(verb + " host {}").format(sql.Literal(DISCONNECTED_HOST)))
    if "hostaddr" in names:
        changes.append(sql.SQL("DROP hostaddr"))
    return sql.SQL(", ").join(changes) if changes else None


def database_subscriptions(conn: psycopg.Connection) -> list[str]:
    """The names of this database's logical replication subscriptions."""
    return [name for (name,) in conn.execute(_SUBSCRIPTIONS).fetchall()]


def cut_links_to_production(conn: psycopg.Connection) -> CutLinks:
    """Drop user mappings and subscriptions and point foreign servers nowhere, in one transaction."""
    try:
        with conn.transaction():
            mappings = conn.execute(_USER_MAPPINGS).fetchall()
            for server, user in mappings:
                role = sql.SQL("PUBLIC") if user == "public" else sql.Identifier(user)
                conn.execute(sql.SQL("DROP USER MAPPING FOR {} SERVER {}").format(role, sql.Identifier(server)))
            servers = []
            for server, options in conn.execute(_SERVERS).fetchall():
                changes = _option_changes(options)
                if changes is not None:
                    conn.execute(sql.SQL("ALTER SERVER {} OPTIONS ({})").format(sql.Identifier(server), changes))
                    servers.append(server)
            subscriptions = database_subscriptions(conn)
            for name in subscriptions:
                subscription = sql.Identifier(name)
                conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(subscription))
                # Without a slot, DROP does not connect to the publisher to drop production's slot.
                conn.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(subscription))
                conn.execute(sql.SQL("DROP SUBSCRIPTION {}").format(subscription))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise RefreshError(
            "cannot cut the restored database's links to production (foreign servers, user mappings, "
            f"subscriptions): {str(exc).strip().splitlines()[0]}. Connect as their owner or a superuser; until "
            "then the restored database is not masked or promoted."
        ) from None
    return CutLinks(tuple(servers), len(mappings), tuple(subscriptions))
