"""no_pii_in_large_objects: the large objects left in the masked database (`large_objects: keep`) hold no
production PII; with `remove` none are left."""

import dagster as dg

from refresh_pipeline.assets.keys import LARGE_OBJECTS_CHECK, MASKED_DATABASE
from refresh_pipeline.audit.large_objects import scan_large_objects
from refresh_pipeline.resources import RefreshResource
from refresh_pipeline.row_data_in_errors import without_row_data_in_errors


@dg.asset_check(
    asset=MASKED_DATABASE,
    name=LARGE_OBJECTS_CHECK,
    blocking=True,
    description="No production email, phone, UPI handle or other PII-shaped value in the first 64 KB of any "
    "large object; with `large_objects: remove`, none is left.",
)
@without_row_data_in_errors
def no_pii_in_large_objects(context: dg.AssetCheckExecutionContext, refresh: RefreshResource) -> dg.AssetCheckResult:
    restored = refresh.state().require("restored", "restored_instance")
    policy = refresh.policy()
    with refresh.connect_managed(restored.database) as conn:
        audit = scan_large_objects(conn, refresh.key(), policy.allowlist, context.log.info)
    problems = []
    if audit.findings is not None:
        oids = ", ".join(audit.findings.locations)
        problems.append(f"PII in {audit.findings.describe()}; the first large objects holding it: {oids}")
    if audit.large_objects and policy.large_objects != "keep":
        problems.append(f"{audit.large_objects} large object(s) left although the policy does not keep them")
    for problem in problems:
        context.log.error(problem)
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(problems) or f"{audit.large_objects} large object(s), no PII in them",
        metadata={
            "database": restored.database,
            "large_objects": audit.large_objects,
            "policy": policy.large_objects or "not set",
            "findings": dg.MetadataValue.json(audit.findings.as_metadata() if audit.findings else {}),
            "seconds": round(audit.seconds, 2),
        },
    )
