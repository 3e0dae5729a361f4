"""masked_database: the restored database once every table is masked and every materialized view refreshed
from the masked data; whole-database checks run on it."""

import dagster as dg

from refresh_pipeline.assets.keys import REFRESH_GROUP, masked_table_key
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.masking.materialized_views import empty_views_over_foreign_tables, refresh_materialized_views
from refresh_pipeline.masking.policy import MaskingPolicy
from refresh_pipeline.masking.runner import drop_leftover_staging
from refresh_pipeline.resources import RefreshResource
from refresh_pipeline.row_data_in_errors import without_row_data_in_errors


def build_masked_database_asset(policy: MaskingPolicy) -> dg.AssetsDefinition:
    masked_keys = [masked_table_key(table) for _, table in sorted(policy.tables.items())]

    @dg.asset(group_name=REFRESH_GROUP, deps=masked_keys, kinds={"postgres"})
    @without_row_data_in_errors
    def masked_database(context: dg.AssetExecutionContext, refresh: RefreshResource) -> dg.MaterializeResult:
        """Every table of the restored database masked per the policy (checked against the per-table markers)."""
        restored = refresh.state().require("restored", "restored_instance")
        current = refresh.policy()
        to_mask = [t for _, t in sorted(current.tables.items()) if not t.keep_all and t.masked_columns]
        with refresh.connect_managed(restored.database) as conn:
            markers = dict(conn.execute("SELECT table_name, policy_digest FROM refresh_pipeline.masked_tables"))
            rows = dict(conn.execute("SELECT table_name, row_count FROM refresh_pipeline.restored_row_counts"))
            missing = [t.qualified_name for t in to_mask if markers.get(t.qualified_name) != t.digest()]
            if missing:
                raise RefreshError(
                    f"{restored.database}: not masked under the current policy yet: {', '.join(missing)}. "
                    "Materialize their masked/<table> assets first."
                )
            leftovers = drop_leftover_staging(conn)
            if leftovers:
                context.log.info(f"dropped {len(leftovers)} staging table(s) left by interrupted masking steps")
            emptied = empty_views_over_foreign_tables(conn)
            for view in emptied:
                context.log.warning(f"materialized view {view} reads a foreign table: emptied (WITH NO DATA)")
            # Only once every table is masked: a view refreshed earlier would copy originals again.
            views = refresh_materialized_views(conn)
        context.log.info(
            f"{restored.database}: {len(to_mask)} table(s) masked, {len(rows)} table(s) in all, "
            f"{len(views)} materialized view(s) refreshed"
        )
        return dg.MaterializeResult(
            metadata={
                "database": restored.database,
                "snapshot_id": restored.snapshot_id,
                "tables": len(rows),
                "tables_masked": len(to_mask),
                "rows": sum(rows.values()),
                "materialized_views_refreshed": dg.MetadataValue.json(views),
                "materialized_views_emptied": dg.MetadataValue.json(emptied),
            }
        )

    return masked_database
