"""pg_restore of a snapshot, in passes when the snapshot needs them:

0. the schemas, when an extension is to be created at production's version (extensions.py) in one of them
   before the rest;
1. everything but the CHECK constraints pg_dump writes apart from their tables, the materialized views' data
   and the tables' row-level security, in one parallel pass (index builds overlap other tables' rows arriving,
   as in a plain restore);
2. those CHECK constraints (production added them NOT VALID, mostly): one on a parent of plain inheritance
   became ready with the parent's rows, and adding it adds it to the children too, so a child's rows that
   another job loaded after it failed it (a race of parallel pg_restore);
3. the materialized views' data, except for views reading a foreign table: refreshing one would read
   production's live tables through production's foreign server and user mapping, before the restore step
   cuts them (links_to_production.py). Such a view stays unpopulated, as the masked database keeps it;
4. the row-level security switches: policies a table forces on its owner (the connecting role, with
   --no-owner) would refuse a role that is not a superuser the foreign keys' validation or a view's refresh,
   depending on the order parallel jobs take (the restore step stops forcing them for the refresh);
5. the event triggers, last: a parallel restore could create one before its other DDL, which would fire it
   (event_triggers.py; the restore step switches them off for the refresh).

pg_cron, when production keeps it in this database (its `cron.database_name`), is left out with its jobs and
their run history: the extension can live only in one database of a server, and on this copy its jobs would
run production's schedule against production's rows (the run history holds their output, which nothing masks).
"""

import re
import tempfile
from pathlib import Path

from refresh_pipeline.masking.materialized_views import views_reading_foreign_tables
from refresh_pipeline.platforms.base import Log
from refresh_pipeline.platforms.client_progress import RestoreProgress
from refresh_pipeline.platforms.client_tools import run_client_tool
from refresh_pipeline.platforms.connections import connect, database_name
from refresh_pipeline.platforms.extensions import (
    ExtensionVersion,
    create_pinned_extensions,
    plan_extension_versions,
    refuse_unavailable_extensions,
    snapshot_extensions,
)
from refresh_pipeline.platforms.restore_privileges import refuse_without_superuser, untrusted_extensions

# pg_restore --list lines: "<dump id>; <catalog oid> <oid> <description> <schema> <name> <owner>"
_ENTRY = re.compile(r"^\d+; \d+ \d+ (?P<description>ROW SECURITY|MATERIALIZED VIEW DATA) (?P<names>.*)$")
_SCHEMA = re.compile(r"^\d+; \d+ \d+ SCHEMA - ")
_CHECK_CONSTRAINT = re.compile(r"^\d+; \d+ \d+ CHECK CONSTRAINT ")
_EVENT_TRIGGER = re.compile(r"^\d+; \d+ \d+ (EVENT TRIGGER|COMMENT - EVENT TRIGGER) ")
_EVENT_TRIGGER_NAME = re.compile(r"^\d+; \d+ \d+ EVENT TRIGGER - (?P<name>.+) \S+$")  # the owner last


# The extension, its comment, and its tables' rows and sequences (pg_cron's schema is always `cron`).
_SCHEDULER = re.compile(
    r"^\d+; \d+ \d+ (EXTENSION - pg_cron|COMMENT - EXTENSION pg_cron|(TABLE DATA|SEQUENCE SET) cron) "
)
SCHEDULER_LEFT_OUT = (
    "pg_cron was left out with production's scheduled jobs and their run history: on this copy the jobs would "
    "run against production's rows, and the extension can live only in the server's cron.database_name"
)


def _scheduler_entries(lines: list[str]) -> list[str]:
    scheduler = [line for line in lines if _SCHEDULER.match(line)]
    return scheduler if any(" EXTENSION - pg_cron" in line for line in scheduler) else []


def _entries(lines: list[str], description: str) -> list[str]:
    return [line for line in lines if (match := _ENTRY.match(line)) and match["description"] == description]


def _names_view(line: str, views: set[tuple[str, str]]) -> bool:
    match = _ENTRY.match(line)
    names = f"{match['names']} " if match else ""
    return any(names.startswith(f"{schema} {name} ") for schema, name in views)


def restore_snapshot(
    pg_restore: str,
    jobs: int,
    conninfo: str,
    snapshot: str,
    env: dict[str, str],
    what: str,
    extensions: list[ExtensionVersion] | None = None,
    log: Log | None = None,
) -> list[str]:
    """Restore `snapshot` into the (empty) database of `conninfo`, its `extensions` (production's, from the
    snapshot) at production's versions where the server offers them; returns notes on what was left out or
    differs. Progress over all passes goes to `log`."""
    # --no-tablespaces: production's tablespaces are its own disks, which the staging server does not have.
    restore = [pg_restore, f"--jobs={jobs}", "--no-owner", "--no-acl", "--no-tablespaces", "--exit-on-error"]
    restore += ["-d", database_name(conninfo)]
    lines = run_client_tool([pg_restore, "--list", snapshot], env, what).splitlines()
    with connect(conninfo) as conn:
        refuse_unavailable_extensions(conn, lines)
        in_snapshot = snapshot_extensions(lines)
        triggers = [f"event trigger {match['name']}" for line in lines if (match := _EVENT_TRIGGER_NAME.match(line))]
        refuse_without_superuser(conn, triggers + untrusted_extensions(conn, in_snapshot))
        versions = plan_extension_versions(conn, extensions or [], in_snapshot)
    schemas = [line for line in lines if _SCHEMA.match(line)] if versions.pinned else []
    row_security = _entries(lines, "ROW SECURITY")
    view_data = _entries(lines, "MATERIALIZED VIEW DATA")
    scheduler = _scheduler_entries(lines)
    event_triggers = [line for line in lines if _EVENT_TRIGGER.match(line)]
    checks = [line for line in lines if _CHECK_CONSTRAINT.match(line)]
    notes = [*versions.notes, *([SCHEDULER_LEFT_OUT] if scheduler else [])]
    progress = RestoreProgress(lines, snapshot, what, jobs, log) if log else None
    on_progress = progress.line if progress else None
    with tempfile.TemporaryDirectory() as folder:

        def restore_entries(part: str, selected: list[str]) -> None:  # a pass with nothing to restore is none
            if selected:
                listing = Path(folder, f"{part}.list")
                listing.write_text("\n".join(selected) + "\n")
                run_client_tool([*restore, f"--use-list={listing}", snapshot], env, what, on_progress)

        if versions.pinned:
            restore_entries("schemas", schemas)
            with connect(conninfo, autocommit=True) as conn:
                create_pinned_extensions(conn, versions.pinned)
        apart = {*schemas, *row_security, *view_data, *scheduler, *event_triggers, *checks}
        restore_entries("schema and rows", [line for line in lines if line not in apart])
        restore_entries("check constraints", checks)
        with connect(conninfo) as conn:
            reading_production = {(schema, name) for schema, name, _ in views_reading_foreign_tables(conn)}
        restore_entries("views", [line for line in view_data if not _names_view(line, reading_production)])
        restore_entries("row security", row_security)
        restore_entries("event triggers", event_triggers)
    if progress:
        progress.finished()
    return notes
