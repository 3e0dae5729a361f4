"""The Dagster definitions: they load, every table has its asset and blocking check, the schedule is weekly."""

import datetime as dt
import os
import re
import subprocess
import sys

import dagster as dg
import pytest

from refresh_pipeline.assets.keys import NO_PII_CHECK, POLICY_COVERAGE_CHECK
from refresh_pipeline.assets.masked_tables import build_masked_table_assets
from refresh_pipeline.config import load_config
from refresh_pipeline.definitions import build_definitions, cached_definitions
from refresh_pipeline.masking.policy import load_policy, parse_policy
from refresh_pipeline.schedules import WEEKLY_REFRESH_JOB, multiprocess_run_config


@pytest.fixture
def config_path(write_config, pg_server):
    return write_config(pg_server.dsn("unused"), schedule={"timezone": "Asia/Kolkata"})


def test_definitions_load_and_the_weekly_job_resolves(config_path):
    defs = build_definitions(config_path)
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def(WEEKLY_REFRESH_JOB)
    assert "staging_database" in job.graph.node_dict
    assert "retired_staging" in job.graph.node_dict


def test_one_masked_asset_and_one_blocking_check_per_policy_table(config_path):
    defs = build_definitions(config_path)
    policy = load_policy(load_config(config_path).policy_path)
    asset_keys = {key for assets in defs.assets for key in assets.keys}
    masked = {key for key in asset_keys if key.path[0] == "masked"}
    assert {key.path[1] for key in masked} == {table for _, table in policy.tables}

    checks = [spec for checks_def in defs.asset_checks for spec in checks_def.check_specs]
    assert all(spec.blocking for spec in checks)
    assert {spec.asset_key for spec in checks if spec.name == NO_PII_CHECK} == masked
    assert {spec.asset_key for spec in checks if spec.name == POLICY_COVERAGE_CHECK} == {
        dg.AssetKey("restored_instance")
    }
    # `dagster definitions validate` does not catch a check aimed at a missing asset.
    assert {spec.asset_key for spec in checks} <= asset_keys


def test_lineage_runs_snapshot_restore_masked_tables_masked_database_staging_retire(config_path):
    defs = build_definitions(config_path)
    graph = defs.resolve_asset_graph()
    customers = dg.AssetKey(["masked", "customers"])
    assert graph.get(customers).parent_keys == {dg.AssetKey("restored_instance")}
    assert graph.get(dg.AssetKey("restored_instance")).parent_keys == {dg.AssetKey("production_snapshot")}
    assert customers in graph.get(dg.AssetKey("masked_database")).parent_keys
    assert graph.get(dg.AssetKey("staging_database")).parent_keys == {dg.AssetKey("masked_database")}
    assert graph.get(dg.AssetKey("retired_staging")).parent_keys == {dg.AssetKey("staging_database")}


def test_schedule_fires_sunday_two_am_in_the_configured_timezone(config_path):
    defs = build_definitions(config_path)
    schedule = defs.resolve_schedule_def("weekly_refresh_schedule")
    assert schedule.cron_schedule == "0 2 * * 0"
    assert schedule.execution_timezone == "Asia/Kolkata"
    assert schedule.job_name == WEEKLY_REFRESH_JOB
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 11, 29, 2, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    )
    data = schedule.evaluate_tick(context)
    assert data.run_requests and len(data.run_requests) == 1


def test_masking_key_comes_from_the_environment_not_the_config(config_path):
    resource = build_definitions(config_path).resources["refresh"]
    assert isinstance(resource.masking_key, dg.EnvVar)
    assert resource.masking_key.env_var_name == "REFRESH_MASKING_KEY"


def test_the_heaviest_tables_masking_and_audit_steps_are_started_first(config_path):
    job = build_definitions(config_path).resolve_job_def(WEEKLY_REFRESH_JOB)
    priority = {
        name: int(node.definition.tags.get("dagster/priority", 0))
        for name, node in job.graph.node_dict.items()
        if name.startswith("masked__")
    }
    # Demo policy: payments has JSON paths, support_tickets free text, customers seven columns, bookings one.
    masks = sorted((name for name in priority if not name.endswith(NO_PII_CHECK)), key=lambda name: -priority[name])
    assert masks[:4] == ["masked__payments", "masked__support_tickets", "masked__customers", "masked__bookings"]
    assert priority["masked__routes"] == 0
    assert priority[f"masked__payments_{NO_PII_CHECK}"] == priority["masked__payments"]


def _after_the_preload(step_code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `step_code` in a fresh interpreter once it imported what the forkserver preloads, as a step does."""
    preload = multiprocess_run_config(2)["execution"]["config"]["multiprocess"]["start_method"]["forkserver"]
    probe = (
        f"import importlib\nfor name in {preload['preload_modules']!r}: importlib.import_module(name)\n"
    ) + step_code
    return subprocess.run([sys.executable, "-c", probe], env={**os.environ, **env}, capture_output=True, text=True)


def test_step_processes_start_with_dagster_storage_already_imported(tmp_path):
    """The forkserver preloads what a step process imports to open the instance; a step that had to
    import sqlalchemy and alembic again cost ~0.5 s of CPU, two dozen times per refresh."""
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    result = _after_the_preload(
        "import sys\n"
        "before = set(sys.modules)\n"
        "import dagster as dg\n"
        "with dg.DagsterInstance.get() as instance: instance.get_runs(limit=1)\n"
        "print(sorted({m.split('.')[0] for m in set(sys.modules) - before}))\n",
        DAGSTER_HOME=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    imported = result.stdout
    for heavy in ("sqlalchemy", "alembic", "rich"):
        assert f"'{heavy}'" not in imported, imported


def test_definitions_are_reused_until_the_config_or_the_policy_changes(config_path, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  routes: keep\n")
    config = config_path.parent / "cached.yaml"
    config.write_text(config_path.read_text().replace(str(load_config(config_path).policy_path), str(policy)))

    first = cached_definitions(config)
    assert cached_definitions(config) is first
    policy.write_text("tables:\n  routes: keep\n  stops: keep\n")
    second = cached_definitions(config)
    assert second is not first
    assert dg.AssetKey(["masked", "stops"]) in {spec.key for spec in second.resolve_all_asset_specs()}
    config.write_text(config.read_text() + "\n")
    assert cached_definitions(config) is not second


def test_step_processes_inherit_the_job_built_by_the_forkserver(config_path):
    """Building the definitions costs ~5 ms per table; a step forked after the preload does not rebuild them."""
    result = _after_the_preload(
        "import refresh_pipeline.definitions as definitions\n"
        "def rebuilt(*args): raise SystemExit('the step rebuilt the definitions')\n"
        "definitions.build_definitions = rebuilt\n"
        "from refresh_pipeline.execution import weekly_refresh_job\n"
        "print(len(weekly_refresh_job().graph.node_dict))\n",
        REFRESH_PIPELINE_CONFIG=str(config_path),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) > 10


def test_every_table_name_gets_an_asset_name_dagster_takes_and_no_two_tables_share_one():
    long_name = "passenger_feedback_responses_collected_by_the_mobile_app_v2"  # 60 characters
    policy = parse_policy(
        f"tables:\n  customers: keep\n  Sales.Customer Accounts: keep\n  Sales.Customer-Accounts: keep\n"
        f"  Sales.Customer_Accounts: keep\n  {long_name}: keep\n  {long_name[:-1]}3: keep\n"
        "  a__b: keep\n  a.b: keep\n  x__y.z: keep\n  x.y__z: keep\n"
    )
    assets = build_masked_table_assets(policy)  # Dagster refuses a bad name right here
    names = [key.path[-1] for asset in assets for key in asset.keys]
    assert len(set(names)) == len(names) == 10
    assert all(re.fullmatch(r"[A-Za-z0-9_]{1,50}", name) for name in names), names
    assert {"customers", "Sales__Customer_Accounts", "a__b"} <= set(names), "names Dagster takes stay as they are"
    assert sum(name.startswith("a__b_") for name in names) == 1, "public.a__b is told apart from a.b"
