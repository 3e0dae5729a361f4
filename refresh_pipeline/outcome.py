"""How a run of the refresh job ended, read from its events: what `refresh-pipeline run` prints and what
notifications say."""

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import dagster as dg

from refresh_pipeline.state import StateFile

# On runs whose outcome the CLI reports and sends itself, so that a daemon's sensors do not send it again.
NOTIFIED_BY_CLI_TAG = "refresh_pipeline/notified_by"


@dataclass
class RefreshOutcome:
    success: bool
    run_id: str
    failed_steps: list[str] = field(default_factory=list)
    step_errors: dict[str, str] = field(default_factory=dict)  # failed step -> the first line of its error
    failed_checks: list[str] = field(default_factory=list)
    skipped_steps: list[str] = field(default_factory=list)
    audit_report: Path | None = None
    promoted_database: str | None = None  # what staging points at since this run
    seconds: float | None = None


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


def outcome_from_events(success: bool, run_id: str, events: Iterable[dg.DagsterEvent]) -> RefreshOutcome:
    """What failed in a run, from its events: steps with their errors' first lines, checks with theirs."""
    outcome = RefreshOutcome(success=success, run_id=run_id)
    for event in events:
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
    return outcome


def promoted_since(state: StateFile, since: datetime) -> str | None:
    """The database staging was pointed at at or after `since`, if any."""
    promotion = state.read("promoted")
    if promotion is None or datetime.fromisoformat(promotion.promoted_at) < since:
        return None
    return promotion.database
