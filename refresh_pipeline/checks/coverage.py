"""policy_covers_every_column: default deny, checked on the restored database before anything is masked."""

import time

import dagster as dg

from refresh_pipeline.assets.keys import POLICY_COVERAGE_CHECK, RESTORED_INSTANCE
from refresh_pipeline.masking.catalog import read_tables
from refresh_pipeline.masking.check_conflicts import find_check_conflicts
from refresh_pipeline.masking.constraints import find_unique_index_risks, read_unique_indexes
from refresh_pipeline.masking.coverage import describe_uncovered, find_uncovered, policy_snippet, sample_uncovered
from refresh_pipeline.masking.large_objects import large_objects_problem, read_large_objects
from refresh_pipeline.masking.validation import find_policy_problems, find_unmatched_json_paths
from refresh_pipeline.resources import RefreshResource
from refresh_pipeline.row_data_in_errors import without_row_data_in_errors


@dg.asset_check(
    asset=RESTORED_INSTANCE,
    name=POLICY_COVERAGE_CHECK,
    blocking=True,
    description="Every column of every table is masked or explicitly kept by the policy, and every rule applies.",
)
@without_row_data_in_errors
def policy_covers_every_column(context: dg.AssetCheckExecutionContext, refresh: RefreshResource) -> dg.AssetCheckResult:
    started = time.monotonic()
    restored = refresh.state().require("restored", "restored_instance")
    policy = refresh.policy()
    with refresh.connect_managed(restored.database) as conn:
        tables = read_tables(conn)
        problems = find_policy_problems(policy, tables) + find_unmatched_json_paths(conn, policy, tables)
        problems += find_check_conflicts(conn, policy, tables)
        problems += filter(None, [large_objects_problem(policy, read_large_objects(conn, tables))])
        unique_index_warnings = find_unique_index_risks(policy, tables, read_unique_indexes(conn))
        uncovered = find_uncovered(policy, tables)
        hints = sample_uncovered(conn, tables, uncovered, context.log.info)
    metadata: dict[str, object] = {
        "database": restored.database,
        "tables": len(tables),
        "columns": sum(len(t.columns) for t in tables.values()),
        "uncovered_columns": dg.MetadataValue.json([c.qualified_name for c in uncovered]),
        "policy_problems": dg.MetadataValue.json(problems),
        "unique_index_warnings": dg.MetadataValue.json(unique_index_warnings),
        "seconds": round(time.monotonic() - started, 2),
    }
    if uncovered:
        context.log.error(describe_uncovered(uncovered, policy.source, hints))
        snippet = policy_snippet(uncovered, hints)
        metadata["policy_snippet"] = dg.MetadataValue.md(f"```yaml\ntables:\n{snippet}\n```")
    for problem in problems:
        context.log.error(problem)
    for warning in unique_index_warnings:
        context.log.warning(warning)
    passed = not uncovered and not problems
    description = (
        "every column is covered by the policy"
        if passed
        else f"{len(uncovered)} uncovered column(s), {len(problems)} policy problem(s): promotion is blocked"
    )
    return dg.AssetCheckResult(
        passed=passed, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata, description=description
    )
