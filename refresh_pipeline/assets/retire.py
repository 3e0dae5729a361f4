"""retired_staging: removes previous staging databases and old snapshots once a new one is promoted."""

import dagster as dg

from refresh_pipeline.assets.keys import REFRESH_GROUP, STAGING_DATABASE
from refresh_pipeline.resources import RefreshResource
from refresh_pipeline.row_data_in_errors import without_row_data_in_errors


@dg.asset(group_name=REFRESH_GROUP, deps=[STAGING_DATABASE], kinds={"postgres"})
@without_row_data_in_errors
def retired_staging(context: dg.AssetExecutionContext, refresh: RefreshResource) -> dg.MaterializeResult:
    """Every database this pipeline created except the promoted one is dropped; snapshots past retention too.

    Only databases carrying the pipeline's marker are candidates, and the platform itself refuses the
    production source and the promoted database.
    """
    platform = refresh.platform()
    promoted = platform.promoted()
    if promoted is None:
        raise dg.Failure("nothing is promoted yet; refusing to retire anything.")
    retired = []
    for database in platform.list_managed():
        if database.name == promoted:
            continue
        context.log.info(f"retiring {database.name}")
        platform.retire(database.name)
        retired.append(database.name)
    keep = refresh.config().snapshots_to_keep
    snapshots = platform.list_snapshots()
    deleted = []
    for snapshot in snapshots[: max(0, len(snapshots) - keep)]:
        platform.delete_snapshot(snapshot)
        deleted.append(snapshot.snapshot_id)
    return dg.MaterializeResult(
        metadata={
            "promoted_database": promoted,
            "retired_databases": dg.MetadataValue.json(retired),
            "deleted_snapshots": dg.MetadataValue.json(deleted),
            "snapshots_kept": len(snapshots) - len(deleted),
        }
    )
