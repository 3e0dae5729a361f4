"""Dagster Definitions: assets, checks, job, schedule, notification sensors and resource, wired from one config
file."""

from pathlib import Path

import dagster as dg

from refresh_pipeline.assets.masked_database import build_masked_database_asset
from refresh_pipeline.assets.masked_tables import build_masked_table_assets
from refresh_pipeline.assets.promote import build_staging_database_asset
from refresh_pipeline.assets.restore import restored_instance
from refresh_pipeline.assets.retire import retired_staging
from refresh_pipeline.assets.snapshot import production_snapshot
from refresh_pipeline.checks.coverage import policy_covers_every_column
from refresh_pipeline.checks.definitions import no_pii_in_definitions
from refresh_pipeline.checks.integrity import integrity_intact
from refresh_pipeline.checks.large_objects import no_pii_in_large_objects
from refresh_pipeline.checks.materialized_views import no_pii_in_materialized_views
from refresh_pipeline.checks.pii_audit import build_pii_audit_checks
from refresh_pipeline.config import default_config_path, load_config
from refresh_pipeline.masking.policy import load_policy
from refresh_pipeline.notify_sensors import build_notification_sensors
from refresh_pipeline.resources import RefreshResource
from refresh_pipeline.schedules import build_weekly_refresh_job, build_weekly_schedule


def build_definitions(config_path: str | Path) -> dg.Definitions:
    """Everything for one refresh config; per-table assets and checks come from its masking policy."""
    config = load_config(config_path)
    policy = load_policy(config.policy_path)
    job = build_weekly_refresh_job(config)
    return dg.Definitions(
        assets=[
            production_snapshot,
            restored_instance,
            *build_masked_table_assets(policy),
            build_masked_database_asset(policy),
            build_staging_database_asset(policy),
            retired_staging,
        ],
        asset_checks=[
            policy_covers_every_column,
            *build_pii_audit_checks(policy),
            integrity_intact,
            no_pii_in_materialized_views,
            no_pii_in_large_objects,
            no_pii_in_definitions,
        ],
        jobs=[job],
        schedules=[build_weekly_schedule(config, job)],
        sensors=build_notification_sensors(config, job),
        resources={
            "refresh": RefreshResource(
                config_path=str(Path(config_path).resolve()),
                masking_key=None if config.masking_key_in_secret_store else dg.EnvVar(config.masking_key_env),
            )
        },
    )


# Every step process rebuilds the definitions: ~5 ms per table in Dagster's decorators (a 155-table policy:
# 1 s of CPU per step, 320 steps). Built once in the forkserver (step_preload.py), they are inherited by
# every step forked from it, as long as the config and the policy files are unchanged.
_built: dict[tuple[object, ...], dg.Definitions] = {}


def _files_key(config_path: Path) -> tuple[object, ...]:
    config_file = config_path.resolve()
    policy_file = load_config(config_file).policy_path
    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in (config_file, policy_file))


def cached_definitions(config_path: str | Path) -> dg.Definitions:
    """build_definitions(), reused while the config and policy files are unchanged."""
    key = _files_key(Path(config_path))
    if key not in _built:
        _built.clear()
        _built[key] = build_definitions(config_path)
    return _built[key]


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by `dagster dev` / `dagster asset materialize`; the config comes from default_config_path()."""
    return cached_definitions(default_config_path())
