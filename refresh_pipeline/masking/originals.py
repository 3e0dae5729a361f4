"""Reads the restored database's PII once, before anything is masked: keyed audit fingerprints and value-map
candidates, block range by block range on a pool of sessions, then the value-map conflicts resolved."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from refresh_pipeline.audit.fingerprints import create_fingerprint_table, fingerprint_tokens, fingerprint_whole_values
from refresh_pipeline.chunked import BLOCKS_PER_RANGE, BlockRange, Connect, Progress, block_ranges, run_ranges
from refresh_pipeline.masking.catalog import TableInfo
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.policy import MaskingPolicy
from refresh_pipeline.masking.value_map import (
    add_value_map_candidates,
    collect_original_tokens,
    create_token_table,
    drop_token_table,
    resolve_value_maps,
    start_value_maps,
)

Log = Callable[[str], None]


@dataclass(frozen=True)
class _Item:
    table: TableInfo
    columns: frozenset[str]
    block_range: BlockRange

    @property
    def weight(self) -> int:
        return self.block_range.blocks


@dataclass(frozen=True)
class OriginalsRecorded:
    fingerprints: int
    values_mapped: dict[str, int]


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
    """Each block range is read in one transaction whose temporary token table is dropped at commit, so no
    plaintext outlives it; several sessions (from `connect`) may add fingerprints and candidates at once."""
    create_fingerprint_table(conn)
    start_value_maps(conn)
    # Plain columns are read whole, so each repeated value is tokenised once; JSON documents (rarely
    # repeated, and the most expensive to tokenise) are read in block ranges, spread over the pool.
    work = []
    for table in tables:
        ranges = block_ranges(conn, table, blocks_per_range)
        whole = BlockRange(0, None, sum(r.blocks for r in ranges))
        work += [
            _Item(table, frozenset({column.name}), block_range)
            for column in table.columns
            if column.holds_text
            for block_range in (ranges if column.is_json else [whole])
        ]
    work.sort(key=lambda item: -item.weight)  # biggest first: the pool ends about together
    progress = Progress("reading production PII", sum(item.weight for item in work), log, unit="tokens")

    def read(session: psycopg.Connection, item: _Item) -> int:
        condition = item.block_range.condition()
        # Kept for the session rather than dropped at commit: the inserts below commit one by one, as one
        # transaction holding many new keys could deadlock with another session's.
        create_token_table(session, drop_at_commit=False)
        try:
            with session.transaction():
                tokens = collect_original_tokens(
                    session, [item.table], policy, condition=condition, columns=item.columns
                )
            fingerprint_tokens(session, key)
            fingerprint_whole_values(session, [item.table], policy, key, condition=condition, columns=item.columns)
            add_value_map_candidates(session, key)
        finally:
            drop_token_table(session)
        return tokens

    if connect is None or workers <= 1:
        for item in work:
            progress.add(read(conn, item), item.weight)
    else:
        run_ranges(work, read, progress, connect, workers, blocks=lambda item: item.weight)
    fingerprints = conn.execute("SELECT count(*) FROM refresh_pipeline_audit.original_fingerprints").fetchone()[0]
    return OriginalsRecorded(fingerprints, resolve_value_maps(conn, key))
