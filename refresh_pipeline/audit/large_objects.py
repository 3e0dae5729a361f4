"""The audit of the large objects a database holds (kept by `large_objects: keep`, or left by a failed
removal): the first AUDITED_BYTES of each, scanned like a kept bytea column, every detector on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from refresh_pipeline.audit.scan import ColumnFindings, scan_table
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.masking.catalog import AUDITED_BYTES, ColumnInfo, TableInfo
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.large_objects import count_large_objects

_HEADS = TableInfo(
    schema="refresh_pipeline_audit",
    name="large_object_heads",
    partitioned=False,
    columns=(ColumnInfo("head", "bytea", "bytea", False, True, False, False, None),),
)


@dataclass(frozen=True)
class LargeObjectAudit:
    large_objects: int
    findings: ColumnFindings | None  # counts per detector; its locations are large object oids
    seconds: float

    @property
    def passed(self) -> bool:
        return self.findings is None


def scan_large_objects(
    conn: psycopg.Connection, key: MaskingKey, allowlist: tuple[str, ...], log: Callable[[str], None]
) -> LargeObjectAudit:
    """Copy the head of every large object into a scratch table, scan it, and drop it again."""
    count = count_large_objects(conn)
    if not count:
        return LargeObjectAudit(0, None, 0.0)
    log(f"reading the first {AUDITED_BYTES // 1024} KB of {count} large object(s)")
    try:
        conn.execute(
            sql.SQL(
                "CREATE UNLOGGED TABLE {} AS SELECT oid AS large_object, lo_get(oid, 0, {}) AS head "
                "FROM pg_largeobject_metadata"
            ).format(_HEADS.ident, sql.Literal(AUDITED_BYTES))
        )
    except psycopg.errors.InsufficientPrivilege:
        raise RefreshError(
            "cannot read the database's large objects to audit them: the connecting role does not own them. "
            "Connect as their owner or a superuser, set `lo_compat_privileges = on`, or remove them "
            "(`large_objects: remove`)."
        ) from None
    try:
        audit = scan_table(conn, _HEADS, key, kept_columns={"head"}, allowlist=allowlist, log=log)
        findings = audit.findings[0] if audit.findings else None
        if findings is not None:
            oids = conn.execute(
                sql.SQL(
                    "SELECT array_agg(large_object::text ORDER BY large_object) FROM {} WHERE ctid = ANY(%s::tid[])"
                ).format(_HEADS.ident),
                (list(findings.locations),),
            ).fetchone()[0]
            findings = ColumnFindings("large objects", findings.known_values, findings.patterns, tuple(oids or ()))
    finally:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_HEADS.ident))
    return LargeObjectAudit(count, findings, audit.seconds)
