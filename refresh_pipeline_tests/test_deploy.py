"""Deployment files: the CloudFormation template, the worker's Dagster instance, the ECS scale-out config."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config
from psycopg.conninfo import conninfo_to_dict

from refresh_pipeline_tests.helpers import tcp_forwarder

ROOT = Path(__file__).parents[1]
TEMPLATE = ROOT / "deploy" / "cloudformation.yaml"
LAUNCHER = ROOT / "refresh_pipeline" / "launcher"


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation short-form tags (!Ref, !Sub, ...) as {"Fn": value}."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node):
    value = (
        loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode)
        else loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode)
        else loader.construct_mapping(node)
    )  # fmt: skip
    return {suffix: value}


_CfnLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def template() -> dict:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)


def _statements(template: dict, resource: str) -> list[dict]:
    properties = template["Resources"][resource]["Properties"]
    documents = [p["PolicyDocument"] for p in properties.get("Policies", [])]
    if "PolicyDocument" in properties:
        documents.append(properties["PolicyDocument"])
    return [statement for document in documents for statement in document["Statement"]]


def test_template_passes_cfn_lint():
    result = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), "--format", "parseable", str(TEMPLATE)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_inline_lambda_code_is_the_tested_handler(template):
    inline = template["Resources"]["LauncherFunction"]["Properties"]["Code"]["ZipFile"]
    assert inline.strip() == (LAUNCHER / "lambda_handler.py").read_text().strip()


def test_worker_may_delete_or_modify_only_what_is_tagged_ours(template):
    statements = _statements(template, "WorkerRole")
    destructive = [s for s in statements if {"rds:DeleteDBInstance", "rds:ModifyDBInstance"} & set(s["Action"])]
    assert destructive and all(
        s["Condition"]["StringEquals"]["aws:ResourceTag/refresh-pipeline:managed"] == "true" for s in destructive
    )
    snapshot = next(s for s in statements if s["Action"] == "rds:CreateDBSnapshot")
    assert any("${SourceDbInstanceId}" in r["Sub"] for r in snapshot["Resource"])
    assert not any(
        "rds:DeleteDBInstance" in s["Action"] and any("SourceDbInstanceId" in str(r) for r in s["Resource"])
        for s in statements
    )
    dns = next(s for s in statements if "route53:ChangeResourceRecordSets" in s["Action"])
    assert dns["Resource"] == {"Sub": "arn:${AWS::Partition}:route53:::hostedzone/${HostedZoneId}"}


def test_worker_may_stop_only_itself_and_the_lambda_only_start_it(template):
    stop = _statements(template, "WorkerSelfStopPolicy")
    assert stop == [{"Effect": "Allow", "Action": "ec2:StopInstances", "Resource": {
        "Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:instance/${WorkerInstance}"}}]  # fmt: skip
    start = next(s for s in _statements(template, "LauncherRole") if s["Action"] == "ec2:StartInstances")
    assert start["Resource"] == stop[0]["Resource"]
    metadata = template["Resources"]["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]["MetadataOptions"]
    assert metadata["HttpTokens"] == "required", "the worker uses IMDSv2 only"


def test_worker_and_launcher_may_publish_only_to_the_notification_topic(template):
    publish = [s for s in _statements(template, "WorkerRole") if "sns:Publish" in s["Action"]]
    assert publish == [{"Sid": "Notify", "Effect": "Allow", "Action": "sns:Publish",
                        "Resource": {"Ref": "NotificationTopic"}}]  # fmt: skip
    assert template["Outputs"]["NotificationTopicArn"]["Value"] == {"Ref": "NotificationTopic"}
    lambda_publish = [s for s in _statements(template, "LauncherRole") if "sns:Publish" in s["Action"]]
    assert [s["Resource"] for s in lambda_publish] == [{"Ref": "NotificationTopic"}], "a skipped week is said"
    environment = template["Resources"]["LauncherFunction"]["Properties"]["Environment"]["Variables"]
    assert environment["NOTIFY_TOPIC_ARN"] == {"Ref": "NotificationTopic"}
    subscription = template["Resources"]["NotificationEmailSubscription"]
    assert subscription["Condition"] == "HasNotificationEmail", "no address, no subscription"


def test_weekly_rule_fires_the_launcher(template):
    rule = template["Resources"]["WeeklyRule"]["Properties"]
    assert rule["ScheduleExpression"] == {"Ref": "ScheduleExpression"}
    assert rule["Targets"][0]["Arn"] == {"GetAtt": "LauncherFunction.Arn"}
    assert template["Parameters"]["ScheduleExpression"]["Default"] == "cron(30 20 ? * SAT *)"


@pytest.fixture
def storage_env(monkeypatch, create_database, pg_server) -> Iterator[str]:
    """The worker's storage settings, over TCP as on RDS: relayed to the socket-only test server."""
    conninfo = create_database("dagster_storage")
    params = conninfo_to_dict(conninfo)
    with tcp_forwarder(pg_server.socket_dir / pg_server.socket_name) as port:
        for name, value in {
            "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(port), "DAGSTER_PG_USER": params["user"],
            "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": params["dbname"],
        }.items():  # fmt: skip
            monkeypatch.setenv(name, value)
        yield conninfo


def test_worker_dagster_instance_keeps_runs_and_check_results_in_postgres(storage_env, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((LAUNCHER / "dagster.yaml").read_text())

    @dg.asset
    def probe() -> int:
        return 1

    @dg.asset_check(asset=probe)
    def probe_is_fine() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert dg.materialize([probe, probe_is_fine], instance=instance).success
    with dg.DagsterInstance.from_config(str(home)) as later, psycopg.connect(storage_env) as conn:
        assert len(later.get_runs()) == 1
        record = later.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(dg.AssetKey("probe"), "probe_is_fine"))
        assert record is not None and record.evaluation.passed
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (1,)


def test_ecs_scale_out_config_is_a_valid_dagster_instance(tmp_path):
    (tmp_path / "dagster.yaml").write_text((ROOT / "deploy" / "dagster-ecs.yaml").read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_launcher"]["class"] == "EcsRunLauncher"
    assert config["run_launcher"]["module"] == "dagster_aws.ecs"
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
