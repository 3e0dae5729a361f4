"""no_pii_in_materialized_views: refreshed views hold masked data only (same known-value audit as tables)."""

import time

import dagster as dg

from refresh_pipeline.assets.keys import MASKED_DATABASE, VIEWS_CHECK
from refresh_pipeline.audit.scan import scan_table
from refresh_pipeline.masking.catalog import read_materialized_views
from refresh_pipeline.resources import RefreshResource
from refresh_pipeline.row_data_in_errors import without_row_data_in_errors


@dg.asset_check(
    asset=MASKED_DATABASE,
    name=VIEWS_CHECK,
    blocking=True,
    description="No production email, phone or UPI handle (nor unmasked email) survives in any materialized view.",
)
@without_row_data_in_errors
def no_pii_in_materialized_views(
    context: dg.AssetCheckExecutionContext, refresh: RefreshResource
) -> dg.AssetCheckResult:
    started = time.monotonic()
    restored = refresh.state().require("restored", "restored_instance")
    policy = refresh.policy()
    findings: dict[str, dict[str, object]] = {}
    with refresh.connect_managed(restored.database) as conn:
        views = read_materialized_views(conn)
        for info in views.values():
            audit = scan_table(conn, info, refresh.key(), kept_columns=set(), allowlist=policy.allowlist)
            for finding in audit.findings:
                findings[f"{info.qualified_name}.{finding.column}"] = finding.as_metadata()
    for column, counts in findings.items():
        context.log.error(f"PII in materialized view column {column}: {counts}")
    return dg.AssetCheckResult(
        passed=not findings,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"PII left in {', '.join(findings)}" if findings else f"{len(views)} materialized view(s) hold no PII"
        ),
        metadata={
            "database": restored.database,
            "views_scanned": dg.MetadataValue.json([v.qualified_name for v in views.values()]),
            "findings": dg.MetadataValue.json(findings),
            "seconds": round(time.monotonic() - started, 2),
        },
    )
