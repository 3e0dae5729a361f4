"""Collects what the Dagster instance recorded about one restored database into an audit report."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from refresh_pipeline.assets.keys import RESTORED_INSTANCE, masked_table_key, required_check_keys
from refresh_pipeline.audit.report import write_report
from refresh_pipeline.checks.records import latest_outcome, metadata_values
from refresh_pipeline.config import RefreshConfig
from refresh_pipeline.masking.policy import MaskingPolicy, describe_rule

# What restored_instance records about what it removed, cut or set aside before anything was masked.
BEFORE_MASKING = (
    "links_to_production_cut", "instance_cleared", "foreign_partitions_detached", "row_security_lifted",
    "event_triggers_paused", "publications_paused", "large_objects_removed", "restore_notes",
)  # fmt: skip


def _before_masking(instance: dg.DagsterInstance, database: str) -> dict[str, Any]:
    event = instance.get_latest_materialization_event(RESTORED_INSTANCE)
    metadata = metadata_values(event.asset_materialization.metadata) if event and event.asset_materialization else {}
    if metadata.get("database") != database:
        return {}
    return {name: metadata[name] for name in BEFORE_MASKING if _anything_in(metadata.get(name))}


def _anything_in(value: object) -> bool:
    """A metadata value that records something (not 0, [], {} or a dict of empty lists)."""
    if isinstance(value, dict):
        return any(_anything_in(item) for item in value.values())
    return bool(value)


def _check_entry(instance: dg.DagsterInstance, key: dg.AssetCheckKey, database: str) -> dict[str, Any]:
    outcome = latest_outcome(instance, key, database)
    metadata = outcome.metadata
    return {
        "check": outcome.check,
        "passed": outcome.passed,
        "description": outcome.reason,
        "seconds": metadata.get("seconds"),
        "findings": metadata.get("findings") or metadata.get("problems") or metadata.get("uncovered_columns") or None,
        "run_id": outcome.run_id,
    }


def collect_audit_report(
    instance: dg.DagsterInstance, policy: MaskingPolicy, database: str, snapshot_id: str
) -> dict[str, Any]:
    """Every table with its rules, masking result and checks, as the instance recorded them for `database`."""
    checks = [_check_entry(instance, key, database) for key in required_check_keys(policy)]
    tables = []
    for _, table in sorted(policy.tables.items()):
        entry: dict[str, Any] = {
            "table": table.qualified_name,
            "rules": {name: describe_rule(rule) for name, rule in table.columns.items()} if not table.keep_all else {},
        }
        event = instance.get_latest_materialization_event(masked_table_key(table))
        materialization = event.asset_materialization if event else None
        metadata = metadata_values(materialization.metadata) if materialization else {}
        if metadata.get("database") == database:
            entry.update(status=metadata.get("status"), rows=metadata.get("rows"), seconds=metadata.get("seconds"))
        tables.append(entry)
    return {
        "database": database,
        "snapshot_id": snapshot_id,
        "policy": policy.source,
        "generated_at": datetime.now(UTC).isoformat(),
        "passed": all(check["passed"] is True for check in checks),
        "checks": checks,
        "tables": tables,
        "before_masking": _before_masking(instance, database),
    }


def write_audit_report(
    instance: dg.DagsterInstance, config: RefreshConfig, policy: MaskingPolicy, database: str, snapshot_id: str
) -> tuple[Path, Path]:
    report = collect_audit_report(instance, policy, database, snapshot_id)
    markdown, as_json = write_report(report, config.work_dir / "reports" / database)
    if config.aws is not None:
        from refresh_pipeline.platforms.aws import upload_reports  # boto3 only on the aws platform

        upload_reports(config.aws, database, [markdown, as_json])
    return markdown, as_json
