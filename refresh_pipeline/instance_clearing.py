"""What an RDS restore brings besides the database to mask, cleared before anything else connects to it.

A snapshot restore copies production's whole server: every other database on it (analytics, a legacy app),
the rows production keeps in `postgres` and `template1`, and pg_cron with production's scheduled jobs and
their run history. Nothing masks or audits those, and staging's master user reaches all of them, so:

- production's replication slots (a CDC tool's, a replica's) are dropped: nothing consumes them on the copy,
  so each would hold its WAL, and the masking writes plenty, until the disk is full;
- every database but the one to mask and the server's own (`postgres`, `template0`, `template1`, RDS's
  `rdsadmin`) is dropped;
- production's tables, materialized views and large objects in `postgres` and `template1` are emptied
  (an extension's own tables, such as PostGIS's `spatial_ref_sys`, stay), and their links to production
  cut as the masked database's are (links_to_production.py);
- pg_cron's jobs, wherever the extension is, are deactivated (kept, so staging shows what production
  schedules) and its run history, which holds the jobs' output, is emptied. Their commands, which the
  masking never reads, are copied into the audit schema of the database to mask (SCHEDULED_COMMANDS), so that
  no_pii_in_definitions reads them too (audit/definitions.py); the audit schema is dropped before promotion.

Only ever called on an instance this pipeline restored (aws.py); the local platform's restores are one
database each, and leave pg_cron out (restore_passes.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from refresh_pipeline.errors import RefreshError
from refresh_pipeline.links_to_production import cut_links_to_production
from refresh_pipeline.masking.catalog import USER_SCHEMA
from refresh_pipeline.platforms.connections import connect

MAINTENANCE_DATABASES = ("postgres", "template1")  # kept, emptied of production's rows
UNTOUCHED_DATABASES = ("template0", "rdsadmin")  # PostgreSQL's and RDS's own; no one connects to them

_DATABASES = """
SELECT d.datname, r.rolname, r.rolsuper, d.datistemplate, pg_has_role(current_user, d.datdba, 'MEMBER')
FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba ORDER BY 1
"""
# Tables and populated materialized views of the database's own, not an extension's.
_PRODUCTION_RELATIONS = f"""
SELECT c.relkind, format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {USER_SCHEMA} AND (c.relkind IN ('r', 'p') OR (c.relkind = 'm' AND c.relispopulated))
  AND NOT c.relispartition
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
ORDER BY 2
"""
_DEACTIVATE_JOBS = """
UPDATE cron.job SET active = false WHERE active
RETURNING format('%s (%s) in %s as %s', coalesce(jobname, 'job ' || jobid), schedule, database, username)
"""
_SCHEDULER_RUNNING = "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'pg_cron launcher')"
_JOB_COMMANDS = "SELECT format('%s in %s', coalesce(jobname, 'job ' || jobid), database), command FROM cron.job"
SCHEDULED_COMMANDS = sql.SQL("refresh_pipeline_audit.scheduled_job_commands")


@dataclass(frozen=True)
class ClearedInstance:
    databases_dropped: tuple[str, ...] = ()
    replication_slots_dropped: tuple[str, ...] = ()
    emptied: tuple[str, ...] = ()  # "postgres: public.audit_log"; large objects as "postgres: 3 large object(s)"
    links_cut: dict[str, dict[str, object]] = field(default_factory=dict)  # database -> what was cut there
    cron_jobs_deactivated: tuple[str, ...] = ()  # "nightly (0 3 * * *) in app as app" (never the command)
    scheduler_was_running: bool = False

    def as_metadata(self) -> dict[str, object]:
        return {
            "databases_dropped": list(self.databases_dropped),
            "replication_slots_dropped": list(self.replication_slots_dropped),
            "emptied": list(self.emptied),
            "links_to_production_cut": self.links_cut,
            "cron_jobs_deactivated": list(self.cron_jobs_deactivated),
        }

    def notes(self) -> list[str]:
        if not (self.scheduler_was_running and self.cron_jobs_deactivated):
            return []
        return [
            f"pg_cron ran on the restored instance (its parameter group loads it): production's "
            f"{len(self.cron_jobs_deactivated)} active job(s) could run against production's rows until the "
            "pipeline deactivated them; give restored instances a parameter group without pg_cron "
            "(aws.parameter_group)"
        ]


def _refused(what: str, exc: psycopg.Error, fix: str) -> RefreshError:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return RefreshError(f"cannot {what} on the restored instance: {first_line}. {fix}")


def _drop_replication_slots(conn: psycopg.Connection) -> list[str]:
    slots = [name for (name,) in conn.execute("SELECT slot_name FROM pg_replication_slots ORDER BY 1").fetchall()]
    try:
        for slot in slots:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    except psycopg.Error as exc:
        raise _refused(
            "drop production's replication slots", exc, "They would hold the copy's WAL until its disk is full."
        ) from None
    return slots


@dataclass(frozen=True)
class _Database:
    name: str
    owner: str
    owner_is_superuser: bool
    is_template: bool
    owned: bool  # the connecting role is its owner or a member of the owner


def _databases(conn: psycopg.Connection) -> list[_Database]:
    return [_Database(*row) for row in conn.execute(_DATABASES).fetchall()]


def _others(databases: list[_Database], keep: str) -> list[_Database]:
    """The server's databases but `keep` and the server's own."""
    return [db for db in databases if db.name not in (keep, *MAINTENANCE_DATABASES, *UNTOUCHED_DATABASES)]


def _drop_database(conn: psycopg.Connection, db: _Database) -> None:
    database, owner = sql.Identifier(db.name), sql.Identifier(db.owner)
    try:
        if not db.owned:  # the master user may make itself a member of an ordinary role
            conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(owner))
        if db.is_template:
            conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(database))
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(database))
        if not db.owned:
            conn.execute(sql.SQL("REVOKE {} FROM CURRENT_USER").format(owner))
    except psycopg.Error as exc:
        raise _refused(
            f"drop production's database {db.name} (owner {db.owner})",
            exc,
            "Nothing masks it, so the instance is not promoted; its owner must be a role the master user may "
            "be granted (not a superuser).",
        ) from None


def _empty(conn: psycopg.Connection, database: str) -> list[str]:
    """Empty production's tables, materialized views and large objects in a maintenance database."""
    relations = conn.execute(_PRODUCTION_RELATIONS).fetchall()
    tables = [name for kind, name in relations if kind in ("r", "p")]
    views = [name for kind, name in relations if kind == "m"]
    try:
        with conn.transaction():
            if tables:
                conn.execute(sql.SQL("TRUNCATE {} CASCADE").format(sql.SQL(", ").join(map(sql.SQL, tables))))
            for view in views:
                conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {} WITH NO DATA").format(sql.SQL(view)))
            large_objects = conn.execute("SELECT count(lo_unlink(oid)) FROM pg_largeobject_metadata").fetchone()[0]
    except psycopg.Error as exc:
        raise _refused(
            f"empty production's rows in database {database}",
            exc,
            "Nothing masks them, so the instance is not promoted; the master user must own them in production.",
        ) from None
    emptied = [f"{database}: {name}" for name in tables + views]
    return emptied + ([f"{database}: {large_objects} large object(s)"] if large_objects else [])


def _deactivate_scheduler(conn: psycopg.Connection, database: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Deactivate pg_cron's jobs and empty its run history, if the extension is in this database; the jobs
    deactivated, and every job's (name, command)."""
    if not conn.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron')").fetchone()[0]:
        return [], []
    try:
        with conn.transaction():
            commands = [(job, command) for job, command in conn.execute(_JOB_COMMANDS).fetchall()]
            jobs = [line for (line,) in conn.execute(_DEACTIVATE_JOBS).fetchall()]
            if conn.execute("SELECT to_regclass('cron.job_run_details') IS NOT NULL").fetchone()[0]:
                conn.execute("TRUNCATE cron.job_run_details")
    except psycopg.Error as exc:
        raise _refused(
            f"deactivate production's pg_cron jobs in database {database}",
            exc,
            "They would run against production's rows, so the instance is not promoted; in production, let the "
            "master user update cron.job and truncate cron.job_run_details (and see every job: their owner, or "
            "BYPASSRLS).",
        ) from None
    return jobs, commands


def _keep_scheduled_commands(conn: psycopg.Connection, commands: list[tuple[str, str]]) -> None:
    """The jobs' commands, for the definitions audit of the database of `conn` (the one to mask)."""
    with conn.transaction():
        conn.execute("CREATE SCHEMA IF NOT EXISTS refresh_pipeline_audit")
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(SCHEDULED_COMMANDS))
        if not commands:
            return
        conn.execute(sql.SQL("CREATE TABLE {} (job text NOT NULL, command text NOT NULL)").format(SCHEDULED_COMMANDS))
        with conn.cursor() as cursor:
            cursor.executemany(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(SCHEDULED_COMMANDS), commands)


def other_databases_findings(production: psycopg.Connection, keep: str) -> tuple[list[str], list[str]]:
    """What `validate` says about production's other databases (read through its read-only session):
    problems (a refresh would fail) and warnings."""
    others = _others(_databases(production), keep)
    problems = [
        f"database {db.name} on production's server is owned by superuser {db.owner}: the master user could not "
        "drop it from the restored instance, so every refresh would fail; give it an ordinary owner"
        for db in others
        if db.owner_is_superuser
    ]
    warnings = [
        f"production's server also holds database(s) {', '.join(db.name for db in others)}: an RDS restore "
        f"brings them, and the refresh drops them from the restored instance (staging holds only {keep})"
    ]
    return problems, warnings if others else []


def clear_restored_instance(conninfo: Callable[[str], str], keep: str) -> ClearedInstance:
    """Clear an instance restored from production's snapshot but for `keep`; `conninfo(database)` reaches one
    of its databases as the master user."""
    with connect(conninfo("postgres"), autocommit=True) as conn:
        databases = _databases(conn)
        present = [db.name for db in databases]
        if keep not in present:
            raise RefreshError(
                f"the restored instance has no database {keep!r} (aws.database_name); it has: {', '.join(present)}."
            )
        scheduler_was_running = bool(conn.execute(_SCHEDULER_RUNNING).fetchone()[0])
        slots = _drop_replication_slots(conn)
        others = _others(databases, keep)
        for db in others:
            _drop_database(conn, db)
    emptied: list[str] = []
    links_cut: dict[str, dict[str, object]] = {}
    jobs: list[str] = []
    commands: list[tuple[str, str]] = []
    for database in (keep, *MAINTENANCE_DATABASES):
        with connect(conninfo(database), autocommit=True) as conn:
            if database != keep:  # the masked database's own links are cut by the restore step
                emptied += _empty(conn, database)
                links = cut_links_to_production(conn)
                if links:
                    links_cut[database] = links.as_metadata()
            deactivated, listed = _deactivate_scheduler(conn, database)
            jobs += deactivated
            commands += listed
    with connect(conninfo(keep), autocommit=True) as conn:
        _keep_scheduled_commands(conn, commands)
    dropped = tuple(db.name for db in others)
    return ClearedInstance(dropped, tuple(slots), tuple(emptied), links_cut, tuple(jobs), scheduler_was_running)
