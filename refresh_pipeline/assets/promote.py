"""staging_database: promotes the restored database, only once every audit of that exact database passed."""

import time
from datetime import UTC, datetime

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from refresh_pipeline.assets.keys import (
    NO_PII_CHECK,
    POLICY_COVERAGE_CHECK,
    REFRESH_GROUP,
    RESTORED_INSTANCE,
    masked_table_key,
)
from refresh_pipeline.audit.fingerprints import drop_fingerprints
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.masking.catalog import read_tables
from refresh_pipeline.masking.coverage import describe_uncovered, find_uncovered
from refresh_pipeline.masking.policy import MaskingPolicy
from refresh_pipeline.platforms.connections import redact
from refresh_pipeline.resources import RefreshResource
from refresh_pipeline.state import PromotionRecord

_COMPLETED = (AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED)


def required_check_keys(policy: MaskingPolicy) -> list[dg.AssetCheckKey]:
    """The checks whose latest evaluation must have passed on the database being promoted."""
    keys = [dg.AssetCheckKey(RESTORED_INSTANCE, POLICY_COVERAGE_CHECK)]
    keys += [dg.AssetCheckKey(masked_table_key(table), NO_PII_CHECK) for _, table in sorted(policy.tables.items())]
    return keys


def failing_checks(instance: dg.DagsterInstance, keys: list[dg.AssetCheckKey], database: str) -> list[str]:
    """Why each required check does not vouch for `database` (never ran, failed, or audited another one).

    Blocking checks stop downstream steps of their own run only; this makes a later run (or a single
    re-materialization of staging_database) unable to promote an unaudited database.
    """
    failures = []
    for key in keys:
        label = key.to_user_string()
        record = instance.get_latest_asset_check_evaluation_record(key)
        if record is None:
            failures.append(f"{label}: has never been evaluated")
            continue
        if record.status not in _COMPLETED:
            failures.append(f"{label}: latest evaluation (run {record.run_id}) is {record.status.value.lower()}")
            continue
        evaluation = record.evaluation
        checked = evaluation.metadata.get("database")
        checked_database = checked.value if checked is not None else None
        if checked_database != database:
            failures.append(f"{label}: last evaluated on {checked_database}, not on {database}")
        elif not evaluation.passed:
            failures.append(f"{label}: failed ({evaluation.description or 'see its metadata'})")
    return failures


def build_staging_database_asset(policy: MaskingPolicy) -> dg.AssetsDefinition:
    masked_keys = [masked_table_key(table) for _, table in sorted(policy.tables.items())]
    check_keys = required_check_keys(policy)

    @dg.asset(group_name=REFRESH_GROUP, deps=masked_keys, kinds={"postgres"})
    def staging_database(context: dg.AssetExecutionContext, refresh: RefreshResource) -> dg.MaterializeResult:
        """The stable staging name, pointed at the newly masked database once all its audits passed."""
        started = time.monotonic()
        restored = refresh.state().require("restored", "restored_instance")
        platform = refresh.platform()
        failures = failing_checks(context.instance, check_keys, restored.database)
        if failures:
            raise RefreshError(
                f"refusing to promote {restored.database}; these checks do not vouch for it:\n  "
                + "\n  ".join(failures)
            )
        with refresh.connect_managed(restored.database) as conn:
            uncovered = find_uncovered(refresh.policy(), read_tables(conn))
            if uncovered:
                raise RefreshError(describe_uncovered(uncovered, refresh.policy().source))
            drop_fingerprints(conn)
            conn.execute("ANALYZE")
        previous = platform.promoted()
        platform.promote(restored.database)
        promoted_at = datetime.now(UTC).isoformat()
        refresh.state().write("promoted", PromotionRecord(restored.database, restored.snapshot_id, promoted_at))
        context.log.info(f"staging now points at {restored.database} (was {previous})")
        return dg.MaterializeResult(
            metadata={
                "database": restored.database,
                "snapshot_id": restored.snapshot_id,
                "previous_database": previous or "",
                "staging_conninfo": platform.staging_conninfo(),
                "database_conninfo": redact(platform.conninfo(restored.database)),
                "promoted_at": promoted_at,
                "checks_verified": len(check_keys),
                "seconds": round(time.monotonic() - started, 2),
            }
        )

    return staging_database
