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
    production source and the promoted database. A previous staging database without the marker (the one
    made by hand before the pipeline took over, say) is left as it is, and said so.
    """
    platform = refresh.platform()
    promoted = platform.promoted()
    if promoted is None:
        raise dg.Failure("nothing is promoted yet; refusing to retire anything.")
    managed = platform.list_managed()
    retired = []
    for database in managed:
        if database.name == promoted:
            continue
        context.log.info(f"retiring {database.name}")
        platform.retire(database.name)
        retired.append(database.name)
    left = _previous_staging_left_in_place(context, {database.name for database in managed}, promoted)
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
            "left_in_place": dg.MetadataValue.json(left),
            "deleted_snapshots": dg.MetadataValue.json(deleted),
            "snapshots_kept": len(snapshots) - len(deleted),
        }
    )


def _previous_staging_left_in_place(context: dg.AssetExecutionContext, ours: set[str], promoted: str) -> list[str]:
    """The database staging pointed at before this promotion, when it is not one of `ours` (so not retired)."""
    event = context.instance.get_latest_materialization_event(STAGING_DATABASE)
    materialization = event.asset_materialization if event else None
    metadata = materialization.metadata if materialization else {}
    if "database" not in metadata or metadata["database"].value != promoted:
        return []  # promoted by a run this instance has no record of
    name = metadata["previous_database"].value if "previous_database" in metadata else ""
    if not name or name == promoted or name in ours:
        return []
    context.log.warning(
        f"the previous staging database {name} was not created by refresh_pipeline, so it is left as it is; "
        "delete it yourself once nothing uses it"
    )
    return [name]
