"""One refresh at a time: `refresh-pipeline run` refuses beside a running one, and a run left 'started' by a
killed process does not block the next one forever. Real runs, a real Dagster instance."""

import fcntl
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from refresh_pipeline.cli import main
from refresh_pipeline.config import load_config
from refresh_pipeline.definitions import build_definitions
from refresh_pipeline.execution import prepare_dagster_home
from refresh_pipeline.run_guard import LOCK_FILE, RUN_PROCESS_TAG, this_process
from refresh_pipeline.schedules import WEEKLY_REFRESH_JOB

UNREACHABLE_SOURCE = "postgresql://nobody@127.0.0.1:1/never_contacted"


def _instance(config: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(prepare_dagster_home(config)))


def _started_run(config: Path, tags: dict[str, str]) -> str:
    """A run recorded as started, as one whose process is still at work (or was killed) leaves it."""
    job = build_definitions(config).resolve_job_def(WEEKLY_REFRESH_JOB)
    with _instance(config) as instance:
        return instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED, tags=tags).run_id


def _dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(finished.stdout)


def test_a_second_run_beside_a_running_one_is_refused(write_config, capsys):
    config = write_config(UNREACHABLE_SOURCE)
    work_dir = load_config(config).work_dir
    work_dir.mkdir(parents=True)
    with (work_dir / LOCK_FILE).open("a") as held:  # what a running `refresh-pipeline run` holds
        fcntl.flock(held, fcntl.LOCK_EX)
        assert main(["run", "--config", str(config), "--in-process"]) == 2

    assert f"another refresh with work dir {work_dir} is running on this machine" in capsys.readouterr().err
    with _instance(config) as instance:
        assert instance.get_runs() == [], "nothing was started"


def test_a_run_in_progress_in_the_dagster_instance_is_named_and_nothing_starts(write_config, capsys):
    config = write_config(UNREACHABLE_SOURCE)
    launched_by_the_daemon = _started_run(config, {})

    assert main(["run", "--config", str(config), "--in-process"]) == 2

    err = capsys.readouterr().err
    assert f"run {launched_by_the_daemon} of {WEEKLY_REFRESH_JOB} is started in this Dagster instance" in err
    assert "terminate it in the Dagster UI" in err
    with _instance(config) as instance:
        assert len(instance.get_runs()) == 1


@pytest.mark.parametrize("killed", ["pid", "reboot"])
def test_a_run_left_started_by_a_killed_process_is_marked_failed_and_the_refresh_goes_on(write_config, killed):
    config = write_config(UNREACHABLE_SOURCE)
    host, boot, pid = this_process().split("|")
    process = f"{host}|{boot}|{_dead_pid()}" if killed == "pid" else f"{host}|another-boot|{pid}"
    stale = _started_run(config, {RUN_PROCESS_TAG: process})
    alive = _started_run(config, {RUN_PROCESS_TAG: this_process()})
    with _instance(config) as instance:
        instance.report_run_failed(instance.get_run_by_id(alive))  # only the stale one is in progress now

    assert main(["run", "--config", str(config), "--in-process"]) == 1, "it ran (and failed on the source)"

    with _instance(config) as instance:
        assert instance.get_run_by_id(stale).status == dg.DagsterRunStatus.FAILURE
        messages = [entry.message for entry in instance.all_logs(stale)]
        assert any("ended without finishing it (killed?)" in message for message in messages)
        (new_run,) = [run for run in instance.get_runs() if run.run_id not in (stale, alive)]
        assert new_run.tags[RUN_PROCESS_TAG] == this_process()
        assert new_run.status == dg.DagsterRunStatus.FAILURE


def test_runs_launched_from_the_ui_or_the_daemon_wait_for_the_one_in_progress(write_config):
    with _instance(write_config(UNREACHABLE_SOURCE)) as instance:
        assert instance.run_coordinator.get_run_queue_config().max_concurrent_runs == 1
