"""Scans one masked table for PII, set-based in SQL: originals that survived anywhere (known-value audit)
and PII-shaped values in columns the policy keeps (pattern audit)."""

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from refresh_pipeline.audit.coordinates import kept_coordinate_pairs, pair_name, production_coordinates
from refresh_pipeline.audit.fingerprints import (
    MIN_WHOLE_VALUE_LENGTH,
    fingerprints_present,
    normalised_whole_value,
    token_fingerprint,
    whole_value_fingerprint,
)
from refresh_pipeline.audit.json_parts import kept_part
from refresh_pipeline.audit.locations import production_locations, spatial_columns
from refresh_pipeline.audit.numbers import kept_number_columns, phones_in_kept_numbers
from refresh_pipeline.chunked import (
    BLOCKS_PER_RANGE,
    Connect,
    Progress,
    block_ranges,
    pooled_sessions,
    raise_work_mem,
    run_ranges,
    token_share_column,
)
from refresh_pipeline.column_work import ColumnRange, ProbeRange, probe_work, text_column_work
from refresh_pipeline.masking.catalog import TableInfo, leaf_partitions, with_kept_bytes
from refresh_pipeline.masking.keys import AUDIT_PURPOSE, MaskingKey
from refresh_pipeline.masking.policy import JsonPathRule
from refresh_pipeline.masking.session_key import key_relation, share_key

MASKED_EMAIL_DOMAIN = "example.com"
# What `email` with keep_domain writes (functions.sql hmac_letters: 16 of a-p), tokens being lower-case: no
# production address is that unless it was masked so.
MASKED_AT_ITS_DOMAIN = "^[a-p]{16}@"
DETECTOR_VERSIONS = {
    "known_values": "hmac-sha256 fingerprints of email/phone/upi tokens and whole PII values, v1; "
    "production phones kept in bigint/numeric columns, v1; "
    "production locations (PostGIS) moved by geo, in every geometry/geography column, v1; "
    "production coordinates (latitude/longitude number pairs) moved by geo, in kept pairs (whole-number ones "
    "as degrees times 10^5, 10^6 or 10^7), v2",
    "email": "email outside @example.com, unless masked at its own domain (16 letters a-p); in a URL '%40' for '@';"
    " letters beyond ASCII (Latin, Indic scripts, CJK...), v3",
    "phone": "Indian mobile (+91, 91 or 0 prefix, 10 digits or grouped 5-5, 4-3-3, 4-6, 3-3-4; in a URL %2B91 and "
    "10 digits, or after an encoded separator such as %20), v4",
    "upi": "UPI handle <local>@<bank> (in a URL '%40' for '@'), v2",
    "pan": "PAN AAAPA9999A (kept columns, upper-case; scrubbed ones, in any case, between their emails, UPI handles "
    "and phones), v3",
    "aadhaar": "Aadhaar: a run of 12 digits (4-4-4), Verhoeff-valid (kept and scrubbed columns), v2",
    "card": "card number: a run of 13-19 digits, Luhn-valid (kept and scrubbed columns), v2",
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


# Whole values, one fingerprint per distinct value. Tokens are saved to a scratch table instead and
# checked once per distinct token across the whole table (_KNOWN_TOKENS).
# Every probe of the fingerprints computes each value's fingerprint once, in a materialized CTE, and then
# compares columns: with the HMAC in the join condition the planner, which takes sha256() for cheap, may
# pick a nested loop that hashes every value once per production fingerprint (2,000 values x 8,000
# fingerprints: 16M HMACs, 132 s for a 2,000-row table).
_KNOWN_WHOLE_VALUES = """
    WITH hashed AS MATERIALIZED (
        SELECT s.location, s.n, {whole_fingerprint} AS fingerprint FROM src AS s CROSS JOIN {key}
        WHERE length(btrim(s.v)) >= %(min_length)s AND NOT lower(btrim(s.v)) = ANY(%(allowlist)s))
    SELECT h.location, h.n FROM hashed AS h
    WHERE EXISTS (SELECT 1 FROM refresh_pipeline_audit.original_fingerprints f WHERE f.fingerprint = h.fingerprint)
"""
# Without fingerprints (already promoted: the audit schema is gone) only the pattern audit runs.
_NO_KNOWN_VALUES = "SELECT NULL::tid AS location, 0::bigint AS n WHERE false"
_SAVE_TOKENS = """
    INSERT INTO {scratch} (column_name, kind, token, n, location)
    SELECT {column_name}, kind, token, n, location FROM tokens WHERE NOT token = ANY(%(allowlist)s) RETURNING 1
"""
_NO_SAVE = "SELECT 1 WHERE false"
# Identity numbers are looked for in kept columns, and in scrubbed ones between the tokens scrub masked as
# emails, UPI handles and phones (where scrub masks them so that they are none: functions.sql mask_ids); other
# masked columns hold masked identifiers by design.
_ID_PATTERNS = """
    SELECT s.location, s.n, f.detector FROM src AS s, LATERAL refresh_pipeline.{findings}(s.{value}) AS f
    WHERE NOT f.token = ANY(%(allowlist)s)
"""
_NO_ID_PATTERNS = "SELECT NULL::tid AS location, 0::bigint AS n, NULL::text AS detector WHERE false"
# A JSON column masked by paths: what its rules keep of each document (json_parts.py), read by every detector.
# Its identity numbers; its phones and UPI handles only without the fingerprints (after promotion), which
# otherwise hold every token of the original documents, kept parts too, so the known-value audit finds them
# (a second tokenisation of payments' documents cost its audit 10-23%). Emails count from the whole document.
_KEPT_PART_TOKENS = """
    UNION ALL
    SELECT s.location, s.n, tok.kind FROM src AS s, LATERAL refresh_pipeline.pii_tokens(s.kept_part) AS tok
    WHERE tok.kind <> 'email' AND NOT tok.token = ANY(%(allowlist)s)
"""
# Each distinct value once, with how many rows hold it and the first of them (documents are rarely
# repeated: those are read row by row).
_DISTINCT_VALUES = """
    SELECT min(s.ctid) AS location, count(*) AS n, s.v FROM (
        SELECT src.ctid, {src_text} AS v FROM {target} AS src {sample}
        WHERE src.{column} IS NOT NULL AND {condition}) AS s
    GROUP BY s.v
"""
_EVERY_VALUE = """
    SELECT src.ctid AS location, 1::bigint AS n, {src_text} AS v{kept_part} FROM {target} AS src {sample}
    WHERE src.{column} IS NOT NULL AND {condition}
"""

# One pass of the tokeniser per value; known values and patterns both read its tokens.
_COLUMN_SCAN = """
WITH src AS MATERIALIZED ({values}),
tokens AS MATERIALIZED (
    SELECT s.location, s.n, tok.kind, tok.token FROM src AS s, LATERAL refresh_pipeline.pii_tokens(s.v) AS tok
),
saved AS ({save_tokens}),
known AS ({known}),
patterns AS (
    SELECT location, n, kind AS detector FROM tokens
    WHERE NOT token = ANY(%(allowlist)s)
      AND NOT (kind = 'email' AND (token LIKE %(masked_email_pattern)s OR token ~ %(masked_at_its_domain)s))
      AND ({patterns_enabled} OR kind = 'email')
    UNION ALL
    {id_patterns}
    UNION ALL
    {kept_part_patterns}
),
offending AS (SELECT location FROM known UNION SELECT location FROM patterns)
SELECT (SELECT coalesce(sum(n), 0)::bigint FROM src),
       (SELECT coalesce(sum(n), 0)::bigint FROM known),
       (SELECT coalesce(jsonb_object_agg(detector, n), '{{}}') FROM
            (SELECT detector, sum(n)::bigint AS n FROM patterns GROUP BY detector) AS by_detector),
       -- The first rows holding an offending value (looked up only when there is one).
       CASE WHEN EXISTS (SELECT 1 FROM offending) THEN (
           SELECT array_agg(l::text ORDER BY l) FROM (
               SELECT r.ctid AS l FROM {target} AS r
               WHERE {r_text} IN (SELECT s.v FROM src AS s JOIN offending AS o ON o.location = s.location)
                 AND {condition}
               ORDER BY r.ctid LIMIT %(max_locations)s) AS first_rows)
       END
"""
# Each distinct saved token (of one share of them) fingerprinted once, whichever columns hold it (a UPI
# handle is often in a column and in a JSON document too); per column, the rows holding a match counted
# and a few of them named.
_KNOWN_TOKENS = """
WITH hashed AS MATERIALIZED (
    SELECT d.kind, d.token, {token_fingerprint} AS fingerprint
    FROM (SELECT DISTINCT kind, token FROM {scratch} WHERE share = {share}) AS d CROSS JOIN {key}
),
hit AS MATERIALIZED (
    SELECT h.kind, h.token FROM hashed AS h
    WHERE EXISTS (SELECT 1 FROM refresh_pipeline_audit.original_fingerprints f WHERE f.fingerprint = h.fingerprint)
)
SELECT s.column_name, sum(s.n)::bigint, (array_agg(s.location ORDER BY s.location))[1:%(max_locations)s]::text[]
FROM {scratch} AS s
WHERE EXISTS (SELECT 1 FROM hit)  -- evaluated once: no match, no second read of the scratch table
  AND s.share = {share} AND (s.kind, s.token) IN (SELECT kind, token FROM hit)
GROUP BY s.column_name
"""
# The first rows holding the same value as any of the given rows.
_FIRST_ROWS = """
SELECT array_agg(l::text ORDER BY l) FROM (
    SELECT r.ctid AS l FROM {target} AS r
    WHERE {r_text} IN (SELECT {o_text} FROM {target} AS o WHERE o.ctid = ANY(%(rows)s::tid[]))
    ORDER BY r.ctid LIMIT %(max_locations)s) AS first_rows
"""


def _id_patterns(column: str, kept_columns: AbstractSet[str], scrubbed_columns: AbstractSet[str]) -> sql.Composable:
    if column in kept_columns:
        return _id_findings("id_findings", "v")
    if column in scrubbed_columns:
        return _id_findings("scrubbed_id_findings", "v")
    return sql.SQL(_NO_ID_PATTERNS)


def _id_findings(function: str, value: str) -> sql.Composed:
    return sql.SQL(_ID_PATTERNS).format(findings=sql.Identifier(function), value=sql.Identifier(value))


def _kept_part_patterns(masked_by_paths: bool, fingerprints_exist: bool) -> sql.Composable:
    if not masked_by_paths:
        return sql.SQL(_NO_ID_PATTERNS)
    ids = _id_findings("id_findings", "kept_part")
    return ids if fingerprints_exist else sql.SQL("{}{}").format(ids, sql.SQL(_KEPT_PART_TOKENS))


def _known_values_query(fingerprints_exist: bool, is_text: bool) -> sql.Composable:
    if not (fingerprints_exist and is_text):
        return sql.SQL(_NO_KNOWN_VALUES)
    return sql.SQL(_KNOWN_WHOLE_VALUES).format(
        whole_fingerprint=whole_value_fingerprint(normalised_whole_value(sql.SQL("s.v"))),
        key=key_relation(AUDIT_PURPOSE),
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


@dataclass
class _ColumnTotals:
    known: int = 0
    patterns: dict[str, int] = field(default_factory=dict)
    locations: list[str] = field(default_factory=list)

    def add(self, known: int, patterns: dict[str, int], locations: list[str] | None) -> None:
        self.known += known
        for detector, count in patterns.items():
            self.patterns[detector] = self.patterns.get(detector, 0) + count
        if locations:  # the kept ones are sorted and cut already
            self.locations = sorted({*self.locations, *locations}, key=_tid_order)[:MAX_LOCATIONS]


def _tid_order(location: str) -> tuple[int, int]:
    block, offset = location.strip("()").split(",")
    return int(block), int(offset)


# Scans one partition: on the given session, with or without a pool of its own, logging to the given log.
ScanPartition = Callable[[psycopg.Connection, TableInfo, bool, Callable[[str], None]], TableAudit]


def _scan_partitions(
    conn: psycopg.Connection,
    table: TableInfo,
    partitions: list[TableInfo],
    log: Callable[[str], None],
    scan: ScanPartition,
    connect: Connect | None,
    workers: int,
    blocks_per_range: int,
) -> TableAudit:
    """A partitioned table audited partition by partition: a row's ctid names it only within its partition
    (every partition has a row (0,1)), so rows are counted and located there, and each location names it.

    A partition of one block range is scanned whole on one session of a pool the partitions share, quietly: a
    table of daily partitions over two years (731 of 100 rows) took 58 s with a pool of its own and four log
    lines per partition. A bigger one gets the pool to itself, range by range, as a plain table does."""
    started = time.monotonic()
    small = [len(block_ranges(conn, partition, blocks_per_range)) == 1 for partition in partitions]
    audits: dict[int, TableAudit] = {}
    progress = Progress(f"{table.qualified_name}: auditing {len(partitions)} partitions", len(partitions), log)

    def scan_small(session: psycopg.Connection, index: int) -> int:
        audits[index] = scan(session, partitions[index], False, lambda _message: None)
        progress.add(audits[index].rows_scanned, 1)
        return audits[index].rows_scanned

    run_ranges([index for index, one in enumerate(small) if one], scan_small, conn, connect, workers)
    for index, one in enumerate(small):
        if not one:
            audits[index] = scan(conn, partitions[index], True, log)
            progress.add(audits[index].rows_scanned, 1)
    first = audits[0]
    merged = TableAudit(
        table.qualified_name,
        sum(audit.rows_scanned for audit in audits.values()),
        first.columns_scanned,
        known_value_audit=first.known_value_audit,
        sample_percent=first.sample_percent,
    )
    totals: dict[str, _ColumnTotals] = {}
    for index, partition in enumerate(partitions):
        for finding in audits[index].findings:
            total = totals.setdefault(finding.column, _ColumnTotals())
            total.add(finding.known_values, finding.patterns, None)
            # Partition by partition, in their order: a ctid alone would not say which.
            total.locations += [f"{partition.qualified_name} {location}" for location in finding.locations]
    merged.findings = [
        ColumnFindings(name, found.known, found.patterns, tuple(found.locations[:MAX_LOCATIONS]))
        for name in merged.columns_scanned
        if (found := totals.get(name)) is not None
    ]
    merged.seconds = time.monotonic() - started
    log(f"{merged.summary()} in {merged.seconds:.1f} s ({len(partitions)} partition(s))")
    return merged


def scan_table(
    conn: psycopg.Connection,
    table: TableInfo,
    key: MaskingKey,
    kept_columns: set[str],
    allowlist: tuple[str, ...] = (),
    sample_percent: float | None = None,
    log: Callable[[str], None] = lambda _message: None,
    connect: Connect | None = None,
    workers: int = 1,
    blocks_per_range: int = BLOCKS_PER_RANGE,
    scrubbed_columns: AbstractSet[str] = frozenset(),
    json_masked_paths: Mapping[str, Sequence[JsonPathRule]] | None = None,
) -> TableAudit:
    """Audit every text, JSON and array column of the table, its kept bytea columns (the first AUDITED_BYTES
    of each value, escaped), its kept bigint and numeric columns and its geometry and geography columns.

    Known values: any token (or whole value) whose fingerprint equals an original's fails, in any
    column; so does a production phone in a kept bigint or numeric column (numbers.py), a production
    location `geo` moved in any geometry or geography column (locations.py), and a production place `geo`
    moved in a kept latitude/longitude pair of number columns (coordinates.py). Patterns: in
    `kept_columns` every detector applies; in masked columns only emails outside the masked domain
    (masked phones are phone-shaped by design), and in `scrubbed_columns` (masked with `scrub` whole) also
    the identity number detectors, between the emails, UPI handles and phones. In a JSON column masked by the
    paths `json_masked_paths` names, every detector reads the rest of the document. Plain columns are scanned value by
    distinct value; JSON columns, and the number, spatial and coordinate columns (each kind together), block
    range by block range; all of it spread over `workers` sessions from `connect` when given.
    """
    if table.partitioned and (partitions := leaf_partitions(conn, table)):

        def scan_partition(
            session: psycopg.Connection, partition: TableInfo, pooled: bool, log: Callable[[str], None]
        ) -> TableAudit:
            pool = (connect, workers) if pooled else (None, 1)
            return scan_table(
                session,
                partition,
                key,
                kept_columns,
                allowlist,
                sample_percent,
                log,
                *pool,
                blocks_per_range,
                scrubbed_columns=scrubbed_columns,
                json_masked_paths=json_masked_paths,
            )

        return _scan_partitions(conn, table, partitions, log, scan_partition, connect, workers, blocks_per_range)
    started = time.monotonic()
    table = with_kept_bytes(table, kept_columns)
    known = fingerprints_present(conn)
    target = table.own_rows
    sample = sql.SQL("TABLESAMPLE SYSTEM ({})").format(sql.Literal(sample_percent)) if sample_percent else sql.SQL("")
    rows = conn.execute(sql.SQL("SELECT count(*) FROM {} AS src {}").format(target, sample)).fetchone()[0]
    audit = TableAudit(table.qualified_name, rows, [], known_value_audit=known, sample_percent=sample_percent)
    params = {
        "allowlist": normalised_allowlist(conn, allowlist),
        "masked_email_pattern": f"%@{MASKED_EMAIL_DOMAIN}",
        "masked_at_its_domain": MASKED_AT_ITS_DOMAIN,
        "min_length": MIN_WHOLE_VALUE_LENGTH,
        "max_locations": MAX_LOCATIONS,
    }
    columns = [column for column in table.columns if column.holds_text]
    numbers = kept_number_columns(table, kept_columns) if known else []
    spatial = spatial_columns(conn, table) if known else []
    pairs = kept_coordinate_pairs(conn, table, kept_columns) if known else []
    pair_names = [pair_name(latitude, longitude) for latitude, longitude in pairs]
    audit.columns_scanned = [column.name for column in columns + numbers + spatial] + pair_names
    work: list[ColumnRange | ProbeRange] = [
        *text_column_work(conn, table, blocks_per_range),
        *probe_work(conn, table, "numbers", numbers, False, blocks_per_range),
        *probe_work(conn, table, "locations", spatial, True, blocks_per_range),
        *probe_work(conn, table, "coordinates", [column for pair in pairs for column in pair], True, blocks_per_range),
    ]
    work.sort(key=lambda item: -item.cost)
    totals = {name: _ColumnTotals() for name in audit.columns_scanned}
    totals_lock = threading.Lock()
    scratch = sql.SQL("refresh_pipeline_audit.{}").format(sql.Identifier(f"tokens_{uuid.uuid4().hex[:12]}"))

    def probe(session: psycopg.Connection, item: ProbeRange) -> int:
        probed = list(item.columns)
        condition = item.block_range.condition()
        if item.kind == "numbers":
            found = phones_in_kept_numbers(session, table, probed, key, sample, MAX_LOCATIONS, condition)
        elif item.kind == "locations":
            found = production_locations(
                session, table, probed, key, sample, params["allowlist"], MAX_LOCATIONS, condition
            )
        else:  # coordinates: the pairs' columns one after the other
            pairs = list(zip(probed[0::2], probed[1::2], strict=True))
            found = production_coordinates(
                session, table, pairs, key, sample, params["allowlist"], MAX_LOCATIONS, condition
            )
        with totals_lock:
            for hits in found.hits:
                totals[hits.column].add(hits.rows, {}, hits.locations)
        return found.values_read

    def scan(session: psycopg.Connection, item: ColumnRange | ProbeRange) -> int:
        if isinstance(item, ProbeRange):
            return probe(session, item)
        column = item.column
        masked_paths = (json_masked_paths or {}).get(column.name) if column.is_json else None
        kept_part_value = (
            sql.SQL(", {} AS kept_part").format(
                kept_part(sql.SQL("src.{}").format(sql.Identifier(column.name)), masked_paths)
            )
            if masked_paths
            else sql.SQL("")
        )
        values = sql.SQL(_EVERY_VALUE if column.is_json else _DISTINCT_VALUES).format(
            column=sql.Identifier(column.name),
            src_text=column.as_text("src"),
            kept_part=kept_part_value,
            target=target,
            sample=sample,
            condition=item.block_range.condition(),
        )
        query = sql.SQL(_COLUMN_SCAN).format(
            values=values,
            target=target,
            column=sql.Identifier(column.name),
            r_text=column.as_text("r"),
            condition=item.block_range.condition(),
            known=_known_values_query(known, column.scalar_text),
            save_tokens=sql.SQL(_SAVE_TOKENS if known else _NO_SAVE).format(
                scratch=scratch, column_name=sql.Literal(column.name)
            ),
            patterns_enabled=sql.SQL("true" if column.name in kept_columns else "false"),
            id_patterns=_id_patterns(column.name, kept_columns, scrubbed_columns),
            kept_part_patterns=_kept_part_patterns(bool(masked_paths), known),
        )
        with session.transaction():
            if known:
                share_key(session, key, AUDIT_PURPOSE)
            raise_work_mem(session)
            scanned, known_count, patterns, locations = session.execute(query, params).fetchone()
        with totals_lock:
            totals[column.name].add(known_count, patterns, locations)
        return scanned

    shares = pooled_sessions(connect, workers)  # one share per session

    def check_tokens(session: psycopg.Connection, share: int) -> int:
        query = sql.SQL(_KNOWN_TOKENS).format(
            scratch=scratch,
            share=sql.Literal(share),
            token_fingerprint=token_fingerprint(sql.SQL("d.kind"), sql.SQL("d.token")),
            key=key_relation(AUDIT_PURPOSE),
        )
        with session.transaction():
            share_key(session, key, AUDIT_PURPOSE)
            raise_work_mem(session)
            found = session.execute(query, params).fetchall()
        for name, known_count, rows in found:
            scanned = table.column(name)
            first_rows = sql.SQL(_FIRST_ROWS).format(
                target=target, r_text=scanned.as_text("r"), o_text=scanned.as_text("o")
            )
            locations = session.execute(first_rows, {**params, "rows": rows}).fetchone()[0]
            with totals_lock:
                totals[name].add(known_count, {}, locations)
        return 0

    label = f"{table.qualified_name}: auditing {len(audit.columns_scanned)} column(s)"
    progress = Progress(label, sum(item.cost for item in work), log, unit="values")
    if known:
        conn.execute(
            sql.SQL(
                "CREATE UNLOGGED TABLE {} (column_name text, kind text, token text, n bigint, location tid, {})"
            ).format(scratch, token_share_column(shares))
        )
    try:
        run_ranges(work, scan, conn, connect, workers, progress)
        if known:
            conn.execute(sql.SQL("ANALYZE {}").format(scratch))
            checking = time.monotonic()
            log(f"{table.qualified_name}: comparing the tokens found with production's fingerprints")
            run_ranges(list(range(shares)), check_tokens, conn, connect, workers)
            log(f"{table.qualified_name}: tokens compared in {time.monotonic() - checking:.1f} s")
    finally:
        if known:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(scratch))
    for name in audit.columns_scanned:
        found = totals[name]
        if found.known or found.patterns:
            audit.findings.append(ColumnFindings(name, found.known, found.patterns, tuple(found.locations)))
    audit.seconds = time.monotonic() - started
    log(f"{audit.summary()} in {audit.seconds:.1f} s")
    return audit
