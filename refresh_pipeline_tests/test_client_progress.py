"""Snapshot and restore progress, read from pg_dump's and pg_restore's --verbose lines on a real server."""

import re
from pathlib import Path

import psycopg
import pytest

from refresh_pipeline.config import load_config
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.platforms import client_progress
from refresh_pipeline.platforms.local import LocalPlatform

_FRACTION = re.compile(r"\((\d+)% of [\d,]+ [kM]B ")


def _fractions(lines: list[str]) -> list[int]:
    return [int(_FRACTION.search(line)[1]) for line in lines]


def _tables_and_indexes(conninfo: str) -> tuple[int, int]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM pg_tables WHERE schemaname = 'public'),"
            " (SELECT count(*) FROM pg_indexes WHERE schemaname = 'public')"
            " + (SELECT count(*) FROM pg_constraint WHERE contype = 'f')"
        ).fetchone()


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_snapshot_and_a_restore_log_how_far_they_are(demo_source, write_config, monkeypatch, jobs):
    monkeypatch.setattr(client_progress, "LOG_INTERVAL", 0.0)  # a line per item, not every 10 s
    platform = LocalPlatform(load_config(write_config(demo_source, parallelism=jobs)))
    tables, indexes = _tables_and_indexes(demo_source)

    dumped: list[str] = []
    snapshot = platform.snapshot(dumped.append)
    name = platform.new_database_name()
    restored: list[str] = []
    platform.restore(snapshot, name, restored.append)
    platform.retire(name)

    room, *restored = restored
    assert room.startswith("disk: production was, when "), "first the room the restore has"
    for lines in (dumped, restored):
        fractions = _fractions(lines[:-1])
        assert fractions == sorted(fractions) and fractions[-1] > 50, lines
        assert len(set(fractions)) >= 3, "the rows' share grows table by table, by size"
        assert any("rows ETA" in line for line in lines[:-1])
        assert not any("@" in line for line in lines), "names only, no value"
    assert re.fullmatch(
        rf"snapshot done in [\d.]+ s: rows of {tables} tables \([\d,]+ [kM]B on production's disk\)", dumped[-1]
    )
    assert re.fullmatch(
        rf"restore of {snapshot.snapshot_id} into {name} done in [\d.]+ s: rows of {tables} tables "
        rf"\([\d,]+ kB compressed\), {indexes} indexes and constraints",
        restored[-1],
    )
    built = [int(m[1]) for line in restored if (m := re.search(r"(\d+) of \d+ indexes", line))]
    assert built == sorted(built) and built[0] < indexes, "indexes counted as they are built"


def test_a_failing_restore_reports_its_error_and_not_its_progress(demo_source, write_config):
    platform = LocalPlatform(load_config(write_config(demo_source)))
    snapshot = platform.snapshot()
    for data_file in Path(snapshot.location).glob("*.dat.gz"):
        data_file.write_bytes(b"not a dump")
    lines: list[str] = []

    with pytest.raises(RefreshError) as raised:
        platform.restore(snapshot, platform.new_database_name(), lines.append)

    message = str(raised.value)
    assert "pg_restore: error: " in message, message
    assert "item" not in message and "creating" not in message, "progress lines are not the error"
    assert not any(" done: " in line for line in lines), "a failed restore is not reported done"
    assert platform.list_managed() == []


def test_lines_of_parallel_jobs_that_lost_their_prefix_still_count(demo_source):
    """Parallel pg_dump jobs write "pg_dump: " and their message apart: two prefixes can pile up on one line
    and the other job's message stand alone on the next."""
    lines: list[str] = []
    with psycopg.connect(demo_source) as production:
        progress = client_progress.DumpProgress(production, "snapshot", 2, lines.append)
    progress.line("pg_dump: pg_dump: finished item 3421 TABLE DATA bookings")
    progress.line("finished item 3422 TABLE DATA payments")
    progress.finished()
    assert lines[-1].startswith("snapshot done in ") and ": rows of 2 tables (" in lines[-1]
