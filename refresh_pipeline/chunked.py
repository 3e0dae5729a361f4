"""Work on a big table in block ranges, spread over a pool of sessions, with progress (rows/s, ETA) logged."""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg import sql

from refresh_pipeline.masking.catalog import TableInfo, leaf_partitions

Log = Callable[[str], None]
T = TypeVar("T")
Connect = Callable[[], psycopg.Connection]
# ~20 MB of heap per range: a few seconds of masking, so progress is logged every few seconds.
BLOCKS_PER_RANGE = 2500
MAX_RANGES = 64


def raise_work_mem(session: psycopg.Connection) -> None:
    """For the rest of the session's transaction: de-duplicating a million values, or hashing the 1.7M
    original fingerprints at S=1, needs more than the default 4 MB to stay off disk (a spilled hash
    aggregate or join costs ~2x)."""
    session.execute("SET LOCAL work_mem = '256MB'")


@dataclass(frozen=True)
class BlockRange:
    """Heap blocks [start, end) of one table; `end` None means to the end, so nothing is ever left out."""

    start: int
    end: int | None
    blocks: int  # for progress: this range's share of the table
    partition: sql.Composable | None = None  # `ONLY <partition>` the blocks are of (partition_block_ranges)

    @property
    def work(self) -> float:
        return self.blocks

    def condition(self) -> sql.Composable:
        """A TID range scan reads only these blocks."""
        lower = sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({self.start},0)"))
        if self.end is None:
            return lower
        return sql.SQL("{} AND ctid < {}::tid").format(lower, sql.Literal(f"({self.end},0)"))


def block_ranges(
    conn: psycopg.Connection, table: TableInfo, blocks_per_range: int = BLOCKS_PER_RANGE
) -> list[BlockRange]:
    """Split the table into ranges of about `blocks_per_range` heap blocks (one range for a partitioned
    table: its rows live in its partitions)."""
    if table.partitioned:
        return [BlockRange(0, None, 1)]
    blocks = conn.execute(
        "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int",
        (table.ident.as_string(conn),),
    ).fetchone()[0]
    count = max(1, min(MAX_RANGES, math.ceil(blocks / blocks_per_range)))
    size = math.ceil(blocks / count) if blocks else 1
    ranges = [BlockRange(i * size, (i + 1) * size, size) for i in range(count - 1)]
    last_start = (count - 1) * size
    return [*ranges, BlockRange(last_start, None, max(1, blocks - last_start))]


def partition_block_ranges(
    conn: psycopg.Connection, table: TableInfo, blocks_per_range: int = BLOCKS_PER_RANGE
) -> list[BlockRange]:
    """A partitioned table's block ranges, partition by partition, each naming its partition (to be read
    instead of the table), so that several sessions share its rows as they share a plain table's; a plain
    table's block_ranges otherwise."""
    partitions = leaf_partitions(conn, table) if table.partitioned else []
    if not partitions:
        return block_ranges(conn, table, blocks_per_range)
    return [
        dataclasses.replace(block_range, partition=sql.SQL("ONLY {}").format(partition.ident))
        for partition in partitions
        for block_range in block_ranges(conn, partition, blocks_per_range)
    ]


class Progress:
    """Thread-safe progress of one long operation, logged at most every `interval` seconds and at the end."""

    def __init__(self, label: str, total: float, log: Log, interval: float = 3.0, unit: str = "rows") -> None:
        """`total`: the work to do, in the units items report it in (blocks, estimated cost, rows)."""
        self.label = label
        self.unit = unit
        self.total = max(1.0, total)
        self.log = log
        self.interval = interval
        self.rows = 0
        self.done = 0.0
        self.started = time.monotonic()
        self._last_log = self.started
        self._lock = threading.Lock()

    def add(self, rows: int, work: float) -> None:
        with self._lock:
            self.rows += rows
            self.done += work
            now = time.monotonic()
            # The items' work adds up to the total in another order than it was summed: rounding may leave
            # the last item a hair short of it.
            finished = math.isclose(self.done, self.total, rel_tol=1e-9) or self.done > self.total
            if not finished and now - self._last_log < self.interval:
                return
            self._last_log = now
            self.log(self.describe(now))

    def describe(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        done = min(1.0, self.done / self.total)
        eta = elapsed * (1 - done) / done if done else float("nan")
        return (
            f"{self.label}: {self.rows:,} {self.unit} ({done:.0%}), {self.rows / elapsed:,.0f} {self.unit}/s, "
            f"{elapsed:.1f} s elapsed, ETA {eta:.0f} s"
        )


def pooled_sessions(connect: Connect | None, workers: int) -> int:
    """How many sessions run_ranges works on: `workers` from `connect`, or the caller's one alone."""
    return max(1, workers) if connect is not None else 1


def run_ranges(
    items: Sequence[T],
    work: Callable[[psycopg.Connection, T], int],
    conn: psycopg.Connection,
    connect: Connect | None = None,
    workers: int = 1,
    progress: Progress | None = None,
) -> int:
    """Run `work` (returning rows handled) on every item: on up to `workers` sessions of their own from
    `connect`, or one after the other on `conn` when there is no pool to use. With `progress`, items
    must say how much `work` they are. Returns the rows handled.

    The first failure stops the pool from starting more items and is raised once running ones end.
    """
    if pooled_sessions(connect, workers) == 1 or len(items) <= 1:
        total = 0
        for item in items:
            rows = work(conn, item)
            if progress is not None:
                progress.add(rows, item.work)
            total += rows
        return total
    local = threading.local()
    sessions: list[psycopg.Connection] = []
    sessions_lock = threading.Lock()
    failed = threading.Event()

    def session() -> psycopg.Connection:
        if not hasattr(local, "conn"):
            local.conn = connect()
            # The pool is the parallelism: a parallel plan per session would oversubscribe the server.
            local.conn.execute("SET max_parallel_workers_per_gather = 0")
            with sessions_lock:
                sessions.append(local.conn)
        return local.conn

    def one(item: T) -> int:
        if failed.is_set():
            return 0
        try:
            rows = work(session(), item)
        except BaseException:
            failed.set()
            raise
        if progress is not None:
            progress.add(rows, item.work)
        return rows

    try:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
            return sum(pool.map(one, items))
    finally:
        for pooled in sessions:
            pooled.close()


def token_share_column(shares: int) -> sql.Composed:
    """A scratch table's column saying which of `shares` sessions digests a row: a token always falls in the
    same share, so shares never overlap. Stored, so that ANALYZE tells the planner how many rows a share
    holds (the same expression in a WHERE clause was estimated at 0.5% of them, and sorted instead of hashed:
    3x slower). bigint: abs() of the smallest int4 hash would overflow."""
    # A UPI handle falls in the share of its value-map key (its local part), which one share maps once.
    return sql.SQL(
        "share int GENERATED ALWAYS AS (abs(hashtext(CASE WHEN kind = 'upi'"
        " THEN coalesce(refresh_pipeline.upi_map_key(token), token) ELSE token END)::bigint) % {}) STORED"
    ).format(sql.Literal(max(1, shares)))
