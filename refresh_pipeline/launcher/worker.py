"""The EC2 worker's entrypoint: run the refresh, flush the logs, then stop this very instance — also when
the refresh failed — so the worker costs nothing between runs."""

import logging
import os
import sys
import urllib.request
from collections.abc import Callable

import boto3

from refresh_pipeline.errors import RefreshError

IMDS_ENDPOINT_ENV = "REFRESH_PIPELINE_IMDS_ENDPOINT"
_IMDS_DEFAULT = "http://169.254.169.254"
log = logging.getLogger("refresh_pipeline.worker")


def _metadata(path: str, what: str, endpoint: str | None = None) -> str:
    """A value of this instance's metadata (IMDSv2: a session token first)."""
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
    except OSError as exc:
        raise RefreshError(f"cannot read this instance's {what} from the metadata service at {base}: {exc}") from None


def own_instance_id(endpoint: str | None = None) -> str:
    return _metadata("meta-data/instance-id", "id", endpoint)


def own_region(endpoint: str | None = None) -> str:
    return _metadata("meta-data/placement/region", "region", endpoint)


def stop_self(region: str | None = None) -> str:
    """Stop this instance; without a region (the config could not be read) it is the instance's own."""
    instance_id = own_instance_id()
    boto3.client("ec2", region_name=region or own_region()).stop_instances(InstanceIds=[instance_id])
    return instance_id


def run_then_stop(run: Callable[[], int], region: str | None = None) -> int:
    """Run, then stop this instance whatever happened; returns the run's exit code."""
    code = 1
    try:
        code = run()
    except RefreshError as error:  # ours: a config or set-up problem, said without a traceback
        print(f"refresh-pipeline: {error}", file=sys.stderr)
        code = 2
    except Exception:
        log.exception("the refresh crashed")
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        instance_id = stop_self(region)
        print(f"stopping this worker ({instance_id}); refresh exit code {code}", flush=True)
    return code
