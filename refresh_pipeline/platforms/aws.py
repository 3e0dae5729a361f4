"""The AWS platform: RDS (or Aurora) snapshots and restores, Secrets Manager, Route 53 promotion."""

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError, WaiterError
from psycopg.conninfo import make_conninfo

from refresh_pipeline.config import AwsPlatformConfig, LocalPlatformConfig, RefreshConfig
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.instance_clearing import clear_restored_instance
from refresh_pipeline.masking.keys import MaskingKey, restored_instance_password
from refresh_pipeline.platforms.base import Log, ManagedDatabase, Snapshot
from refresh_pipeline.platforms.connections import parse_conninfo
from refresh_pipeline.platforms.local import LocalPlatform

MANAGED_TAG = "refresh-pipeline:managed"
REFRESH_TAG = "refresh-pipeline:refresh-id"
# Set on an instance once promotion gave it the staging password; until then its master password is
# derived from the masking key (restored_instance_password), so staging users cannot reach production rows.
ACCESS_TAG = "refresh-pipeline:access"
STAGING_ACCESS = "staging"
_NAME_TIME_FORMAT = "%Y%m%d-%H%M%S"
# Automated backups of a restored instance, from the moment it holds production's rows: none (0 deletes those
# taken already), so neither a backup nor a point-in-time restore of staging brings back the unmasked rows. An
# Aurora cluster keeps at least one day of them.
_RESTORED_BACKUP_DAYS = 0
_RESTORED_CLUSTER_BACKUP_DAYS = 1


_STATUS_KEYS = frozenset({"Status", "DBInstanceStatus", "DBClusterStatus"})  # snapshots, instances, clusters


def _tags(refresh_id: str) -> list[dict[str, str]]:
    return [{"Key": MANAGED_TAG, "Value": "true"}, {"Key": REFRESH_TAG, "Value": refresh_id}]


def _is_managed(tag_list: list[dict[str, str]] | None) -> bool:
    return any(t.get("Key") == MANAGED_TAG and t.get("Value") == "true" for t in tag_list or [])


def _has_staging_access(tag_list: list[dict[str, str]] | None) -> bool:
    return any(t.get("Key") == ACCESS_TAG and t.get("Value") == STAGING_ACCESS for t in tag_list or [])


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _how_far(response: dict[str, Any] | None) -> str:
    """What a describe call says of the one resource waited for: its status and, for a snapshot, percent done."""
    for value in (response or {}).values():
        described = value[0] if isinstance(value, list) and value else value
        if isinstance(described, dict) and (status := _STATUS_KEYS & described.keys()):
            percent = described.get("PercentProgress")
            status_text = described[min(status)]
            return f"{status_text}, {percent}% done" if percent is not None else str(status_text)
    return "not there yet"


class AwsPlatform:
    """Production is an RDS instance (or Aurora cluster) that is only ever snapshotted; staging
    instances are restored from those snapshots, tagged as ours, and reached through a Route 53 CNAME."""

    poll_seconds = 15

    def __init__(self, config: RefreshConfig, key: Callable[[], MaskingKey] | None = None) -> None:
        """`key`: the masking key, needed to reach (and to restore) an instance that is not promoted yet."""
        if config.aws is None:
            raise RefreshError("platform aws needs an `aws:` section in the config.")
        self.config = config
        self.aws: AwsPlatformConfig = config.aws
        self.rds = boto3.client("rds", region_name=self.aws.region)
        self.route53 = boto3.client("route53", region_name=self.aws.region)
        self.secrets = boto3.client("secretsmanager", region_name=self.aws.region)
        self.data_plane = self._data_plane(config) if self.aws.data_plane_dsn else None
        self._key = key

    @staticmethod
    def _data_plane(config: RefreshConfig) -> LocalPlatform:
        assert config.aws is not None and config.aws.data_plane_dsn
        return LocalPlatform(
            replace(
                config,
                platform="local",
                database_prefix=config.aws.instance_prefix,
                work_dir=config.work_dir / "data_plane",
                local=LocalPlatformConfig(server_dsn=config.aws.data_plane_dsn),
            )
        )

    @property
    def _cluster_mode(self) -> bool:
        return self.aws.source_cluster is not None

    def _source_identifier(self) -> str:
        return self.aws.source_cluster or self.aws.source_instance or ""

    def _wait(self, waiter_name: str, client: Any = None, log: Log | None = None, **kwargs: Any) -> None:
        """Wait with the configured timeout (RDS unless another client is given). With `log`, each poll says
        how far AWS is (a snapshot's percent done, an instance's status): a restore can take an hour."""
        waiter = (client or self.rds).get_waiter(waiter_name)
        started = time.monotonic()
        while True:
            try:
                waiter.wait(**kwargs, WaiterConfig={"Delay": self.poll_seconds, "MaxAttempts": 1})
                return
            except WaiterError as exc:
                if "Max attempts exceeded" not in str(exc):  # a failed or deleted resource: no use waiting
                    raise RefreshError(f"{waiter_name} ({kwargs}) will not happen: {exc}") from None
                elapsed = time.monotonic() - started
                if elapsed + self.poll_seconds > self.aws.wait_timeout_minutes * 60:
                    raise RefreshError(
                        f"gave up waiting for {waiter_name} ({kwargs}) after {self.aws.wait_timeout_minutes} min: "
                        f"{_how_far(exc.last_response)}"
                    ) from None
                if log is not None:
                    log(f"waiting for {' '.join(map(str, kwargs.values()))}: {_how_far(exc.last_response)}, "
                        f"{elapsed / 60:,.1f} min elapsed")  # fmt: skip
            time.sleep(self.poll_seconds)

    def ensure_ready(self) -> None:
        if self.data_plane is not None:
            self.data_plane.ensure_ready()

    def start_up_risks(self, production_subscriptions: list[str]) -> list[str]:
        """What a restored instance's parameter group would start before the pipeline connects to it (the
        refresh stops both once it does): production's pg_cron jobs and its subscriptions, against
        unmasked rows. For `validate`; Aurora clusters take cluster parameter groups, not checked here."""
        if self._cluster_mode:
            return []
        group = self.aws.parameter_group
        settings: dict[str, str] = {}
        if group:
            try:
                pages = self.rds.get_paginator("describe_db_parameters").paginate(DBParameterGroupName=group)
                settings = {p["ParameterName"]: p["ParameterValue"] for page in pages for p in page["Parameters"]
                            if "ParameterValue" in p}  # fmt: skip
            except ClientError as exc:
                return [f"cannot read parameter group {group} (aws.parameter_group): {exc.response['Error']['Code']}"]
        where = f"parameter group {group}" if group else "RDS's default parameter group (aws.parameter_group unset)"
        risks = []
        libraries = [name.strip() for name in settings.get("shared_preload_libraries", "").split(",")]
        if "pg_cron" in libraries:
            risks.append(
                f"{where} loads pg_cron: production's scheduled jobs run on each restored instance, against "
                "unmasked rows, from its start until the refresh deactivates them; give restored instances a "
                "parameter group without it"
            )
        workers = settings.get("max_logical_replication_workers", "4")  # PostgreSQL's and RDS's default
        if production_subscriptions and workers.strip() != "0":
            risks.append(
                f"production has subscriptions ({', '.join(production_subscriptions)}) and {where} allows "
                f"{workers} logical replication worker(s): each restored instance starts them against production's "
                "publisher, with production's slot, until the refresh cuts them; set max_logical_replication_workers "
                "to 0 there"
            )
        return risks

    # -- snapshots --------------------------------------------------------------------------------
    def _snapshots(self) -> Iterator[dict[str, Any]]:
        if self._cluster_mode:
            pages = self.rds.get_paginator("describe_db_cluster_snapshots").paginate(SnapshotType="manual")
            for page in pages:
                yield from page["DBClusterSnapshots"]
        else:
            pages = self.rds.get_paginator("describe_db_snapshots").paginate(SnapshotType="manual")
            for page in pages:
                yield from page["DBSnapshots"]

    def _snapshot_tags(self, arn: str) -> list[dict[str, str]]:
        return self.rds.list_tags_for_resource(ResourceName=arn)["TagList"]

    def list_snapshots(self) -> list[Snapshot]:
        found = []
        for raw in self._snapshots():
            arn = raw.get("DBClusterSnapshotArn") or raw.get("DBSnapshotArn")
            if not _is_managed(raw.get("TagList") or self._snapshot_tags(arn)):
                continue
            identifier = raw.get("DBClusterSnapshotIdentifier") or raw.get("DBSnapshotIdentifier")
            created = raw.get("SnapshotCreateTime") or _now()
            found.append(Snapshot(snapshot_id=identifier, created_at=created, location=arn))
        return sorted(found, key=lambda s: (s.created_at, s.snapshot_id))

    def _reusable_snapshot(self) -> Snapshot | None:
        if self.aws.reuse_snapshot_hours <= 0:
            return None
        cutoff = _now() - timedelta(hours=self.aws.reuse_snapshot_hours)
        recent = [s for s in self.list_snapshots() if s.created_at >= cutoff]
        return recent[-1] if recent else None

    def snapshot(self, log: Log | None = None) -> Snapshot:
        """A manual snapshot of production (RDS reads the storage; nothing in production changes)."""
        reused = self._reusable_snapshot()
        if reused is not None and self.data_plane is None:
            return reused
        snapshot_id = f"{self.aws.instance_prefix}-{_now().strftime(_NAME_TIME_FORMAT)}"
        if self._cluster_mode:
            self.rds.create_db_cluster_snapshot(
                DBClusterSnapshotIdentifier=snapshot_id,
                DBClusterIdentifier=self._source_identifier(),
                Tags=_tags(snapshot_id),
            )
            self._wait("db_cluster_snapshot_available", log=log, DBClusterSnapshotIdentifier=snapshot_id)
        else:
            self.rds.create_db_snapshot(
                DBSnapshotIdentifier=snapshot_id,
                DBInstanceIdentifier=self._source_identifier(),
                Tags=_tags(snapshot_id),
            )
            self._wait("db_snapshot_available", log=log, DBSnapshotIdentifier=snapshot_id)
        location = snapshot_id
        if self.data_plane is not None:
            location = self.data_plane.snapshot(log).location
        return Snapshot(snapshot_id=snapshot_id, created_at=_now(), location=location)

    def delete_snapshot(self, snapshot: Snapshot) -> None:
        mine = {s.snapshot_id: s for s in self.list_snapshots()}
        if snapshot.snapshot_id not in mine:
            raise RefreshError(
                f"refusing to delete snapshot {snapshot.snapshot_id}: it is not tagged {MANAGED_TAG}=true."
            )
        if self._cluster_mode:
            self.rds.delete_db_cluster_snapshot(DBClusterSnapshotIdentifier=snapshot.snapshot_id)
        else:
            self.rds.delete_db_snapshot(DBSnapshotIdentifier=snapshot.snapshot_id)

    # -- restore ----------------------------------------------------------------------------------
    def new_database_name(self) -> str:
        base = f"{self.aws.instance_prefix}-{_now().strftime(_NAME_TIME_FORMAT)}"
        taken = {db.name for db in self.list_managed()}
        name, suffix = base, 1
        while name in taken:
            suffix += 1
            name = f"{base}-{suffix}"
        return name

    def _staging_password(self) -> str:
        try:
            secret = self.secrets.get_secret_value(SecretId=self.aws.staging_password_secret)["SecretString"]
        except ClientError as exc:
            raise RefreshError(
                f"cannot read the staging password secret {self.aws.staging_password_secret}: "
                f"{exc.response['Error']['Code']}"
            ) from None
        return _password_in(secret)

    def staging_login_passwords(self) -> dict[str, str] | None:
        if self.data_plane is not None and _same_server(self.aws.data_plane_dsn or "", self.config.source_dsn):
            return None  # development: the instance's roles would be production's own
        return {role: _password_in(read_secret(ref, self.aws.region)) for role, ref in self.aws.staging_logins}

    def _restored_password(self, name: str) -> str:
        if self._key is None:
            raise RefreshError(f"reaching {name!r} before it is promoted needs the masking key.")
        return restored_instance_password(self._key(), name)

    def _set_master_password(self, name: str, password: str, log: Log | None = None, **settings: Any) -> None:
        """`settings`: more of the instance's (cluster's) to change with it."""
        if self._cluster_mode:
            self.rds.modify_db_cluster(
                DBClusterIdentifier=name, MasterUserPassword=password, ApplyImmediately=True, **settings
            )
            for member in self._find(name).get("DBClusterMembers", []):
                self._wait("db_instance_available", log=log, DBInstanceIdentifier=member["DBInstanceIdentifier"])
        else:
            self.rds.modify_db_instance(
                DBInstanceIdentifier=name, MasterUserPassword=password, ApplyImmediately=True, **settings
            )
            self._wait("db_instance_available", log=log, DBInstanceIdentifier=name)

    def _restore_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"PubliclyAccessible": False, "DBInstanceClass": self.aws.instance_class}
        if self.aws.subnet_group:
            options["DBSubnetGroupName"] = self.aws.subnet_group
        if self.aws.security_groups:
            options["VpcSecurityGroupIds"] = list(self.aws.security_groups)
        if self.aws.parameter_group:
            options["DBParameterGroupName"] = self.aws.parameter_group
        if self.aws.storage_type:
            options["StorageType"] = self.aws.storage_type
        return options

    def restore(self, snapshot: Snapshot, name: str, log: Log | None = None) -> ManagedDatabase:
        """A new, tagged, private instance from the snapshot. Before anyone connects, its inherited
        production master password is replaced by one derived from the masking key for this instance:
        while it holds production's rows, only the pipeline can log in as its master user (the staging
        password works only once promotion set it). On failure what was created is deleted."""
        if not name.startswith(self.aws.instance_prefix):
            raise RefreshError(f"restore target {name!r} must start with {self.aws.instance_prefix!r}.")
        password = self._restored_password(name)  # no key, no restore: nothing could reach the instance
        try:
            if self._cluster_mode:
                self._restore_cluster(snapshot, name, password, log)
            else:
                self._restore_instance(snapshot, name, password, log)
            if self.data_plane is not None:  # development: one database on a server of the developer's
                notes, cleared = self.data_plane.restore(snapshot, name, log).notes, None
            else:
                cleared = clear_restored_instance(partial(self._conninfo, name), self.aws.database_name)
                notes = tuple(cleared.notes())
        except Exception:
            self._delete(name, wait=False)
            raise
        return ManagedDatabase(
            name=name, created_at=_now(), snapshot_id=snapshot.snapshot_id, notes=notes,
            cleared=cleared.as_metadata() if cleared else {},
        )  # fmt: skip

    def _restore_instance(self, snapshot: Snapshot, name: str, password: str, log: Log | None) -> None:
        self.rds.restore_db_instance_from_db_snapshot(
            DBInstanceIdentifier=name,
            DBSnapshotIdentifier=snapshot.snapshot_id,
            Tags=_tags(snapshot.snapshot_id),
            **self._restore_options(),
        )
        self._wait("db_instance_available", log=log, DBInstanceIdentifier=name)
        self._set_master_password(name, password, log, BackupRetentionPeriod=_RESTORED_BACKUP_DAYS)

    def _restore_cluster(self, snapshot: Snapshot, name: str, password: str, log: Log | None) -> None:
        source = self.rds.describe_db_cluster_snapshots(DBClusterSnapshotIdentifier=snapshot.snapshot_id)
        engine = source["DBClusterSnapshots"][0]["Engine"]
        options = {
            k: v for k, v in self._restore_options().items() if k in ("DBSubnetGroupName", "VpcSecurityGroupIds")
        }
        self.rds.restore_db_cluster_from_snapshot(
            DBClusterIdentifier=name, SnapshotIdentifier=snapshot.snapshot_id, Engine=engine,
            Tags=_tags(snapshot.snapshot_id), **options,
        )  # fmt: skip
        self.rds.modify_db_cluster(
            DBClusterIdentifier=name, MasterUserPassword=password, ApplyImmediately=True,
            BackupRetentionPeriod=_RESTORED_CLUSTER_BACKUP_DAYS,
        )  # fmt: skip
        self.rds.create_db_instance(
            DBInstanceIdentifier=f"{name}-1", DBClusterIdentifier=name, Engine=engine,
            DBInstanceClass=self.aws.instance_class, PubliclyAccessible=False, Tags=_tags(snapshot.snapshot_id),
        )  # fmt: skip
        self._wait("db_instance_available", log=log, DBInstanceIdentifier=f"{name}-1")

    # -- managed instances ----------------------------------------------------------------------
    def _describe(self) -> list[dict[str, Any]]:
        if self._cluster_mode:
            pages = self.rds.get_paginator("describe_db_clusters").paginate()
            return [c for page in pages for c in page["DBClusters"]]
        pages = self.rds.get_paginator("describe_db_instances").paginate()
        return [i for page in pages for i in page["DBInstances"]]

    @staticmethod
    def _identifier(raw: dict[str, Any]) -> str:
        return raw.get("DBClusterIdentifier") if "DBClusterArn" in raw else raw["DBInstanceIdentifier"]

    def _endpoint(self, raw: dict[str, Any]) -> tuple[str, int]:
        if "DBClusterArn" in raw:
            return raw["Endpoint"], int(raw.get("Port") or 5432)
        return raw["Endpoint"]["Address"], int(raw["Endpoint"].get("Port") or 5432)

    def _database_address(self, raw: dict[str, Any]) -> tuple[str, int]:
        """Where the worker connects to an instance: its endpoint (tests lead it to a server standing for it)."""
        return self._endpoint(raw)

    def list_managed(self) -> list[ManagedDatabase]:
        managed = []
        for raw in self._describe():
            name = self._identifier(raw)
            if name == self._source_identifier() or not name.startswith(self.aws.instance_prefix):
                continue
            tags = raw.get("TagList") or []
            if not _is_managed(tags):
                continue
            refresh_id = next((t["Value"] for t in tags if t["Key"] == REFRESH_TAG), None)
            created = raw.get("InstanceCreateTime") or raw.get("ClusterCreateTime")
            managed.append(ManagedDatabase(name=name, created_at=created, snapshot_id=refresh_id))
        return sorted(managed, key=lambda db: db.name)

    def _find(self, name: str) -> dict[str, Any]:
        for raw in self._describe():
            if self._identifier(raw) == name:
                return raw
        raise RefreshError(f"no RDS {'cluster' if self._cluster_mode else 'instance'} named {name!r}.")

    def _require_managed(self, name: str, action: str) -> None:
        if name == self._source_identifier():
            raise RefreshError(f"refusing to {action} {name!r}: it is the production source.")
        if name not in {db.name for db in self.list_managed()}:
            raise RefreshError(
                f"refusing to {action} {name!r}: it is not tagged {MANAGED_TAG}=true by refresh_pipeline."
            )

    def retire(self, name: str) -> None:
        self._require_managed(name, "retire")
        if name == self.promoted():
            raise RefreshError(f"refusing to retire {name!r}: the staging record points at it.")
        self._delete(name, wait=False)

    def _delete(self, name: str, wait: bool) -> None:
        """Delete a staging instance/cluster (no final snapshot). Only called for names we created."""
        try:
            if self._cluster_mode:
                for member in self._find(name).get("DBClusterMembers", []):
                    self.rds.delete_db_instance(
                        DBInstanceIdentifier=member["DBInstanceIdentifier"], SkipFinalSnapshot=True
                    )
                self.rds.delete_db_cluster(DBClusterIdentifier=name, SkipFinalSnapshot=True)
            else:
                self.rds.delete_db_instance(
                    DBInstanceIdentifier=name, SkipFinalSnapshot=True, DeleteAutomatedBackups=True
                )
                if wait:
                    self._wait("db_instance_deleted", DBInstanceIdentifier=name)
        except (ClientError, RefreshError) as exc:
            if "NotFound" not in str(exc) and "no RDS" not in str(exc):
                raise
        if self.data_plane is not None:
            self.data_plane.drop_if_exists(name)

    def sweep_orphans(self) -> list[str]:
        """Delete instances of ours older than `orphan_days` that are not promoted (failed runs' leftovers)."""
        cutoff = datetime.now(UTC) - timedelta(days=self.aws.orphan_days)
        promoted = self.promoted()
        swept = []
        for db in self.list_managed():
            if db.name != promoted and db.created_at is not None and db.created_at <= cutoff:
                self._delete(db.name, wait=False)
                swept.append(db.name)
        return swept

    # -- connections and promotion ----------------------------------------------------------------
    def conninfo(self, name: str) -> str:
        if self.data_plane is not None:
            return self.data_plane.conninfo(name)
        return self._conninfo(name, self.aws.database_name)

    def _conninfo(self, name: str, database: str) -> str:
        """To `database` on instance `name`, as its master user."""
        raw = self._find(name)
        host, port = self._database_address(raw)
        # Without the key (`status`) only the promoted instance is asked for: by the staging password, also
        # one promoted by a version that did not tag it yet.
        promoted = _has_staging_access(raw.get("TagList")) or self._key is None
        return make_conninfo(
            host=host, port=port, dbname=database, user=self.aws.master_username,
            password=self._staging_password() if promoted else self._restored_password(name), sslmode="require",
        )  # fmt: skip

    def staging_conninfo(self) -> str:
        return make_conninfo(
            host=self.aws.staging_record, dbname=self.aws.database_name, user=self.aws.master_username,
            sslmode="require",
        )  # fmt: skip

    def _record_name(self) -> str:
        return self.aws.staging_record.rstrip(".") + "."

    def promote(self, name: str) -> None:
        """Give the instance the staging password (tagged, so connections use it from then on), then UPSERT
        the staging CNAME to its endpoint and wait until Route 53 reports INSYNC."""
        self._require_managed(name, "promote")
        raw = self._find(name)
        if not _has_staging_access(raw.get("TagList")):
            self._set_master_password(name, self._staging_password())
            arn = raw.get("DBClusterArn") or raw["DBInstanceArn"]
            self.rds.add_tags_to_resource(ResourceName=arn, Tags=[{"Key": ACCESS_TAG, "Value": STAGING_ACCESS}])
        endpoint, _ = self._endpoint(raw)
        change = self.route53.change_resource_record_sets(
            HostedZoneId=self.aws.hosted_zone_id,
            ChangeBatch={
                "Comment": f"refresh_pipeline: staging -> {name}",
                "Changes": [
                    {
                        "Action": "UPSERT",
                        "ResourceRecordSet": {
                            "Name": self._record_name(),
                            "Type": "CNAME",
                            "TTL": self.aws.record_ttl,
                            "ResourceRecords": [{"Value": endpoint}],
                        },
                    }
                ],
            },
        )
        self._wait("resource_record_sets_changed", client=self.route53, Id=change["ChangeInfo"]["Id"])

    def promoted(self) -> str | None:
        records = self.route53.list_resource_record_sets(
            HostedZoneId=self.aws.hosted_zone_id, StartRecordName=self._record_name(), StartRecordType="CNAME",
            MaxItems="1",
        )["ResourceRecordSets"]  # fmt: skip
        if not records or records[0]["Name"] != self._record_name() or records[0]["Type"] != "CNAME":
            return None
        target = records[0]["ResourceRecords"][0]["Value"].rstrip(".")
        for raw in self._describe():
            if self._endpoint(raw)[0].rstrip(".") == target:
                return self._identifier(raw)
        return None


def _same_server(first: str, second: str) -> bool:
    def server(conninfo: str) -> tuple[str, str]:
        params = parse_conninfo(conninfo)
        return params.get("host", ""), params.get("port", "5432")

    return server(first) == server(second)


def _password_in(secret: str) -> str:
    """A secret's password: the whole string, or its "password" field when it is a JSON object (RDS-style)."""
    try:
        parsed = json.loads(secret)
    except json.JSONDecodeError:
        return secret
    return str(parsed["password"]) if isinstance(parsed, dict) and "password" in parsed else secret


def read_secret(reference: str, region: str) -> str:
    """A secret by reference: 'secretsmanager:<id>' or 'ssm:<parameter name>' (SecureString)."""
    kind, _, name = reference.partition(":")
    try:
        if kind == "secretsmanager":
            return boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=name)["SecretString"]
        if kind == "ssm":
            response = boto3.client("ssm", region_name=region).get_parameter(Name=name, WithDecryption=True)
            return response["Parameter"]["Value"]
    except ClientError as exc:
        raise RefreshError(f"cannot read secret {reference}: {exc.response['Error']['Code']}") from None
    raise RefreshError(f"secret reference {reference!r} must start with 'secretsmanager:' or 'ssm:'.")


def upload_reports(aws: AwsPlatformConfig, database: str, files: list[Path]) -> list[str]:
    """Copy the audit report files to S3 (when a bucket is configured); returns their s3:// URIs."""
    if not aws.report_bucket:
        return []
    s3 = boto3.client("s3", region_name=aws.region)
    uris = []
    for path in files:
        key = f"{aws.report_prefix.strip('/')}/{database}/{path.name}"
        try:
            s3.upload_file(str(path), aws.report_bucket, key)
        except (ClientError, boto3.exceptions.S3UploadFailedError) as exc:
            raise RefreshError(f"cannot upload the audit report to s3://{aws.report_bucket}/{key}: {exc}") from None
        uris.append(f"s3://{aws.report_bucket}/{key}")
    return uris
