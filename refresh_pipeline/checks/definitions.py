"""no_pii_in_definitions: no production value written into a view, function, default, constraint, policy,
trigger, rule or comment, which the restore copies verbatim, nor into a pg_cron job's command (AWS)."""

import dagster as dg

from refresh_pipeline.assets.keys import DEFINITIONS_CHECK, MASKED_DATABASE
from refresh_pipeline.audit.definitions import audit_definitions
from refresh_pipeline.resources import RefreshResource
from refresh_pipeline.row_data_in_errors import without_row_data_in_errors


@dg.asset_check(
    asset=MASKED_DATABASE,
    name=DEFINITIONS_CHECK,
    blocking=True,
    description="No production email, phone or UPI handle written into a view, function, column default, CHECK "
    "constraint, domain, row-level security policy, trigger, rule or comment, or (AWS) a pg_cron job's command.",
)
@without_row_data_in_errors
def no_pii_in_definitions(context: dg.AssetCheckExecutionContext, refresh: RefreshResource) -> dg.AssetCheckResult:
    restored = refresh.state().require("restored", "restored_instance")
    with refresh.connect_managed(restored.database) as conn:
        audit = audit_definitions(conn, refresh.key(), refresh.policy().allowlist)
    for name, count in audit.findings.items():
        context.log.error(f"{count} production value(s) in the definition of {name}")
    if audit.findings:
        description = (
            f"production values in {', '.join(audit.findings)}: the restore copies definitions as production has "
            "them; change them in production, or allowlist a value that is no customer's"
        )
    elif not audit.known_value_audit:
        description = "not audited: the database holds no fingerprints of production's values (already promoted)"
    else:
        description = f"{audit.objects_read} definition(s) hold no production value"
    return dg.AssetCheckResult(
        passed=audit.passed and audit.known_value_audit,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "database": restored.database,
            "definitions_read": audit.objects_read,
            "findings": dg.MetadataValue.json(audit.findings),
            "seconds": round(audit.seconds, 2),
        },
    )
