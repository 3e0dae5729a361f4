"""Masks one table of a restored database in one transaction, exactly once."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources

import psycopg
from psycopg import sql

from refresh_pipeline.chunked import (
    BLOCKS_PER_RANGE,
    Connect,
    Progress,
    partition_block_ranges,
    raise_work_mem,
    run_ranges,
)
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.masking.catalog import TableInfo, count_rows, read_tables
from refresh_pipeline.masking.constraints import constraint_violations_explained
from refresh_pipeline.masking.keys import MASKING_PURPOSE, MaskingKey
from refresh_pipeline.masking.lengths import FIT_ADVICE, too_long_for_their_columns
from refresh_pipeline.masking.patterns import install_pii_pattern
from refresh_pipeline.masking.planner import TableMaskingPlan, plan_table_masking
from refresh_pipeline.masking.policy import MaskingPolicy, TablePolicy
from refresh_pipeline.masking.rewrite import NOT_REFERENCED, PROGRESS_PREFIX, rewrite_blocker, rewrite_table
from refresh_pipeline.masking.session_key import share_key
from refresh_pipeline.masking.staging import STAGING_PREFIX, StagedRanges, create_range_staging, drop_range_staging
from refresh_pipeline.masking.swap import compact, lock_for_swap, replace_rows
from refresh_pipeline.masking.validation import find_policy_problems, find_unmatched_json_paths

Log = Callable[[str], None]


@dataclass(frozen=True)
class TableMaskingResult:
    table: str
    status: str  # "masked", "already_masked" or "kept"
    rows: int
    rules: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def masked_columns(self) -> list[str]:
        return [name for name, rule in self.rules.items() if rule != "keep"]


def install_functions(conn: psycopg.Connection) -> None:
    """Create or refresh the refresh_pipeline schema's functions and bookkeeping tables (idempotent)."""
    script = resources.files("refresh_pipeline.masking").joinpath("functions.sql").read_text()
    with conn.transaction():
        # Parallel steps may all install at once; CREATE OR REPLACE of one function is not concurrency-safe.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('refresh_pipeline.install_functions'))")
        install_pii_pattern(conn)
        conn.execute(script)


def require_trigger_control(conn: psycopg.Connection) -> None:
    """Refuse, before anything is masked, a role that cannot turn the database's triggers off for a swap
    (session_replication_role): a superuser, an RDS master user (rds_superuser) or a role granted it can."""
    try:
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
    except psycopg.errors.InsufficientPrivilege:
        role = conn.execute("SELECT current_user").fetchone()[0]
        raise RefreshError(
            f"{role} may not set session_replication_role, which masking needs to swap masked rows in with the "
            f"database's triggers off. Connect as a superuser (on RDS: the master user), or on PostgreSQL 15+ "
            f"run as a superuser: GRANT SET ON PARAMETER session_replication_role TO {role}"
        ) from None


def functions_installed(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regproc('refresh_pipeline.mask_jsonb') IS NOT NULL").fetchone()[0]


def _table_info(conn: psycopg.Connection, policy: MaskingPolicy, table_policy: TablePolicy) -> TableInfo:
    tables = read_tables(conn)
    key = (table_policy.schema, table_policy.table)
    single = MaskingPolicy(tables={key: table_policy}, source=policy.source)
    problems = find_policy_problems(single, tables) or find_unmatched_json_paths(conn, single, tables)
    if problems:
        raise RefreshError("the masking policy cannot be applied:\n  " + "\n  ".join(problems))
    return tables[key]


_ALWAYS_FIRING = """
WITH tree AS (SELECT relid FROM pg_partition_tree(to_regclass(%(table)s)) UNION SELECT to_regclass(%(table)s))
SELECT 'TRIGGER', t.tgrelid::regclass::text, t.tgname FROM pg_trigger t
 WHERE t.tgenabled = 'A' AND NOT t.tgisinternal AND t.tgrelid IN (SELECT relid FROM tree)
UNION ALL
SELECT 'RULE', r.ev_class::regclass::text, r.rulename FROM pg_rewrite r
 WHERE r.ev_enabled = 'A' AND r.ev_class IN (SELECT relid FROM tree)
"""


def _disable_always_firing(conn: psycopg.Connection, info: TableInfo) -> list[tuple[str, str, str]]:
    """Triggers and rules marked ENABLE ALWAYS fire even in replica mode (an ALWAYS rule copying inserted
    rows elsewhere would add the swap's rows there); switch them off for this transaction."""
    always = conn.execute(_ALWAYS_FIRING, {"table": info.ident.as_string(conn)}).fetchall()
    for kind, table, name in always:
        conn.execute(
            sql.SQL("ALTER TABLE {} DISABLE {} {}").format(sql.SQL(table), sql.SQL(kind), sql.Identifier(name))
        )
    return always


def _enable_always_firing(conn: psycopg.Connection, always: list[tuple[str, str, str]]) -> None:
    for kind, table, name in always:
        conn.execute(
            sql.SQL("ALTER TABLE {} ENABLE ALWAYS {} {}").format(sql.SQL(table), sql.SQL(kind), sql.Identifier(name))
        )


_LEFTOVER_KINDS = {"v": "VIEW", "r": "TABLE", "S": "SEQUENCE"}  # views first: they read the tables


def drop_leftover_staging(conn: psycopg.Connection) -> list[str]:
    """Staging tables and views (masked rows only) and rewrite progress sequences a killed masking step left
    behind."""
    leftovers = conn.execute(
        "SELECT c.relname, c.relkind FROM pg_class c WHERE c.relnamespace = 'refresh_pipeline'::regnamespace"
        " AND (c.relkind IN ('r', 'v') AND c.relname LIKE %s OR c.relkind = 'S' AND c.relname LIKE %s)"
        " ORDER BY c.relkind = 'v' DESC, c.relname",
        (_like_prefix(STAGING_PREFIX), _like_prefix(PROGRESS_PREFIX)),
    ).fetchall()
    for name, kind in leftovers:
        drop = sql.SQL(_LEFTOVER_KINDS[kind])
        conn.execute(sql.SQL("DROP {} IF EXISTS refresh_pipeline.{}").format(drop, sql.Identifier(name)))
    return [name for name, _ in leftovers]


def _like_prefix(prefix: str) -> str:
    return prefix.replace("_", "\\_") + "%"


def _marker(conn: psycopg.Connection, info: TableInfo) -> tuple[str, int] | None:
    return conn.execute(
        "SELECT policy_digest, rows_masked FROM refresh_pipeline.masked_tables WHERE table_name = %s",
        (info.qualified_name,),
    ).fetchone()


def _refuse_other_rules(info: TableInfo, marker: tuple[str, int], digest: str) -> None:
    if marker[0] != digest:
        raise RefreshError(
            f"{info.qualified_name} was already masked under different rules on this database; masking it "
            "again would mask masked values. Re-run from restored_instance to start from a fresh copy."
        )


def _masked_meanwhile(conn: psycopg.Connection, info: TableInfo, digest: str) -> int | None:
    """In the masking transaction, once it holds the table locked: the rows of the marker another run
    recorded meanwhile (refused if under other rules), or None."""
    marker = _marker(conn, info)
    if marker is None:
        return None
    _refuse_other_rules(info, marker, digest)
    return int(marker[1])


def _record_marker(conn: psycopg.Connection, info: TableInfo, digest: str, rows: int) -> None:
    conn.execute(
        "INSERT INTO refresh_pipeline.masked_tables (table_name, policy_digest, rows_masked) VALUES (%s, %s, %s)",
        (info.qualified_name, digest, rows),
    )


def _claim(conn: psycopg.Connection, info: TableInfo, digest: str, rows: int) -> int | None:
    """Record the marker in the rewrite's transaction, unless another run masked the table meanwhile."""
    if (other_run := _masked_meanwhile(conn, info, digest)) is not None:
        return other_run
    _record_marker(conn, info, digest, rows)
    return None


def mask_table(
    conn: psycopg.Connection,
    policy: MaskingPolicy,
    table_name: str,
    key: MaskingKey,
    log: Log = lambda _message: None,
    connect: Connect | None = None,
    workers: int = 1,
    blocks_per_range: int = BLOCKS_PER_RANGE,
) -> TableMaskingResult:
    """Mask `table_name` in place per the policy; a table already masked under the same rules is left alone.

    Masked rows are computed block range by block range into a staging table, on `workers` sessions
    from `connect` (on `conn` alone without it), with progress and ETA logged. They are then swapped in
    with one transaction with the database's own triggers off (session_replication_role = replica), so
    audit triggers do not copy originals anywhere and foreign keys are not re-checked row by row while a
    key column changes; the integrity checks validate them afterwards.
    """
    if not conn.autocommit:
        raise ValueError("mask_table needs an autocommit connection: it commits each table on its own")
    started = time.monotonic()
    table_policy = policy.table(table_name)
    if not functions_installed(conn):
        install_functions(conn)
    info = _table_info(conn, policy, table_policy)
    plan = plan_table_masking(info, table_policy)
    if table_policy.keep_all or not plan.masked_columns:
        return TableMaskingResult(
            info.qualified_name, "kept", count_rows(conn, info), plan.rules, time.monotonic() - started
        )

    digest = table_policy.digest()
    marker = _marker(conn, info)
    if marker is not None:
        _refuse_other_rules(info, marker, digest)
        log(f"{info.qualified_name}: already masked under these rules; nothing to do")
        return TableMaskingResult(
            info.qualified_name, "already_masked", int(marker[1]), plan.rules, time.monotonic() - started
        )

    with constraint_violations_explained(conn, info, table_policy):
        rewritten = _mask_by_rewrite(conn, info, plan, key, digest, log, connect)
    if rewritten is not None:
        return dataclasses.replace(rewritten, seconds=time.monotonic() - started)

    ranges = partition_block_ranges(conn, info, blocks_per_range)
    log(
        f"{info.qualified_name}: masking columns {', '.join(plan.masked_columns)} "
        f"in {len(ranges)} block range(s) on {min(workers, len(ranges)) if connect else 1} session(s)"
    )
    share_key(conn, key, MASKING_PURPOSE)
    staging = create_range_staging(conn, plan, ranges)
    try:
        progress = Progress(f"{info.qualified_name}: masking", sum(r.blocks for r in ranges), log)

        def fill(session: psycopg.Connection, group: StagedRanges) -> int:
            with session.transaction():
                share_key(session, key, MASKING_PURPOSE)
                # Phone lookups hash the value map (200k phones at S=1, 17 MB): in the default 4 MB the
                # join spills every range's wide rows to disk (S=1 payments range: 4.9 -> 4.3 s).
                raise_work_mem(session)
                return sum(
                    session.execute(plan.fill_staging(group.table, r.condition(), r.partition)).rowcount
                    for r in group.ranges
                )

        copied = run_ranges(staging.groups, fill, conn, connect, workers, progress)
        try:
            with constraint_violations_explained(conn, info, table_policy):
                result = _swap_in(conn, info, plan, staging.rows, copied, digest, log)
        except psycopg.errors.StringDataRightTruncation:
            if too_long := too_long_for_their_columns(conn, info, plan.masked_columns, staging.rows):
                raise RefreshError(
                    "masked values do not fit their columns, so nothing was changed: "
                    + "; ".join(too_long)
                    + f". {FIT_ADVICE}"
                ) from None
            raise
    finally:
        drop_range_staging(conn, staging)
    seconds = time.monotonic() - started
    if result is not None:
        log(f"{info.qualified_name}: already masked by another run meanwhile; nothing changed")
        return TableMaskingResult(info.qualified_name, "already_masked", result, plan.rules, seconds)
    log(f"{info.qualified_name}: masked {copied:,} rows in {seconds:.1f} s ({copied / max(seconds, 1e-6):,.0f} rows/s)")
    return TableMaskingResult(info.qualified_name, "masked", copied, plan.rules, seconds)


def _mask_by_rewrite(
    conn: psycopg.Connection,
    info: TableInfo,
    plan: TableMaskingPlan,
    key: MaskingKey,
    digest: str,
    log: Log,
    connect: Connect | None,
) -> TableMaskingResult | None:
    """A table other tables point at, masked with one rewrite (rewrite.py); None when it is not."""
    blocker = rewrite_blocker(conn, info, plan)
    if blocker is not None:
        if blocker != NOT_REFERENCED:
            log(f"{info.qualified_name}: not rewritten ({blocker})")
        return None
    started = time.monotonic()
    rewritten = rewrite_table(conn, info, plan, key, lambda rows: _claim(conn, info, digest, rows), log, connect)
    if rewritten is None:
        return None
    if rewritten.status == "masked":
        seconds = time.monotonic() - started
        log(f"{info.qualified_name}: masked {rewritten.rows:,} rows in one rewrite in {seconds:.1f} s")
    else:
        log(f"{info.qualified_name}: already masked by another run meanwhile; nothing changed")
    return TableMaskingResult(info.qualified_name, rewritten.status, rewritten.rows, plan.rules)


def _swap_in(
    conn: psycopg.Connection,
    info: TableInfo,
    plan: TableMaskingPlan,
    staging: sql.Composable,
    copied: int,
    digest: str,
    log: Log,
) -> int | None:
    """Replace the table's rows with the staged masked rows and record the marker, in one transaction.
    Returns the marker's row count instead when another run masked the table meanwhile."""
    swap_started = time.monotonic()
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        unvalidated = lock_for_swap(conn, info)
        if (other_run := _masked_meanwhile(conn, info, digest)) is not None:
            return other_run
        always = _disable_always_firing(conn, info)
        replaced = replace_rows(conn, info, plan.target, plan.insert_rows(staging), unvalidated, log)
        _enable_always_firing(conn, always)
        if not copied == replaced.removed == replaced.inserted:
            raise RefreshError(
                f"{info.qualified_name}: row counts differ while masking (computed {copied}, removed "
                f"{replaced.removed}, inserted {replaced.inserted}); the table changed meanwhile, so nothing was "
                "changed."
            )
        _record_marker(conn, info, digest, replaced.inserted)
        swap_xid = conn.execute("SELECT pg_current_xact_id()::xid::text").fetchone()[0]
    log(f"{info.qualified_name}: swapped {replaced.inserted:,} masked rows in {time.monotonic() - swap_started:.1f} s")
    if replaced.compact:
        compact(conn, info, swap_xid, log)
    return None
