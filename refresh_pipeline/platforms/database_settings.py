"""Production's per-database settings (`ALTER DATABASE ... SET`, `ALTER ROLE ... IN DATABASE ... SET`), which
pg_dump leaves out of a snapshot: a staging without production's `search_path` or `TimeZone` behaves unlike
production. Recorded beside the snapshot and given to the restored database once its rows are in (a
`default_transaction_read_only` of production's would stop pg_restore). The pipeline's own sessions override
the ones that would stop a refresh (connections.py). Values are never logged: they may hold secrets."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg
from psycopg import sql

SETTINGS_FILE = "settings.json"  # in the snapshot folder, beside pg_dump's toc.dat
# Settings whose value is a list of names, stored with each name quoted as needed ("billing-v2", public): set
# as one literal per name, since one literal would be one name.
_LIST_SETTINGS = frozenset({"search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries"})

_READ = """
SELECT r.rolname, s.setconfig FROM pg_db_role_setting AS s LEFT JOIN pg_roles AS r ON r.oid = s.setrole
WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY r.rolname NULLS FIRST
"""


@dataclass(frozen=True)
class DatabaseSetting:
    role: str | None  # None: for every role (ALTER DATABASE ... SET)
    name: str
    value: str


def read_settings(conn: psycopg.Connection) -> list[DatabaseSetting]:
    return [
        DatabaseSetting(role, *item.split("=", 1))
        for role, config in conn.execute(_READ).fetchall()
        for item in config or []
        if "=" in item
    ]


def save_settings(settings: list[DatabaseSetting], snapshot_folder: Path) -> None:
    (snapshot_folder / SETTINGS_FILE).write_text(json.dumps([asdict(s) for s in settings], indent=2))


def load_settings(snapshot_folder: Path) -> list[DatabaseSetting] | None:
    """None for a snapshot taken before settings were recorded."""
    path = snapshot_folder / SETTINGS_FILE
    return [DatabaseSetting(**item) for item in json.loads(path.read_text())] if path.is_file() else None


def _list_items(value: str) -> list[str]:
    """`"billing-v2", public` -> ['billing-v2', 'public']: names split on commas outside double quotes."""
    items, current, quoted, i = [], "", False, 0
    while i < len(value):
        char = value[i]
        if char == '"' and quoted and value[i + 1 : i + 2] == '"':
            current, i = current + '"', i + 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            items.append(current.strip())
            current = ""
        else:
            current += char if quoted or not char.isspace() else ""
        i += 1
    return [*items, current.strip()] if current.strip() or items else []


def _statement(database: str, setting: DatabaseSetting) -> sql.Composed:
    target = (
        sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(setting.role), sql.Identifier(database))
        if setting.role
        else sql.SQL("ALTER DATABASE {}").format(sql.Identifier(database))
    )
    if setting.name.lower() in _LIST_SETTINGS:
        items = _list_items(setting.value)
        value = sql.SQL(", ").join(sql.Literal(item) for item in items) if items else sql.Literal("")
    else:
        value = sql.Literal(setting.value)
    return sql.SQL("{} SET {} = {}").format(target, sql.Identifier(*setting.name.split(".")), value)


def apply_settings(conn: psycopg.Connection, database: str, settings: list[DatabaseSetting] | None) -> list[str]:
    """Give `database` production's settings; returns notes on those it could not take (a role this server
    lacks, a setting it does not know), naming the setting, never its value."""
    if settings is None:
        return ["the snapshot does not record production's database settings (taken by an earlier version)"]
    notes = []
    for setting in settings:
        try:
            with conn.transaction():
                conn.execute(_statement(database, setting))
        except psycopg.Error as exc:
            who = f"role {setting.role}" if setting.role else "the database"
            reason = (exc.diag.message_primary or type(exc).__name__).split(":")[0]
            notes.append(f"production's {setting.name} setting for {who} was not carried over ({reason})")
    return notes
