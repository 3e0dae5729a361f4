"""Notifications of a refresh's outcome: a real local HTTP server stands for the chat webhook, moto (as a
real HTTP server) for SNS, and the runs are real runs of the job."""

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import dagster as dg
import pytest

from refresh_pipeline.cli import main
from refresh_pipeline.config import NotifyConfig, load_config
from refresh_pipeline.definitions import build_definitions
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.notify import SUBJECT_LIMIT, TEXT_LIMIT, Notice, refresh_notice, send_notice
from refresh_pipeline.notify_sensors import FAILURE_SENSOR, SUCCESS_SENSOR
from refresh_pipeline.outcome import NOTIFIED_BY_CLI_TAG, RefreshOutcome
from refresh_pipeline.schedules import IN_PROCESS_RUN_CONFIG, WEEKLY_REFRESH_JOB
from refresh_pipeline_tests.helpers import free_port

WEBHOOK_ENV = "REFRESH_NOTIFY_WEBHOOK"
SECRET_PATH = "/services/T000/B000/s3cr3t-webhook-token"
UNREACHABLE_SOURCE = "postgresql://nobody@127.0.0.1:1/never_contacted"
NO_WAIT = (0.0, 0.0)


@dataclass
class Webhook:
    """A chat webhook: records every POST and answers with the given statuses in turn (then 200)."""

    url: str
    statuses: list[int] = field(default_factory=list)
    received: list[dict] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [body["text"] for body in self.received]


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    hook: Webhook

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            hook.received.append(json.loads(self.rfile.read(length)))
            status = hook.statuses.pop(0) if hook.statuses else 200
            self.send_response(status)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook = Webhook(f"http://127.0.0.1:{server.server_address[1]}{SECRET_PATH}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(WEBHOOK_ENV, hook.url)
    yield hook
    server.shutdown()
    server.server_close()


def _notify(**settings: object) -> NotifyConfig:
    return NotifyConfig(**{"webhook_url_env": WEBHOOK_ENV, **settings})


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("notify", "message"),
    [
        ({}, "notify must be a mapping"),
        ({"when": "failure"}, "needs sns_topic_arn, webhook_url_env or both"),
        ({"webhook_url_env": WEBHOOK_ENV, "when": "sometimes"}, "notify.when must be one of always, failure"),
        ({"webhook_url_env": WEBHOOK_ENV, "on": "failure"}, "unknown notify setting(s) on"),
        ({"sns_topic_arn": "refresh-topic"}, "must be a topic's ARN"),
        ({"webhook_url_env": f"https://hooks.example.com{SECRET_PATH}"}, "the URL is a secret"),
        ({"webhook_url_env": WEBHOOK_ENV, "ui_url": "dagster.internal"}, "notify.ui_url must be the Dagster UI's"),
    ],
)
def test_notify_settings_are_checked_when_the_config_is_loaded(write_config, notify, message):
    config = write_config(UNREACHABLE_SOURCE, notify=notify)

    with pytest.raises(RefreshError, match="notify") as error:
        load_config(config)

    assert message in str(error.value)
    assert SECRET_PATH not in str(error.value), "a URL put where the variable's name goes is not repeated"


def test_an_sns_topic_and_a_webhook_variable_are_accepted(write_config):
    arn = "arn:aws:sns:ap-south-1:123456789012:staging-refresh"
    notify = load_config(
        write_config(UNREACHABLE_SOURCE, notify={"sns_topic_arn": arn, "webhook_url_env": WEBHOOK_ENV})
    ).notify

    assert notify == NotifyConfig(when="always", sns_topic_arn=arn, webhook_url_env=WEBHOOK_ENV)
    assert notify.sns_region == "ap-south-1"


# -- what a notice says ----------------------------------------------------------------------------


def test_a_success_names_the_promoted_database():
    outcome = RefreshOutcome(success=True, run_id="r1", promoted_database="staging_2", seconds=251.4)

    notice = refresh_notice(outcome, "staging_2", "staging-db.internal")

    assert notice.subject == "staging refreshed (staging-db.internal)"
    assert notice.text.startswith("staging now points at staging_2 (run r1 in 4 min 11 s).")
    outcome.seconds = 3 * 3600 + 25 * 60 + 7
    assert "(run r1 in 3 h 25 min)" in refresh_notice(outcome, "staging_2", "x").text


def test_a_failure_names_each_failed_check_and_step_and_what_staging_still_is():
    outcome = RefreshOutcome(
        success=False,
        run_id="r2",
        failed_steps=["masked__payments"],
        step_errors={"masked__payments": "masked values do not fit their columns"},
        failed_checks=["masked/bookings:no_pii_left: public.bookings: PII left in notes (3 email)"],
        skipped_steps=["masked_database", "staging_database", "staging_database"],
    )

    notice = refresh_notice(outcome, "staging_1", "local, /srv/refresh")

    assert notice.subject == "staging refresh FAILED (local, /srv/refresh)"
    assert notice.text.splitlines()[:4] == [
        "refresh FAILED (run r2); staging was not changed: it still points at staging_1.",
        "failed check: masked/bookings:no_pii_left: public.bookings: PII left in notes (3 email)",
        "failed step: masked__payments: masked values do not fit their columns",
        "not run because of the above: 2 step(s)",
    ]


def test_a_notice_links_to_the_run_page_when_the_ui_address_is_given():
    failed = RefreshOutcome(success=False, run_id="r6", failed_steps=["production_snapshot"])
    promoted = RefreshOutcome(success=True, run_id="r7", promoted_database="staging_7")

    failure = refresh_notice(failed, "staging_6", "x", "https://dagster.internal/").text
    success = refresh_notice(promoted, "staging_7", "x", "https://dagster.internal").text

    assert failure.endswith("details: https://dagster.internal/runs/r6; what to do: docs/operations.md.")
    assert success.endswith("the run: https://dagster.internal/runs/r7")
    assert "details: the run's page in the Dagster UI;" in refresh_notice(failed, None, "x").text


def test_a_failure_after_promotion_says_staging_was_promoted():
    outcome = RefreshOutcome(
        success=False, run_id="r3", failed_steps=["retired_staging"], promoted_database="staging_3"
    )

    text = refresh_notice(outcome, "staging_3", "x").text

    assert text.startswith("refresh FAILED (run r3); staging was promoted to staging_3 before that.")
    assert "not changed" not in text


def test_a_subject_fits_sns_and_a_long_text_is_cut_with_a_pointer_to_the_run():
    outcome = RefreshOutcome(success=False, run_id="r4", failed_checks=[f"check {i}: " + "x" * 200 for i in range(300)])

    notice = refresh_notice(outcome, None, "stägïng-" + "d" * 200)

    assert len(notice.subject) <= SUBJECT_LIMIT and notice.subject.isascii()
    assert len(notice.text) < TEXT_LIMIT + 100 and notice.text.endswith("more characters: see the run's page)")
    assert "staging was not changed." in notice.text


# -- sending ---------------------------------------------------------------------------------------


def test_the_webhook_gets_the_notice_and_a_server_error_is_retried(webhook):
    webhook.statuses = [503]

    problems = send_notice(_notify(), Notice("staging refreshed (x)", "staging now points at s2."), NO_WAIT)

    assert problems == []
    assert webhook.texts == ["staging refreshed (x)\nstaging now points at s2."] * 2


def test_a_refused_webhook_is_not_retried_and_its_url_is_never_said(webhook):
    webhook.statuses = [404]

    problems = send_notice(_notify(), Notice("s", "t"), NO_WAIT)

    assert len(webhook.received) == 1
    assert problems == ["the webhook (notify.webhook_url_env) answered HTTP 404 (attempt 1)"]


def test_an_unreachable_webhook_is_tried_three_times_and_named_by_its_variable(monkeypatch):
    monkeypatch.setenv(WEBHOOK_ENV, f"http://127.0.0.1:{free_port()}{SECRET_PATH}")

    (problem,) = send_notice(_notify(), Notice("s", "t"), NO_WAIT)

    assert "could not be reached" in problem and "(attempt 3)" in problem
    assert SECRET_PATH not in problem and "127.0.0.1" not in problem


def test_sns_delivers_the_notice_to_a_subscribed_queue_and_a_broken_channel_does_not_stop_the_other(aws_world, webhook):
    sns = boto3.client("sns", region_name="ap-south-1")
    sqs = boto3.client("sqs", region_name="ap-south-1")
    topic = sns.create_topic(Name="staging-refresh")["TopicArn"]
    queue = sqs.create_queue(QueueName="refresh-notices")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    notice = Notice("staging refresh FAILED (staging-db)", "refresh FAILED (run r5); staging was not changed.")

    assert send_notice(NotifyConfig(sns_topic_arn=topic, webhook_url_env=WEBHOOK_ENV), notice, NO_WAIT) == []
    (message,) = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]
    delivered = json.loads(message["Body"])
    assert (delivered["Subject"], delivered["Message"]) == (notice.subject, notice.text)

    missing_topic = topic.replace("staging-refresh", "no-such-topic")
    problems = send_notice(NotifyConfig(sns_topic_arn=missing_topic, webhook_url_env=WEBHOOK_ENV), notice, NO_WAIT)
    assert len(problems) == 1 and problems[0].startswith(f"SNS topic {missing_topic}:")
    assert len(webhook.received) == 2, "the webhook still got the second notice"


# -- `refresh-pipeline run` --------------------------------------------------------------------------


def test_run_sends_what_failed(write_config, webhook, capsys):
    config = write_config(UNREACHABLE_SOURCE, notify={"webhook_url_env": WEBHOOK_ENV, "when": "failure"})

    assert main(["run", "--config", str(config), "--in-process"]) == 1

    (text,) = webhook.texts
    assert text.startswith("staging refresh FAILED (local, ")
    assert "staging was not changed." in text and "failed step: production_snapshot: " in text
    assert "could not send" not in capsys.readouterr().err


def test_run_refuses_to_start_without_the_webhook_url(write_config, monkeypatch, capsys):
    config = write_config(UNREACHABLE_SOURCE, notify={"webhook_url_env": WEBHOOK_ENV})
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)

    assert main(["run", "--config", str(config), "--in-process"]) == 2

    assert f"{WEBHOOK_ENV} is not set" in capsys.readouterr().err
    assert not (config.parent / "work" / "dagster_home").exists(), "no run was started"


def test_validate_warns_where_the_webhook_variable_is_not_set(demo_source, write_config, monkeypatch, capsys):
    config = write_config(demo_source, notify={"webhook_url_env": WEBHOOK_ENV})
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)

    assert main(["validate", "--config", str(config)]) == 0

    assert f"warning: notify.webhook_url_env: {WEBHOOK_ENV} is not set" in capsys.readouterr().err


def test_a_refresh_that_cannot_start_is_notified(write_config, webhook, monkeypatch):
    config = write_config(UNREACHABLE_SOURCE, notify={"webhook_url_env": WEBHOOK_ENV, "when": "failure"})
    monkeypatch.delenv("REFRESH_MASKING_KEY")

    assert main(["run", "--config", str(config), "--in-process"]) == 2

    (text,) = webhook.texts
    assert text.startswith("staging refresh FAILED to run (local, ")
    assert "the masking key is not set" in text and "REFRESH_MASKING_KEY" in text


def test_a_promoted_refresh_is_notified_and_its_daemon_sensor_does_not_send_it_again(
    demo_source, write_config, webhook
):
    config = write_config(demo_source, notify={"webhook_url_env": WEBHOOK_ENV})

    assert main(["run", "--config", str(config), "--in-process"]) == 0

    (text,) = webhook.texts
    work_dir = load_config(config).work_dir
    promoted = json.loads((work_dir / "state.json").read_text())["promoted"]["database"]
    assert text.startswith(f"staging refreshed (local, {work_dir})\nstaging now points at {promoted} (run ")

    with dg.DagsterInstance.from_config(str(load_config(config).dagster_home)) as instance:
        (run,) = instance.get_runs()
        assert run.tags[NOTIFIED_BY_CLI_TAG] == "refresh-pipeline run"
        skipped = _evaluate_sensor(config, SUCCESS_SENSOR, instance, run)
    assert "sent its notice" in skipped.skip_message and len(webhook.received) == 1


def test_notify_test_sends_a_notice_and_fails_when_a_channel_cannot_be_reached(write_config, webhook, capsys):
    config = write_config(UNREACHABLE_SOURCE, notify={"webhook_url_env": WEBHOOK_ENV})

    assert main(["notify-test", "--config", str(config)]) == 0
    assert capsys.readouterr().out == "sent a test notice to the webhook\n"
    assert webhook.texts[0].startswith("test notice (local, ")

    webhook.statuses = [410]
    assert main(["notify-test", "--config", str(config)]) == 1
    assert "could not send the notification: the webhook (notify.webhook_url_env) answered HTTP 410" in (
        capsys.readouterr().err
    )
    assert main(["notify-test", "--config", str(write_config(UNREACHABLE_SOURCE))]) == 2
    assert "has no notify section" in capsys.readouterr().err


# -- runs a Dagster daemon starts ----------------------------------------------------------------------


def _evaluate_sensor(
    config: Path,
    name: str,
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    event_of: dg.DagsterRunStatus | None = None,
) -> dg.SkipReason | None:
    """The named sensor of the config's definitions, evaluated on the run's final event."""
    (sensor,) = [sensor for sensor in build_definitions(config).sensors if sensor.name == name]
    status = event_of or (dg.DagsterRunStatus.SUCCESS if name == SUCCESS_SENSOR else dg.DagsterRunStatus.FAILURE)
    event = next(
        entry.dagster_event
        for entry in instance.all_logs(run.run_id)
        if entry.dagster_event and entry.dagster_event.event_type_value == f"PIPELINE_{status.value}"
    )
    context = dg.build_run_status_sensor_context(
        sensor_name=name, dagster_event=event, dagster_instance=instance, dagster_run=run
    )
    return sensor(context)


def _daemon_run(config: Path, instance: dg.DagsterInstance) -> dg.DagsterRun:
    """A run of the job as the daemon starts one: no tag of the CLI's."""
    job = build_definitions(config).resolve_job_def(WEEKLY_REFRESH_JOB)
    result = job.execute_in_process(instance=instance, run_config=IN_PROCESS_RUN_CONFIG, raise_on_error=False)
    return instance.get_run_by_id(result.run_id)


def test_a_failed_run_the_daemon_started_is_notified_by_the_failure_sensor(write_config, webhook):
    config = write_config(UNREACHABLE_SOURCE, notify={"webhook_url_env": WEBHOOK_ENV})

    with dg.instance_for_test() as instance:
        run = _daemon_run(config, instance)
        assert run.status == dg.DagsterRunStatus.FAILURE
        assert _evaluate_sensor(config, FAILURE_SENSOR, instance, run) is None

    (text,) = webhook.texts
    assert text.startswith("staging refresh FAILED (local, ")
    assert f"refresh FAILED (run {run.run_id} in " in text and "failed step: production_snapshot: " in text


def test_a_sensor_that_cannot_send_fails_its_tick_and_one_not_wanted_sends_nothing(write_config, webhook):
    config = write_config(UNREACHABLE_SOURCE, notify={"webhook_url_env": WEBHOOK_ENV})
    failures_only = write_config(UNREACHABLE_SOURCE, notify={"webhook_url_env": WEBHOOK_ENV, "when": "failure"})
    webhook.statuses = [403]

    with dg.instance_for_test() as instance:
        run = _daemon_run(config, instance)
        with pytest.raises(RefreshError, match="answered HTTP 403"):
            _evaluate_sensor(config, FAILURE_SENSOR, instance, run)
        skipped = _evaluate_sensor(failures_only, SUCCESS_SENSOR, instance, run, event_of=dg.DagsterRunStatus.FAILURE)

    assert skipped.skip_message == "notify.when is failure" and len(webhook.received) == 1
    assert build_definitions(write_config(UNREACHABLE_SOURCE)).sensors == [], "no notify, no sensors"
    repository = build_definitions(config).get_repository_def()  # as `dagster dev` loads the code location
    assert {(sensor.name, sensor.default_status) for sensor in repository.sensor_defs} == {
        (SUCCESS_SENSOR, dg.DefaultSensorStatus.RUNNING),
        (FAILURE_SENSOR, dg.DefaultSensorStatus.RUNNING),
    }
