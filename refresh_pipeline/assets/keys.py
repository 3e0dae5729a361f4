"""Asset and check keys, shared by assets, checks and the promotion guard."""

import hashlib
import re

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
LARGE_OBJECTS_CHECK = "no_pii_in_large_objects"
DEFINITIONS_CHECK = "no_pii_in_definitions"


# What Dagster takes in an asset name (its step and op names are made of them) and a tag value.
_DAGSTER_NAME = re.compile(r"[A-Za-z0-9_]{1,50}")


def table_asset_name(table: TablePolicy) -> str:
    """`<table>` for tables in `public`, `<schema>__<table>` otherwise. A name that would be ambiguous (`__`
    in a schema or table name: `public.a__b` and `a.b`) or that Dagster would refuse (a space, a hyphen, a
    quote, more than 50 characters) has the refused characters as `_` and ends in a hash of the exact name,
    so that no two tables share one: `Customer Accounts` -> `Customer_Accounts_a1674eec`."""
    public = table.schema == "public"
    name = table.table if public else f"{table.schema}__{table.table}"
    ambiguous = "__" in table.table or (not public and "__" in table.schema)
    if not ambiguous and _DAGSTER_NAME.fullmatch(name):
        return name
    digest = hashlib.sha256(table.qualified_name.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_]', '_', name)[:41]}_{digest}"


def masked_table_key(table: TablePolicy) -> dg.AssetKey:
    """`masked/<table asset name>`."""
    return dg.AssetKey([MASKED_PREFIX, table_asset_name(table)])


def required_check_keys(policy: MaskingPolicy) -> list[dg.AssetCheckKey]:
    """The checks whose latest evaluation must have passed on a database before it is promoted."""
    keys = [dg.AssetCheckKey(RESTORED_INSTANCE, POLICY_COVERAGE_CHECK)]
    keys += [dg.AssetCheckKey(masked_table_key(table), NO_PII_CHECK) for _, table in sorted(policy.tables.items())]
    keys.append(dg.AssetCheckKey(MASKED_DATABASE, INTEGRITY_CHECK))
    keys.append(dg.AssetCheckKey(MASKED_DATABASE, VIEWS_CHECK))
    keys.append(dg.AssetCheckKey(MASKED_DATABASE, LARGE_OBJECTS_CHECK))
    keys.append(dg.AssetCheckKey(MASKED_DATABASE, DEFINITIONS_CHECK))
    return keys
