"""The refresh configuration file: one YAML document, loaded and validated once."""

from __future__ import annotations

import os
import re
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from refresh_pipeline.errors import RefreshError

DEFAULT_CRON = "0 2 * * 0"  # Sundays at 02:00
DEFAULT_TIMEZONE = "UTC"

CONFIG_ENV_VAR = "REFRESH_PIPELINE_CONFIG"
DEFAULT_CONFIG_FILE = "refresh_pipeline.yaml"

_PLATFORMS = ("local", "aws")
_RDS_IDENTIFIER = re.compile(r"[a-z][a-z0-9-]{0,40}")


@dataclass(frozen=True)
class LocalPlatformConfig:
    """Where the local platform's PostgreSQL lives.

    With `server_dsn` unset the platform runs its own server from the system's binaries with its data
    under `work_dir/pgserver`, reachable only through its private Unix socket (`port` names it), not TCP.
    """

    server_dsn: str | None = None
    port: int = 54329
    bin_dir: str | None = None


@dataclass(frozen=True)
class AwsPlatformConfig:
    """RDS (or Aurora) + Route 53; see README "Deploying on AWS" for each field."""

    region: str
    database_name: str
    master_username: str
    staging_password_secret: str
    hosted_zone_id: str
    staging_record: str
    source_instance: str | None = None
    source_cluster: str | None = None
    record_ttl: int = 60
    instance_class: str = "db.t4g.medium"
    subnet_group: str | None = None
    security_groups: tuple[str, ...] = ()
    parameter_group: str | None = None
    storage_type: str | None = None
    instance_prefix: str = "staging-refresh"
    reuse_snapshot_hours: float = 0
    wait_timeout_minutes: int = 90
    orphan_days: int = 7
    masking_key_secret: str | None = None
    # Audit reports are also uploaded to s3://<report_bucket>/<report_prefix>/<database>/ when set.
    report_bucket: str | None = None
    report_prefix: str = "refresh-pipeline/reports"
    # Login roles of production that log in to staging, each with its password's secret reference
    # ('secretsmanager:<id>' or 'ssm:<parameter>'); every other login role but the master user loses its login.
    staging_logins: tuple[tuple[str, str], ...] = ()
    # Development and tests only: the RDS API calls go to AWS (or moto), the data lives on this server. Its
    # roles stand for the instance's (staging_logins changes them) unless it is production's own server.
    data_plane_dsn: str | None = None


@dataclass(frozen=True)
class NotifyConfig:
    """Where a refresh's outcome is sent (see README "Notifications"): nobody watches a weekly run."""

    when: str = "always"  # or "failure"
    sns_topic_arn: str | None = None
    # The name of the environment variable holding a chat webhook's URL: the URL is a secret.
    webhook_url_env: str | None = None
    # Where the Dagster UI is served: notices link to the run's page there.
    ui_url: str | None = None

    @property
    def sns_region(self) -> str | None:
        return self.sns_topic_arn.split(":")[3] if self.sns_topic_arn else None


_NOTIFY_WHEN = ("always", "failure")
_SNS_TOPIC_ARN = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?")
_ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _notify_config(raw: Any, where: Path) -> NotifyConfig | None:
    if raw is None:
        return None
    known = set(NotifyConfig.__dataclass_fields__)
    if not isinstance(raw, dict) or not raw:
        raise RefreshError(f"{where}: notify must be a mapping of {', '.join(sorted(known))}.")
    unknown = sorted(set(raw) - known)
    if unknown:
        raise RefreshError(
            f"{where}: unknown notify setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}."
        )
    notify = NotifyConfig(**raw)
    if notify.when not in _NOTIFY_WHEN:
        raise RefreshError(f"{where}: notify.when must be one of {', '.join(_NOTIFY_WHEN)}, got {notify.when!r}.")
    if notify.sns_topic_arn is None and notify.webhook_url_env is None:
        raise RefreshError(f"{where}: notify needs sns_topic_arn, webhook_url_env or both.")
    if notify.sns_topic_arn is not None and not _SNS_TOPIC_ARN.fullmatch(str(notify.sns_topic_arn)):
        raise RefreshError(
            f"{where}: notify.sns_topic_arn must be a topic's ARN (arn:aws:sns:<region>:<account>:<name>), "
            f"got {notify.sns_topic_arn!r}."
        )
    if notify.webhook_url_env is not None and not _ENV_VAR_NAME.fullmatch(str(notify.webhook_url_env)):
        raise RefreshError(
            f"{where}: notify.webhook_url_env names the environment variable holding the URL (the URL is a "
            f"secret: it does not go in this file), e.g. REFRESH_NOTIFY_WEBHOOK."
        )
    if notify.ui_url is not None and not re.fullmatch(r"https?://[^\s]+", str(notify.ui_url)):
        raise RefreshError(f"{where}: notify.ui_url must be the Dagster UI's http(s) address, got {notify.ui_url!r}.")
    return notify


_AWS_REQUIRED = ("region", "database_name", "master_username", "staging_password_secret", "hosted_zone_id",
                 "staging_record")  # fmt: skip


def _section(raw: Any, name: str, known: set[str], shape: str, where: Path) -> dict[str, Any]:
    """An optional section of settings (`local`, `schedule`): a mapping of `known` keys only; {} when absent."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RefreshError(f"{where}: {name} must be a mapping {shape}, got {raw!r}.")
    unknown = sorted(map(str, set(raw) - known))
    if unknown:
        names = ", ".join(unknown)
        raise RefreshError(f"{where}: unknown {name} setting(s) {names}; known: {', '.join(sorted(known))}.")
    return raw


def _local_config(raw: Any, where: Path) -> LocalPlatformConfig:
    raw = _section(raw, "local", set(LocalPlatformConfig.__dataclass_fields__), "(server_dsn, port, bin_dir)", where)
    port = raw.get("port", 54329)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise RefreshError(f"{where}: local.port must be a port number (1-65535), got {port!r}.")
    return LocalPlatformConfig(server_dsn=raw.get("server_dsn"), port=port, bin_dir=raw.get("bin_dir"))


def _aws_config(raw: Any, where: Path) -> AwsPlatformConfig:
    if not isinstance(raw, dict):
        raise RefreshError(f"{where}: platform aws needs an `aws:` section (see README, Deploying on AWS).")
    known = {f for f in AwsPlatformConfig.__dataclass_fields__}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise RefreshError(f"{where}: unknown aws setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
    missing = [key for key in _AWS_REQUIRED if not raw.get(key)]
    if missing:
        raise RefreshError(f"{where}: aws section is missing {', '.join(missing)}.")
    if bool(raw.get("source_instance")) == bool(raw.get("source_cluster")):
        raise RefreshError(f"{where}: set exactly one of aws.source_instance (RDS) or aws.source_cluster (Aurora).")
    prefix = str(raw.get("instance_prefix", "staging-refresh"))
    if not _RDS_IDENTIFIER.fullmatch(prefix):
        raise RefreshError(f"{where}: aws.instance_prefix must be lower-case letters, digits and '-', got {prefix!r}.")
    secret = raw.get("masking_key_secret")
    if secret and not str(secret).startswith(("secretsmanager:", "ssm:")):
        raise RefreshError(f"{where}: aws.masking_key_secret must be 'secretsmanager:<id>' or 'ssm:<parameter>'.")
    values = {
        **raw,
        "security_groups": tuple(raw.get("security_groups") or ()),
        "staging_logins": _staging_logins(raw.get("staging_logins"), where),
    }
    return AwsPlatformConfig(**values)


def _staging_logins(raw: Any, where: Path) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not all(
        isinstance(role, str) and isinstance(secret, str) and secret.startswith(("secretsmanager:", "ssm:"))
        for role, secret in raw.items()
    ):
        raise RefreshError(
            f"{where}: aws.staging_logins must map role names to secret references, "
            "e.g. {app: 'secretsmanager:staging/app-password'} ('secretsmanager:<id>' or 'ssm:<parameter>')."
        )
    return tuple(sorted(raw.items()))


@dataclass(frozen=True)
class RefreshConfig:
    """Everything one refresh needs; see README "Configuration" for each field."""

    source_dsn: str
    policy_path: Path
    work_dir: Path
    platform: str = "local"
    masking_key_env: str = "REFRESH_MASKING_KEY"
    parallelism: int = 2
    schedule_cron: str = DEFAULT_CRON
    schedule_timezone: str = DEFAULT_TIMEZONE
    database_prefix: str = "staging_"
    snapshots_to_keep: int = 1
    audit_sample_percent: float | None = None
    local: LocalPlatformConfig = field(default_factory=LocalPlatformConfig)
    aws: AwsPlatformConfig | None = None
    notify: NotifyConfig | None = None

    @property
    def dagster_home(self) -> Path:
        return self.work_dir / "dagster_home"

    @property
    def masking_key_in_secret_store(self) -> bool:
        """The worker reads the key from AWS (aws.masking_key_secret) instead of `masking_key_env`."""
        return self.aws is not None and self.aws.masking_key_secret is not None


def _require(raw: dict[str, Any], key: str, where: Path) -> Any:
    if key not in raw or raw[key] in (None, ""):
        raise RefreshError(f"{where}: missing required setting '{key}'. See README, section Configuration.")
    return raw[key]


def _variable_name(raw: dict[str, Any], key: str, default: str, where: Path) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise RefreshError(f"{where}: '{key}' must name an environment variable (letters, digits, '_'), got {value!r}.")
    return value


def _positive_int(raw: dict[str, Any], key: str, default: int, where: Path) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RefreshError(f"{where}: '{key}' must be a whole number of at least 1, got {value!r}.")
    return value


def _schedule(raw: Any, where: Path) -> tuple[str, str]:
    """(cron, time zone) of the `schedule` section, checked here: Dagster refuses a bad one only when it loads
    the definitions (a traceback from `run`, a code location that does not load)."""
    raw = _section(raw, "schedule", {"cron", "timezone"}, "with cron and timezone", where)
    cron, timezone = str(raw.get("cron", DEFAULT_CRON)), str(raw.get("timezone", DEFAULT_TIMEZONE))
    if (cron, timezone) != (DEFAULT_CRON, DEFAULT_TIMEZONE):
        _check_schedule(cron, timezone, where)
    return cron, timezone


def _check_schedule(cron: str, timezone: str, where: Path) -> None:
    """Read as the schedule will read them: by Dagster itself (which takes about a second to import, so only
    for a schedule other than the default)."""
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise RefreshError(
            f"{where}: schedule.timezone {timezone!r} is not a time zone name such as Asia/Kolkata or UTC."
        ) from None
    import dagster as dg

    try:
        dg.ScheduleDefinition(name="check", cron_schedule=cron, job_name="check", execution_timezone=timezone)
    except dg.DagsterInvalidDefinitionError:
        raise RefreshError(
            f"{where}: schedule.cron {cron!r} is not a cron expression Dagster reads: five fields, minute hour "
            "day-of-month month day-of-week, e.g. '0 2 * * 0' (Sundays at 02:00)."
        ) from None


def load_config(path: str | os.PathLike[str]) -> RefreshConfig:
    """Read and validate a config file; relative paths in it are relative to the file."""
    config_path = Path(path).resolve()
    if not config_path.is_file():
        raise RefreshError(f"config file not found: {config_path}")
    try:
        raw = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RefreshError(f"{config_path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise RefreshError(f"{config_path}: expected a mapping of settings at the top level.")
    known = {
        "source_dsn",
        "policy",
        "work_dir",
        "platform",
        "masking_key_env",
        "parallelism",
        "schedule",
        "database_prefix",
        "snapshots_to_keep",
        "local",
        "audit_sample_percent",
        "aws",
        "notify",
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise RefreshError(
            f"{config_path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}."
        )

    base = config_path.parent
    platform = raw.get("platform", "local")
    if platform not in _PLATFORMS:
        raise RefreshError(f"{config_path}: platform must be one of {', '.join(_PLATFORMS)}, got {platform!r}.")
    schedule_cron, schedule_timezone = _schedule(raw.get("schedule"), config_path)
    prefix = str(raw.get("database_prefix", "staging_"))
    if not prefix.isidentifier() or prefix.lower() != prefix:
        raise RefreshError(
            f"{config_path}: database_prefix must be lower-case letters, digits and '_', got {prefix!r}."
        )
    sample = raw.get("audit_sample_percent")
    if sample is not None and (
        isinstance(sample, bool) or not isinstance(sample, int | float) or not 0 < sample <= 100
    ):
        raise RefreshError(f"{config_path}: audit_sample_percent must be a number in (0, 100], got {sample!r}.")
    return RefreshConfig(
        source_dsn=str(_require(raw, "source_dsn", config_path)),
        policy_path=(base / str(_require(raw, "policy", config_path))).resolve(),
        work_dir=(base / str(raw.get("work_dir", ".work"))).resolve(),
        platform=platform,
        masking_key_env=_variable_name(raw, "masking_key_env", "REFRESH_MASKING_KEY", config_path),
        parallelism=_positive_int(raw, "parallelism", 2, config_path),
        schedule_cron=schedule_cron,
        schedule_timezone=schedule_timezone,
        database_prefix=prefix,
        snapshots_to_keep=_positive_int(raw, "snapshots_to_keep", 1, config_path),
        audit_sample_percent=float(sample) if sample is not None else None,
        aws=_aws_config(raw.get("aws"), config_path) if platform == "aws" else None,
        notify=_notify_config(raw.get("notify"), config_path),
        local=_local_config(raw.get("local"), config_path),
    )


DEMO_CONFIG_FILE = Path(".work") / "demo.yaml"


def default_config_path() -> Path:
    """The config the Dagster code location loads.

    In order: $REFRESH_PIPELINE_CONFIG, ./refresh_pipeline.yaml, then ./.work/demo.yaml (written by
    `refresh-pipeline demo`).
    """
    from_env = os.environ.get(CONFIG_ENV_VAR)
    if from_env:
        return Path(from_env)
    for candidate in (Path.cwd() / DEFAULT_CONFIG_FILE, Path.cwd() / DEMO_CONFIG_FILE):
        if candidate.is_file():
            return candidate
    raise RefreshError(
        f"no refresh config found: set {CONFIG_ENV_VAR}=/path/to/config.yaml, put a {DEFAULT_CONFIG_FILE} "
        "in the current directory, or run `refresh-pipeline demo` once."
    )
