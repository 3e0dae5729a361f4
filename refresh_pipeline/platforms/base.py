"""The platform protocol: the few operations the assets need from wherever databases live."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

Log = Callable[[str], None]

# Written on every database/instance the pipeline creates; retire() refuses anything without it.
MANAGED_MARKER = "refresh_pipeline:managed"


@dataclass(frozen=True)
class Snapshot:
    """A point-in-time copy of production, taken without writing to it."""

    snapshot_id: str
    created_at: datetime
    location: str


@dataclass(frozen=True)
class ManagedDatabase:
    """A database (local) or instance (cloud) this pipeline created from a snapshot."""

    name: str
    created_at: datetime | None
    snapshot_id: str | None
    notes: tuple[str, ...] = ()  # how the restored database differs from production (its locale), if it does
    # What the restore removed that production has besides the database to mask (instance_clearing.py).
    cleared: dict[str, object] = field(default_factory=dict)


class Platform(Protocol):
    """Where production is read and staging databases are created, promoted and retired."""

    def ensure_ready(self) -> None:
        """Make the platform usable (the local platform starts its embedded server)."""
        ...

    def snapshot(self, log: Log | None = None) -> Snapshot:
        """Take a consistent copy of production through a read-only session; progress goes to `log`."""
        ...

    def restore(self, snapshot: Snapshot, name: str, log: Log | None = None) -> ManagedDatabase:
        """Create a new database `name` holding the snapshot; nothing is left behind on failure. Progress goes
        to `log`."""
        ...

    def new_database_name(self) -> str:
        """A unique, dated name for the next restore."""
        ...

    def conninfo(self, name: str) -> str:
        """libpq connection string for a managed database. May hold a password: never log it."""
        ...

    def promote(self, name: str) -> None:
        """Point the stable staging name at `name`."""
        ...

    def promoted(self) -> str | None:
        """The managed database the staging name points at now, if any."""
        ...

    def staging_conninfo(self) -> str:
        """How a user reaches staging through the stable name (no password in it)."""
        ...

    def staging_login_passwords(self) -> dict[str, str] | None:
        """Role -> staging password for the login roles that may log in to staging, where the promoted
        database has roles of its own (staging_logins.py); None where its roles are shared with production."""
        ...

    def retire(self, name: str) -> None:
        """Delete a managed database; refuses production, the promoted one and anything not ours."""
        ...

    def list_managed(self) -> list[ManagedDatabase]:
        """Databases this pipeline created, oldest first."""
        ...

    def list_snapshots(self) -> list[Snapshot]:
        """Snapshots this pipeline took, oldest first."""
        ...

    def delete_snapshot(self, snapshot: Snapshot) -> None:
        """Remove a snapshot this pipeline took."""
        ...
