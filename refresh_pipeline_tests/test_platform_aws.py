"""The AWS platform against moto running as a real HTTP server; the restored instances' data lives on the
real test PostgreSQL server (aws.data_plane_dsn), so masking and checks run for real."""

import json
import re
import threading

import boto3
import dagster as dg
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from refresh_pipeline.config import load_config
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.masking.keys import MaskingKey, restored_instance_password
from refresh_pipeline.platforms.aws import ACCESS_TAG, MANAGED_TAG, AwsPlatform
from refresh_pipeline_tests.aws_fixtures import REGION, SOURCE_INSTANCE, STAGING_PASSWORD
from refresh_pipeline_tests.conftest import TEST_KEY
from refresh_pipeline_tests.graph import materialize, step_failure_messages
from refresh_pipeline_tests.helpers import data_dump, leaked_identifiers, production_identifiers


def _rds():
    return boto3.client("rds", region_name=REGION)


def _platform(config) -> AwsPlatform:
    return AwsPlatform(load_config(config), key=lambda: MaskingKey(TEST_KEY))


def _password_changes(world, **matching: str) -> list[tuple[int, str]]:
    """(position among all recorded calls, new password) of every master password change."""
    return [
        (i, params["MasterUserPassword"])
        for i, (name, params) in enumerate(world.calls)
        if name in ("ModifyDBInstance", "ModifyDBCluster")
        and "MasterUserPassword" in params
        and all(params.get(key) == value for key, value in matching.items())
    ]


def _cname(world) -> str | None:
    records = boto3.client("route53", region_name=REGION).list_resource_record_sets(HostedZoneId=world.hosted_zone_id)[
        "ResourceRecordSets"
    ]
    return next((r["ResourceRecords"][0]["Value"] for r in records if r["Type"] == "CNAME"), None)


def _source_state() -> dict:
    instance = _rds().describe_db_instances(DBInstanceIdentifier=SOURCE_INSTANCE)["DBInstances"][0]
    keys = ("DBInstanceStatus", "DBInstanceClass", "MasterUsername", "Endpoint", "TagList", "PendingModifiedValues")
    return {key: instance.get(key) for key in keys}


def test_whole_graph_on_aws_promotes_the_new_instance_and_deletes_the_previous(aws_world, aws_config, demo_source):
    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket="audit-reports", CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    config = aws_config(report_bucket="audit-reports")
    source_before = _source_state()
    instance = dg.DagsterInstance.ephemeral()

    first = materialize(config, instance)
    assert first.success, step_failure_messages(first)
    platform = AwsPlatform(load_config(config))
    first_name = platform.promoted()
    second = materialize(config, instance)
    assert second.success, step_failure_messages(second)

    second_name = platform.promoted()
    assert second_name != first_name and second_name.startswith(platform.aws.instance_prefix)
    endpoint = _rds().describe_db_instances(DBInstanceIdentifier=second_name)["DBInstances"][0]["Endpoint"]
    assert _cname(aws_world) == endpoint["Address"]
    names = {i["DBInstanceIdentifier"] for i in _rds().describe_db_instances()["DBInstances"]}
    assert first_name not in names, "the previous staging instance is deleted"
    assert names == {SOURCE_INSTANCE, second_name}

    assert _source_state() == source_before
    source_calls = [name for name, _ in aws_world.mutating_calls(DBInstanceIdentifier=SOURCE_INSTANCE)]
    assert set(source_calls) == {"CreateDBSnapshot"}, "production is only ever snapshotted"
    resets = aws_world.mutating_calls(DBInstanceIdentifier=second_name)
    # Production's master password is replaced at once by one only the key's holder can derive; the staging
    # password comes with promotion, after every check passed and before the staging name points at it.
    (restored_at, restored_password), (staging_at, staging_password) = _password_changes(
        aws_world, DBInstanceIdentifier=second_name
    )
    assert restored_password == restored_instance_password(MaskingKey(TEST_KEY), second_name) != STAGING_PASSWORD
    assert staging_password == STAGING_PASSWORD
    restored = next(
        i for i, (n, p) in enumerate(aws_world.calls)
        if n == "RestoreDBInstanceFromDBSnapshot" and p["DBInstanceIdentifier"] == second_name
    )  # fmt: skip
    repointed = [
        i for i, (n, p) in enumerate(aws_world.calls)
        if n == "ChangeResourceRecordSets" and second_name in p["ChangeBatch"]["Comment"]
    ]  # fmt: skip
    assert restored < restored_at < staging_at < repointed[0]
    tagged = [p for n, p in aws_world.calls if n == "AddTagsToResource" and second_name in p["ResourceName"]]
    assert tagged == [{"ResourceName": tagged[0]["ResourceName"], "Tags": [{"Key": ACCESS_TAG, "Value": "staging"}]}]
    restore = next(p for n, p in resets if n == "RestoreDBInstanceFromDBSnapshot")
    assert restore["PubliclyAccessible"] is False
    assert {"Key": MANAGED_TAG, "Value": "true"} in restore["Tags"]

    emails, local_parts, phones = production_identifiers(demo_source)
    staging = platform.conninfo(second_name)
    assert leaked_identifiers(data_dump(staging), emails, local_parts, phones) == {
        "emails": set(), "local_parts": set(), "phones": set(),
    }  # fmt: skip
    with psycopg.connect(staging) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] > 0

    report = boto3.client("s3", region_name=REGION).get_object(
        Bucket="audit-reports", Key=f"refresh-pipeline/reports/{second_name}/audit_report.json"
    )
    assert json.loads(report["Body"].read())["passed"] is True


def test_deletion_is_refused_for_production_untagged_and_promoted_instances(aws_world, aws_config):
    platform = _platform(aws_config())
    _rds().create_db_instance(
        DBInstanceIdentifier=f"{platform.aws.instance_prefix}-by-hand", Engine="postgres",
        DBInstanceClass="db.t4g.micro", MasterUsername="app", MasterUserPassword="whatever123", AllocatedStorage=20,
    )  # fmt: skip
    with pytest.raises(RefreshError, match="production source"):
        platform.retire(SOURCE_INSTANCE)
    with pytest.raises(RefreshError, match="not tagged refresh-pipeline:managed=true"):
        platform.retire(f"{platform.aws.instance_prefix}-by-hand")
    name = platform.new_database_name()
    platform.restore(platform.snapshot(), name)
    platform.promote(name)
    with pytest.raises(RefreshError, match="the staging record points at it"):
        platform.retire(name)
    names = {i["DBInstanceIdentifier"] for i in _rds().describe_db_instances()["DBInstances"]}
    assert {SOURCE_INSTANCE, f"{platform.aws.instance_prefix}-by-hand", name} <= names
    assert not aws_world.mutating_calls(DBInstanceIdentifier=SOURCE_INSTANCE)[1:], "only the snapshot touched prod"


def test_snapshots_past_retention_and_orphans_are_removed(aws_world, aws_config, instances_on_stand_in):
    platform = _platform(aws_config(orphan_days=0, data_plane_dsn=None))
    first = platform.snapshot()
    _rds().create_db_snapshot(DBSnapshotIdentifier="someone-elses", DBInstanceIdentifier=SOURCE_INSTANCE)
    orphan = platform.new_database_name()
    platform.restore(first, orphan)

    with pytest.raises(RefreshError, match="not tagged"):
        platform.delete_snapshot(type(first)("someone-elses", first.created_at, "someone-elses"))
    platform.delete_snapshot(first)
    swept = platform.sweep_orphans()

    assert swept == [orphan]
    manual = {s["DBSnapshotIdentifier"] for s in _rds().describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]}
    assert manual == {"someone-elses"}


def test_recent_snapshot_is_reused_when_configured(aws_world, aws_config):
    platform = AwsPlatform(load_config(aws_config(reuse_snapshot_hours=6, data_plane_dsn=None)))
    first = platform.snapshot()
    assert platform.snapshot().snapshot_id == first.snapshot_id
    assert len([n for n, _ in aws_world.calls if n == "CreateDBSnapshot"]) == 1


def test_aurora_cluster_is_snapshotted_and_restored_as_a_cluster(aws_world, aws_config, instances_on_stand_in):
    _rds().create_db_cluster(
        DBClusterIdentifier="prod-aurora", Engine="aurora-postgresql", MasterUsername="app",
        MasterUserPassword="production-password",
    )  # fmt: skip
    platform = _platform(aws_config(source_instance=None, source_cluster="prod-aurora", data_plane_dsn=None))
    name = platform.new_database_name()
    platform.restore(platform.snapshot(), name)
    platform.promote(name)

    cluster = _rds().describe_db_clusters(DBClusterIdentifier=name)["DBClusters"][0]
    assert _cname(aws_world) == cluster["Endpoint"]
    assert [m["DBInstanceIdentifier"] for m in cluster["DBClusterMembers"]] == [f"{name}-1"]
    passwords = [password for _, password in _password_changes(aws_world, DBClusterIdentifier=name)]
    assert passwords == [restored_instance_password(MaskingKey(TEST_KEY), name), STAGING_PASSWORD]
    assert [db.name for db in platform.list_managed()] == [name]
    assert platform.promoted() == name


def test_masking_key_can_come_from_secrets_manager(aws_world, aws_config):
    boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="refresh-pipeline/masking-key", SecretString="key-from-secrets-manager-0123"
    )
    config = aws_config(masking_key_secret="secretsmanager:refresh-pipeline/masking-key")
    from refresh_pipeline.definitions import build_definitions

    resource = build_definitions(config).resources["refresh"]
    assert resource.masking_key is None
    assert resource.key().derive("masking") != b""
    assert "GetSecretValue" in [n for n, _ in aws_world.calls]


def test_unreadable_staging_password_is_a_clear_error_and_nothing_is_promoted(
    aws_world, aws_config, instances_on_stand_in
):
    platform = _platform(aws_config(staging_password_secret="does/not/exist", data_plane_dsn=None))
    name = platform.new_database_name()
    platform.restore(platform.snapshot(), name)
    with pytest.raises(RefreshError, match="cannot read the staging password secret does/not/exist"):
        platform.promote(name)
    assert platform.promoted() is None and _cname(aws_world) is None
    assert len(_password_changes(aws_world, DBInstanceIdentifier=name)) == 1, "still only the pipeline's password"


def test_without_the_masking_key_nothing_is_restored(aws_world, aws_config):
    platform = AwsPlatform(load_config(aws_config(data_plane_dsn=None)))  # as `status` and `sweep` build it
    with pytest.raises(RefreshError, match="needs the masking key"):
        platform.restore(platform.snapshot(), platform.new_database_name())
    assert platform.list_managed() == [], "nothing was created that nobody could reach"


def test_before_promotion_only_the_pipeline_can_log_in_and_after_it_staging_users_can(
    aws_world, aws_config, instances_on_stand_in
):
    config = aws_config(data_plane_dsn=None)
    platform = _platform(config)
    name = platform.new_database_name()
    platform.restore(platform.snapshot(), name)
    restored = conninfo_to_dict(platform.conninfo(name))
    keyless = conninfo_to_dict(AwsPlatform(load_config(config)).conninfo(name))  # as `status` asks
    platform.promote(name)
    promoted = conninfo_to_dict(platform.conninfo(name))

    assert restored["password"] == restored_instance_password(MaskingKey(TEST_KEY), name)
    assert restored["password"] != restored_instance_password(MaskingKey(TEST_KEY), name + "-other")
    assert restored_instance_password(MaskingKey(TEST_KEY + "x"), name) != restored["password"]
    assert promoted["password"] == STAGING_PASSWORD
    assert keyless["password"] == STAGING_PASSWORD, "without the key, only the staging password is offered"
    assert restored["host"] == promoted["host"] and restored["user"] == promoted["user"] == "app"


def test_a_restored_instance_keeps_no_backup_of_productions_rows(aws_world, aws_config, instances_on_stand_in):
    """Production's backup retention came with the snapshot: the restored instance's automated backups (and its
    point-in-time restore) kept the unmasked rows for as long, after the masking. They go with the password."""
    _rds().modify_db_instance(DBInstanceIdentifier=SOURCE_INSTANCE, BackupRetentionPeriod=14, ApplyImmediately=True)
    _rds().create_db_cluster(
        DBClusterIdentifier="prod-aurora", Engine="aurora-postgresql", MasterUsername="app",
        MasterUserPassword="production-password", BackupRetentionPeriod=14,
    )  # fmt: skip
    instance = _platform(aws_config(data_plane_dsn=None))
    cluster = _platform(aws_config(source_instance=None, source_cluster="prod-aurora", data_plane_dsn=None))
    instance_name, cluster_name = instance.new_database_name(), cluster.new_database_name() + "-c"
    instance.restore(instance.snapshot(), instance_name)
    cluster.restore(cluster.snapshot(), cluster_name)

    restored = _rds().describe_db_instances(DBInstanceIdentifier=instance_name)["DBInstances"][0]
    assert restored["BackupRetentionPeriod"] == 0
    (locked,) = [
        p for n, p in aws_world.calls if n == "ModifyDBInstance" and p["DBInstanceIdentifier"] == instance_name
    ]
    assert locked["BackupRetentionPeriod"] == 0 and "MasterUserPassword" in locked, "before anyone connects"
    restored_cluster = _rds().describe_db_clusters(DBClusterIdentifier=cluster_name)["DBClusters"][0]
    assert restored_cluster["BackupRetentionPeriod"] == 1, "Aurora's least"
    production = _rds().describe_db_instances(DBInstanceIdentifier=SOURCE_INSTANCE)["DBInstances"][0]
    assert production["BackupRetentionPeriod"] == 14


def test_waiting_on_aws_says_how_far_it_is_and_not_for_what_will_not_come(aws_world, aws_config):
    """A snapshot or a restore can take an hour: each poll says where AWS is, instead of nothing until done."""
    platform = _platform(aws_config(data_plane_dsn=None))
    platform.poll_seconds = 0.2
    name = platform.new_database_name()
    _rds().create_db_instance(
        DBInstanceIdentifier=name, Engine="postgres", DBInstanceClass="db.t4g.micro",
        MasterUsername="app", MasterUserPassword="stand-in-password",
    )  # fmt: skip
    _rds().stop_db_instance(DBInstanceIdentifier=name)
    started = threading.Timer(1.0, lambda: _rds().start_db_instance(DBInstanceIdentifier=name))
    started.start()
    lines: list[str] = []
    try:
        platform._wait("db_instance_available", log=lines.append, DBInstanceIdentifier=name)
    finally:
        started.join()

    assert len(lines) >= 2, lines
    assert all(re.fullmatch(rf"waiting for {name}: stopped, 0\.\d min elapsed", line) for line in lines), lines
    status = _rds().describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]["DBInstanceStatus"]
    assert status == "available"

    lines.clear()
    with pytest.raises(RefreshError, match="will not happen"):
        platform._wait("db_instance_available", log=lines.append, DBInstanceIdentifier=f"{name}-gone")
    assert lines == [], "an instance that is not there is not waited for until the timeout"
