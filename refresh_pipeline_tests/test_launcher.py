"""EC2-hosted execution against moto: the Lambda starts the worker, the worker stops itself afterwards."""

import json
from pathlib import Path

import boto3
import pytest

from refresh_pipeline.cli import main
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.launcher import lambda_handler
from refresh_pipeline.launcher.worker import HOLD_TAG, IMDS_ENDPOINT_ENV, own_instance_id, run_then_stop
from refresh_pipeline_tests.aws_fixtures import REGION

DEMO_POLICY = Path(__file__).parents[1] / "refresh_pipeline" / "demo" / "policy.yaml"
WORKER_LOG_GROUP = "/refresh-pipeline/worker"  # deploy/cloudformation.yaml and the worker's unit name it


@pytest.fixture
def worker(aws_world, monkeypatch, metadata_service) -> str:
    ec2 = boto3.client("ec2", region_name=REGION)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance_id = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[instance_id])
    monkeypatch.setenv("WORKER_INSTANCE_ID", instance_id)
    monkeypatch.setenv(IMDS_ENDPOINT_ENV, metadata_service.endpoint)
    metadata_service.instance_id = instance_id
    return instance_id


def _state(instance_id: str) -> str:
    reservations = boto3.client("ec2", region_name=REGION).describe_instances(InstanceIds=[instance_id])
    return reservations["Reservations"][0]["Instances"][0]["State"]["Name"]


def test_lambda_starts_the_stopped_worker_and_is_idempotent(worker):
    assert _state(worker) == "stopped"

    first = lambda_handler.handler({"source": "aws.events"}, None)
    second = lambda_handler.handler({"source": "aws.events"}, None)

    assert first == {"instance_id": worker, "started": True, "state": "pending"}
    assert second["started"] is False and second["state"] in ("pending", "running")
    assert _state(worker) in ("pending", "running")


def test_worker_reads_its_id_through_imdsv2_only(worker, metadata_service):
    assert own_instance_id(metadata_service.endpoint) == worker
    with pytest.raises(RefreshError, match="cannot read this instance's id"):
        own_instance_id("http://127.0.0.1:9")


def test_worker_stops_itself_after_success(worker):
    boto3.client("ec2", region_name=REGION).start_instances(InstanceIds=[worker])
    assert run_then_stop(lambda: 0, region=REGION) == 0
    assert _state(worker) in ("stopping", "stopped")


def test_worker_stops_itself_after_a_crash(worker):
    boto3.client("ec2", region_name=REGION).start_instances(InstanceIds=[worker])

    def crash() -> int:
        raise RuntimeError("the refresh blew up")

    assert run_then_stop(crash, region=REGION) == 1
    assert _state(worker) in ("stopping", "stopped")


def test_run_then_stop_from_the_console_stops_after_a_failed_refresh(worker, write_config, demo_source, tmp_path):
    leaky = tmp_path / "leaky.yaml"
    leaky.write_text(DEMO_POLICY.read_text().replace("body: scrub", "body: keep"))
    boto3.client("ec2", region_name=REGION).start_instances(InstanceIds=[worker])

    code = main(["run", "--config", str(write_config(demo_source, policy=leaky)), "--in-process", "--then-stop"])

    assert code == 1
    assert _state(worker) in ("stopping", "stopped")


@pytest.mark.parametrize("config_text", [None, "source_dsn: [unclosed"])
def test_a_worker_whose_config_cannot_be_read_still_stops_itself_in_its_own_region(
    worker, tmp_path, monkeypatch, capsys, config_text
):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")  # not the worker's: the region comes from IMDS
    config = tmp_path / "refresh.yaml"
    if config_text is not None:
        config.write_text(config_text)
    boto3.client("ec2", region_name=REGION).start_instances(InstanceIds=[worker])

    assert main(["run", "--config", str(config), "--then-stop"]) == 2

    assert _state(worker) in ("stopping", "stopped")
    err = capsys.readouterr().err
    assert ("config file not found" if config_text is None else "not valid YAML") in err
    assert "Traceback" not in err


def test_a_worker_held_for_maintenance_is_not_started_by_the_lambda_and_runs_nothing_when_booted(
    worker, metadata_service, tmp_path, capsys, monkeypatch
):
    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.create_tags(Resources=[worker], Tags=[{"Key": HOLD_TAG, "Value": "true"}])
    sns, sqs = boto3.client("sns", region_name=REGION), boto3.client("sqs", region_name=REGION)
    topic = sns.create_topic(Name="staging-refresh")["TopicArn"]
    queue = sqs.create_queue(QueueName="refresh-notices")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    monkeypatch.setenv("NOTIFY_TOPIC_ARN", topic)

    assert lambda_handler.handler({"source": "aws.events"}, None) == {
        "instance_id": worker, "started": False, "state": "stopped", "held": True,
    }  # fmt: skip
    assert _state(worker) == "stopped"
    (message,) = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]
    notice = json.loads(message["Body"])
    assert notice["Subject"] == "staging refresh SKIPPED (worker held)"
    assert f"{worker} is tagged {HOLD_TAG}=true (held for maintenance)" in notice["Message"]

    ec2.start_instances(InstanceIds=[worker])  # an operator boots it
    metadata_service.tags = {HOLD_TAG: "true"}
    missing_config = tmp_path / "never-read.yaml"
    assert main(["run", "--config", str(missing_config), "--then-stop"]) == 0

    assert _state(worker) in ("pending", "running"), "it stays up for maintenance"
    assert f"tagged {HOLD_TAG}=true: no refresh" in capsys.readouterr().out


def test_the_worker_sends_its_run_output_to_cloudwatch_logs_before_stopping_itself(
    worker, write_config, demo_source, tmp_path, capfd
):
    logs = boto3.client("logs", region_name=REGION)
    logs.create_log_group(logGroupName=WORKER_LOG_GROUP)
    leaky = tmp_path / "leaky.yaml"
    leaky.write_text(DEMO_POLICY.read_text().replace("body: scrub", "body: keep"))
    config = write_config(demo_source, policy=leaky)
    boto3.client("ec2", region_name=REGION).start_instances(InstanceIds=[worker])

    code = main(["run", "--config", str(config), "--then-stop", "--log-group", WORKER_LOG_GROUP])  # as the unit runs it

    assert code == 1 and _state(worker) in ("stopping", "stopped")
    (stream,) = logs.describe_log_streams(logGroupName=WORKER_LOG_GROUP)["logStreams"]
    assert stream["logStreamName"].startswith(f"{worker}/")
    events = logs.get_log_events(
        logGroupName=WORKER_LOG_GROUP, logStreamName=stream["logStreamName"], startFromHead=True
    )["events"]
    shipped = "\n".join(event["message"] for event in events)
    assert "restoring snapshot" in shipped, "a step process's own log lines (its console is the pipe too)"
    assert "failed check: masked/support_tickets:no_pii_left" in shipped
    console = capfd.readouterr()
    assert "failed check: masked/support_tickets:no_pii_left" in console.out + console.err, "still on the console"
    assert f"this run's output is in CloudWatch Logs: {WORKER_LOG_GROUP} {stream['logStreamName']}" in console.err


def test_a_log_group_that_is_not_there_is_said_and_the_worker_still_stops(worker, tmp_path, capfd):
    boto3.client("ec2", region_name=REGION).start_instances(InstanceIds=[worker])

    code = main(["run", "--config", str(tmp_path / "missing.yaml"), "--then-stop", "--log-group", "/nowhere"])

    assert code == 2 and _state(worker) in ("stopping", "stopped")
    assert "could not send this run's output to CloudWatch Logs group /nowhere" in capfd.readouterr().err
