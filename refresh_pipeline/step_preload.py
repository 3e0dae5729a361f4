"""Imported once by the forkserver that starts step processes, so that each step does not import
Dagster's storage layer (sqlalchemy, alembic, run/event/schedule storage) and our platforms again:
that was ~0.5 s of CPU per step, a dozen seconds per refresh. Imports only: nothing here opens a
connection or a file before the fork."""

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
