"""One refresh at a time. A second one started beside the first would restore into the same state file and
its retire step would drop the database the first is masking: `refresh-pipeline run` refuses instead, naming
what is running. Runs the Dagster UI or daemon launches wait in Dagster's queue (one at a time, see
execution.py's dagster.yaml)."""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES

from refresh_pipeline.errors import RefreshError

# On runs `refresh-pipeline run` starts: which process runs them (host, boot, pid), so that one killed can be told
# from one alive, also after a reboot gave its pid to another process.
RUN_PROCESS_TAG = "refresh_pipeline/process"
LOCK_FILE = "refresh.lock"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def this_process() -> str:
    boot = _BOOT_ID.read_text().strip() if _BOOT_ID.is_file() else "-"
    return f"{socket.gethostname()}|{boot}|{os.getpid()}"


@contextmanager
def only_refresh(work_dir: Path, instance: dg.DagsterInstance) -> Iterator[dict[str, str]]:
    """Hold this work dir's refresh lock while the block runs; yields the tags to put on the run. Refuses when
    another `refresh-pipeline run` holds the lock or another run is in progress in the Dagster instance; a run
    left 'started' by a process of this machine that no longer exists (killed) is marked failed first."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with (work_dir / LOCK_FILE).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RefreshError(
                f"another refresh with work dir {work_dir} is running on this machine; wait for it to finish."
            ) from None
        try:
            _refuse_runs_in_progress(instance)
            yield {RUN_PROCESS_TAG: this_process()}
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _refuse_runs_in_progress(instance: dg.DagsterInstance) -> None:
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=list(IN_PROGRESS_RUN_STATUSES))):
        if _process_gone(run.tags.get(RUN_PROCESS_TAG)):
            instance.report_run_failed(
                run, message="the refresh-pipeline process running it ended without finishing it (killed?)"
            )
            continue
        raise RefreshError(
            f"run {run.run_id} of {run.job_name} is {run.status.value.lower()} in this Dagster instance "
            f"({instance.root_directory or 'its storage'}): a refresh started now would work on the same "
            "databases. Wait for it to finish, or, if nothing runs it any more, terminate it in the Dagster UI "
            "(Runs tab)."
        )


def _process_gone(process: str | None) -> bool:
    """Whether the tagged process ran on this machine and is no longer there."""
    if process is None or process.count("|") != 2:
        return False
    host, boot, pid = process.split("|")
    here_host, here_boot, _pid = this_process().split("|")
    if host != here_host or not pid.isdigit():
        return False
    if boot != here_boot:
        return True  # the machine restarted since
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
