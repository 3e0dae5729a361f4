"""integrity_intact: constraints, indexes, sequences and row counts as restored; constraints re-validated."""

import dagster as dg

from refresh_pipeline.assets.keys import INTEGRITY_CHECK, MASKED_DATABASE
from refresh_pipeline.audit.integrity import IntegrityReport, check_integrity
from refresh_pipeline.resources import RefreshResource
from refresh_pipeline.row_data_in_errors import without_row_data_in_errors


@dg.asset_check(
    asset=MASKED_DATABASE,
    name=INTEGRITY_CHECK,
    blocking=True,
    description=(
        "Every FK, unique and CHECK constraint holds on the masked data (re-validated; one production added NOT "
        "VALID is broken by no more rows than at restore); constraints, indexes and sequences are exactly as "
        "restored, indexes valid, row counts unchanged."
    ),
)
@without_row_data_in_errors
def integrity_intact(context: dg.AssetCheckExecutionContext, refresh: RefreshResource) -> dg.AssetCheckResult:
    restored = refresh.state().require("restored", "restored_instance")
    with refresh.connect_managed(restored.database) as conn:
        report = check_integrity(
            conn, connect=lambda: refresh.connect_managed(restored.database), workers=refresh.config().parallelism
        )
    for problem in report.problems:
        context.log.error(problem)
    return dg.AssetCheckResult(
        passed=report.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(report.problems[:5]) or _passed(report),
        metadata={
            "database": restored.database,
            "problems": dg.MetadataValue.json(report.problems),
            "constraints_validated": report.constraints_validated,
            "indexes_checked": report.indexes_checked,
            "sequences_checked": report.sequences_checked,
            "tables_counted": report.tables_counted,
            "not_valid_broken_as_restored": dg.MetadataValue.json(report.broken_as_restored),
            "seconds": round(report.seconds, 2),
        },
    )


def _passed(report: IntegrityReport) -> str:
    held = "all constraints hold"
    if report.broken_as_restored:
        broken = ", ".join(f"{name}: {rows}" for name, rows in sorted(report.broken_as_restored.items()))
        held += f" but those production added NOT VALID, broken by as many rows as restored ({broken})"
    return f"{held}; schema, sequences and row counts as restored"
