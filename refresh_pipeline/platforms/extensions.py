"""Extensions production uses that the staging server cannot create, named before a local restore starts.

pg_restore would stop at the first one, after restoring everything before it, with "could not open extension
control file"; this names all of them at once with the fix. An RDS restore brings production's engine, so
only the local platform (its embedded or configured server) asks.
"""

import re

import psycopg

from refresh_pipeline.errors import RefreshError

# pg_restore --list line of an extension: "<dump id>; <catalog oid> <oid> EXTENSION - <name> <owner>"
_EXTENSION = re.compile(r'^\d+; \d+ \d+ EXTENSION - (?:"(?P<quoted>[^"]+)"|(?P<name>\S+))')
# Left out of every restore (restore_passes.py), so the server need not have it.
_LEFT_OUT = frozenset({"pg_cron"})


def snapshot_extensions(listing: list[str]) -> list[str]:
    """The extensions a snapshot's `pg_restore --list` creates."""
    return [match["quoted"] or match["name"] for line in listing if (match := _EXTENSION.match(line))]


def installed_extensions(conn: psycopg.Connection) -> list[str]:
    """The extensions of the database of `conn` (production's, for `validate`)."""
    return [name for (name,) in conn.execute("SELECT extname FROM pg_extension ORDER BY extname")]


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
