"""Keyed fingerprints of the original PII tokens, recorded on the restored database before masking."""

from __future__ import annotations

import psycopg
from psycopg import sql

from refresh_pipeline.masking.catalog import TableInfo
from refresh_pipeline.masking.keys import AUDIT_PURPOSE, MaskingKey

AUDIT_SCHEMA = "refresh_pipeline_audit"

_CREATE = """
CREATE SCHEMA IF NOT EXISTS refresh_pipeline_audit;
CREATE TABLE IF NOT EXISTS refresh_pipeline_audit.original_fingerprints (
    fingerprint bytea PRIMARY KEY,
    kind text NOT NULL
);
"""


def token_fingerprint_sql(value: sql.Composable) -> sql.Composed:
    """HMAC of a token under the audit key: the only form in which originals are kept."""
    return sql.SQL("refresh_pipeline.hmac({key}, {value})").format(key=sql.Placeholder("audit_key"), value=value)


def record_original_fingerprints(conn: psycopg.Connection, tables: list[TableInfo], key: MaskingKey) -> int:
    """Fingerprint every email, phone and UPI token in every text-holding column of `tables`.

    Runs before any masking, over all columns (kept ones too), so an original that survives anywhere
    is found by the audit. Returns how many distinct fingerprints are stored.
    """
    with conn.transaction():
        conn.execute(_CREATE)
        for table in tables:
            for column in table.columns:
                if not column.holds_text:
                    continue
                conn.execute(
                    sql.SQL(
                        "INSERT INTO refresh_pipeline_audit.original_fingerprints (fingerprint, kind) "
                        "SELECT DISTINCT {fingerprint}, tok.kind FROM {schema}.{table} AS src, "
                        "LATERAL refresh_pipeline.pii_tokens(src.{column}::text) AS tok "
                        "WHERE src.{column} IS NOT NULL ON CONFLICT DO NOTHING"
                    ).format(
                        fingerprint=token_fingerprint_sql(sql.SQL("tok.kind || ':' || tok.token")),
                        schema=sql.Identifier(table.schema),
                        table=sql.Identifier(table.name),
                        column=sql.Identifier(column.name),
                    ),
                    {"audit_key": key.sql_pads(AUDIT_PURPOSE)},
                )
        return conn.execute("SELECT count(*) FROM refresh_pipeline_audit.original_fingerprints").fetchone()[0]


def fingerprints_present(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regclass('refresh_pipeline_audit.original_fingerprints') IS NOT NULL").fetchone()[0]


def drop_fingerprints(conn: psycopg.Connection) -> None:
    """Remove the audit schema; done before promotion so no fingerprint reaches staging users."""
    with conn.transaction():
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(AUDIT_SCHEMA)))
