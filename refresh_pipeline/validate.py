"""`refresh-pipeline validate`: the policy checked against production's schema, through a read-only session."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from refresh_pipeline.config import RefreshConfig
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.instance_clearing import other_databases_findings
from refresh_pipeline.links_to_production import database_subscriptions
from refresh_pipeline.masking.catalog import TableInfo, read_tables
from refresh_pipeline.masking.check_conflicts import find_check_conflicts
from refresh_pipeline.masking.constraints import find_unique_index_risks, read_unique_indexes
from refresh_pipeline.masking.coverage import describe_uncovered, find_uncovered, sample_uncovered
from refresh_pipeline.masking.large_objects import large_objects_problem, read_large_objects
from refresh_pipeline.masking.lengths import FIT_ADVICE, masked_lengths_too_long
from refresh_pipeline.masking.policy import MaskingPolicy, load_policy
from refresh_pipeline.masking.validation import find_policy_problems
from refresh_pipeline.notify import webhook_url
from refresh_pipeline.platforms.connections import connect
from refresh_pipeline.platforms.disk_space import missing_room, production_size
from refresh_pipeline.platforms.extensions import (
    plan_extension_versions,
    read_extension_versions,
    unavailable_extensions_problem,
)
from refresh_pipeline.platforms.factory import platform_for
from refresh_pipeline.platforms.local import LocalPlatform
from refresh_pipeline.platforms.restore_privileges import (
    superuser_only_objects,
    superuser_problem,
    untrusted_extensions,
)
from refresh_pipeline.platforms.snapshot_access import snapshot_access_problem
from refresh_pipeline.staging_logins import missing_roles_problem

Log = Callable[[str], None]


@dataclass(frozen=True)
class Validation:
    problems: list[str]  # would stop a refresh: uncovered columns, rules that cannot apply
    warnings: list[str]  # may stop one, depending on the data: unique indexes masking can break


def validate_against_source(config: RefreshConfig, log: Log = lambda _message: None) -> Validation:
    """The policy against production's schema (and values, where masked ones could outgrow their columns:
    each such table is scanned once, read-only, and `log` says so; and a sample of each uncovered column's,
    for the snippet's suggestions)."""
    policy = load_policy(config.policy_path)
    platform = platform_for(config)
    platform.ensure_ready()
    with connect(config.source_dsn, read_only=True) as conn:
        tables = read_tables(conn)
        unique_indexes = read_unique_indexes(conn)
        large_objects = read_large_objects(conn, tables)
        logins = [role for role, _secret in config.aws.staging_logins] if config.aws else []
        missing_logins = missing_roles_problem(conn, logins)
        # The local platform restores one database; an RDS restore brings the whole server.
        databases_problems, databases_warnings = (
            other_databases_findings(conn, config.aws.database_name) if config.aws else ([], [])
        )
        subscriptions = database_subscriptions(conn)
        extensions = read_extension_versions(conn)
        superuser_objects = superuser_only_objects(conn)
        unreadable_by_snapshot = None if config.aws else snapshot_access_problem(conn)
        production_bytes = production_size(conn)
        too_long, unreadable = _masked_lengths_too_long(conn, tables, policy, log)
        check_conflicts = find_check_conflicts(conn, policy, tables)
        uncovered = find_uncovered(policy, tables)
        hints = sample_uncovered(conn, tables, uncovered, log)
    start_up_warnings = []
    missing_extensions = superuser_needed = no_room = None
    version_warnings: list[str] = []
    if config.aws:
        from refresh_pipeline.platforms.aws import AwsPlatform  # boto3 clients only when asked for

        assert isinstance(platform, AwsPlatform)
        start_up_warnings = platform.start_up_risks(subscriptions)
    else:  # an RDS restore brings production's engine; a local one creates each extension on its server
        names = [extension.name for extension in extensions]
        with connect(platform.conninfo("postgres")) as staging_server:
            missing_extensions = unavailable_extensions_problem(staging_server, names)
            version_warnings = plan_extension_versions(staging_server, extensions, names).notes
            needed = superuser_objects + untrusted_extensions(staging_server, names)
            superuser_needed = superuser_problem(staging_server, needed)
            assert isinstance(platform, LocalPlatform)
            if data_dir := platform.staging_data_dir(staging_server):
                no_room = missing_room(data_dir, production_bytes, "is")
    problems = find_policy_problems(policy, tables)
    problems += filter(None, [unreadable_by_snapshot, missing_logins, missing_extensions, superuser_needed, no_room])
    problems += filter(None, [large_objects_problem(policy, large_objects)])
    problems += databases_problems + unreadable + check_conflicts
    if too_long:
        problems.append(
            "masked values would not fit their columns, so the masking would fail: "
            + "; ".join(too_long)
            + f". {FIT_ADVICE}"
        )
    if uncovered:
        problems.append(describe_uncovered(uncovered, policy.source, hints))
    warnings = find_unique_index_risks(policy, tables, unique_indexes) + databases_warnings + start_up_warnings
    warnings += version_warnings + _notify_warnings(config)
    return Validation(problems, warnings)


def check_policy_against(dsn: str, policy_path: Path, log: Log = lambda _message: None) -> Validation:
    """The policy against the schema of any database (a CI database after the application's migrations),
    read-only: every column covered, every rule applicable to its column and to its CHECK constraints, unique
    indexes a rule could break.
    Needs neither a config, a key nor a staging server; reads no more values than the snippet's samples."""
    policy = load_policy(policy_path)
    with connect(dsn, read_only=True) as conn:
        tables = read_tables(conn)
        unique_indexes = read_unique_indexes(conn)
        uncovered = find_uncovered(policy, tables)
        hints = sample_uncovered(conn, tables, uncovered, log)
        check_conflicts = find_check_conflicts(conn, policy, tables)
    problems = find_policy_problems(policy, tables) + check_conflicts
    if uncovered:
        problems.append(describe_uncovered(uncovered, policy.source, hints))
    return Validation(problems, find_unique_index_risks(policy, tables, unique_indexes))


def _notify_warnings(config: RefreshConfig) -> list[str]:
    """A webhook variable unset here: `run` would refuse to start where it is unset too."""
    if config.notify is None or config.notify.webhook_url_env is None:
        return []
    try:
        webhook_url(config.notify)
    except RefreshError as error:
        return [f"{error} `refresh-pipeline run` refuses to start where it is not set (here too)."]
    return []


def _masked_lengths_too_long(
    conn: psycopg.Connection, tables: dict[tuple[str, str], TableInfo], policy: MaskingPolicy, log: Log
) -> tuple[list[str], list[str]]:
    """Columns whose masked values would not fit, and tables production's session cannot read to tell."""
    too_long, unreadable = [], []
    for table in tables.values():
        table_policy = policy.tables.get((table.schema, table.name))
        if table_policy is None:
            continue
        try:
            too_long += masked_lengths_too_long(conn, table, table_policy, log)
        except RefreshError as error:
            unreadable.append(str(error))
    return too_long, unreadable
