"""Find the PostgreSQL server and client binaries on this machine."""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

from refresh_pipeline.errors import RefreshError

SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
INSTALL_HINT = (
    "Install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql`) "
    "or set local.bin_dir in the config to the folder holding initdb, pg_ctl and postgres."
)


def _has_server_binaries(folder: Path) -> bool:
    return all((folder / name).is_file() for name in SERVER_BINARIES)


def _version_key(folder: str) -> tuple[int, ...]:
    parts = Path(folder).parent.name.split(".")
    return tuple(int(p) for p in parts if p.isdigit())


def _candidate_dirs() -> list[Path]:
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
            candidates.append(Path(out.stdout.strip()))
        except (subprocess.CalledProcessError, OSError):
            pass
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/opt/homebrew/opt/postgresql*/bin"):
        candidates.extend(Path(p) for p in sorted(glob.glob(pattern), key=_version_key, reverse=True))
    return candidates


def find_server_bin_dir(preferred: str | None = None) -> Path:
    """The folder with initdb, pg_ctl and postgres: `preferred`, pg_config, PATH, then usual install dirs."""
    if preferred:
        folder = Path(preferred)
        if _has_server_binaries(folder):
            return folder
        raise RefreshError(f"local.bin_dir={preferred} does not contain {', '.join(SERVER_BINARIES)}. {INSTALL_HINT}")
    for folder in _candidate_dirs():
        if _has_server_binaries(folder):
            return folder
    raise RefreshError(f"PostgreSQL server binaries ({', '.join(SERVER_BINARIES)}) not found. {INSTALL_HINT}")


def find_client_binary(name: str, server_bin_dir: Path | None = None) -> str:
    """A client tool (pg_dump, pg_restore): beside the server binaries if there, else from PATH.

    Matching the server's major version matters: an older pg_dump refuses a newer server.
    """
    folders = [server_bin_dir] if server_bin_dir else []
    folders += _candidate_dirs()
    for folder in folders:
        if (folder / name).is_file():
            return str(folder / name)
    found = shutil.which(name)
    if not found:
        raise RefreshError(f"`{name}` not found. {INSTALL_HINT}")
    return found
