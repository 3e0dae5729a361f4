"""What production has besides the database to mask never reaches staging. On AWS an RDS restore brings
production's whole server: its other databases, the rows it keeps in `postgres` and `template1`, its
replication slots, pg_cron with production's jobs and their run history (the instance is a PostgreSQL server
standing for it, pg_cron loaded as on RDS; the AWS API is moto). On the local platform, pg_cron kept in
production's own database."""

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import boto3
import dagster as dg
import psycopg
import pytest
import yaml
from psycopg import sql

from refresh_pipeline.config import load_config
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.platforms.aws import AwsPlatform
from refresh_pipeline.platforms.base import ManagedDatabase
from refresh_pipeline.platforms.local_server import LocalServer
from refresh_pipeline.platforms.restore_passes import SCHEDULER_LEFT_OUT
from refresh_pipeline.validate import validate_against_source
from refresh_pipeline_tests.aws_fixtures import REGION, SOURCE_INSTANCE
from refresh_pipeline_tests.conftest import TEST_KEY
from refresh_pipeline_tests.graph import materialize, step_failure_messages
from refresh_pipeline_tests.helpers import running_server

RIDER = "rider1@gmail.com"
JOBS = [  # (jobname, schedule, database, active)
    ("nightly-cleanup", "0 3 * * *", "app", True),
    ("rider-digest", "*/5 * * * *", "analytics", True),
    ("paused-export", "0 0 1 * *", "app", False),
]


def _databases(server: LocalServer) -> set[str]:
    with psycopg.connect(server.dsn()) as conn:
        return {name for (name,) in conn.execute("SELECT datname FROM pg_database")}


def _restore(aws_config, **aws_settings: str) -> ManagedDatabase:
    config = aws_config(data_plane_dsn=None, **aws_settings)
    platform = AwsPlatform(load_config(config), key=lambda: MaskingKey(TEST_KEY))
    return platform.restore(platform.snapshot(), platform.new_database_name())


@pytest.fixture
def production_extras(instances_on_stand_in: LocalServer) -> Iterator[LocalServer]:
    """The stand-in instance as an RDS restore leaves it: other databases (one owned by another role, one a
    template), production's rows in `postgres` and `template1`, and pg_cron's jobs and run history in `postgres`,
    its tables owned by the master user `app`."""
    server = instances_on_stand_in
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE legacy_owner NOLOGIN")
        conn.execute("CREATE DATABASE analytics OWNER app")
        conn.execute("CREATE DATABASE legacy OWNER legacy_owner")
        conn.execute("CREATE DATABASE app_template OWNER app IS_TEMPLATE true")
        conn.execute("CREATE EXTENSION pg_cron")
        conn.execute("GRANT USAGE ON SCHEMA cron TO app")
        conn.execute("ALTER TABLE cron.job OWNER TO app; ALTER TABLE cron.job_run_details OWNER TO app")
        for jobname, schedule, database, active in JOBS:
            conn.execute(
                "INSERT INTO cron.job (jobname, schedule, command, nodeport, database, username, active) "
                "VALUES (%s, %s, 'SELECT 1', 5432, %s, 'app', %s)",
                (jobname, schedule, database, active),
            )
        conn.execute(
            "INSERT INTO cron.job_run_details (jobid, runid, database, username, command, status, return_message) "
            "SELECT jobid, 1, 'app', 'app', command, 'failed', %s FROM cron.job LIMIT 1",
            (f"duplicate key value violates unique constraint: (email)=({RIDER})",),
        )
        conn.execute("CREATE EXTENSION postgres_fdw; GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO app")
        conn.execute("GRANT CREATE ON SCHEMA public TO app")
        conn.execute("SET ROLE app")
        conn.execute("CREATE TABLE public.audit_trail (email text)")
        conn.execute("INSERT INTO public.audit_trail VALUES (%s)", (RIDER,))
        conn.execute("CREATE MATERIALIZED VIEW public.audit_emails AS SELECT email FROM public.audit_trail")
        conn.execute("SELECT lo_from_bytea(0, %s)", (RIDER.encode(),))
        conn.execute("CREATE SERVER crm FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'crm.internal', dbname 'crm')")
        conn.execute("CREATE USER MAPPING FOR app SERVER crm OPTIONS (user 'crm', password 'crm-s3cret')")
    with psycopg.connect(server.dsn("template1"), autocommit=True) as conn:
        conn.execute("CREATE TABLE public.seeded (email text)")
        conn.execute("ALTER TABLE public.seeded OWNER TO app")
        conn.execute("INSERT INTO public.seeded VALUES (%s)", (RIDER,))
    with psycopg.connect(server.dsn("analytics"), autocommit=True) as conn:
        conn.execute("CREATE TABLE trips (email text); INSERT INTO trips VALUES ('rider2@gmail.com')")
        conn.execute("SELECT pg_create_logical_replication_slot('debezium', 'pgoutput')")
        conn.execute("SELECT pg_create_physical_replication_slot('rds_replica', true)")
    yield server
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots")
    with psycopg.connect(server.dsn("template1"), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS public.seeded")
    left = _databases(server) & {"analytics", "legacy", "app_template"}
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for database in map(sql.Identifier, left):
            conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(database))
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(database))
        conn.execute("DROP MATERIALIZED VIEW IF EXISTS public.audit_emails; DROP TABLE IF EXISTS public.audit_trail")
        conn.execute("SELECT lo_unlink(oid) FROM pg_largeobject_metadata")
        conn.execute("DROP EXTENSION pg_cron; DROP EXTENSION postgres_fdw CASCADE")
        conn.execute("DROP ROLE legacy_owner")


def test_a_restored_instance_keeps_only_the_database_to_mask_and_no_production_rows_besides(
    aws_world, aws_config, production_extras
):
    server = production_extras
    restored = _restore(aws_config)

    assert _databases(server) == {"app", "postgres", "template0", "template1"}
    assert restored.cleared == {
        "databases_dropped": ["analytics", "app_template", "legacy"],
        "replication_slots_dropped": ["debezium", "rds_replica"],
        "emptied": [
            "postgres: public.audit_trail", "postgres: public.audit_emails", "postgres: 1 large object(s)",
            "template1: public.seeded",
        ],
        "links_to_production_cut": {
            "postgres": {"foreign_servers": ["crm"], "user_mappings_dropped": 1, "subscriptions_dropped": []},
        },
        "cron_jobs_deactivated": [
            "nightly-cleanup (0 3 * * *) in app as app", "rider-digest (*/5 * * * *) in analytics as app",
        ],
    }  # fmt: skip
    with psycopg.connect(server.dsn()) as conn:
        assert conn.execute("SELECT jobname, active FROM cron.job ORDER BY 1").fetchall() == [
            ("nightly-cleanup", False), ("paused-export", False), ("rider-digest", False),
        ], "kept, so staging shows what production schedules, but none runs"  # fmt: skip
        assert conn.execute("SELECT count(*) FROM cron.job_run_details").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM public.audit_trail").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_user_mappings").fetchone()[0] == 0, "crm's password gone"
        assert not conn.execute("SELECT relispopulated FROM pg_class WHERE relname = 'audit_emails'").fetchone()[0]
        assert not conn.execute("SELECT pg_has_role('app', 'legacy_owner', 'MEMBER')").fetchone()[0], "revoked again"
    with psycopg.connect(server.dsn("template1")) as conn:
        assert conn.execute("SELECT count(*) FROM public.seeded").fetchone()[0] == 0
    with psycopg.connect(server.dsn("app")) as conn:  # for no_pii_in_definitions, dropped before promotion
        assert conn.execute(
            "SELECT job, command FROM refresh_pipeline_audit.scheduled_job_commands ORDER BY 1"
        ).fetchall() == [
            ("nightly-cleanup in app", "SELECT 1"), ("paused-export in app", "SELECT 1"),
            ("rider-digest in analytics", "SELECT 1"),
        ]  # fmt: skip
    assert any("pg_cron ran on the restored instance" in note for note in restored.notes)
    assert not aws_world.mutating_calls(DBInstanceIdentifier=SOURCE_INSTANCE)[1:], "only the snapshot touched prod"


def test_jobs_the_master_user_cannot_deactivate_fail_the_restore_and_the_instance_is_deleted(
    aws_world, aws_config, production_extras
):
    server = production_extras
    with psycopg.connect(server.dsn(), autocommit=True) as conn:  # where the master user does not own the extension
        conn.execute("ALTER TABLE cron.job OWNER TO CURRENT_USER; GRANT SELECT, UPDATE ON cron.job TO app")

    with pytest.raises(RefreshError, match="cannot deactivate production's pg_cron jobs in database postgres") as err:
        _restore(aws_config)

    assert "row-level security" in str(err.value), "app sees only its own jobs: some could still run"
    deleted = [params["DBInstanceIdentifier"] for name, params in aws_world.calls if name == "DeleteDBInstance"]
    assert len(deleted) == 1 and deleted[0].startswith("sr-"), "what the failed restore created is deleted"


def test_a_database_the_master_user_may_not_drop_fails_the_restore(aws_world, aws_config, production_extras):
    server = production_extras
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        superuser = conn.execute("SELECT current_user").fetchone()[0]
        conn.execute(sql.SQL("ALTER DATABASE legacy OWNER TO {}").format(sql.Identifier(superuser)))

    with pytest.raises(RefreshError, match=f"cannot drop production's database legacy \\(owner {superuser}\\)"):
        _restore(aws_config)
    assert "legacy" in _databases(server)


def test_a_database_name_the_instance_lacks_fails_before_anything_is_dropped(aws_world, aws_config, production_extras):
    with pytest.raises(RefreshError, match=r"the restored instance has no database 'ap' \(aws\.database_name\)"):
        _restore(aws_config, database_name="ap")
    assert {"analytics", "legacy", "app"} <= _databases(production_extras)


def test_validate_names_the_databases_a_restore_drops_and_the_ones_it_could_not(
    aws_world, aws_config, production_extras
):
    server = production_extras
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        superuser = conn.execute("SELECT current_user").fetchone()[0]
        conn.execute(sql.SQL("ALTER DATABASE legacy OWNER TO {}").format(sql.Identifier(superuser)))
    config = replace(load_config(aws_config(data_plane_dsn=None)), source_dsn=server.dsn("app"))

    validation = validate_against_source(config)

    assert (
        "production's server also holds database(s) analytics, app_template, legacy: an RDS restore brings them, "
        "and the refresh drops them from the restored instance (staging holds only app)"
    ) in validation.warnings
    assert [problem for problem in validation.problems if "superuser" in problem] == [
        f"database legacy on production's server is owned by superuser {superuser}: the master user could not drop "
        "it from the restored instance, so every refresh would fail; give it an ordinary owner"
    ]


def test_in_development_the_data_planes_other_databases_stay(aws_world, aws_config, create_database, pg_server):
    others = create_database("developers_own")
    platform = AwsPlatform(load_config(aws_config()), key=lambda: MaskingKey(TEST_KEY))
    restored = platform.restore(platform.snapshot(), platform.new_database_name())

    assert others.rsplit("dbname=", 1)[1] in _databases(pg_server)
    assert restored.cleared == {}


@pytest.fixture(scope="module")
def cron_production_server(test_root: Path) -> Iterator[LocalServer]:
    """A server whose pg_cron lives in production's own database, `rides`."""
    settings = {"shared_preload_libraries": "pg_cron", "cron.database_name": "rides"}
    with running_server(test_root / "cron_production", **settings) as server:
        yield server


def test_the_local_restore_leaves_pg_cron_out_of_staging_and_production_keeps_it(
    cron_production_server, write_config, tmp_path
):
    server = cron_production_server
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE rides")
    with psycopg.connect(server.dsn("rides"), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_cron")
        conn.execute("CREATE TABLE riders (id int PRIMARY KEY, email text)")
        conn.execute("INSERT INTO riders SELECT g, 'rider' || g || '@gmail.com' FROM generate_series(1, 50) g")
        conn.execute("SELECT cron.schedule('purge', '0 3 * * *', 'DELETE FROM riders WHERE id < 0')")
        conn.execute(
            "INSERT INTO cron.job_run_details (jobid, runid, database, username, command, status, return_message) "
            "VALUES (1, 1, 'rides', current_user, 'SELECT 1', 'failed', %s)",
            (RIDER,),
        )
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  riders: {id: keep, email: email}\n")
    config = write_config(server.dsn("rides"), policy, local={"server_dsn": server.dsn()})

    result = materialize(config, dg.DagsterInstance.ephemeral())

    assert result.success, step_failure_messages(result)
    restored = result.asset_materializations_for_node("restored_instance")[0].metadata
    assert SCHEDULER_LEFT_OUT in restored["restore_notes"].value
    staging = restored["database"].value
    with psycopg.connect(server.dsn(staging)) as conn:
        assert conn.execute("SELECT count(*) FROM riders WHERE email LIKE '%@gmail.com'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM riders").fetchone()[0] == 50
        assert conn.execute("SELECT to_regnamespace('cron')").fetchone()[0] is None
    with psycopg.connect(server.dsn("rides")) as conn:
        assert conn.execute("SELECT jobname, active FROM cron.job").fetchall() == [("purge", True)]
        assert conn.execute("SELECT count(*) FROM cron.job_run_details").fetchone()[0] == 1


def _parameter_group(name: str, **parameters: str) -> str:
    rds = boto3.client("rds", region_name=REGION)
    rds.create_db_parameter_group(DBParameterGroupName=name, DBParameterGroupFamily="postgres15", Description=name)
    rds.modify_db_parameter_group(
        DBParameterGroupName=name,
        Parameters=[
            {"ParameterName": key, "ParameterValue": value, "ApplyMethod": "pending-reboot"}
            for key, value in parameters.items()
        ],
    )
    return name


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        (
            {"shared_preload_libraries": "pg_stat_statements, pg_cron", "max_logical_replication_workers": "2"},
            [
                "parameter group {group} loads pg_cron: production's scheduled jobs run on each restored instance, "
                "against unmasked rows, from its start until the refresh deactivates them; give restored instances "
                "a parameter group without it",
                "production has subscriptions (orders_feed) and parameter group {group} allows 2 logical replication "
                "worker(s): each restored instance starts them against production's publisher, with production's "
                "slot, until the refresh cuts them; set max_logical_replication_workers to 0 there",
            ],
        ),
        (
            None,
            [
                "production has subscriptions (orders_feed) and RDS's default parameter group (aws.parameter_group "
                "unset) allows 4 logical replication worker(s): each restored instance starts them against "
                "production's publisher, with production's slot, until the refresh cuts them; set "
                "max_logical_replication_workers to 0 there",
            ],
        ),
        ({"shared_preload_libraries": "pg_stat_statements", "max_logical_replication_workers": "0"}, []),
    ],
)
def test_validate_names_what_the_restored_instances_parameter_group_would_start(
    aws_world, aws_config, create_database, parameters, expected
):
    production = create_database("subscriber")
    with psycopg.connect(production, autocommit=True) as conn:
        conn.execute(
            "CREATE SUBSCRIPTION orders_feed CONNECTION 'host=orders.internal dbname=orders' PUBLICATION orders "
            "WITH (connect = false, enabled = false, slot_name = NONE)"
        )
    group = _parameter_group(f"staging-{uuid.uuid4().hex[:6]}", **parameters) if parameters else None
    settings = {"parameter_group": group} if group else {}
    config = replace(load_config(aws_config(data_plane_dsn=None, **settings)), source_dsn=production)

    try:
        warnings = validate_against_source(config).warnings
    finally:
        with psycopg.connect(production, autocommit=True) as conn:
            conn.execute("DROP SUBSCRIPTION orders_feed")

    assert [w for w in warnings if "pg_cron" in w or "subscriptions" in w] == [e.format(group=group) for e in expected]


def test_a_whole_refresh_on_a_restored_instance_masks_its_database_and_clears_the_rest(
    aws_world, aws_config, instances_on_stand_in, tmp_path
):
    """The production path end to end, with no data plane: the restore step clears the instance, the masked
    database is the instance's own, promotion points the staging name at it."""
    server = instances_on_stand_in
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE analytics OWNER app")
    with psycopg.connect(server.dsn("app"), autocommit=True) as conn:
        conn.execute("SET ROLE app")
        conn.execute("CREATE TABLE riders (id int PRIMARY KEY, email text)")
        conn.execute("INSERT INTO riders SELECT g, 'rider' || g || '@gmail.com' FROM generate_series(1, 40) g")
    config_path = aws_config(data_plane_dsn=None)
    policy = tmp_path / "riders_policy.yaml"
    policy.write_text("tables:\n  riders: {id: keep, email: email}\n")
    settings = yaml.safe_load(config_path.read_text())
    config_path.write_text(yaml.safe_dump({**settings, "policy": str(policy)}))
    try:
        result = materialize(config_path, dg.DagsterInstance.ephemeral())

        assert result.success, step_failure_messages(result)
        cleared = result.asset_materializations_for_node("restored_instance")[0].metadata["instance_cleared"].value
        assert cleared["databases_dropped"] == ["analytics"]
        with psycopg.connect(server.dsn("app")) as conn:
            emails = [email for (email,) in conn.execute("SELECT email FROM riders")]
        assert len(emails) == 40 and all(email.endswith("@example.com") for email in emails)
        assert (
            AwsPlatform(load_config(config_path)).promoted()
            == result.asset_materializations_for_node("staging_database")[0].metadata["database"].value
        )
    finally:
        with psycopg.connect(server.dsn("app"), autocommit=True) as conn:
            conn.execute("DROP TABLE riders; DROP SCHEMA IF EXISTS refresh_pipeline, refresh_pipeline_audit CASCADE")
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS analytics")
