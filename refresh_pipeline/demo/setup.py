"""Prepares the demo: embedded server, demo production database, and a config file pointing at both."""

from pathlib import Path

import yaml
from psycopg import sql

from refresh_pipeline.config import load_config
from refresh_pipeline.demo.dataset import load_demo_database
from refresh_pipeline.platforms.connections import connect
from refresh_pipeline.platforms.local import SERVER_FOLDER, LocalPlatform
from refresh_pipeline.platforms.local_server import LocalServer

DEMO_SOURCE_DATABASE = "production"
DEMO_POLICY = Path(__file__).parent / "policy.yaml"


def write_demo_config(work_dir: Path, port: int) -> Path:
    """`<work_dir>/demo.yaml`: the local platform with its own server, reading the demo production DB."""
    work_dir = work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    config_path = work_dir / "demo.yaml"
    config = {
        "platform": "local",
        "source_dsn": LocalServer(work_dir / SERVER_FOLDER, port).dsn(DEMO_SOURCE_DATABASE),
        "policy": str(DEMO_POLICY),
        "work_dir": str(work_dir),
        "masking_key_env": "REFRESH_MASKING_KEY",
        "parallelism": 2,
        "local": {"port": port},
    }
    config_path.write_text("# Written by `refresh-pipeline demo`.\n" + yaml.safe_dump(config, sort_keys=False))
    return config_path


def prepare_demo(work_dir: Path, scale: float, port: int, reset: bool = False) -> Path:
    """Start the server, (re)load demo production if needed; returns the demo config path."""
    config_path = write_demo_config(work_dir, port)
    platform = LocalPlatform(load_config(config_path))
    platform.ensure_ready()
    admin = platform.conninfo("postgres")
    with connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DEMO_SOURCE_DATABASE,)).fetchone()
        if exists and reset:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(DEMO_SOURCE_DATABASE)))
            exists = None
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEMO_SOURCE_DATABASE)))
    if not exists:
        print(f"loading demo production database (scale {scale}):")
        load_demo_database(platform.conninfo(DEMO_SOURCE_DATABASE), scale=scale)
    else:
        print("demo production database already loaded (use --reset to reload)")
    return config_path
