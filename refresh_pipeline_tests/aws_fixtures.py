"""moto running as a real HTTP server, boto3 pointed at it, and a call recorder for what our code asks AWS."""

import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import boto3
import psycopg
import pytest
from moto.server import ThreadedMotoServer

from refresh_pipeline.platforms.aws import AwsPlatform
from refresh_pipeline.platforms.local_server import LocalServer
from refresh_pipeline_tests.helpers import running_server

REGION = "ap-south-1"
SOURCE_INSTANCE = "prod-db"
STAGING_PASSWORD = "st4ging-only-password"
STAGING_RECORD = "staging-db.internal.example.com"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass
class AwsWorld:
    endpoint: str
    hosted_zone_id: str
    password_secret: str
    calls: list[tuple[str, dict]] = field(default_factory=list)

    def mutating_calls(self, **matching: str) -> list[tuple[str, dict]]:
        """Recorded calls whose name does not start with Describe/List/Get and whose params match."""
        return [
            (name, params)
            for name, params in self.calls
            if not name.startswith(("Describe", "List", "Get"))
            and all(params.get(key) == value for key, value in matching.items())
        ]


@pytest.fixture
def aws_world(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsWorld]:
    """A fresh account: production RDS instance, the staging password secret, the private zone."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"))
    for name, value in {
        "AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION, "AWS_SESSION_TOKEN": "testing",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    rds = boto3.client("rds", region_name=REGION)
    rds.create_db_instance(
        DBInstanceIdentifier=SOURCE_INSTANCE, Engine="postgres", DBInstanceClass="db.r6g.large",
        MasterUsername="app", MasterUserPassword="production-password", AllocatedStorage=100,
    )  # fmt: skip
    secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="refresh-pipeline/staging-password", SecretString=json.dumps({"password": STAGING_PASSWORD})
    )["ARN"]
    zone = boto3.client("route53", region_name=REGION).create_hosted_zone(
        Name="internal.example.com", CallerReference="refresh-pipeline-tests"
    )["HostedZone"]["Id"]
    world = AwsWorld(endpoint=moto_endpoint, hosted_zone_id=zone.split("/")[-1], password_secret=secret)

    def record(params: dict, model, **_kwargs) -> None:
        world.calls.append((model.name, dict(params)))

    # Every boto3 client our code creates comes from the default session: record what it asks AWS.
    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register("provide-client-params.*.*", record)
    yield world
    boto3.DEFAULT_SESSION.events.unregister("provide-client-params.*.*", record)


@pytest.fixture
def aws_config(aws_world, write_config, demo_source, pg_server):
    """Writes a config of the AWS platform on moto, the demo database as production and the test server as the
    data plane; keyword arguments override or add `aws:` settings."""

    def make(**aws_overrides):
        aws = {
            "region": REGION, "source_instance": SOURCE_INSTANCE, "database_name": "app",
            "master_username": "app", "staging_password_secret": aws_world.password_secret,
            "hosted_zone_id": aws_world.hosted_zone_id, "staging_record": STAGING_RECORD,
            "instance_prefix": f"sr-{uuid.uuid4().hex[:6]}", "data_plane_dsn": pg_server.dsn(),
            **aws_overrides,
        }  # fmt: skip
        return write_config(demo_source, platform="aws", aws=aws)

    return make


@pytest.fixture(scope="session")
def instance_stand_in(test_root) -> Iterator[LocalServer]:
    """A PostgreSQL server standing for the restored RDS instances (moto runs no database): pg_cron loaded for
    `postgres` as RDS sets it up, the master user `app` (not a superuser, but a monitor that may replicate and
    set session_replication_role, as on RDS) and its database `app`."""
    settings = {
        "shared_preload_libraries": "pg_cron", "cron.database_name": "postgres",
        "wal_level": "logical", "max_wal_senders": "4",  # production's replication slots come along
    }  # fmt: skip
    with running_server(test_root / "instance_stand_in", **settings) as server:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("CREATE ROLE app LOGIN CREATEDB CREATEROLE REPLICATION IN ROLE pg_monitor")
            conn.execute("GRANT SET ON PARAMETER session_replication_role TO app")
            conn.execute("CREATE DATABASE app OWNER app")
        yield server


@pytest.fixture
def instances_on_stand_in(instance_stand_in: LocalServer, monkeypatch: pytest.MonkeyPatch) -> LocalServer:
    """The worker's connections to any RDS instance (or cluster) lead to the stand-in server: moto's endpoints
    resolve nowhere."""
    address = (str(instance_stand_in.socket_dir), instance_stand_in.port)
    monkeypatch.setattr(AwsPlatform, "_database_address", lambda _self, _raw: address)
    return instance_stand_in


class _MetadataService(BaseHTTPRequestHandler):
    instance_id = ""
    region = REGION
    tags: ClassVar[dict[str, str]] = {}  # the instance's tags, as IMDS shows them with instance metadata tags enabled

    def do_PUT(self) -> None:
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            self._reply(200, "session-token")
        else:
            self._reply(403, "")

    def do_GET(self) -> None:
        values = {"/latest/meta-data/instance-id": self.instance_id, "/latest/meta-data/placement/region": self.region}
        values |= {f"/latest/meta-data/tags/instance/{key}": value for key, value in self.tags.items()}
        if self.headers.get("X-aws-ec2-metadata-token") != "session-token":
            self._reply(401, "")  # IMDSv2 only: no token, no answer
        elif self.path in values:
            self._reply(200, values[self.path])
        else:
            self._reply(404, "")

    def _reply(self, status: int, body: str) -> None:
        self.send_response(status)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def metadata_service() -> Iterator[type[_MetadataService]]:
    """The EC2 instance metadata service (IMDSv2) of a worker, on loopback; set `.instance_id`."""
    handler = type("Metadata", (_MetadataService,), {"instance_id": "", "tags": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    yield handler
    server.shutdown()
