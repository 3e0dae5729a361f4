"""The local platform: databases on one PostgreSQL server, promotion through a libpq service file."""

from __future__ import annotations

import configparser
import io
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from refresh_pipeline.config import RefreshConfig
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.platforms.base import MANAGED_MARKER, Log, ManagedDatabase, Snapshot
from refresh_pipeline.platforms.client_progress import DumpProgress
from refresh_pipeline.platforms.client_tools import run_client_tool
from refresh_pipeline.platforms.connections import (
    connect,
    libpq_env,
    parse_conninfo,
    redact,
    with_database,
)
from refresh_pipeline.platforms.database_locale import create_database_like, load_locale, read_locale, save_locale
from refresh_pipeline.platforms.database_settings import apply_settings, load_settings, read_settings, save_settings
from refresh_pipeline.platforms.disk_space import (
    load_production_size,
    local_data_dir,
    require_room_for_restore,
    save_production_size,
)
from refresh_pipeline.platforms.extensions import (
    load_extension_versions,
    read_extension_versions,
    save_extension_versions,
)
from refresh_pipeline.platforms.local_server import LocalServer
from refresh_pipeline.platforms.postgres_binaries import find_client_binary
from refresh_pipeline.platforms.restore_passes import restore_snapshot

STAGING_SERVICE = "staging"
SERVER_FOLDER = "pgserver"  # the embedded server's folder in the work dir
_SNAPSHOT_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
SNAPSHOT_COMPRESSION = 1  # gzip level of pg_dump -Fd


_NAME_TIME_FORMAT = "%Y%m%d_%H%M%S"


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class LocalPlatform:
    """Snapshots are `pg_dump -Fd` folders in the work dir; staging databases live on one server."""

    def __init__(self, config: RefreshConfig) -> None:
        self.config = config
        self.snapshot_dir = config.work_dir / "snapshots"
        self.service_file = config.work_dir / "pg_service.conf"
        self.server: LocalServer | None = None
        if config.local.server_dsn:
            self._server_conninfo = config.local.server_dsn
        else:
            self.server = LocalServer(config.work_dir / SERVER_FOLDER, config.local.port, config.local.bin_dir)
            self._server_conninfo = self.server.dsn()

    # -- server -------------------------------------------------------------------------------
    def ensure_ready(self) -> None:
        """Start the embedded server if this platform runs its own."""
        if self.server is not None:
            self.server.ensure_running()

    def _admin_conninfo(self) -> str:
        return with_database(self._server_conninfo, "postgres")

    def conninfo(self, name: str) -> str:
        return with_database(self._server_conninfo, name)

    def _source_is_on_this_server(self, name: str) -> bool:
        source = parse_conninfo(self.config.source_dsn)
        server = parse_conninfo(self._server_conninfo)
        same_host = source.get("host", "") == server.get("host", "") and source.get("port", "5432") == server.get(
            "port", "5432"
        )
        return same_host and source.get("dbname") == name

    # -- snapshot -----------------------------------------------------------------------------
    def snapshot(self, log: Log | None = None) -> Snapshot:
        self.ensure_ready()
        created = _utc_now()
        snapshot_id = f"snap-{created.strftime(_SNAPSHOT_TIME_FORMAT)}"
        target = self.snapshot_dir / snapshot_id
        suffix = 1
        while target.exists():
            suffix += 1
            target = self.snapshot_dir / f"{snapshot_id}-{suffix}"
        partial = target.with_name(target.name + ".partial")
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
        pg_dump = find_client_binary("pg_dump", self.server.bin_dir if self.server else None)
        # pg_dump reads in one REPEATABLE READ, READ ONLY transaction; the session default makes any
        # write attempt fail too, so production cannot be modified through this path.
        env = libpq_env(self.config.source_dsn, read_only=True)
        what = f"snapshot of {redact(self.config.source_dsn)}"
        try:
            progress = self._dump_progress(log) if log else None
            run_client_tool(
                [
                    pg_dump,
                    "--format=directory",
                    f"--jobs={self.config.parallelism}",
                    # The snapshot lives only until the next refresh retires it, and nothing else runs while
                    # it is taken: gzip level 1 instead of the default 6 halves its time for 18% more disk
                    # (S=1 demo data: 8.0 -> 4.1 s, 10.5 -> 3.4 core-s, 62 -> 73 MB; level 0 is 323 MB).
                    f"--compress={SNAPSHOT_COMPRESSION}",
                    "--no-sync",
                    "-f",
                    str(partial),
                ],
                env,
                what,
                progress.line if progress else None,
            )
            if progress:
                progress.finished()
            with connect(self.config.source_dsn, read_only=True) as production:
                save_locale(read_locale(production), partial)
                save_settings(read_settings(production), partial)
                save_extension_versions(read_extension_versions(production), partial)
                save_production_size(production, partial)
        except RefreshError:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        partial.rename(target)
        return Snapshot(snapshot_id=target.name, created_at=created, location=str(target))

    def _dump_progress(self, log: Log) -> DumpProgress:
        with connect(self.config.source_dsn, read_only=True) as production:
            return DumpProgress(production, "snapshot", self.config.parallelism, log)

    def list_snapshots(self) -> list[Snapshot]:
        if not self.snapshot_dir.is_dir():
            return []
        found = []
        for folder in self.snapshot_dir.iterdir():
            match = re.fullmatch(r"snap-(\d{8}T\d{6}Z)(-\d+)?", folder.name)
            if match and folder.is_dir():
                created = datetime.strptime(match.group(1), _SNAPSHOT_TIME_FORMAT).replace(tzinfo=UTC)
                found.append(Snapshot(snapshot_id=folder.name, created_at=created, location=str(folder)))
        return sorted(found, key=lambda s: (s.created_at, s.snapshot_id))

    def delete_snapshot(self, snapshot: Snapshot) -> None:
        folder = Path(snapshot.location)
        if folder.parent != self.snapshot_dir or not folder.name.startswith("snap-"):
            raise RefreshError(f"refusing to delete {folder}: not a snapshot this pipeline took.")
        shutil.rmtree(folder)

    # -- restore ------------------------------------------------------------------------------
    def staging_data_dir(self, conn: psycopg.Connection) -> Path | None:
        """Where the staging server (`conn` on it) keeps its data, when it is on this machine."""
        return self.server.data_dir if self.server else local_data_dir(conn)

    def _require_room(self, conn: psycopg.Connection, snapshot: Snapshot, log: Log | None) -> None:
        production_bytes = load_production_size(Path(snapshot.location))
        data_dir = self.staging_data_dir(conn)
        if production_bytes is not None and data_dir is not None:
            room = require_room_for_restore(data_dir, production_bytes, snapshot.snapshot_id)
            if log:
                log(room)

    def new_database_name(self) -> str:
        base = f"{self.config.database_prefix}{_utc_now().strftime(_NAME_TIME_FORMAT)}"
        existing = {row[0] for row in self._query("SELECT datname FROM pg_database")}
        name, suffix = base, 1
        while name in existing:
            suffix += 1
            name = f"{base}_{suffix}"
        return name

    def restore(self, snapshot: Snapshot, name: str, log: Log | None = None) -> ManagedDatabase:
        self.ensure_ready()
        if not name.startswith(self.config.database_prefix):
            raise RefreshError(f"restore target {name!r} must start with the prefix {self.config.database_prefix!r}.")
        if not Path(snapshot.location, "toc.dat").is_file():
            raise RefreshError(f"snapshot {snapshot.snapshot_id} is incomplete or missing at {snapshot.location}.")
        with connect(self._admin_conninfo(), autocommit=True) as conn:
            self._require_room(conn, snapshot, log)
            notes = create_database_like(conn, name, load_locale(Path(snapshot.location)))
            conn.execute(
                sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                    sql.Identifier(name), sql.Literal(f"{MANAGED_MARKER} snapshot={snapshot.snapshot_id}")
                )
            )
        pg_restore = find_client_binary("pg_restore", self.server.bin_dir if self.server else None)
        try:
            notes += restore_snapshot(
                pg_restore,
                self.config.parallelism,
                self.conninfo(name),
                snapshot.location,
                libpq_env(self.conninfo(name)),
                f"restore of {snapshot.snapshot_id} into {name}",
                load_extension_versions(Path(snapshot.location)),
                log,
            )
        except RefreshError:
            self._drop(name)
            raise
        with connect(self._admin_conninfo(), autocommit=True) as conn:
            notes += apply_settings(conn, name, load_settings(Path(snapshot.location)))
        return ManagedDatabase(name=name, created_at=_utc_now(), snapshot_id=snapshot.snapshot_id, notes=tuple(notes))

    # -- managed databases ----------------------------------------------------------------------
    def _query(self, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with connect(self._admin_conninfo()) as conn:
            return conn.execute(query, params).fetchall()

    def _created_at(self, name: str) -> datetime | None:
        """When a database of ours was restored, as its name says (new_database_name)."""
        stamp = name.removeprefix(self.config.database_prefix)[: len("YYYYmmdd_HHMMSS")]
        try:
            return datetime.strptime(stamp, _NAME_TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            return None

    def list_managed(self) -> list[ManagedDatabase]:
        rows = self._query(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE starts_with(datname, %s) AND starts_with(shobj_description(oid, 'pg_database'), %s) "
            "ORDER BY datname",
            (self.config.database_prefix, MANAGED_MARKER),
        )
        managed = []
        for name, comment in rows:
            snapshot_match = re.search(r"snapshot=(\S+)", str(comment))
            managed.append(
                ManagedDatabase(
                    name=str(name),
                    created_at=self._created_at(str(name)),
                    snapshot_id=snapshot_match.group(1) if snapshot_match else None,
                )
            )
        return managed

    def _require_managed(self, name: str, action: str) -> None:
        if self._source_is_on_this_server(name):
            raise RefreshError(f"refusing to {action} {name!r}: it is the production source database.")
        if name not in {db.name for db in self.list_managed()}:
            raise RefreshError(f"refusing to {action} {name!r}: it was not created by refresh_pipeline.")

    def retire(self, name: str) -> None:
        self._require_managed(name, "retire")
        if name == self.promoted():
            raise RefreshError(f"refusing to retire {name!r}: it is the promoted staging database.")
        self._drop(name)

    def drop_if_exists(self, name: str) -> None:
        """Drop a database this pipeline created, if it is there (clean-up after a failed step)."""
        if name in {db.name for db in self.list_managed()} and not self._source_is_on_this_server(name):
            self._drop(name)

    def _drop(self, name: str) -> None:
        with connect(self._admin_conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    # -- promotion ----------------------------------------------------------------------------
    def _read_services(self) -> configparser.ConfigParser:
        services = configparser.ConfigParser(interpolation=None)
        if self.service_file.is_file():
            services.read(self.service_file)
        return services

    def promote(self, name: str) -> None:
        self._require_managed(name, "promote")
        params = parse_conninfo(self.conninfo(name))
        services = self._read_services()
        # Never write a password into the file: libpq finds it in ~/.pgpass or PGPASSWORD.
        services[STAGING_SERVICE] = {
            key: value for key, value in params.items() if key in {"host", "port", "dbname", "user", "sslmode"}
        }
        buffer = io.StringIO()
        services.write(buffer, space_around_delimiters=False)
        self.service_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_path = tempfile.mkstemp(dir=self.service_file.parent, prefix=".pg_service.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as tmp:
                tmp.write(buffer.getvalue())
                tmp.flush()
                os.fsync(tmp.fileno())
            os.chmod(tmp_path, 0o644)
            os.replace(tmp_path, self.service_file)
        except BaseException:
            Path(tmp_path).unlink(missing_ok=True)
            raise

    def promoted(self) -> str | None:
        services = self._read_services()
        if not services.has_section(STAGING_SERVICE):
            return None
        return services[STAGING_SERVICE].get("dbname")

    def staging_conninfo(self) -> str:
        return f"service={STAGING_SERVICE}"

    def staging_login_passwords(self) -> None:
        return None  # the server's roles are production's too when both live on it
