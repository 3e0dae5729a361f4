"""Production's extensions on the staging server of a local restore: named before the restore starts when the
server cannot create them, and created at production's versions.

pg_restore would stop at the first missing one, after restoring everything before it, with "could not open
extension control file"; this names all of them at once with the fix. And pg_restore creates an extension at the
server's default version, which is not always production's (pg_trgm 1.5 in production, 1.6 on a newer server):
the snapshot records production's versions, and the restore creates those the server offers at them first.
An RDS restore brings production's engine, so only the local platform (its embedded or configured server) asks.
"""

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from refresh_pipeline.errors import RefreshError
from refresh_pipeline.row_data_in_errors import first_line_without_row_data

# pg_restore --list line of an extension: "<dump id>; <catalog oid> <oid> EXTENSION - <name> <owner>"
_EXTENSION = re.compile(r'^\d+; \d+ \d+ EXTENSION - (?:"(?P<quoted>[^"]+)"|(?P<name>\S+))')
# Left out of every restore (restore_passes.py), so the server need not have it.
_LEFT_OUT = frozenset({"pg_cron"})


def snapshot_extensions(listing: list[str]) -> list[str]:
    """The extensions a snapshot's `pg_restore --list` creates."""
    return [match["quoted"] or match["name"] for line in listing if (match := _EXTENSION.match(line))]


def unavailable_extensions(conn: psycopg.Connection, names: list[str]) -> list[str]:
    """Those of `names` the server of `conn` has no control file for, sorted (pg_cron never: it is left out)."""
    rows = conn.execute(
        "SELECT name FROM unnest(%s::text[]) AS wanted(name) "
        "WHERE name <> ALL(%s) AND NOT EXISTS (SELECT FROM pg_available_extensions a WHERE a.name = wanted.name) "
        "ORDER BY name",
        (names, list(_LEFT_OUT)),
    ).fetchall()
    return [name for (name,) in rows]


def unavailable_extensions_problem(conn: psycopg.Connection, names: list[str]) -> str | None:
    """What to install on the staging server for production's extensions `names`; None when it has them all."""
    missing = unavailable_extensions(conn, names)
    if not missing:
        return None
    major = conn.info.server_version // 10000
    return (
        f"production uses extension(s) {', '.join(missing)}, which the staging server (PostgreSQL {major}) does "
        f"not have: install them for PostgreSQL {major} on it (Debian and Ubuntu package most as "
        f"postgresql-{major}-<name>; `apt-cache search postgresql-{major}` lists them) and run again"
    )


def refuse_unavailable_extensions(conn: psycopg.Connection, listing: list[str]) -> None:
    """Raise before a restore that would fail on an extension the server lacks."""
    problem = unavailable_extensions_problem(conn, snapshot_extensions(listing))
    if problem:
        raise RefreshError(f"cannot restore the snapshot: {problem}.")


VERSIONS_FILE = "extensions.json"  # in the snapshot folder, beside pg_dump's toc.dat


@dataclass(frozen=True)
class ExtensionVersion:
    name: str
    version: str
    schema: str


def read_extension_versions(conn: psycopg.Connection) -> list[ExtensionVersion]:
    """The extensions of the database of `conn` (production's, read-only), with their versions and schemas."""
    rows = conn.execute(
        "SELECT e.extname, e.extversion, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "ORDER BY e.extname"
    ).fetchall()
    return [ExtensionVersion(name, version, schema) for name, version, schema in rows]


def save_extension_versions(versions: list[ExtensionVersion], snapshot_folder: Path) -> None:
    (snapshot_folder / VERSIONS_FILE).write_text(json.dumps([asdict(v) for v in versions], indent=2))


def load_extension_versions(snapshot_folder: Path) -> list[ExtensionVersion]:
    """Empty for a snapshot taken before versions were recorded (the server's defaults are created)."""
    path = snapshot_folder / VERSIONS_FILE
    return [ExtensionVersion(**item) for item in json.loads(path.read_text())] if path.is_file() else []


_OFFERED = """
SELECT a.name, a.default_version, array_agg(v.version)
FROM pg_available_extensions a JOIN pg_available_extension_versions v ON v.name = a.name
WHERE a.name = ANY(%s) GROUP BY a.name, a.default_version
"""


@dataclass(frozen=True)
class VersionPlan:
    pinned: list[ExtensionVersion]  # created at production's version before the restore, in the snapshot's order
    notes: list[str]  # extensions the server does not offer at production's version: created at its default


def plan_extension_versions(
    conn: psycopg.Connection, production: list[ExtensionVersion], created: list[str]
) -> VersionPlan:
    """For the extensions the snapshot creates (`created`, in its order), those whose server default is not
    production's version: pinned when the server offers that version, else noted."""
    offered = {name: (default, versions) for name, default, versions in conn.execute(_OFFERED, ([*created],))}
    versions = {extension.name: extension for extension in production}
    pinned, notes = [], []
    for name in created:
        extension = versions.get(name)
        if extension is None or name in _LEFT_OUT or name not in offered:
            continue
        default, available = offered[name]
        if extension.version == default:
            continue
        if extension.version in available:
            pinned.append(extension)
        else:
            notes.append(
                f"extension {name} is {default} on the staging server and {extension.version} in production, which "
                f"the server does not offer (it offers {', '.join(sorted(available))})"
            )
    return VersionPlan(pinned, notes)


def create_pinned_extensions(conn: psycopg.Connection, pinned: list[ExtensionVersion]) -> None:
    """Create each extension at production's version in its schema (restored already, unless the extension
    makes it: postgis_topology's `topology`), before the rest of the restore, whose CREATE EXTENSION IF NOT
    EXISTS then leaves it as it is."""
    for extension in pinned:
        exists = conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (extension.schema,)).fetchone()[0]
        in_schema = sql.SQL(" WITH SCHEMA {}").format(sql.Identifier(extension.schema)) if exists else sql.SQL("")
        try:
            conn.execute(
                sql.SQL("CREATE EXTENSION IF NOT EXISTS {}{} VERSION {} CASCADE").format(
                    sql.Identifier(extension.name), in_schema, sql.Literal(extension.version)
                )
            )
        except psycopg.Error as error:
            raise RefreshError(
                f"cannot restore the snapshot: creating extension {extension.name} at production's version "
                f"{extension.version} failed: {first_line_without_row_data(error)}"
            ) from None
