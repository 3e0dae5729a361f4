"""Large objects (pg_largeobject): files stored beside the tables, in no column the policy could mask. The
policy's `large_objects:` says what becomes of production's: `remove` (unlinked right after the restore)
or `keep` (kept as they are, and audited like a kept bytea column)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from refresh_pipeline.chunked import Progress
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.masking.catalog import TableInfo
from refresh_pipeline.masking.policy import MaskingPolicy

# Large objects unlinked per transaction: each holds a lock until commit, and the lock table is small.
UNLINK_BATCH = 500


@dataclass(frozen=True)
class LargeObjects:
    count: int
    oid_columns: tuple[str, ...]  # columns of type oid (or the `lo` domain) that may point at them


def count_large_objects(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0]


def read_large_objects(conn: psycopg.Connection, tables: dict[tuple[str, str], TableInfo]) -> LargeObjects:
    count = count_large_objects(conn)
    oid_columns = tuple(
        f"{info.qualified_name}.{column.name}"
        for info in tables.values()
        for column in info.columns
        if column.base_type == "oid" and not column.is_array
    )
    return LargeObjects(count, oid_columns)


def large_objects_problem(policy: MaskingPolicy, found: LargeObjects) -> str | None:
    """Default deny for large objects too: the database holds some and the policy does not say what to do."""
    if not found.count or policy.large_objects is not None:
        return None
    pointers = f" (columns that may point at them: {', '.join(found.oid_columns)})" if found.oid_columns else ""
    return (
        f"{policy.source}: the database holds {found.count} large object(s){pointers}, which no column rule "
        "masks. Add a top-level `large_objects: remove` (unlinked right after the restore; oid columns then "
        "point at nothing: null them or keep them) or `large_objects: keep` (kept as they are and audited: "
        "a production email, phone or UPI handle in one fails the refresh)."
    )


def remove_large_objects(conn: psycopg.Connection, log: Callable[[str], None]) -> int:
    """Unlink every large object, a batch per transaction; returns how many were removed."""
    total = count_large_objects(conn)
    if not total:
        return 0
    progress = Progress("removing large objects", total, log, unit="large objects")
    removed = 0
    while True:
        try:
            with conn.transaction():
                batch = conn.execute(
                    "SELECT count(lo_unlink(oid)) FROM "
                    "(SELECT oid FROM pg_largeobject_metadata ORDER BY oid LIMIT %s) AS batch",
                    (UNLINK_BATCH,),
                ).fetchone()[0]
        except psycopg.errors.InsufficientPrivilege:
            raise RefreshError(
                f"cannot remove the restored database's large objects ({removed} of {total} removed): the "
                "connecting role does not own them. Connect as their owner or a superuser, or set "
                "`lo_compat_privileges = on` on the restored server."
            ) from None
        if not batch:
            return removed
        removed += batch
        progress.add(batch, batch)
