"""Imported once by the forkserver that starts step processes, so that each step does not import
Dagster's storage layer (sqlalchemy, alembic, run/event/schedule storage) and our platforms again:
that was ~0.5 s of CPU per step, a dozen seconds per refresh. It also builds the job's definitions from
the config and policy files (definitions.cached_definitions), which every step needs: ~5 ms per table.
Nothing here opens a connection before the fork."""

# ruff: noqa: F401  (imported for their side effect: loaded before the fork)
import alembic.runtime.migration
import dagster._core.instance.factory
import dagster._core.secrets.env_file
import dagster._core.storage.defs_state.blob_storage_state_storage
import dagster._core.storage.event_log.sqlite
import dagster._core.storage.local_compute_log_manager
import dagster._core.storage.root
import dagster._core.storage.runs.sqlite
import dagster._core.storage.schedules.sqlite
import dagster._core.storage.sqlite_storage
import dagster_postgres  # the EC2 worker's instance storage
import sqlalchemy
import upath.core
import upath.implementations.local

import refresh_pipeline.platforms.aws
import refresh_pipeline.platforms.local
from refresh_pipeline.config import default_config_path
from refresh_pipeline.definitions import cached_definitions
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.schedules import WEEKLY_REFRESH_JOB


def _build_once() -> bool:
    """False when the config cannot be read yet: each step then builds (and reports the error) itself."""
    try:
        # Resolved too: Dagster caches the resolved job on the definitions (another ~2 ms per table).
        cached_definitions(default_config_path()).resolve_job_def(WEEKLY_REFRESH_JOB)
    except (RefreshError, OSError):
        return False
    return True


DEFINITIONS_PRELOADED = _build_once()
