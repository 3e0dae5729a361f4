"""An embedded PostgreSQL server: initdb + pg_ctl on the system's binaries, data under the work dir."""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from refresh_pipeline.errors import RefreshError
from refresh_pipeline.platforms.postgres_binaries import find_server_bin_dir
from refresh_pipeline.row_data_in_errors import log_tail_without_row_data

SUPERUSER = "refresh"
# initdb and postgres refuse to run as root; when we are root the server runs as one of these.
_UNPRIVILEGED_USERS = ("postgres", "nobody")


def _unprivileged_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in _UNPRIVILEGED_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RefreshError("running as root and no unprivileged user (postgres, nobody) exists to run PostgreSQL.")


def _shared_buffers_mb() -> int:
    """An eighth of the machine's memory, between 128 MB and 1 GB."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 128
    return max(128, min(1024, total // 8 // 2**20))


TUNING_FILE = "refresh_pipeline.conf"
_INCLUDE_TUNING = f"include_if_exists = '{TUNING_FILE}'"


# sun_path of a Unix socket holds 107 bytes and a NUL.
_MAX_SOCKET_PATH = 107


def _conf_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _tuning(socket_dir: Path) -> str:
    return (
        "# rewritten by refresh_pipeline before every start: to override a setting, set it in postgresql.conf\n"
        "# below the line that includes this file\n"
        # No TCP: the restored databases hold production's data until they are masked. The only way in is
        # a socket in a directory only the server's user can enter (and root), not any local user.
        "listen_addresses = ''\n"
        f"unix_socket_directories = {_conf_string(str(socket_dir))}\n"
        "unix_socket_permissions = 0700\n"
        "max_connections = 100\n"
        # The audit probes fingerprints and the masking probes the value map for every value: keep them in
        # memory (the 128 MB default is smaller than one fingerprint table at scale 1).
        f"shared_buffers = {_shared_buffers_mb()}MB\n"
        "maintenance_work_mem = '256MB'\n"
        # A throwaway staging server nothing replicates from: rows loaded into a table created or truncated in
        # the same transaction (pg_restore's loads, rebuilt masked tables, VACUUM FULL, index builds) write
        # no WAL, and fewer checkpoints mean fewer full-page images. A refresh at scale 1 wrote 1.7 GB of WAL
        # with the defaults, 0.7 GB with these.
        "wal_level = minimal\n"
        "max_wal_senders = 0\n"
        "max_wal_size = '4GB'\n"
    )


class LocalServer:
    """A PostgreSQL server of our own, reachable only through a Unix socket in a private directory (mode 0700,
    owned by the server's user); its superuser needs no password there. `port` names the socket."""

    def __init__(self, root: Path, port: int, bin_dir: str | None = None) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.log_file = root / "server.log"
        self.port = port
        self._bin_dir_setting = bin_dir

    @property
    def bin_dir(self) -> Path:
        return find_server_bin_dir(self._bin_dir_setting)

    @property
    def socket_dir(self) -> Path:
        """`<root>/socket`, or, when that path is too long for a socket, a private directory named after the
        root in the temporary directory."""
        own = self.root.absolute() / "socket"
        if len(os.fsencode(own / self.socket_name)) <= _MAX_SOCKET_PATH:
            return own
        digest = hashlib.sha256(os.fsencode(self.root.absolute())).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"refresh_pipeline-{digest}"

    @property
    def socket_name(self) -> str:
        return f".s.PGSQL.{self.port}"

    def dsn(self, dbname: str = "postgres") -> str:
        return make_conninfo(host=str(self.socket_dir), port=str(self.port), user=SUPERUSER, dbname=dbname)

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        user = _unprivileged_user()
        command = ["runuser", "-u", user.pw_name, "--", *args] if user else args
        result = subprocess.run(command, capture_output=True, text=True, cwd="/")
        if check and result.returncode != 0:
            raise RefreshError(
                f"`{Path(args[0]).name}` failed (exit {result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}" + self._log_tail()
            )
        return result

    def _log_tail(self) -> str:
        if not self.log_file.exists():
            return ""
        tail = log_tail_without_row_data(self.log_file)
        return "\nserver log (last lines):\n  " + "\n  ".join(tail) if tail else ""

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root.parent / f".{self.root.name}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _prepare_ownership(self) -> None:
        user = _unprivileged_user()
        if user is None:
            return
        for parent in self.root.resolve().parents:
            if not os.stat(parent).st_mode & 0o001:
                raise RefreshError(
                    f"running as root, PostgreSQL runs as '{user.pw_name}', which cannot enter {parent}. "
                    f"Use a work_dir outside it, or `chmod o+x {parent}`."
                )
        os.chown(self.root, user.pw_uid, user.pw_gid)
        for path in self.root.rglob("*"):
            try:
                os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
            except FileNotFoundError:
                continue  # a temporary file the server removed meanwhile

    def is_running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        return (
            self._run([str(self.bin_dir / "pg_ctl"), "status", "-D", str(self.data_dir)], check=False).returncode == 0
        )

    def ensure_running(self) -> None:
        """Create the cluster on first use, start it if it is stopped; safe to call from many processes."""
        with self._lock():
            running = self.is_running()
            if running and (self.socket_dir / self.socket_name).is_socket():
                return  # nothing to prepare: every session of a pool asks this
            self._prepare_ownership()
            self._prepare_socket_dir()
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            self._write_tuning()
            # Running without our socket: started by a version that listened on TCP; restarted onto it.
            self._start(restart=running)

    def _initdb(self) -> None:
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=reject",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-instructions",
            ]
        )
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(f"\n# written by refresh_pipeline\nport = {self.port}\n")

    def _write_tuning(self) -> None:
        """Our tuning, in a file of its own rewritten before every start and included last by
        postgresql.conf: a server created by an earlier version gets the current settings at its next start."""
        (self.data_dir / TUNING_FILE).write_text(_tuning(self.socket_dir))
        conf = self.data_dir / "postgresql.conf"
        if _INCLUDE_TUNING not in conf.read_text():
            with open(conf, "a") as handle:
                handle.write(f"\n{_INCLUDE_TUNING}\n")
        user = _unprivileged_user()
        if user is not None:
            os.chown(self.data_dir / TUNING_FILE, user.pw_uid, user.pw_gid)

    def _prepare_socket_dir(self) -> None:
        """The socket's directory: created 0700 for the server's user; an existing one must already be that
        (another user's directory in /tmp would let them see or replace the socket)."""
        user = _unprivileged_user()
        uid, gid = (user.pw_uid, user.pw_gid) if user else (os.geteuid(), os.getegid())
        directory = self.socket_dir
        try:
            directory.mkdir(mode=0o700, parents=False)
            os.chown(directory, uid, gid)
        except FileExistsError:
            pass
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or stat.S_IMODE(info.st_mode) & 0o077:
            raise RefreshError(
                f"{directory} must be a directory of the server's user (uid {uid}) that only it can enter "
                "(mode 0700), for the embedded server's socket. Remove it, or choose another work_dir."
            )

    def _start(self, restart: bool = False) -> None:
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                *(["restart", "-m", "fast"] if restart else ["start"]),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {self.port}",
            ]
        )
        try:
            with psycopg.connect(self.dsn(), connect_timeout=10):
                pass
        except psycopg.OperationalError as exc:
            raise RefreshError(
                f"local PostgreSQL started but is not reachable through {self.socket_dir / self.socket_name}: {exc}"
            ) from None

    def stop(self) -> None:
        """Stop the server (fast shutdown) if it runs; the data stays."""
        with self._lock():
            if self.is_running():
                self._run([str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w"])
