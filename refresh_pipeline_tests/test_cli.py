"""The `refresh-pipeline` command as a user runs it."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql

from refresh_pipeline.cli import main
from refresh_pipeline_tests.helpers import data_dump, free_port, leaked_identifiers, production_identifiers

CLI = [sys.executable, "-m", "refresh_pipeline.cli"]
DEMO_POLICY = Path(__file__).parents[1] / "refresh_pipeline" / "demo" / "policy.yaml"


def test_run_then_status_reports_the_promoted_database(demo_source, write_config, capsys):
    config = write_config(demo_source)

    assert main(["run", "--config", str(config), "--in-process"]) == 0
    capsys.readouterr()
    assert main(["status", "--config", str(config), "--json"]) == 0

    status = json.loads(capsys.readouterr().out)
    assert status["staging_database"].startswith("t")
    assert f"dbname={status['staging_database']}" in status["staging_dsn"]
    assert status["promoted_at"]
    assert status["managed_databases"] == [status["staging_database"]]
    with psycopg.connect(status["staging_dsn"]) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] > 0


def test_status_tells_monitoring_when_staging_is_stale(demo_source, write_config, capsys):
    config = write_config(demo_source)
    status = ["status", "--config", str(config), "--max-age-days", "8"]
    assert main(status) == 1
    assert "staging is not fresh: nothing is promoted" in capsys.readouterr().err

    assert main(["run", "--config", str(config), "--in-process"]) == 0
    assert main(status) == 0
    state_file = config.parent / "work" / "state.json"
    state = json.loads(state_file.read_text())
    promoted = state["promoted"]["database"]
    state["promoted"]["promoted_at"] = (datetime.now(UTC) - timedelta(days=10)).isoformat()
    state_file.write_text(json.dumps(state))
    capsys.readouterr()

    assert main([*status, "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["staging_database"] == promoted
    assert f"staging is 10.0 days old, more than 8: no refresh has promoted since {promoted}" in captured.err

    del state["promoted"]  # read on another machine: the restore time its name holds
    state_file.write_text(json.dumps(state))
    assert main([*status, "--json"]) == 0
    restored_at = datetime.fromisoformat(json.loads(capsys.readouterr().out)["staging_restored_at"])
    assert timedelta(0) <= datetime.now(UTC) - restored_at < timedelta(minutes=10)
    assert main([*status[:-1], "0"]) == 2


def test_failed_refresh_exits_non_zero_and_names_the_failed_check(demo_source, write_config, tmp_path, capsys):
    leaky = tmp_path / "leaky.yaml"
    leaky.write_text(DEMO_POLICY.read_text().replace("body: scrub", "body: keep"))
    config = write_config(demo_source, policy=leaky)

    assert main(["run", "--config", str(config), "--in-process"]) == 1

    err = capsys.readouterr().err
    assert "failed check: masked/support_tickets:no_pii_left" in err
    assert "staging was not changed" in err


def test_failed_step_is_printed_with_its_reason(demo_source, write_config, tmp_path, capsys):
    too_long = tmp_path / "too_long.yaml"
    too_long.write_text(
        DEMO_POLICY.read_text().replace('card_last4: {transform: redact, value: "XXXX"}', "card_last4: upi")
    )
    config = write_config(demo_source, policy=too_long)

    assert main(["run", "--config", str(config), "--in-process"]) == 1

    err = capsys.readouterr().err
    assert "failed step: masked__payments: masked values do not fit their columns" in err
    assert "public.payments.card_last4:" in err and "longer than its 4 characters (up to 10)" in err


def test_a_failure_after_promotion_says_staging_was_promoted(demo_source, write_config, pg_server, capsys):
    config = write_config(demo_source)
    assert main(["run", "--config", str(config), "--in-process"]) == 0
    capsys.readouterr()
    first = json.loads((config.parent / "work" / "state.json").read_text())["promoted"]["database"]
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        # A template database cannot be dropped: retiring it fails after the new one is promoted.
        conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(sql.Identifier(first)))
        try:
            assert main(["run", "--config", str(config), "--in-process"]) == 1
        finally:
            conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(sql.Identifier(first)))

    err = capsys.readouterr().err
    second = json.loads((config.parent / "work" / "state.json").read_text())["promoted"]["database"]
    assert second != first
    assert "failed step: retired_staging: " in err and "cannot drop a template database" in err
    assert f"staging was promoted to {second} before that." in err and "not changed" not in err


def test_user_errors_print_a_message_not_a_traceback(tmp_path):
    result = subprocess.run([*CLI, "run", "--config", str(tmp_path / "missing.yaml")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "config file not found" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("key", "message"), [(None, "the masking key is not set"), ("short", "is 5 characters long")])
def test_run_without_a_usable_masking_key_says_so_before_starting(write_config, monkeypatch, capsys, key, message):
    config = write_config("postgresql://nobody@127.0.0.1:1/never_contacted")
    if key is None:
        monkeypatch.delenv("REFRESH_MASKING_KEY")
    else:
        monkeypatch.setenv("REFRESH_MASKING_KEY", key)

    assert main(["run", "--config", str(config)]) == 2

    err = capsys.readouterr().err
    assert message in err and "REFRESH_MASKING_KEY" in err
    assert "Traceback" not in err and (key is None or key not in err.replace("REFRESH_MASKING_KEY", ""))
    assert not (config.parent / "work" / "dagster_home").exists()  # no run was started


def test_validate_reports_uncovered_production_columns(demo_source, write_config, tmp_path, capsys):
    partial = tmp_path / "partial.yaml"
    partial.write_text(DEMO_POLICY.read_text().replace("    created_at: keep\n\n  bookings:", "\n  bookings:"))
    config = write_config(demo_source, policy=partial)

    assert main(["validate", "--config", str(config)]) == 1
    assert "public.customers.created_at" in capsys.readouterr().err
    assert main(["validate", "--config", str(write_config(demo_source))]) == 0


def test_run_with_parallel_steps_from_the_console(demo_source, write_config):
    config = write_config(demo_source)
    env = {**os.environ, "REFRESH_MASKING_KEY": "console-test-key-0123456789"}

    result = subprocess.run([*CLI, "run", "--config", str(config)], capture_output=True, text=True, env=env)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "refresh succeeded" in result.stdout
    status = json.loads(
        subprocess.run(
            [*CLI, "status", "--config", str(config), "--json"], capture_output=True, text=True, check=True
        ).stdout
    )
    emails, local_parts, phones = production_identifiers(demo_source)
    assert leaked_identifiers(data_dump(status["staging_dsn"]), emails, local_parts, phones) == {
        "emails": set(),
        "local_parts": set(),
        "phones": set(),
    }


def test_demo_builds_everything_from_nothing(test_root):
    work_dir = test_root / "demo_work"
    env = {k: v for k, v in os.environ.items() if k != "REFRESH_MASKING_KEY"}
    port = free_port()

    result = subprocess.run(
        [*CLI, "demo", "--work-dir", str(work_dir), "--port", str(port), "--scale", "0.002", "--in-process"],
        capture_output=True,
        text=True,
        env=env,
    )
    try:
        assert result.returncode == 0, result.stderr[-3000:]
        assert "throwaway random masking key" in result.stdout
        assert f"PGSERVICEFILE={work_dir}/pg_service.conf psql service=staging" in result.stdout
        staging = subprocess.run(
            ["psql", "service=staging", "-Atc", "SELECT count(*) FROM customers"],
            env={"PGSERVICEFILE": str(work_dir / "pg_service.conf"), "PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
            check=True,
        )
        assert int(staging.stdout) == 400
    finally:
        subprocess.run([*CLI, "server", "stop", "--config", str(work_dir / "demo.yaml")], capture_output=True)


def test_one_table_rematerialized_with_the_dagster_cli_is_not_masked_twice(demo_source, write_config, capsys):
    config = write_config(demo_source)
    assert main(["run", "--config", str(config), "--in-process"]) == 0
    work_dir = Path(yaml.safe_load(config.read_text())["work_dir"])
    env = {
        **os.environ,
        "REFRESH_PIPELINE_CONFIG": str(config),
        "DAGSTER_HOME": str(work_dir / "dagster_home"),
    }
    dagster = Path(sys.executable).with_name("dagster")

    result = subprocess.run(
        [str(dagster), "asset", "materialize", "-m", "refresh_pipeline.definitions", "--select", "masked/customers",
         "--config-json", json.dumps({"execution": {"config": {"in_process": {}}}})],
        capture_output=True, text=True, env=env, cwd=work_dir,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    assert "public.customers: already masked under these rules; nothing to do" in result.stderr
    assert "ASSET_CHECK_EVALUATION - Asset check 'no_pii_left' on 'masked/customers' passed" in result.stderr


def test_check_policy_fails_a_ci_build_on_a_migrated_schema_without_config_key_or_server(create_database, tmp_path):
    ci_database = create_database("ci_app")
    with psycopg.connect(ci_database, autocommit=True) as conn:  # the application's migrations, no rows
        conn.execute("CREATE TABLE riders (id bigint PRIMARY KEY, email text, joined date)")
    policy = tmp_path / "masking_policy.yaml"
    policy.write_text("version: 1\ntables:\n  riders:\n    id: keep\n    email: email\n    joined: keep\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFRESH_")}

    def check() -> subprocess.CompletedProcess[str]:
        command = [*CLI, "check-policy", "--policy", str(policy), "--dsn", ci_database]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)

    passed = check()
    assert passed.returncode == 0, passed.stderr
    assert "the policy covers every column of the database" in passed.stdout

    with psycopg.connect(ci_database, autocommit=True) as conn:  # a new migration
        conn.execute("ALTER TABLE riders ADD COLUMN mobile_no varchar(16)")
    uncovered = check()
    assert uncovered.returncode == 1
    assert "public.riders.mobile_no" in uncovered.stderr and "mobile_no: phone  # REVIEW" in uncovered.stderr

    policy.write_text(policy.read_text() + "    mobile_no: phone\n    typo_column: keep\n")
    wrong = check()
    assert wrong.returncode == 1 and "typo_column" in wrong.stderr, "a rule for a column that does not exist"

    with psycopg.connect(ci_database) as conn:
        schemas = {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace")}
    assert "refresh_pipeline" not in schemas, "read-only: nothing of ours is installed"
    assert not (tmp_path / ".work").exists()


def test_a_reader_that_stops_reading_ends_the_command_without_a_traceback(demo_source, write_config):
    """`refresh-pipeline status | head -1` printed a BrokenPipeError traceback and exited 1."""
    command = [sys.executable, "-m", "refresh_pipeline.cli", "status", "--config", str(write_config(demo_source))]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # before it prints: Python takes longer than this to start
    errors = process.stderr.read().decode()
    assert process.wait() == 141, errors
    assert errors == ""


def test_a_broken_pipe_that_is_not_stdout_is_reported_not_swallowed(monkeypatch):
    """A webhook's socket closing mid-send is a BrokenPipeError too: an error, not a reader gone."""
    from refresh_pipeline import cli

    def broken(_args) -> int:
        raise BrokenPipeError("the webhook's server closed the connection")

    monkeypatch.setattr(cli, "_cmd_status", broken)
    with pytest.raises(BrokenPipeError, match="webhook"):
        main(["status"])
