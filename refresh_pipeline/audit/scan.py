"""Scans one masked table for PII, set-based in SQL: originals that survived anywhere (known-value audit)
and PII-shaped values in columns the policy keeps (pattern audit)."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from refresh_pipeline.audit.fingerprints import MIN_WHOLE_VALUE_LENGTH, fingerprint_sql, fingerprints_present
from refresh_pipeline.masking.catalog import TableInfo
from refresh_pipeline.masking.keys import AUDIT_PURPOSE, MaskingKey

MASKED_EMAIL_DOMAIN = "example.com"
DETECTOR_VERSIONS = {
    "known_values": "hmac-sha256 fingerprints of email/phone/upi tokens and whole PII values, v1",
    "email": "email outside @example.com, v1",
    "phone": "Indian mobile (+91/0 prefix, 5-5 or 10 digits), v1",
    "upi": "UPI handle <local>@<bank>, v1",
    "pan": "PAN AAAPA9999A, v1",
    "aadhaar": "Aadhaar 12 digits, Verhoeff-valid, v1",
    "card": "card number 13-19 digits, Luhn-valid, v1",
}
MAX_LOCATIONS = 5


@dataclass(frozen=True)
class ColumnFindings:
    column: str
    known_values: int  # tokens or whole values equal to an original from production
    patterns: dict[str, int]  # detector -> count of PII-shaped values
    locations: tuple[str, ...]  # ctids of a few offending rows; never the values

    def as_metadata(self) -> dict[str, object]:
        """Counts per detector and row locations, for check metadata and reports (never values)."""
        return {"original_values": self.known_values, **self.patterns, "row_locations": list(self.locations)}

    def describe(self) -> str:
        parts = [f"{self.known_values} original value(s)"] if self.known_values else []
        parts += [f"{count} {detector}" for detector, count in sorted(self.patterns.items())]
        return f"{self.column} ({', '.join(parts)})"


@dataclass
class TableAudit:
    table: str
    rows_scanned: int
    columns_scanned: list[str]
    known_value_audit: bool
    sample_percent: float | None = None
    findings: list[ColumnFindings] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        scope = f"{len(self.columns_scanned)} column(s), {self.rows_scanned} row(s)"
        if self.sample_percent:
            scope += f" (sampled {self.sample_percent:g}%)"
        if self.passed:
            return f"{self.table}: no PII found in {scope}"
        return f"{self.table}: PII left in " + "; ".join(f.describe() for f in self.findings)


_KNOWN_VALUES = """
    SELECT t.location FROM tokens AS t
    WHERE NOT t.token = ANY(%(allowlist)s) AND EXISTS (
        SELECT 1 FROM refresh_pipeline_audit.original_fingerprints f WHERE f.fingerprint = {token_fingerprint})
    UNION ALL
    SELECT s.location FROM src AS s
    WHERE {whole_enabled} AND length(btrim(s.v)) >= %(min_length)s AND NOT lower(btrim(s.v)) = ANY(%(allowlist)s)
      AND EXISTS (
        SELECT 1 FROM refresh_pipeline_audit.original_fingerprints f WHERE f.fingerprint = {whole_fingerprint})
"""
# Without fingerprints (already promoted: the audit schema is gone) only the pattern audit runs.
_NO_KNOWN_VALUES = "SELECT NULL::tid AS location WHERE false"
# Identity numbers are looked for in kept columns only (masked ones hold masked identifiers by design).
_ID_PATTERNS = """
    SELECT s.location, f.detector FROM src AS s, LATERAL refresh_pipeline.id_findings(s.v) AS f
    WHERE NOT f.token = ANY(%(allowlist)s)
"""
_NO_ID_PATTERNS = "SELECT NULL::tid AS location, NULL::text AS detector WHERE false"

# One pass of the tokeniser per column; known values and patterns both read its tokens.
_COLUMN_SCAN = """
WITH src AS MATERIALIZED (
    SELECT src.ctid AS location, src.{column}::text AS v FROM {target} AS src {sample} WHERE src.{column} IS NOT NULL
),
tokens AS MATERIALIZED (
    SELECT s.location, tok.kind, tok.token FROM src AS s, LATERAL refresh_pipeline.pii_tokens(s.v) AS tok
),
known AS ({known}),
patterns AS (
    SELECT location, kind AS detector FROM tokens
    WHERE NOT token = ANY(%(allowlist)s)
      AND NOT (kind = 'email' AND token LIKE %(masked_email_pattern)s)
      AND ({patterns_enabled} OR kind = 'email')
    UNION ALL
    {id_patterns}
)
SELECT (SELECT count(*) FROM known),
       (SELECT coalesce(jsonb_object_agg(detector, n), '{{}}') FROM
            (SELECT detector, count(*) AS n FROM patterns GROUP BY detector) AS by_detector),
       (SELECT array_agg(location::text ORDER BY location) FROM
            (SELECT location FROM known UNION SELECT location FROM patterns ORDER BY location LIMIT %(max_locations)s)
            AS offending)
"""


def _known_values_query(fingerprints_exist: bool, is_text: bool) -> sql.Composable:
    if not fingerprints_exist:
        return sql.SQL(_NO_KNOWN_VALUES)
    return sql.SQL(_KNOWN_VALUES).format(
        whole_enabled=sql.SQL("true" if is_text else "false"),
        token_fingerprint=fingerprint_sql(sql.SQL("t.kind || ':' || t.token")),
        whole_fingerprint=fingerprint_sql(sql.SQL("'whole:' || lower(btrim(s.v))")),
    )


def normalised_allowlist(conn: psycopg.Connection, allowlist: tuple[str, ...]) -> list[str]:
    """Allowlisted values as the detectors see them (every token inside them, and the whole value)."""
    if not allowlist:
        return []
    rows = conn.execute(
        "SELECT f.token FROM unnest(%(values)s::text[]) AS a(v), LATERAL refresh_pipeline.pattern_findings(a.v) AS f "
        "UNION SELECT lower(btrim(v)) FROM unnest(%(values)s::text[]) AS a(v)",
        {"values": list(allowlist)},
    ).fetchall()
    return sorted({row[0] for row in rows})


def scan_table(
    conn: psycopg.Connection,
    table: TableInfo,
    key: MaskingKey,
    kept_columns: set[str],
    allowlist: tuple[str, ...] = (),
    sample_percent: float | None = None,
    log: Callable[[str], None] = lambda _message: None,
) -> TableAudit:
    """Audit every text, JSON and array column of the table.

    Known values: any token (or whole value) whose fingerprint equals an original's fails, in any
    column. Patterns: in `kept_columns` every detector applies; in masked columns only emails outside
    the masked domain (masked phones are phone-shaped by design).
    """
    started = time.monotonic()
    known = fingerprints_present(conn)
    target = sql.SQL("{}.{}").format(sql.Identifier(table.schema), sql.Identifier(table.name))
    sample = sql.SQL("TABLESAMPLE SYSTEM ({})").format(sql.Literal(sample_percent)) if sample_percent else sql.SQL("")
    rows = conn.execute(sql.SQL("SELECT count(*) FROM {} AS src {}").format(target, sample)).fetchone()[0]
    audit = TableAudit(table.qualified_name, rows, [], known_value_audit=known, sample_percent=sample_percent)
    params = {
        "audit_key": key.sql_pads(AUDIT_PURPOSE),
        "allowlist": normalised_allowlist(conn, allowlist),
        "masked_email_pattern": f"%@{MASKED_EMAIL_DOMAIN}",
        "min_length": MIN_WHOLE_VALUE_LENGTH,
        "max_locations": MAX_LOCATIONS,
    }
    for column in table.columns:
        if not column.holds_text:
            continue
        audit.columns_scanned.append(column.name)
        query = sql.SQL(_COLUMN_SCAN).format(
            column=sql.Identifier(column.name),
            target=target,
            sample=sample,
            known=_known_values_query(known, column.is_text),
            patterns_enabled=sql.SQL("true" if column.name in kept_columns else "false"),
            id_patterns=sql.SQL(_ID_PATTERNS if column.name in kept_columns else _NO_ID_PATTERNS),
        )
        column_started = time.monotonic()
        known_count, patterns, locations = conn.execute(query, params).fetchone()
        log(
            f"{table.qualified_name}.{column.name}: scanned {rows:,} rows in {time.monotonic() - column_started:.1f} s "
            f"({len(audit.columns_scanned)} of {sum(c.holds_text for c in table.columns)} columns)"
        )
        if known_count or patterns:
            audit.findings.append(ColumnFindings(column.name, known_count, dict(patterns), tuple(locations or ())))
    audit.seconds = time.monotonic() - started
    return audit
