"""The config file: defaults, relative paths, and clear errors."""

import dagster as dg
import pytest

from refresh_pipeline.config import load_config
from refresh_pipeline.errors import RefreshError


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "refresh.yaml"
    path.write_text("source_dsn: postgresql://localhost/prod\npolicy: policy.yaml\nwork_dir: ../work\n")

    config = load_config(path)

    assert config.policy_path == tmp_path / "conf" / "policy.yaml"
    assert config.work_dir == tmp_path / "work"
    assert (config.parallelism, config.schedule_cron, config.schedule_timezone) == (2, "0 2 * * 0", "UTC")
    assert config.masking_key_env == "REFRESH_MASKING_KEY"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("policy: p.yaml\n", "missing required setting 'source_dsn'"),
        ("source_dsn: x\npolicy: p.yaml\nparallelism: 0\n", "'parallelism' must be a whole number of at least 1"),
        ("source_dsn: x\npolicy: p.yaml\nplatfrom: aws\n", "unknown setting(s) platfrom"),
        ("source_dsn: x\npolicy: p.yaml\nplatform: mainframe\n", "platform must be one of"),
        ("source_dsn: x\npolicy: p.yaml\ndatabase_prefix: Staging-\n", "database_prefix must be"),
        ("- a\n- b\n", "expected a mapping"),
        ("source_dsn: x\npolicy: p.yaml\nschedule: {cron: 'bad cron'}\n", "schedule.cron 'bad cron' is not a cron"),
        ("source_dsn: x\npolicy: p.yaml\nschedule: {cron: '0 2 31 2 *'}\n", "is not a cron expression Dagster reads"),
        ("source_dsn: x\npolicy: p.yaml\nschedule: {cron: '0 2 * * 0', timezone: IST}\n", "schedule.timezone 'IST'"),
        ("source_dsn: x\npolicy: p.yaml\nschedule: {timezone: Mars/Base}\n", "is not a time zone name"),
        ("source_dsn: x\npolicy: p.yaml\nschedule: {crontab: '0 2 * * 0'}\n", "unknown schedule setting(s) crontab"),
        ("source_dsn: x\npolicy: p.yaml\nschedule: weekly\n", "schedule must be a mapping"),
        ("source_dsn: x\npolicy: p.yaml\nlocal: {port: abc}\n", "local.port must be a port number"),
        ("source_dsn: x\npolicy: p.yaml\nlocal: {prot: 5432}\n", "unknown local setting(s) prot"),
        ("source_dsn: x\npolicy: p.yaml\nlocal: [5432]\n", "local must be a mapping"),
        ("source_dsn: x\npolicy: p.yaml\nmasking_key_env: ''\n", "'masking_key_env' must name an environment variable"),
    ],
)
def test_bad_config_is_refused_with_a_reason(tmp_path, text, expected):
    path = tmp_path / "refresh.yaml"
    path.write_text(text)
    with pytest.raises(RefreshError, match=None) as error:
        load_config(path)
    assert expected in str(error.value)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(RefreshError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_a_schedule_the_config_accepts_is_one_dagster_builds(tmp_path):
    from refresh_pipeline.schedules import build_weekly_schedule

    path = tmp_path / "refresh.yaml"
    path.write_text("source_dsn: x\npolicy: p.yaml\nschedule: {cron: '30 1 ? * sun', timezone: Asia/Kolkata}\n")

    config = load_config(path)

    schedule = build_weekly_schedule(config, dg.define_asset_job("weekly_refresh_job"))
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 1 ? * sun", "Asia/Kolkata")
