"""Production's FOR ALL TABLES publications on the restored database: publishing no updates or deletes from the
restore until promotion.

Such a publication covers every table of the database, the pipeline's own bookkeeping too, and PostgreSQL then
refuses an UPDATE or DELETE on a table without a replica identity (`cannot update table "value_map" because it
does not have a replica identity and publishes updates`): the restore step failed on every refresh. Nobody
subscribes to staging, so nothing is lost meanwhile; promotion sets each one back to what production publishes.
A publication of listed tables or schemas never covers ours, and production's tables already satisfy it.
"""

import psycopg
from psycopg import sql

from refresh_pipeline.put_back import forget, remember_rows, remembered_rows

_PAUSED = "refresh_pipeline.publications_paused"
_COLUMNS = ("name", "publish")
# What a paused publication still publishes: neither needs a replica identity.
_KEPT_ACTIONS = ("insert", "truncate")
_PUBLISHING_CHANGES = """
SELECT pubname, concat_ws(', ', CASE WHEN pubinsert THEN 'insert' END, CASE WHEN pubupdate THEN 'update' END,
                          CASE WHEN pubdelete THEN 'delete' END, CASE WHEN pubtruncate THEN 'truncate' END)
FROM pg_publication WHERE puballtables AND (pubupdate OR pubdelete)
ORDER BY 1
"""


def _set_publish(conn: psycopg.Connection, name: str, actions: str) -> None:
    conn.execute(sql.SQL("ALTER PUBLICATION {} SET (publish = {})").format(sql.Identifier(name), sql.Literal(actions)))


def pause_publication_changes(conn: psycopg.Connection) -> list[str]:
    """Stop every FOR ALL TABLES publication publishing updates and deletes, remembering what it published;
    returns every one paused so far (a re-executed restore step finds them paused already). Run before the
    pipeline's first update of its own tables."""
    with conn.transaction():
        publishing = conn.execute(_PUBLISHING_CHANGES).fetchall()
        remember_rows(conn, _PAUSED, _COLUMNS, publishing)
        for name, actions in publishing:
            _set_publish(conn, name, ", ".join(a for a in actions.split(", ") if a in _KEPT_ACTIONS))
        return [name for name, _actions in remembered_rows(conn, _PAUSED, _COLUMNS)]


def resume_publication_changes(conn: psycopg.Connection) -> list[str]:
    """Set the publications pause_publication_changes changed back to what production published; returns
    them. Run after the pipeline's last update of its own tables."""
    with conn.transaction():
        paused = remembered_rows(conn, _PAUSED, _COLUMNS)
        forget(conn, _PAUSED)
        for name, actions in paused:
            if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone():
                _set_publish(conn, name, actions)
        return [name for name, _actions in paused]
