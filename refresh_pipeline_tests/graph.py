"""Running the asset graph in process for tests, the way the UI or CLI would, and reading the outcome."""

from pathlib import Path

import dagster as dg

from refresh_pipeline.config import load_config
from refresh_pipeline.definitions import build_definitions
from refresh_pipeline.outcome import step_failure_cause
from refresh_pipeline.platforms.local import LocalPlatform


def materialize(
    config_path: Path,
    instance: dg.DagsterInstance,
    selection: str | list[str] | list[dg.AssetKey] | dg.AssetSelection | None = None,
) -> dg.ExecuteInProcessResult:
    defs = build_definitions(config_path)
    return dg.materialize(
        [*defs.assets, *defs.asset_checks],
        resources=defs.resources,
        instance=instance,
        selection=selection,
        raise_on_error=False,
    )


def failed_check_names(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_check_key.to_user_string() for e in result.get_asset_check_evaluations() if not e.passed}


def step_failure_messages(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    return {event.step_key: step_failure_cause(event) for event in result.all_events if event.is_step_failure}


def materialized_keys(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def refresh_to_promotion(config_path: Path) -> str:
    """One whole refresh on a fresh instance, which must promote; returns the promoted database's conninfo."""
    result = materialize(config_path, dg.DagsterInstance.ephemeral())
    assert result.success, step_failure_messages(result)
    platform = LocalPlatform(load_config(config_path))
    return platform.conninfo(platform.promoted())
