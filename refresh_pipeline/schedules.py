"""The weekly refresh job and its schedule."""

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from refresh_pipeline.config import RefreshConfig

WEEKLY_REFRESH_JOB = "weekly_refresh_job"
# Step-level DEBUG events stay in the run's event log (the UI); the console shows INFO and above.
CONSOLE_LOGGING = {"console": {"config": {"log_level": "INFO"}}}
IN_PROCESS_RUN_CONFIG = {"execution": {"config": {"in_process": {}}}, "loggers": CONSOLE_LOGGING}


def multiprocess_run_config(parallelism: int) -> dict:
    """Tables mask in parallel, one step process each; forkserver with the code preloaded keeps start-up cheap."""
    return {
        "execution": {
            "config": {
                "multiprocess": {
                    "max_concurrent": parallelism,
                    "start_method": {
                        "forkserver": {
                            "preload_modules": [
                                "refresh_pipeline.definitions",
                                "refresh_pipeline.step_preload",
                            ]
                        }
                    },
                }
            }
        },
        "loggers": CONSOLE_LOGGING,
    }


def build_weekly_refresh_job(config: RefreshConfig) -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        WEEKLY_REFRESH_JOB,
        selection=dg.AssetSelection.all(),
        description="Snapshot production, restore, mask every table in parallel, audit, promote, retire the old "
        "staging.",
        config=multiprocess_run_config(config.parallelism),
    )


def build_weekly_schedule(config: RefreshConfig, job: UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="weekly_refresh_schedule",
        job=job,
        cron_schedule=config.schedule_cron,
        execution_timezone=config.schedule_timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Off-peak weekly refresh of staging (runs while a Dagster daemon is up).",
    )
