"""pg_restore of a snapshot, in passes when the snapshot needs them:

1. everything but the materialized views' data and the tables' row-level security, in one parallel pass
   (index builds overlap other tables' rows arriving, as in a plain restore);
2. the materialized views' data, except for views reading a foreign table: refreshing one would read
   production's live tables through production's foreign server and user mapping, before the restore step
   cuts them (links_to_production.py). Such a view stays unpopulated, as the masked database keeps it;
3. the row-level security switches: policies a table forces on its owner (the connecting role, with
   --no-owner) would refuse a role that is not a superuser the foreign keys' validation or a view's refresh,
   depending on the order parallel jobs take (the restore step stops forcing them for the refresh).
"""

import re
import tempfile
from pathlib import Path

from refresh_pipeline.masking.materialized_views import views_reading_foreign_tables
from refresh_pipeline.platforms.client_tools import run_client_tool
from refresh_pipeline.platforms.connections import connect, database_name

# pg_restore --list lines: "<dump id>; <catalog oid> <oid> <description> <schema> <name> <owner>"
_ENTRY = re.compile(r"^\d+; \d+ \d+ (?P<description>ROW SECURITY|MATERIALIZED VIEW DATA) (?P<names>.*)$")


def _entries(lines: list[str], description: str) -> list[str]:
    return [line for line in lines if (match := _ENTRY.match(line)) and match["description"] == description]


def _names_view(line: str, views: set[tuple[str, str]]) -> bool:
    match = _ENTRY.match(line)
    names = f"{match['names']} " if match else ""
    return any(names.startswith(f"{schema} {name} ") for schema, name in views)


def restore_snapshot(pg_restore: str, jobs: int, conninfo: str, snapshot: str, env: dict[str, str], what: str) -> None:
    """Restore `snapshot` into the (empty) database of `conninfo`."""
    restore = [pg_restore, f"--jobs={jobs}", "--no-owner", "--no-acl", "--exit-on-error", "-d", database_name(conninfo)]
    lines = run_client_tool([pg_restore, "--list", snapshot], env, what).splitlines()
    row_security = _entries(lines, "ROW SECURITY")
    view_data = _entries(lines, "MATERIALIZED VIEW DATA")
    if not row_security and not view_data:
        run_client_tool([*restore, snapshot], env, what)
        return
    with tempfile.TemporaryDirectory() as folder:

        def restore_entries(part: str, selected: list[str]) -> None:
            if selected:
                listing = Path(folder, f"{part}.list")
                listing.write_text("\n".join(selected) + "\n")
                run_client_tool([*restore, f"--use-list={listing}", snapshot], env, what)

        restore_entries("schema and rows", [line for line in lines if line not in {*row_security, *view_data}])
        with connect(conninfo) as conn:
            reading_production = {(schema, name) for schema, name, _ in views_reading_foreign_tables(conn)}
        restore_entries("views", [line for line in view_data if not _names_view(line, reading_production)])
        restore_entries("row security", row_security)
