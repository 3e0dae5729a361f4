"""Reads the latest evaluation of a check from the Dagster instance, for one specific database."""

from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

_COMPLETED = (AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED)


@dataclass(frozen=True)
class CheckOutcome:
    """`passed` is None when the check has no completed evaluation on the database in question."""

    check: str
    passed: bool | None
    reason: str
    run_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def metadata_values(metadata: dict[str, Any]) -> dict[str, Any]:
    """Dagster metadata entries as plain values."""
    return {name: getattr(value, "value", value) for name, value in metadata.items()}


def _not_evaluated(instance: dg.DagsterInstance, run_id: str) -> str:
    """Why the check planned in a run has no evaluation from it: the run ended first, or is still going."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        return f"not run: run {run_id} is no longer in this Dagster instance"
    if run.is_finished:
        return f"not run: run {run_id} ended ({run.status.value.lower()}) before reaching it"
    return f"not evaluated yet: run {run_id} is {run.status.value.lower()} and has not reached it"


def latest_outcome(instance: dg.DagsterInstance, key: dg.AssetCheckKey, database: str) -> CheckOutcome:
    label = key.to_user_string()
    record = instance.get_latest_asset_check_evaluation_record(key)
    if record is None:
        return CheckOutcome(label, None, "has never been evaluated")
    if record.status not in _COMPLETED or record.evaluation is None:
        return CheckOutcome(label, None, _not_evaluated(instance, record.run_id))
    evaluation = record.evaluation
    metadata = metadata_values(evaluation.metadata)
    if metadata.get("database") != database:
        return CheckOutcome(label, None, f"last evaluated on {metadata.get('database')}, not on {database}")
    reason = evaluation.description or ("passed" if evaluation.passed else "failed")
    return CheckOutcome(label, bool(evaluation.passed), reason, record.run_id, metadata)
