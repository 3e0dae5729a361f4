"""production_snapshot: a consistent copy of production, taken through a read-only session."""

import time

import dagster as dg

from refresh_pipeline.assets.keys import REFRESH_GROUP
from refresh_pipeline.platforms.connections import redact
from refresh_pipeline.resources import RefreshResource
from refresh_pipeline.row_data_in_errors import without_row_data_in_errors
from refresh_pipeline.state import SnapshotRecord


@dg.asset(group_name=REFRESH_GROUP, kinds={"postgres"})
@without_row_data_in_errors
def production_snapshot(context: dg.AssetExecutionContext, refresh: RefreshResource) -> dg.MaterializeResult:
    """Snapshot of the production database (pg_dump locally, an RDS snapshot on AWS); production is only read."""
    started = time.monotonic()
    platform = refresh.platform()
    platform.ensure_ready()
    context.log.info(f"taking a snapshot of {redact(refresh.config().source_dsn)} (config {refresh.config_path})")
    snapshot = platform.snapshot(context.log.info)
    refresh.state().write(
        "snapshot",
        SnapshotRecord(snapshot.snapshot_id, snapshot.location, snapshot.created_at.isoformat()),
    )
    return dg.MaterializeResult(
        metadata={
            "snapshot_id": snapshot.snapshot_id,
            "location": snapshot.location,
            "taken_at": snapshot.created_at.isoformat(),
            "seconds": round(time.monotonic() - started, 2),
        }
    )
