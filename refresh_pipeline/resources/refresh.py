"""The one resource every asset and check uses."""

import dagster as dg
import psycopg

from refresh_pipeline.config import RefreshConfig, load_config
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.policy import MaskingPolicy, load_policy
from refresh_pipeline.platforms.base import Platform
from refresh_pipeline.platforms.connections import connect
from refresh_pipeline.platforms.factory import platform_for
from refresh_pipeline.state import StateFile


class RefreshResource(dg.ConfigurableResource):
    """Config file path plus the masking key (from an environment variable, never from a file)."""

    config_path: str
    # From the environment variable named in the config; on AWS it may come from Secrets Manager or SSM
    # instead (aws.masking_key_secret), and then this stays unset.
    masking_key: str | None = None

    def config(self) -> RefreshConfig:
        return load_config(self.config_path)

    def platform(self) -> Platform:
        return platform_for(self.config(), self.key)

    def policy(self) -> MaskingPolicy:
        return load_policy(self.config().policy_path)

    def key(self) -> MaskingKey:
        config = self.config()
        if self.masking_key:
            return MaskingKey(self.masking_key)
        if config.aws is not None and config.aws.masking_key_secret:
            from refresh_pipeline.platforms.aws import read_secret

            return MaskingKey(read_secret(config.aws.masking_key_secret, config.aws.region))
        return MaskingKey.from_env(config.masking_key_env)

    def state(self) -> StateFile:
        return StateFile(self.config().work_dir)

    def connect_managed(self, database: str) -> psycopg.Connection:
        """An autocommit session on a database the pipeline restored (never production)."""
        platform = self.platform()
        try:
            conn = connect(platform.conninfo(database), autocommit=True)
        except RefreshError:
            # Only then: readiness costs a `pg_ctl status` locally, and pools open many sessions.
            platform.ensure_ready()
            conn = connect(platform.conninfo(database), autocommit=True)
        # Masking and audit queries are single scans with large inlined expressions: JIT would spend
        # seconds compiling them per table and per worker for no gain (measured in bench/).
        conn.execute("SET jit = off")
        return conn
