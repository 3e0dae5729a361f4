"""Login roles of a restored RDS instance: production's passwords do not open staging. The instance is a
server of its own (roles are per server), holding production's roles as an RDS restore brings them; the
AWS API is moto running as a real HTTP server."""

import base64
import hashlib
import hmac
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import dagster as dg
import psycopg
import pytest
from psycopg import sql

from refresh_pipeline.cli import main
from refresh_pipeline.config import load_config
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.platforms.local_server import LocalServer
from refresh_pipeline.staging_logins import set_staging_logins
from refresh_pipeline_tests.aws_fixtures import REGION
from refresh_pipeline_tests.graph import materialize, step_failure_messages
from refresh_pipeline_tests.helpers import running_server

PRODUCTION_PASSWORDS = {"app": "pr0duction-app-password", "reporting": "pr0duction-reporting-password"}
STAGING_APP_PASSWORD = "st4ging-app-password"


@pytest.fixture(scope="module")
def instance_server(test_root: Path) -> Iterator[LocalServer]:
    """A PostgreSQL server standing for the restored instances: its roles are theirs alone."""
    with running_server(test_root / "instance_server") as server:
        yield server


@pytest.fixture
def production_roles(instance_server: LocalServer) -> Iterator[None]:
    """Production's roles, as an RDS restore brings them: two that log in, one group, with passwords."""
    with psycopg.connect(instance_server.dsn(), autocommit=True) as conn:
        for role, password in PRODUCTION_PASSWORDS.items():
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
            )
        conn.execute("CREATE ROLE readers NOLOGIN")
        conn.execute("CREATE ROLE rdstopmgr LOGIN")  # RDS's own
    yield
    with psycopg.connect(instance_server.dsn(), autocommit=True) as conn:
        for role in [*PRODUCTION_PASSWORDS, "readers", "rdstopmgr"]:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _roles(server: LocalServer) -> dict[str, tuple[bool, str | None]]:
    with psycopg.connect(server.dsn()) as conn:
        rows = conn.execute("SELECT rolname, rolcanlogin, rolpassword FROM pg_authid WHERE NOT rolsuper").fetchall()
    return {name: (can_login, password) for name, can_login, password in rows if not name.startswith("pg_")}


def _scram_matches(verifier: str | None, password: str) -> bool:
    """Whether a SCRAM-SHA-256 verifier (pg_authid.rolpassword) was made from `password` (RFC 5802)."""
    if not verifier or not verifier.startswith("SCRAM-SHA-256$"):
        return False
    iterations_salt, keys = verifier.removeprefix("SCRAM-SHA-256$").split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored_key


def test_configured_roles_get_their_staging_password_and_every_other_login_closes(instance_server, production_roles):
    with psycopg.connect(instance_server.dsn(), autocommit=True) as conn:
        changes = set_staging_logins(conn, {"app": STAGING_APP_PASSWORD})
        logged = conn.execute("SELECT rolname FROM pg_roles WHERE rolname = current_user").fetchone()[0]
    roles = _roles(instance_server)
    assert changes.as_metadata() == {"staging_passwords": ["app"], "logins_closed": ["reporting"]}
    assert roles["app"][0] and _scram_matches(roles["app"][1], STAGING_APP_PASSWORD)
    assert not _scram_matches(roles["app"][1], PRODUCTION_PASSWORDS["app"])
    assert roles["reporting"] == (False, None), "no login, and production's verifier gone"
    assert roles["readers"] == (False, None), "a group stays as it was"
    assert roles["rdstopmgr"][0], "RDS's own roles keep their login"
    with psycopg.connect(instance_server.dsn()) as conn:
        assert conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (logged,)).fetchone()[0]


def test_the_password_reaches_the_server_only_as_a_verifier(instance_server, production_roles):
    with psycopg.connect(instance_server.dsn(), autocommit=True) as conn:
        conn.execute("SET log_statement = 'all'")
        set_staging_logins(conn, {"app": STAGING_APP_PASSWORD})
    log = instance_server.log_file.read_text(errors="replace")
    assert "ALTER ROLE" in log and "SCRAM-SHA-256$" in log, "the statements were logged"
    assert STAGING_APP_PASSWORD not in log


def test_unknown_roles_and_the_master_user_are_refused_changing_nothing(instance_server, production_roles):
    before = _roles(instance_server)
    with psycopg.connect(instance_server.dsn(), autocommit=True) as conn:
        master = conn.execute("SELECT current_user").fetchone()[0]
        with pytest.raises(RefreshError, match="names role\\(s\\) the database does not have: ghost"):
            set_staging_logins(conn, {"app": STAGING_APP_PASSWORD, "ghost": "x"})
        with pytest.raises(RefreshError, match=f"names {master}, the master user"):
            set_staging_logins(conn, {master: "x"})
    assert _roles(instance_server) == before


def test_a_refresh_on_aws_gives_staging_its_own_logins_and_leaves_production_alone(
    aws_config, pg_server, instance_server, production_roles
):
    boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="staging/app-password", SecretString=STAGING_APP_PASSWORD
    )
    config = aws_config(
        data_plane_dsn=instance_server.dsn(), staging_logins={"app": "secretsmanager:staging/app-password"}
    )
    production_before = _roles(pg_server)
    result = materialize(config, dg.DagsterInstance.ephemeral())
    assert result.success, step_failure_messages(result)

    roles = _roles(instance_server)
    assert roles["app"][0] and _scram_matches(roles["app"][1], STAGING_APP_PASSWORD)
    assert roles["reporting"] == (False, None)
    assert _roles(pg_server) == production_before, "production's server keeps its roles"
    promoted = next(
        event.materialization.metadata["logins"].data
        for event in result.get_asset_materialization_events()
        if event.materialization.asset_key == dg.AssetKey("staging_database")
    )
    assert promoted == {"staging_passwords": ["app"], "logins_closed": ["reporting"]}


def test_an_unknown_staging_login_fails_the_restore_step_before_any_masking(
    aws_config, instance_server, production_roles
):
    boto3.client("secretsmanager", region_name=REGION).create_secret(Name="staging/ghost", SecretString="x")
    config = aws_config(data_plane_dsn=instance_server.dsn(), staging_logins={"ghost": "secretsmanager:staging/ghost"})
    result = materialize(config, dg.DagsterInstance.ephemeral())
    assert not result.success
    failures = step_failure_messages(result)
    assert "the database does not have: ghost" in failures.get("restored_instance", ""), failures
    assert _roles(instance_server)["reporting"][0], "nothing changed"


@pytest.mark.parametrize("value", [["app"], {"app": "plain-password"}, {"app": 5}])
def test_staging_logins_take_role_names_and_secret_references_only(aws_config, value):
    with pytest.raises(RefreshError, match=r"aws\.staging_logins must map role names to secret references"):
        load_config(aws_config(staging_logins=value))


def test_a_data_plane_on_productions_own_server_leaves_its_roles_alone(aws_config, pg_server):
    role = f"production_app_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'prod'").format(sql.Identifier(role)))
    try:
        result = materialize(aws_config(), dg.DagsterInstance.ephemeral())  # the data plane: production's server
        assert result.success, step_failure_messages(result)
        assert _roles(pg_server)[role][0], "production's role still logs in"
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_validate_names_staging_logins_production_does_not_have(aws_config, capsys):
    logins = {"ghost": "secretsmanager:staging/ghost", "refresh": "secretsmanager:staging/refresh"}
    assert main(["validate", "--config", str(aws_config(staging_logins=logins))]) == 1
    err = capsys.readouterr().err
    assert "aws.staging_logins names role(s) the database does not have: ghost;" in err
