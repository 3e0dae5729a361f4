"""Reads the restored database's PII once, before anything is masked: keyed audit fingerprints and value-map
candidates. Tokens are collected column by column (JSON by block range) on a pool of sessions into a scratch table,
then each distinct token is fingerprinted and mapped once (in shares, on the same pool), and the value-map
conflicts are resolved."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from refresh_pipeline.audit.fingerprints import (
    fingerprint_coordinates,
    fingerprint_locations,
    fingerprint_tokens,
    fingerprint_whole_values,
    index_fingerprints,
    start_fingerprints,
)
from refresh_pipeline.chunked import (
    BLOCKS_PER_RANGE,
    Connect,
    Progress,
    pooled_sessions,
    raise_work_mem,
    run_ranges,
    token_share_column,
)
from refresh_pipeline.column_work import ColumnRange, text_column_work
from refresh_pipeline.masking.catalog import TableInfo, with_pii_numbers
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.policy import MaskingPolicy
from refresh_pipeline.masking.value_map import (
    add_value_map_candidates,
    collect_original_tokens,
    resolve_value_maps,
    start_value_maps,
)

Log = Callable[[str], None]
# Plaintext tokens, on the restored database only (which holds production data until masked anyway):
# unlogged, dropped before record_originals returns, also on failure, and again before promotion.
SCRATCH_TABLE = "original_tokens"
SCRATCH = sql.SQL("refresh_pipeline.{}").format(sql.Identifier(SCRATCH_TABLE))


@dataclass(frozen=True)
class OriginalsRecorded:
    fingerprints: int
    values_mapped: dict[str, int]


def drop_scratch_tokens(conn: psycopg.Connection) -> None:
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(SCRATCH))


def _share(share: int) -> sql.Composed:
    """The distinct tokens of one share."""
    return sql.SQL("(SELECT DISTINCT kind, token FROM {} WHERE share = {})").format(SCRATCH, sql.Literal(share))


def record_originals(
    conn: psycopg.Connection,
    tables: list[TableInfo],
    policy: MaskingPolicy,
    key: MaskingKey,
    connect: Connect | None = None,
    workers: int = 1,
    log: Log = lambda _message: None,
    blocks_per_range: int = BLOCKS_PER_RANGE,
) -> OriginalsRecorded:
    """Record fingerprints and value-map candidates of every production token; sessions from `connect`
    (up to `workers`) share the work, or `conn` does it alone."""
    tables = [with_pii_numbers(table, policy) for table in tables]
    start_fingerprints(conn)
    start_value_maps(conn)
    drop_scratch_tokens(conn)
    shares = pooled_sessions(connect, workers)  # one share per session
    conn.execute(
        sql.SQL("CREATE UNLOGGED TABLE {} (kind text NOT NULL, token text NOT NULL, {})").format(
            SCRATCH, token_share_column(shares)
        )
    )
    try:
        work = sorted(
            (item for table in tables for item in text_column_work(conn, table, blocks_per_range)),
            key=lambda item: -item.cost,
        )
        reading = Progress("reading production PII", sum(item.cost for item in work), log, unit="tokens")

        def read(session: psycopg.Connection, item: ColumnRange) -> int:
            condition, source = item.block_range.condition(), item.block_range.partition
            columns = frozenset({item.column.name})
            with session.transaction():
                tokens = collect_original_tokens(
                    session, [item.table], policy, condition=condition, columns=columns, into=SCRATCH, source=source
                )
            fingerprint_whole_values(
                session, [item.table], policy, key, condition=condition, columns=columns, source=source
            )
            return tokens

        def digest(session: psycopg.Connection, share: int) -> int:
            # The share's distinct tokens, read from the scratch table once for both uses.
            distinct = sql.Identifier(f"share_tokens_{share}")
            with session.transaction():
                raise_work_mem(session)
                session.execute(
                    sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT * FROM {} AS share").format(
                        distinct, _share(share)
                    )
                )
                fingerprint_tokens(session, key, source=distinct)
                add_value_map_candidates(session, key, source=distinct)
            return 1

        run_ranges(work, read, conn, connect, workers, reading)
        with conn.transaction():
            fingerprint_locations(conn, tables, policy, key)
            fingerprint_coordinates(conn, tables, policy, key)
        conn.execute(sql.SQL("ANALYZE {}").format(SCRATCH))
        started = time.monotonic()
        log(f"fingerprinting and mapping each distinct token once, on {shares} session(s)")
        run_ranges(list(range(shares)), digest, conn, connect, workers)
        log(f"each distinct token fingerprinted and mapped once in {time.monotonic() - started:.1f} s")
    finally:
        drop_scratch_tokens(conn)
    # Indexing the fingerprints runs beside the value maps' conflict resolution (~2 s each at S=1): nothing
    # else runs during the restore, so one after the other left a core idle.
    fingerprints: list[int] = []
    values_mapped: list[dict[str, int]] = []

    def finish(session: psycopg.Connection, task: str) -> int:
        if task == "fingerprints":
            fingerprints.append(index_fingerprints(session))
        else:
            values_mapped.append(resolve_value_maps(session, key, connect, workers))
        return 0

    started = time.monotonic()
    log("indexing the fingerprints and resolving value-map conflicts")
    run_ranges(["value maps", "fingerprints"], finish, conn, connect, workers)
    log(
        f"{fingerprints[0]:,} distinct fingerprints indexed and "
        + ", ".join(f"{count:,} {kind}s mapped" for kind, count in values_mapped[0].items())
        + f" in {time.monotonic() - started:.1f} s"
    )
    return OriginalsRecorded(fingerprints[0], values_mapped[0])
