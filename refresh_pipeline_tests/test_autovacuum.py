"""Autovacuum is paused on the restored tables during the refresh and given back as production had it."""

from collections.abc import Iterator

import psycopg
import pytest

from refresh_pipeline.autovacuum import pause_autovacuum, resume_autovacuum
from refresh_pipeline.masking.runner import install_functions

SCHEMA = """
CREATE TABLE riders (id int PRIMARY KEY, email text);
CREATE TABLE archive (id int) WITH (autovacuum_enabled = false, fillfactor = 90);
CREATE TABLE events (id int, at date) PARTITION BY RANGE (at);
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
"""


def _options(conn: psycopg.Connection) -> dict[str, list[str] | None]:
    rows = conn.execute(
        "SELECT relname, reloptions FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')"
    ).fetchall()
    return dict(rows)


@pytest.fixture
def restored(create_database) -> Iterator[psycopg.Connection]:
    with psycopg.connect(create_database("autovacuum"), autocommit=True) as conn:
        conn.execute(SCHEMA)
        install_functions(conn)
        yield conn


def test_paused_during_the_refresh_and_resumed_exactly_as_production_had_it(restored):
    production = _options(restored)

    paused = pause_autovacuum(restored)
    during = _options(restored)
    resumed = resume_autovacuum(restored)
    after = _options(restored)
    leftover = restored.execute("SELECT to_regclass('refresh_pipeline.autovacuum_paused')").fetchone()[0]

    assert paused == resumed == ["public.events_2026", "public.riders"]
    assert during["riders"] == during["events_2026"] == ["autovacuum_enabled=false"]
    assert during["archive"] == production["archive"], "a production choice is left alone"
    assert after == production
    assert leftover is None


def test_resume_without_a_pause_changes_nothing(restored):
    before = _options(restored)
    assert resume_autovacuum(restored) == []
    assert _options(restored) == before
