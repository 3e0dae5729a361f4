"""Runs the weekly refresh job once, outside `dagster dev`: the CLI's `run` and `demo` use this."""

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from refresh_pipeline.config import CONFIG_ENV_VAR, default_config_path, load_config
from refresh_pipeline.definitions import build_definitions, cached_definitions
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.policy import load_policy
from refresh_pipeline.reporting import write_audit_report
from refresh_pipeline.schedules import IN_PROCESS_RUN_CONFIG, WEEKLY_REFRESH_JOB, multiprocess_run_config
from refresh_pipeline.state import StateFile

_DAGSTER_YAML = "telemetry:\n  enabled: false\n"


def weekly_refresh_job() -> dg.JobDefinition:
    """Module-level so step subprocesses can rebuild the job (dg.reconstructable)."""
    return cached_definitions(default_config_path()).resolve_job_def(WEEKLY_REFRESH_JOB)


@dataclass
class RefreshOutcome:
    success: bool
    run_id: str
    failed_steps: list[str] = field(default_factory=list)
    step_errors: dict[str, str] = field(default_factory=dict)  # failed step -> the first line of its error
    failed_checks: list[str] = field(default_factory=list)
    skipped_steps: list[str] = field(default_factory=list)
    audit_report: Path | None = None


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


def step_failure_cause(failure: dg.DagsterEvent) -> str:
    """The message of what went wrong in a failed step's own code (Dagster wraps it in errors of its own)."""
    error = failure.step_failure_data.error
    while error is not None and error.cause is not None:
        error = error.cause
    return error.message if error is not None else ""


def _first_line_of_cause(failure: dg.DagsterEvent) -> str:
    """The cause's first line, as the UI shows it: our assets and checks raise with row data withheld."""
    lines = step_failure_cause(failure).strip().splitlines()
    if not lines:
        return ""
    # 'refresh_pipeline.errors.RefreshError: <our message>' -> '<our message>'; other types keep their name.
    return re.sub(r"^(?:[\w.]+\.)?(?:RefreshError: |(\w+): )", lambda m: f"{m[1]}: " if m[1] else "", lines[0])


def run_refresh(config_path: str | Path, in_process: bool = False) -> RefreshOutcome:
    """Execute the whole graph once (steps in parallel unless `in_process`) and say what failed."""
    config = load_config(config_path)
    if not config.masking_key_in_secret_store:
        MaskingKey.from_env(config.masking_key_env)  # a missing or short key: our message, not Dagster's trace
    prepare_dagster_home(config_path)
    started_at = datetime.now(UTC)
    with dg.DagsterInstance.get() as instance:
        if in_process:
            # Built directly, not through dg.reconstructable: that caches the job per process, which
            # would pin a long-lived process (tests, notebooks) to the first config it ran.
            job = build_definitions(config_path).resolve_job_def(WEEKLY_REFRESH_JOB)
            result = job.execute_in_process(instance=instance, run_config=IN_PROCESS_RUN_CONFIG, raise_on_error=False)
        else:
            result = dg.execute_job(
                dg.reconstructable(weekly_refresh_job),
                instance=instance,
                run_config=multiprocess_run_config(config.parallelism),
                raise_on_error=False,
            )
        outcome = RefreshOutcome(success=result.success, run_id=result.run_id)
        for event in result.all_events:
            if event.is_step_failure and event.step_key:
                outcome.failed_steps.append(event.step_key)
                outcome.step_errors[event.step_key] = _first_line_of_cause(event)
            elif event.is_step_skipped and event.step_key:
                outcome.skipped_steps.append(event.step_key)
            elif event.event_type_value == "ASSET_CHECK_EVALUATION":
                evaluation = event.event_specific_data
                if not evaluation.passed:
                    outcome.failed_checks.append(
                        f"{evaluation.asset_check_key.to_user_string()}: {evaluation.description or 'failed'}"
                    )
        restored = StateFile(config.work_dir).read("restored")
        if restored is not None and datetime.fromisoformat(restored.restored_at) >= started_at:
            outcome.audit_report, _ = write_audit_report(
                instance, config, load_policy(config.policy_path), restored.database, restored.snapshot_id
            )
    return outcome
