"""Where a table's masked rows wait for the swap: one unlogged table per block range, read back through a
view in range order. Sessions filling one shared table interleave their rows (a new page goes to whichever
session asks), so the swapped-in table's physical order, and with it a dump of staging, would change from
run to run; range by range it is the original's order every time."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg
from psycopg import sql

from refresh_pipeline.masking.planner import TableMaskingPlan

STAGING_PREFIX = "masked_rows_"


def staging_name() -> sql.Composed:
    """Masked rows only (never originals); unlogged, as it is scratch dropped after the swap."""
    return sql.SQL("refresh_pipeline.{}").format(sql.Identifier(f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"))


@dataclass(frozen=True)
class RangeStaging:
    """`rows`: the view the swap reads; `tables[i]`: where range i's masked rows go."""

    rows: sql.Composed
    tables: tuple[sql.Composed, ...]


def create_range_staging(conn: psycopg.Connection, plan: TableMaskingPlan, ranges: int) -> RangeStaging:
    """Empty tables shaped like the plan's masked rows, one per range, and the view over them in order."""
    staging = RangeStaging(staging_name(), tuple(staging_name() for _ in range(max(1, ranges))))
    first, *others = staging.tables
    conn.execute(plan.create_staging(first))
    for table in others:
        conn.execute(sql.SQL("CREATE UNLOGGED TABLE {} (LIKE {})").format(table, first))
    union = sql.SQL(" UNION ALL ").join(sql.SQL("SELECT * FROM {}").format(table) for table in staging.tables)
    conn.execute(sql.SQL("CREATE VIEW {} AS {}").format(staging.rows, union))
    return staging


def drop_range_staging(conn: psycopg.Connection, staging: RangeStaging) -> None:
    conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(staging.rows))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.SQL(", ").join(staging.tables)))
