"""The EC2 worker's entrypoint: run the refresh, flush the logs, then stop this very instance — also when
the refresh failed — so the worker costs nothing between runs. A worker tagged `refresh-pipeline:hold=true`
is booted for maintenance: it runs nothing and stays up (the weekly Lambda does not start it)."""

import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime

import boto3

from refresh_pipeline.errors import RefreshError
from refresh_pipeline.launcher.worker_logs import captured_output, ship_output

IMDS_ENDPOINT_ENV = "REFRESH_PIPELINE_IMDS_ENDPOINT"
HOLD_TAG = "refresh-pipeline:hold"  # lambda_handler.py names it too (it is inlined in the template alone)
_IMDS_DEFAULT = "http://169.254.169.254"
log = logging.getLogger("refresh_pipeline.worker")


def _metadata(path: str, what: str, endpoint: str | None = None, missing_ok: bool = False) -> str | None:
    """A value of this instance's metadata (IMDSv2: a session token first); None for one it does not have
    when `missing_ok`."""
    base = (endpoint or os.environ.get(IMDS_ENDPOINT_ENV) or _IMDS_DEFAULT).rstrip("/")
    try:
        token_request = urllib.request.Request(
            f"{base}/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"}
        )
        with urllib.request.urlopen(token_request, timeout=5) as response:
            token = response.read().decode()
        value_request = urllib.request.Request(f"{base}/latest/{path}", headers={"X-aws-ec2-metadata-token": token})
        with urllib.request.urlopen(value_request, timeout=5) as response:
            return response.read().decode().strip()
    except OSError as exc:  # HTTPError is one
        if missing_ok and isinstance(exc, urllib.error.HTTPError) and exc.code == 404:
            return None
        raise RefreshError(f"cannot read this instance's {what} from the metadata service at {base}: {exc}") from None


def held_for_maintenance(endpoint: str | None = None) -> bool:
    """Whether this instance is tagged HOLD_TAG=true (instance tags in the metadata; absent tag: 404)."""
    value = _metadata(f"meta-data/tags/instance/{HOLD_TAG}", "hold tag", endpoint, missing_ok=True)
    return value is not None and value.lower() == "true"


def own_instance_id(endpoint: str | None = None) -> str:
    return str(_metadata("meta-data/instance-id", "id", endpoint))


def own_region(endpoint: str | None = None) -> str:
    return str(_metadata("meta-data/placement/region", "region", endpoint))


def stop_self(region: str | None = None) -> str:
    """Stop this instance; without a region (the config could not be read) it is the instance's own."""
    instance_id = own_instance_id()
    boto3.client("ec2", region_name=region or own_region()).stop_instances(InstanceIds=[instance_id])
    return instance_id


def run_then_stop(run: Callable[[], int], region: str | None = None, log_group: str | None = None) -> int:
    """Run, then stop this instance whatever happened; returns the run's exit code. With `log_group`, the
    run's output goes to a new stream of that CloudWatch Logs group first. A worker held for maintenance runs
    nothing and is not stopped."""
    if held_for_maintenance():
        print(
            f"this worker is tagged {HOLD_TAG}=true: no refresh, and it stays up for maintenance; "
            "remove the tag and stop it when done",
            flush=True,
        )
        return 0
    started = datetime.now(UTC)
    code = 1
    try:
        with captured_output() if log_group else nullcontext() as captured:
            code = _run(run)
        if captured is not None and log_group:
            stream = f"{own_instance_id()}/{started.strftime('%Y-%m-%dT%H-%M-%SZ')}"
            problem = ship_output(captured, log_group, stream, region or own_region())
            print(problem or f"this run's output is in CloudWatch Logs: {log_group} {stream}", file=sys.stderr)
    finally:  # whatever happened, also on an interrupt
        sys.stdout.flush()
        sys.stderr.flush()
        instance_id = stop_self(region)
        print(f"stopping this worker ({instance_id}); refresh exit code {code}", flush=True)
    return code


def _run(run: Callable[[], int]) -> int:
    """The run's exit code; a crash is logged (and is 1), our own error said without a traceback (2)."""
    try:
        return run()
    except RefreshError as error:  # ours: a config or set-up problem
        print(f"refresh-pipeline: {error}", file=sys.stderr)
        return 2
    except Exception:
        log.exception("the refresh crashed")
        return 1
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
