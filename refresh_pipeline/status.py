"""What is promoted now, and what the pipeline manages: the data behind `refresh-pipeline status`."""

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from refresh_pipeline.config import RefreshConfig
from refresh_pipeline.platforms.connections import redact
from refresh_pipeline.platforms.factory import platform_for
from refresh_pipeline.platforms.local import LocalPlatform
from refresh_pipeline.state import StateFile


def refresh_status(config: RefreshConfig) -> dict[str, Any]:
    """One JSON-ready object; connection strings never carry a password."""
    platform = platform_for(config)
    platform.ensure_ready()
    state = StateFile(config.work_dir)
    promoted_name = platform.promoted()
    promotion = state.read("promoted")
    restored = state.read("restored")
    snapshot = state.read("snapshot")
    managed = platform.list_managed()
    staging = next((database for database in managed if database.name == promoted_name), None)
    return {
        "platform": config.platform,
        "staging_database": promoted_name,
        "staging_restored_at": staging.created_at.isoformat() if staging and staging.created_at else None,
        "staging_dsn": redact(platform.conninfo(promoted_name)) if promoted_name else None,
        "staging_service": platform.staging_conninfo() if promoted_name else None,
        "service_file": str(platform.service_file) if isinstance(platform, LocalPlatform) else None,
        "promoted_at": promotion.promoted_at if promotion and promotion.database == promoted_name else None,
        "snapshot_id": promotion.snapshot_id if promotion else None,
        "latest_snapshot": asdict(snapshot) if snapshot else None,
        "latest_restore": asdict(restored) if restored else None,
        "managed_databases": [database.name for database in managed],
        "snapshots": [s.snapshot_id for s in platform.list_snapshots()],
    }


def staging_age(status: dict[str, Any], now: datetime | None = None) -> timedelta | None:
    """How old what staging points at is: since its promotion, or else (another machine's state) its restore;
    None when nothing is promoted or neither is known."""
    since = status["promoted_at"] or status["staging_restored_at"]
    if status["staging_database"] is None or since is None:
        return None
    return (now or datetime.now(UTC)) - datetime.fromisoformat(since)
