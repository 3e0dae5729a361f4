"""The text, JSON and array columns of a table as items of work for a pool of sessions (reading the PII of
production, auditing a masked table), each with an estimate of its cost from the planner's statistics."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from refresh_pipeline.chunked import BLOCKS_PER_RANGE, BlockRange, block_ranges, partition_block_ranges
from refresh_pipeline.masking.catalog import ColumnInfo, TableInfo

# A plain column whose values are mostly distinct gains nothing from being handled whole (few repeats to
# fold), and as one statement it was the longest item of payments' audit (upi_handle: 8.5 s at S=1).
MOSTLY_DISTINCT = 0.5
# Costs are in bytes of text to tokenise. Fitted to the demo at S=1 (a whole column of 1M short emails took
# 2.8x as long as a range of 77k JSON documents of 141 bytes): tokenising a value costs as much as 64 more
# bytes of it (the call, the tokens it returns), reading and de-duplicating a row as much as 32.
VALUE_OVERHEAD = 64
ROW_OVERHEAD = 32
# Without statistics (a table rewritten since its ANALYZE): values are assumed distinct and this wide, and
# a block to hold this many rows.
DEFAULT_WIDTH = 32
DEFAULT_ROWS_PER_BLOCK = 50

_TABLE_SIZE = """
SELECT greatest(c.reltuples, 0), pg_relation_size(c.oid) / current_setting('block_size')::int
FROM pg_class c WHERE c.oid = %(table)s::regclass
"""
_COLUMN_STATS = """
SELECT s.attname, s.avg_width, s.null_frac,
       CASE WHEN s.n_distinct < 0 THEN -s.n_distinct ELSE s.n_distinct / greatest(%(rows)s, 1) END
FROM pg_stats s WHERE s.schemaname = %(schema)s AND s.tablename = %(name)s AND s.inherited = %(partitioned)s
"""


@dataclass(frozen=True)
class ColumnStats:
    width: float  # average bytes of a value
    non_null: float  # share of rows holding a value
    distinct: float  # distinct values as a share of the rows

    @property
    def value_cost(self) -> float:
        return self.width + VALUE_OVERHEAD


UNKNOWN = ColumnStats(DEFAULT_WIDTH, 1.0, 1.0)


@dataclass(frozen=True)
class ColumnRange:
    """One column of one table, over one block range, and what reading it is estimated to cost."""

    table: TableInfo
    column: ColumnInfo
    block_range: BlockRange
    cost: float = 1.0  # for progress and for ordering: bytes of text to tokenise, or as costly

    @property
    def work(self) -> float:
        return self.cost


def _statistics(conn: psycopg.Connection, table: TableInfo) -> tuple[float, int, dict[str, ColumnStats]]:
    """Rows and heap blocks of the table, and the statistics ANALYZE left of its columns."""
    rows, blocks = conn.execute(_TABLE_SIZE, {"table": table.ident.as_string(conn)}).fetchone()
    params = {"schema": table.schema, "name": table.name, "rows": rows, "partitioned": table.partitioned}
    stats = {
        name: ColumnStats(float(width), 1.0 - float(null_frac), min(1.0, float(distinct)))
        for name, width, null_frac, distinct in conn.execute(_COLUMN_STATS, params).fetchall()
    }
    return float(rows), int(blocks), stats


def text_column_work(
    conn: psycopg.Connection, table: TableInfo, blocks_per_range: int = BLOCKS_PER_RANGE
) -> list[ColumnRange]:
    """Every text, JSON and array column of the table as work items: plain columns whole (so that each
    repeated value is handled once) unless their values are mostly distinct; those and JSON columns (rarely
    repeated, the most expensive to tokenise) in block ranges (of a partitioned table, its partitions' ranges,
    each naming the partition to read). Costliest first, so a pool working through
    them ends about together, and progress counts cost, not blocks: a whole column of short repeated values
    spans every block of the table yet costs less than one range of JSON documents."""
    ranges = partition_block_ranges(conn, table, blocks_per_range)
    whole = BlockRange(0, None, sum(r.blocks for r in ranges))
    rows, blocks, stats = _statistics(conn, table)
    if table.partitioned:  # no blocks of its own: its partitions' ranges count them
        blocks = whole.blocks
    if not rows:
        rows = blocks * DEFAULT_ROWS_PER_BLOCK
    rows_per_block = rows / blocks if blocks else rows

    def in_ranges(column: ColumnInfo) -> bool:
        known = stats.get(column.name)
        return len(ranges) > 1 and (column.is_json or (known is not None and known.distinct > MOSTLY_DISTINCT))

    def cost(column: ColumnInfo, block_range: BlockRange) -> float:
        column_stats = stats.get(column.name, UNKNOWN)
        range_rows = rows_per_block * block_range.blocks
        # JSON documents are read value by value; other columns each distinct value once.
        values = range_rows * column_stats.non_null * (1.0 if column.is_json else column_stats.distinct)
        return max(1.0, range_rows * ROW_OVERHEAD + values * column_stats.value_cost)

    work = [
        ColumnRange(table, column, block_range, cost(column, block_range))
        for column in table.columns
        if column.holds_text
        for block_range in (ranges if in_ranges(column) else [whole])
    ]
    return sorted(work, key=lambda item: -item.cost)


# A kept number is compared with the phone range before anything else: far cheaper than tokenising a value.
NUMBER_VALUE_COST = 8


@dataclass(frozen=True)
class ProbeRange:
    """Several columns of one table read in one scan over one block range by one kind of probe (the caller's
    name for it: kept numbers, locations, coordinates)."""

    kind: str
    columns: tuple[ColumnInfo, ...]
    block_range: BlockRange
    cost: float = 1.0  # in the units of text_column_work's costs

    @property
    def work(self) -> float:
        return self.cost


def probe_work(
    conn: psycopg.Connection,
    table: TableInfo,
    kind: str,
    columns: list[ColumnInfo],
    hashed: bool,
    blocks_per_range: int = BLOCKS_PER_RANGE,
) -> list[ProbeRange]:
    """`columns` read together by the `kind` of probe, block range by block range (a kept vehicle-position
    table holds millions of locations), costed like text_column_work's items: a `hashed` value (a location)
    as a token, any other (a number, mostly only compared) far less."""
    if not columns:
        return []
    rows, blocks, stats = _statistics(conn, table)
    if not rows:
        rows = blocks * DEFAULT_ROWS_PER_BLOCK
    rows_per_block = rows / blocks if blocks else rows

    def value_cost(column: ColumnInfo) -> float:
        column_stats = stats.get(column.name, UNKNOWN)
        return column_stats.non_null * (column_stats.value_cost if hashed else NUMBER_VALUE_COST)

    per_row = ROW_OVERHEAD + sum(value_cost(column) for column in columns)
    return [
        ProbeRange(kind, tuple(columns), block_range, max(1.0, rows_per_block * block_range.blocks * per_row))
        for block_range in block_ranges(conn, table, blocks_per_range)
    ]
