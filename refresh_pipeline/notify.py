"""A refresh's outcome sent where people see it: nobody watches a weekly run, and a failed one leaves staging
as it was, silently stale. To an SNS topic (e-mail, SMS, chat bridges subscribe to it) and/or a chat webhook
taking `{"text": ...}` (Slack, Mattermost, Google Chat). The text is what `refresh-pipeline run` prints:
step and check messages, whose row values are withheld; never the webhook's URL, which is a secret."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from refresh_pipeline.config import NotifyConfig, RefreshConfig
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.row_data_in_errors import withhold_row_data
from refresh_pipeline.state import StateFile

if TYPE_CHECKING:  # outcome.py reads Dagster's events: not imported by `validate`, which only reads the config
    from refresh_pipeline.outcome import RefreshOutcome

SUBJECT_LIMIT = 99  # SNS: under 100 ASCII characters, one line
TEXT_LIMIT = 30_000  # chat services cut or refuse longer messages (Slack: 40,000 characters)
RETRY_DELAYS = (1.0, 4.0)  # seconds before the second and third attempt of a webhook
WEBHOOK_TIMEOUT = 10.0


@dataclass(frozen=True)
class Notice:
    subject: str
    text: str


def deployment_label(config: RefreshConfig) -> str:
    """Which refresh this is, for a reader who gets notices from several."""
    return config.aws.staging_record if config.aws else f"local, {config.work_dir}"


def wanted(notify: NotifyConfig, success: bool) -> bool:
    return notify.when == "always" or not success


def send_outcome(config: RefreshConfig, outcome: RefreshOutcome) -> list[str]:
    """Send a finished run's notice when the config wants it; returns the channels' problems."""
    if config.notify is None or not wanted(config.notify, outcome.success):
        return []
    promoted = StateFile(config.work_dir).read("promoted")
    notice = refresh_notice(
        outcome, promoted.database if promoted else None, deployment_label(config), config.notify.ui_url
    )
    return send_notice(config.notify, notice)


def send_crash(config: RefreshConfig, error: BaseException) -> list[str]:
    """Send the notice of a refresh that stopped before it could say what failed."""
    if config.notify is None:
        return []
    return send_notice(config.notify, crash_notice(error, deployment_label(config)))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f" in {hours} h {minutes} min"
    return f" in {minutes} min {rest} s" if minutes else f" in {rest} s"


def refresh_notice(outcome: RefreshOutcome, staging_now: str | None, label: str, ui_url: str | None = None) -> Notice:
    """The notice of a finished run: what staging points at, or what failed and that staging is unchanged."""
    run = f"run {outcome.run_id}{_duration(outcome.seconds)}"
    run_page = f"{ui_url.rstrip('/')}/runs/{outcome.run_id}" if ui_url else None
    if outcome.success:
        lines = [f"staging now points at {outcome.promoted_database or staging_now} ({run})."]
        if outcome.audit_report:
            lines.append(f"audit report (on the worker): {outcome.audit_report}")
        if run_page:
            lines.append(f"the run: {run_page}")
        return Notice(_subject(f"staging refreshed ({label})"), "\n".join(lines))
    if outcome.promoted_database:
        staging = f"staging was promoted to {outcome.promoted_database} before that"
    else:
        staging = "staging was not changed" + (f": it still points at {staging_now}" if staging_now else "")
    lines = [f"refresh FAILED ({run}); {staging}."]
    lines += [f"failed check: {check}" for check in outcome.failed_checks]
    lines += [
        f"failed step: {step}" + (f": {error}" if (error := outcome.step_errors.get(step)) else "")
        for step in outcome.failed_steps
    ]
    if outcome.skipped_steps:
        lines.append(f"not run because of the above: {len(set(outcome.skipped_steps))} step(s)")
    details = run_page or "the run's page in the Dagster UI"
    lines.append(f"details: {details}; what to do: docs/operations.md.")
    return Notice(_subject(f"staging refresh FAILED ({label})"), _limited("\n".join(lines)))


def crash_notice(error: BaseException, label: str) -> Notice:
    """The notice of a refresh that stopped before it could say what failed (a missing key, a crash)."""
    cause = str(error) if isinstance(error, RefreshError) else withhold_row_data(f"{type(error).__name__}: {error}")
    first_line = (cause.strip().splitlines() or [type(error).__name__])[0]
    return Notice(
        _subject(f"staging refresh FAILED to run ({label})"),
        f"the refresh stopped before it finished; staging was not changed.\n{first_line}",
    )


def _subject(text: str) -> str:
    ascii_only = text.encode("ascii", "replace").decode()
    return ascii_only if len(ascii_only) <= SUBJECT_LIMIT else ascii_only[: SUBJECT_LIMIT - 3] + "..."


def _limited(text: str) -> str:
    if len(text) <= TEXT_LIMIT:
        return text
    return text[:TEXT_LIMIT] + f"\n... ({len(text) - TEXT_LIMIT} more characters: see the run's page)"


def webhook_url(notify: NotifyConfig) -> str | None:
    """The webhook's URL from its environment variable; a missing or malformed one is our error, naming
    only the variable."""
    if notify.webhook_url_env is None:
        return None
    url = os.environ.get(notify.webhook_url_env, "").strip()
    if not url:
        raise RefreshError(f"notify.webhook_url_env: {notify.webhook_url_env} is not set (it holds the webhook's URL).")
    if not url.startswith(("https://", "http://")):
        raise RefreshError(f"notify.webhook_url_env: {notify.webhook_url_env} does not hold an http(s) URL.")
    return url


def send_notice(notify: NotifyConfig, notice: Notice, retry_delays: Sequence[float] = RETRY_DELAYS) -> list[str]:
    """Send to every configured channel; returns one problem per channel that could not be reached (the
    others are still tried)."""
    problems = []
    if notify.sns_topic_arn:
        try:
            boto3.client("sns", region_name=notify.sns_region).publish(
                TopicArn=notify.sns_topic_arn, Subject=notice.subject, Message=notice.text
            )
        except (BotoCoreError, ClientError) as error:
            problems.append(f"SNS topic {notify.sns_topic_arn}: {error}")
    if notify.webhook_url_env:
        try:
            _post(webhook_url(notify), notice, retry_delays)
        except RefreshError as error:
            problems.append(str(error))
    return problems


def _post(url: str | None, notice: Notice, retry_delays: Sequence[float]) -> None:
    assert url is not None
    body = json.dumps({"text": f"{notice.subject}\n{notice.text}"}).encode()
    where = "the webhook (notify.webhook_url_env)"
    for attempt, delay in enumerate([*retry_delays, None], start=1):
        request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT):
                return
        except urllib.error.HTTPError as error:
            # The error's text would carry the URL: only its status is said.
            failure = f"{where} answered HTTP {error.code} (attempt {attempt})"
            if error.code < 500 and error.code != 429:
                raise RefreshError(failure) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            said = getattr(reason, "strerror", None) or type(reason).__name__  # never the URL
            failure = f"{where} could not be reached: {said} (attempt {attempt})"
        if delay is None:
            raise RefreshError(failure)
        time.sleep(delay)
