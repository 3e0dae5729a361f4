"""Fixtures: one real PostgreSQL server for the session (the project's own embedded server), fresh
databases per test, the demo production database, and refresh configs pointing at them."""

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql

from refresh_pipeline.demo.dataset import load_demo_database
from refresh_pipeline.platforms.local_server import LocalServer
from refresh_pipeline_tests.helpers import running_server

pytest_plugins = ["refresh_pipeline_tests.aws_fixtures"]

TEST_KEY = "test-masking-key-0123456789"
DEMO_TEST_SCALE = 0.005


@pytest.fixture(scope="session")
def test_root() -> Iterator[Path]:
    # Not under pytest's tmp dir: that one is 0700, and as root the server runs as an unprivileged user.
    root = Path(tempfile.mkdtemp(prefix="refresh_pipeline_tests_"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(test_root: Path) -> Iterator[LocalServer]:
    with running_server(test_root / "pgserver") as server:
        yield server


@pytest.fixture
def create_database(pg_server: LocalServer) -> Iterator[Callable[[str], str]]:
    """Makes empty databases (dropped after the test); returns their conninfo."""
    made: list[str] = []

    def make(prefix: str = "db") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append(name)
        return pg_server.dsn(name)

    yield make
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def demo_source(pg_server: LocalServer) -> str:
    """The demo production database, loaded once; tests must only read it."""
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE demo_production")
    conninfo = pg_server.dsn("demo_production")
    load_demo_database(conninfo, scale=DEMO_TEST_SCALE, log=lambda _m: None)
    return conninfo


@pytest.fixture
def masking_key_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("REFRESH_MASKING_KEY", TEST_KEY)
    return TEST_KEY


@pytest.fixture
def write_config(tmp_path: Path, pg_server: LocalServer, masking_key_env: str) -> Callable[..., Path]:
    """A refresh config on the test server with its own work dir and database prefix (so tests never
    see each other's staging databases)."""

    def write(source_dsn: str, policy: Path | str | None = None, **overrides: object) -> Path:
        prefix = f"t{uuid.uuid4().hex[:6]}_"
        config = {
            "platform": "local",
            "source_dsn": source_dsn,
            "policy": str(policy or Path(__file__).parents[1] / "refresh_pipeline" / "demo" / "policy.yaml"),
            "work_dir": str(tmp_path / "work"),
            "database_prefix": prefix,
            "parallelism": 2,
            "local": {"server_dsn": pg_server.dsn()},
            **overrides,
        }
        path = tmp_path / f"config_{prefix}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return write


@pytest.fixture(autouse=True)
def _no_inherited_refresh_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # setenv first so that monkeypatch records the variable and removes what the code under test sets.
    for name in ("REFRESH_PIPELINE_CONFIG", "DAGSTER_HOME", "PGSERVICEFILE", "PGSERVICE"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("DAGSTER_TELEMETRY_DISABLED", "1")
    assert "REFRESH_PIPELINE_CONFIG" not in os.environ
