"""masked/<table>: one asset per table of the policy, masking that table in place on the restored database."""

import dagster as dg

from refresh_pipeline.assets.keys import MASKING_GROUP, RESTORED_INSTANCE, masked_table_key, table_asset_name
from refresh_pipeline.assets.priority import priority_tags
from refresh_pipeline.masking.policy import MaskingPolicy, TablePolicy
from refresh_pipeline.masking.runner import mask_table
from refresh_pipeline.resources import RefreshResource
from refresh_pipeline.row_data_in_errors import without_row_data_in_errors

MASKING_POOL = "staging_masking"


def _masked_table_asset(table: TablePolicy) -> dg.AssetsDefinition:
    kept = table.keep_all or not table.masked_columns
    description = (
        f"{table.qualified_name}, kept verbatim (operational data)."
        if kept
        else f"{table.qualified_name} with {', '.join(sorted(table.masked_columns))} masked in place."
    )

    @dg.asset(
        key=masked_table_key(table),
        deps=[RESTORED_INSTANCE],
        group_name=MASKING_GROUP,
        description=description,
        pool=MASKING_POOL,
        op_tags=priority_tags(table),
        kinds={"postgres"},
        tags={"refresh_pipeline/table": table_asset_name(table)},
    )
    @without_row_data_in_errors
    def masked_table(context: dg.AssetExecutionContext, refresh: RefreshResource) -> dg.MaterializeResult:
        restored = refresh.state().require("restored", "restored_instance")
        with refresh.connect_managed(restored.database) as conn:
            result = mask_table(
                conn,
                refresh.policy(),
                table.policy_name,
                refresh.key(),
                log=context.log.info,
                connect=lambda: refresh.connect_managed(restored.database),
                workers=refresh.config().parallelism,
            )
        return dg.MaterializeResult(
            metadata={
                "database": restored.database,
                "snapshot_id": restored.snapshot_id,
                "status": result.status,
                "rows": result.rows,
                "columns_masked": dg.MetadataValue.json(result.masked_columns),
                "rules": dg.MetadataValue.json(result.rules),
                "seconds": round(result.seconds, 2),
            }
        )

    return masked_table


def build_masked_table_assets(policy: MaskingPolicy) -> list[dg.AssetsDefinition]:
    """One asset per table in the policy, kept tables included so the lineage shows every table."""
    return [_masked_table_asset(table) for _, table in sorted(policy.tables.items())]
