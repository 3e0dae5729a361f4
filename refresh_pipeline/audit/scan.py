"""Scans a masked table for PII: originals that survived (known values) and unmasked-looking emails."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from refresh_pipeline.audit.fingerprints import fingerprints_present, token_fingerprint_sql
from refresh_pipeline.masking.catalog import TableInfo
from refresh_pipeline.masking.keys import AUDIT_PURPOSE, MaskingKey

MASKED_EMAIL_DOMAIN = "example.com"
DETECTOR_VERSION = "pii-tokens/1 (email, upi, in-phone)"
MAX_LOCATIONS = 5


@dataclass(frozen=True)
class ColumnFindings:
    column: str
    known_values: int  # tokens whose fingerprint matches an original from production
    foreign_emails: int  # emails outside the masked domain
    locations: tuple[str, ...]  # ctids of a few offending rows; never the values


@dataclass
class TableAudit:
    table: str
    rows_scanned: int
    columns_scanned: list[str]
    known_value_audit: bool
    findings: list[ColumnFindings] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        if self.passed:
            return f"{self.table}: no PII found in {len(self.columns_scanned)} column(s), {self.rows_scanned} row(s)"
        parts = [
            f"{f.column} ({f.known_values} original value(s), {f.foreign_emails} unmasked email(s))"
            for f in self.findings
        ]
        return f"{self.table}: PII left in " + "; ".join(parts)


def scan_table(conn: psycopg.Connection, table: TableInfo, key: MaskingKey) -> TableAudit:
    """Tokenise every text, JSON and array column of the table and look for PII; full scan."""
    started = time.monotonic()
    known = fingerprints_present(conn)
    target = sql.SQL("{}.{}").format(sql.Identifier(table.schema), sql.Identifier(table.name))
    rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()[0]
    audit = TableAudit(table=table.qualified_name, rows_scanned=rows, columns_scanned=[], known_value_audit=known)
    known_test = (
        sql.SQL(
            "EXISTS (SELECT 1 FROM refresh_pipeline_audit.original_fingerprints f WHERE f.fingerprint = {})"
        ).format(token_fingerprint_sql(sql.SQL("tok.kind || ':' || tok.token")))
        if known
        else sql.SQL("false")
    )
    params = {"audit_key": key.sql_pads(AUDIT_PURPOSE), "masked_email_pattern": f"%@{MASKED_EMAIL_DOMAIN}"}
    for column in table.columns:
        if not column.holds_text:
            continue
        audit.columns_scanned.append(column.name)
        query = sql.SQL(
            "WITH hits AS ("
            " SELECT src.ctid AS location, {known} AS is_known,"
            "  tok.kind = 'email' AND NOT tok.token LIKE %(masked_email_pattern)s AS is_foreign_email"
            " FROM {target} AS src, LATERAL refresh_pipeline.pii_tokens(src.{column}::text) AS tok"
            " WHERE src.{column} IS NOT NULL)"
            " SELECT count(*) FILTER (WHERE is_known), count(*) FILTER (WHERE is_foreign_email),"
            "  (array_agg(DISTINCT location::text) FILTER (WHERE is_known OR is_foreign_email))[1:{limit}]"
            " FROM hits"
        ).format(
            known=known_test,
            target=target,
            column=sql.Identifier(column.name),
            limit=sql.Literal(MAX_LOCATIONS),
        )
        known_count, foreign_count, locations = conn.execute(query, params).fetchone()
        if known_count or foreign_count:
            audit.findings.append(ColumnFindings(column.name, known_count, foreign_count, tuple(locations or ())))
    audit.seconds = time.monotonic() - started
    return audit
