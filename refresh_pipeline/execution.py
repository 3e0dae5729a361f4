"""Runs the weekly refresh job once, outside `dagster dev`: the CLI's `run` and `demo` use this."""

import os
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from refresh_pipeline.config import CONFIG_ENV_VAR, default_config_path, load_config
from refresh_pipeline.definitions import build_definitions, cached_definitions
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.policy import load_policy
from refresh_pipeline.outcome import NOTIFIED_BY_CLI_TAG, RefreshOutcome, outcome_from_events, promoted_since
from refresh_pipeline.reporting import write_audit_report
from refresh_pipeline.run_guard import only_refresh
from refresh_pipeline.schedules import IN_PROCESS_RUN_CONFIG, WEEKLY_REFRESH_JOB, multiprocess_run_config
from refresh_pipeline.state import StateFile

# Runs the UI or the daemon launches wait for the one in progress (run_guard.py refuses a second `run`).
_DAGSTER_YAML = "telemetry:\n  enabled: false\nrun_queue:\n  max_concurrent_runs: 1\n"


def weekly_refresh_job() -> dg.JobDefinition:
    """Module-level so step subprocesses can rebuild the job (dg.reconstructable)."""
    return cached_definitions(default_config_path()).resolve_job_def(WEEKLY_REFRESH_JOB)


def prepare_dagster_home(config_path: str | Path) -> Path:
    """Point Dagster at a persistent home in the work dir (unless DAGSTER_HOME is set) so history is kept."""
    config = load_config(config_path)
    home = Path(os.environ.get("DAGSTER_HOME") or config.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text(_DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ[CONFIG_ENV_VAR] = str(Path(config_path).resolve())
    return home


def run_refresh(config_path: str | Path, in_process: bool = False) -> RefreshOutcome:
    """Execute the whole graph once (steps in parallel unless `in_process`) and say what failed."""
    config = load_config(config_path)
    if not config.masking_key_in_secret_store:
        MaskingKey.from_env(config.masking_key_env)  # a missing or short key: our message, not Dagster's trace
    prepare_dagster_home(config_path)
    started_at = datetime.now(UTC)
    notified = {NOTIFIED_BY_CLI_TAG: "refresh-pipeline run"} if config.notify else {}
    with dg.DagsterInstance.get() as instance, only_refresh(config.work_dir, instance) as process:
        tags = {**notified, **process}
        if in_process:
            # Built directly, not through dg.reconstructable: that caches the job per process, which
            # would pin a long-lived process (tests, notebooks) to the first config it ran.
            job = build_definitions(config_path).resolve_job_def(WEEKLY_REFRESH_JOB)
            result = job.execute_in_process(
                instance=instance, run_config=IN_PROCESS_RUN_CONFIG, raise_on_error=False, tags=tags
            )
        else:
            result = dg.execute_job(
                dg.reconstructable(weekly_refresh_job),
                instance=instance,
                run_config=multiprocess_run_config(config.parallelism),
                raise_on_error=False,
                tags=tags,
            )
        outcome = outcome_from_events(result.success, result.run_id, result.all_events)
        state = StateFile(config.work_dir)
        restored = state.read("restored")
        if restored is not None and datetime.fromisoformat(restored.restored_at) >= started_at:
            outcome.audit_report, _ = write_audit_report(
                instance, config, load_policy(config.policy_path), restored.database, restored.snapshot_id
            )
        outcome.promoted_database = promoted_since(state, started_at)
        outcome.seconds = (datetime.now(UTC) - started_at).total_seconds()
    return outcome
