"""Where a table's masked rows wait for the swap: one unlogged table per block range (past
MAX_STAGING_TABLES ranges, per run of consecutive ones, filled one after the other), read back through a view
in range order. Sessions filling one shared table interleave their rows (a new page goes to whichever session
asks), so the swapped-in table's physical order, and with it a dump of staging, would change from run to run;
range by range it is the original's order every time."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg
from psycopg import sql

from refresh_pipeline.chunked import BlockRange
from refresh_pipeline.masking.planner import TableMaskingPlan

STAGING_PREFIX = "masked_rows_"


def staging_name() -> sql.Composed:
    """Masked rows only (never originals); unlogged, as it is scratch dropped after the swap."""
    return sql.SQL("refresh_pipeline.{}").format(sql.Identifier(f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"))


# A view over more tables would take a lock on each in the swap's transaction (a table of thousands of
# partitions has thousands of ranges): consecutive ranges then share a table, filled one after the other.
MAX_STAGING_TABLES = 64


@dataclass(frozen=True)
class StagedRanges:
    """Consecutive block ranges whose masked rows go into one staging table, one range after the other (by one
    session, so in their order)."""

    ranges: tuple[BlockRange, ...]
    table: sql.Composed

    @property
    def work(self) -> float:
        return sum(block_range.work for block_range in self.ranges)


@dataclass(frozen=True)
class RangeStaging:
    """`rows`: the view the swap reads, over the groups' tables in range order."""

    rows: sql.Composed
    groups: tuple[StagedRanges, ...]


def group_ranges(ranges: list[BlockRange], most: int) -> list[tuple[BlockRange, ...]]:
    """The ranges in at most `most` runs of consecutive ones, of about equal blocks."""
    if len(ranges) <= most:
        return [(block_range,) for block_range in ranges]
    target = sum(block_range.blocks for block_range in ranges) / most
    groups: list[tuple[BlockRange, ...]] = []
    current: list[BlockRange] = []
    blocks = 0
    for block_range in ranges:
        current.append(block_range)
        blocks += block_range.blocks
        if blocks >= target and len(groups) < most - 1:
            groups.append(tuple(current))
            current, blocks = [], 0
    if current:
        groups.append(tuple(current))
    return groups


def create_range_staging(conn: psycopg.Connection, plan: TableMaskingPlan, ranges: list[BlockRange]) -> RangeStaging:
    """Empty tables shaped like the plan's masked rows, one per group of ranges, and the view over them in
    order."""
    groups = group_ranges(ranges, MAX_STAGING_TABLES) or [()]
    staging = RangeStaging(staging_name(), tuple(StagedRanges(group, staging_name()) for group in groups))
    first, *others = (group.table for group in staging.groups)
    conn.execute(plan.create_staging(first))
    for table in others:
        conn.execute(sql.SQL("CREATE UNLOGGED TABLE {} (LIKE {})").format(table, first))
    union = sql.SQL(" UNION ALL ").join(sql.SQL("SELECT * FROM {}").format(group.table) for group in staging.groups)
    conn.execute(sql.SQL("CREATE VIEW {} AS {}").format(staging.rows, union))
    return staging


def drop_range_staging(conn: psycopg.Connection, staging: RangeStaging) -> None:
    conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(staging.rows))
    tables = sql.SQL(", ").join(group.table for group in staging.groups)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(tables))
