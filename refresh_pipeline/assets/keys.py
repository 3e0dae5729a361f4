"""Asset and check keys, shared by assets, checks and the promotion guard."""

import dagster as dg

from refresh_pipeline.masking.policy import MaskingPolicy, TablePolicy

PRODUCTION_SNAPSHOT = dg.AssetKey("production_snapshot")
RESTORED_INSTANCE = dg.AssetKey("restored_instance")
MASKED_DATABASE = dg.AssetKey("masked_database")
STAGING_DATABASE = dg.AssetKey("staging_database")
RETIRED_STAGING = dg.AssetKey("retired_staging")
MASKED_PREFIX = "masked"
REFRESH_GROUP = "staging_refresh"
MASKING_GROUP = "masking"

POLICY_COVERAGE_CHECK = "policy_covers_every_column"
NO_PII_CHECK = "no_pii_left"
INTEGRITY_CHECK = "integrity_intact"
VIEWS_CHECK = "no_pii_in_materialized_views"


def masked_table_key(table: TablePolicy) -> dg.AssetKey:
    """`masked/<table>` for tables in `public`, `masked/<schema>__<table>` otherwise."""
    name = table.table if table.schema == "public" else f"{table.schema}__{table.table}"
    return dg.AssetKey([MASKED_PREFIX, name])


def required_check_keys(policy: MaskingPolicy) -> list[dg.AssetCheckKey]:
    """The checks whose latest evaluation must have passed on a database before it is promoted."""
    keys = [dg.AssetCheckKey(RESTORED_INSTANCE, POLICY_COVERAGE_CHECK)]
    keys += [dg.AssetCheckKey(masked_table_key(table), NO_PII_CHECK) for _, table in sorted(policy.tables.items())]
    keys.append(dg.AssetCheckKey(MASKED_DATABASE, INTEGRITY_CHECK))
    keys.append(dg.AssetCheckKey(MASKED_DATABASE, VIEWS_CHECK))
    return keys
