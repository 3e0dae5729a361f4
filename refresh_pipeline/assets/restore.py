"""restored_instance: a new, dated database restored from the latest snapshot, ready to be masked."""

import time
from datetime import UTC, datetime

import dagster as dg
from psycopg import sql

from refresh_pipeline.assets.keys import PRODUCTION_SNAPSHOT, REFRESH_GROUP
from refresh_pipeline.audit.integrity import record_baseline
from refresh_pipeline.autovacuum import pause_autovacuum
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.event_triggers import pause_event_triggers
from refresh_pipeline.foreign_partitions import detach_foreign_partitions
from refresh_pipeline.links_to_production import cut_links_to_production
from refresh_pipeline.masking.catalog import count_rows, read_tables
from refresh_pipeline.masking.large_objects import remove_large_objects
from refresh_pipeline.masking.originals import record_originals
from refresh_pipeline.masking.runner import install_functions, require_trigger_control
from refresh_pipeline.platforms.base import Snapshot
from refresh_pipeline.publications import pause_publication_changes
from refresh_pipeline.resources import RefreshResource
from refresh_pipeline.row_data_in_errors import without_row_data_in_errors
from refresh_pipeline.row_security import lift_forced_row_security
from refresh_pipeline.staging_logins import staging_logins_problem
from refresh_pipeline.state import RestoreRecord


@dg.asset(group_name=REFRESH_GROUP, deps=[PRODUCTION_SNAPSHOT], kinds={"postgres"})
@without_row_data_in_errors
def restored_instance(context: dg.AssetExecutionContext, refresh: RefreshResource) -> dg.MaterializeResult:
    """A fresh database from the snapshot, with row counts and keyed fingerprints of its PII recorded.

    The fingerprints let the audit prove later that no original value survived masking; they stay on
    this database and are dropped before promotion.
    """
    started = time.monotonic()
    state = refresh.state()
    record = state.require("snapshot", "production_snapshot")
    platform = refresh.platform()
    platform.ensure_ready()
    name = platform.new_database_name()
    context.log.info(f"restoring snapshot {record.snapshot_id} into new database {name}")
    snapshot = Snapshot(record.snapshot_id, datetime.fromisoformat(record.taken_at), record.location)
    restored = platform.restore(snapshot, name, context.log.info)
    for note in restored.notes:
        context.log.warning(note)
    if restored.cleared:
        context.log.info(f"production's extras on the instance removed: {restored.cleared}")
    restore_seconds = time.monotonic() - started

    policy = refresh.policy()
    with refresh.connect_managed(name) as conn:
        event_triggers_paused = pause_event_triggers(conn)  # before any DDL of ours (event_triggers.py)
        if event_triggers_paused:
            context.log.info(f"production's event triggers off during the refresh: {event_triggers_paused}")
        publications_paused = pause_publication_changes(conn)  # before our first UPDATE (publications.py)
        if publications_paused:
            context.log.info(
                f"production's FOR ALL TABLES publications publish no updates or deletes during the "
                f"refresh: {publications_paused}"
            )
        links = cut_links_to_production(conn)
        if links:
            context.log.info(f"links to production cut: {links.as_metadata()}")
        foreign_partitions = detach_foreign_partitions(conn)
        if foreign_partitions:
            context.log.info(f"foreign-table partitions detached during the refresh: {foreign_partitions}")
        require_trigger_control(conn)
        # Unreadable secrets or unknown roles fail now rather than after the masking.
        logins = platform.staging_login_passwords()
        if logins is not None and (problem := staging_logins_problem(conn, list(logins))):
            raise RefreshError(problem)
        row_security_lifted = lift_forced_row_security(conn)
        if row_security_lifted:
            context.log.info(f"row-level security not forced on its owner during the refresh: {row_security_lifted}")
        large_objects_removed = remove_large_objects(conn, context.log.info) if policy.large_objects == "remove" else 0
        install_functions(conn)
        pause_autovacuum(conn)
        conn.execute("ANALYZE")  # once, for the masking and audit queries' plans
        tables = read_tables(conn)
        row_counts = {info.qualified_name: count_rows(conn, info) for info in tables.values()}
        with conn.transaction():
            for table, rows in row_counts.items():
                conn.execute(sql.SQL("INSERT INTO refresh_pipeline.restored_row_counts VALUES (%s, %s)"), (table, rows))
        record_baseline(conn)
        context.log.info(f"reading the PII of {len(tables)} tables: audit fingerprints and value maps")
        originals = record_originals(
            conn,
            list(tables.values()),
            policy,
            refresh.key(),
            connect=lambda: refresh.connect_managed(name),
            workers=refresh.config().parallelism,
            log=context.log.info,
        )

    state.write("restored", RestoreRecord(name, record.snapshot_id, datetime.now(UTC).isoformat()))
    return dg.MaterializeResult(
        metadata={
            "database": name,
            "snapshot_id": record.snapshot_id,
            "tables": len(tables),
            "rows": sum(row_counts.values()),
            "row_counts": dg.MetadataValue.json(row_counts),
            "original_fingerprints": originals.fingerprints,
            "values_mapped": dg.MetadataValue.json(originals.values_mapped),
            "large_objects_removed": large_objects_removed,
            "row_security_lifted": dg.MetadataValue.json(row_security_lifted),
            "event_triggers_paused": dg.MetadataValue.json(event_triggers_paused),
            "publications_paused": dg.MetadataValue.json(publications_paused),
            "foreign_partitions_detached": dg.MetadataValue.json(foreign_partitions),
            "links_to_production_cut": dg.MetadataValue.json(links.as_metadata()),
            "restore_notes": dg.MetadataValue.json(list(restored.notes)),
            "instance_cleared": dg.MetadataValue.json(restored.cleared),
            "restore_seconds": round(restore_seconds, 2),
            "seconds": round(time.monotonic() - started, 2),
        }
    )
