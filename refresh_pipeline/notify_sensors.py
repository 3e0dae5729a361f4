"""Notifications of the runs a Dagster daemon starts (the weekly schedule under `dagster dev`, or a deployed
Dagster): `refresh-pipeline run` sends its own runs' outcome and tags them, these sensors send the rest."""

from datetime import UTC, datetime

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from refresh_pipeline.config import RefreshConfig
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.notify import send_outcome, wanted
from refresh_pipeline.outcome import NOTIFIED_BY_CLI_TAG, outcome_from_events, promoted_since
from refresh_pipeline.state import StateFile

SUCCESS_SENSOR = "notify_refresh_succeeded"
FAILURE_SENSOR = "notify_refresh_failed"


def notify_of_run(config: RefreshConfig, context: dg.RunStatusSensorContext, success: bool) -> dg.SkipReason | None:
    """Send the finished run's notice; a channel that cannot be reached fails the sensor's tick (shown in
    the UI), after the others were tried."""
    assert config.notify is not None
    run = context.dagster_run
    if NOTIFIED_BY_CLI_TAG in run.tags:
        return dg.SkipReason(f"run {run.run_id} was started by `refresh-pipeline run`, which sent its notice")
    if not wanted(config.notify, success):
        return dg.SkipReason(f"notify.when is {config.notify.when}")
    events = [entry.dagster_event for entry in context.instance.all_logs(run.run_id) if entry.dagster_event]
    outcome = outcome_from_events(success, run.run_id, events)
    stats = context.instance.get_run_stats(run.run_id)
    if stats.start_time is not None:
        started = datetime.fromtimestamp(stats.start_time, UTC)
        outcome.promoted_database = promoted_since(StateFile(config.work_dir), started)
        if stats.end_time is not None:
            outcome.seconds = stats.end_time - stats.start_time
    problems = send_outcome(config, outcome)
    if problems:
        raise RefreshError("could not send the notification: " + "; ".join(problems))
    return None


def build_notification_sensors(
    config: RefreshConfig, job: UnresolvedAssetJobDefinition
) -> list[dg.RunStatusSensorDefinition]:
    """One sensor for succeeded and one for failed runs of the refresh job, when `notify` is configured."""
    if config.notify is None:
        return []
    return [
        _sensor(config, job, SUCCESS_SENSOR, dg.DagsterRunStatus.SUCCESS, "a run the daemon started promoted staging"),
        _sensor(config, job, FAILURE_SENSOR, dg.DagsterRunStatus.FAILURE, "a run the daemon started failed"),
    ]


def _sensor(
    config: RefreshConfig, job: UnresolvedAssetJobDefinition, name: str, status: dg.DagsterRunStatus, when: str
) -> dg.RunStatusSensorDefinition:
    @dg.run_status_sensor(
        name=name,
        run_status=status,
        monitored_jobs=[job],
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Sends the refresh's outcome (config: notify) when {when}.",
    )
    def notify(context: dg.RunStatusSensorContext) -> dg.SkipReason | None:
        return notify_of_run(config, context, success=status == dg.DagsterRunStatus.SUCCESS)

    return notify
