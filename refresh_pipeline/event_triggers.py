"""Production's event triggers on the restored database: off from the restore until before promotion.

An event trigger fires on DDL, and a refresh does DDL: pg_restore's own (with an empty search_path, where a
trigger's function writing to an unqualified `ddl_log` fails the restore), cutting the links to production,
the masking's staging tables and rewrites. One that logs DDL into a table would add rows the integrity check
then finds; one that refuses some DDL would stop the refresh. So the restore creates them last
(restore_passes.py), the restore step switches every enabled one off before anything else, remembering how each
was enabled, and promotion switches them back on exactly so.
"""

import psycopg
from psycopg import sql

from refresh_pipeline.put_back import forget, remember_rows, remembered_rows

_PAUSED = "refresh_pipeline.event_triggers_paused"
_COLUMNS = ("name", "state")
# pg_event_trigger.evtenabled: O (enabled), R (replica), A (always), D (disabled).
_ENABLE = {"O": "ENABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}


def pause_event_triggers(conn: psycopg.Connection) -> list[str]:
    """Disable every enabled event trigger, remembering how it was enabled; returns every one paused so far (a
    re-executed restore step finds them paused already). Run before any other DDL on the restored database."""
    with conn.transaction():
        enabled = conn.execute(
            "SELECT evtname::text, evtenabled::text FROM pg_event_trigger WHERE evtenabled <> 'D'"
        ).fetchall()
        # First off (ALTER EVENT TRIGGER fires none), then the bookkeeping, whose CREATE TABLE would fire them.
        for name, _state in enabled:
            conn.execute(sql.SQL("ALTER EVENT TRIGGER {} DISABLE").format(sql.Identifier(name)))
        remember_rows(conn, _PAUSED, _COLUMNS, enabled)
        return [name for name, _state in remembered_rows(conn, _PAUSED, _COLUMNS)]


def resume_event_triggers(conn: psycopg.Connection) -> list[str]:
    """Enable again, as production had them, the event triggers pause_event_triggers disabled; returns them."""
    with conn.transaction():
        paused = remembered_rows(conn, _PAUSED, _COLUMNS)
        # The bookkeeping goes first: dropping it with the triggers on would fire them.
        forget(conn, _PAUSED)
        for name, state in paused:
            if conn.execute("SELECT 1 FROM pg_event_trigger WHERE evtname = %s", (name,)).fetchone():
                conn.execute(sql.SQL("ALTER EVENT TRIGGER {} {}").format(sql.Identifier(name), sql.SQL(_ENABLE[state])))
        return [name for name, _state in paused]
