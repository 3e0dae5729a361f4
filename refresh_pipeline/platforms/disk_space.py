"""Room on the staging server's disk for a restore, asked before it starts when the server runs on this
machine. A restore that fills the disk fails late, and a full disk stops PostgreSQL itself, with today's
staging database on the same server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg

from refresh_pipeline.errors import RefreshError
from refresh_pipeline.platforms.client_progress import readable_size

SIZE_FILE = "production_size.json"  # in the snapshot folder, beside pg_dump's toc.dat


def production_size(production: psycopg.Connection) -> int:
    """Production's size on its disk (indexes and dead rows included: what a restore needs at most)."""
    return production.execute("SELECT pg_database_size(current_database())").fetchone()[0]


def save_production_size(production: psycopg.Connection, snapshot_folder: Path) -> None:
    (snapshot_folder / SIZE_FILE).write_text(json.dumps({"bytes": production_size(production)}))


def load_production_size(snapshot_folder: Path) -> int | None:
    """None for a snapshot taken before the size was recorded."""
    path = snapshot_folder / SIZE_FILE
    return int(json.loads(path.read_text())["bytes"]) if path.is_file() else None


def local_data_dir(conn: psycopg.Connection) -> Path | None:
    """The data directory of the server `conn` is on, when that server runs on this machine (a Unix socket or
    loopback, and the directory's postmaster.pid names the same port) and the role may ask where it is."""
    if not (conn.info.host.startswith("/") or conn.info.host in ("localhost", "127.0.0.1", "::1")):
        return None
    try:
        (path,) = conn.execute("SHOW data_directory").fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return None
    pid_file = Path(path, "postmaster.pid")
    try:
        lines = pid_file.read_text().splitlines()
    except OSError:  # not there, or not ours to read: another machine's path (a container's)
        return None
    return Path(path) if len(lines) > 3 and lines[3].strip() == str(conn.info.port) else None


def missing_room(data_dir: Path, production_bytes: int, as_of: str) -> str | None:
    """Why the disk holding the server's data (`data_dir`) has no room for a restore of production as big as it
    `as_of` ("is", "was, when <snapshot> was taken,"), or None."""
    free = shutil.disk_usage(data_dir).free
    if free >= production_bytes:
        return None
    return (
        f"not enough disk for the restore: production {as_of} {readable_size(production_bytes)} on its disk, and "
        f"the disk holding the staging server's data ({data_dir}) has {readable_size(free)} free. A full disk would "
        "stop the server, and today's staging with it. Free space there (old snapshots in the work dir, databases "
        "nobody uses) or move the work dir to a larger disk."
    )


def require_room_for_restore(data_dir: Path, production_bytes: int, snapshot_id: str) -> str:
    """Refuse a restore the disk holding the server's data has less room for than production took; else say how
    much it has."""
    as_of = f"was, when {snapshot_id} was taken,"
    if problem := missing_room(data_dir, production_bytes, as_of):
        raise RefreshError(f"{problem} Nothing was restored; staging is unchanged.")
    free = shutil.disk_usage(data_dir).free
    return f"disk: production {as_of} {readable_size(production_bytes)}; {readable_size(free)} free for the restore"
