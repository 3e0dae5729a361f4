"""no_pii_left: per table, blocking. Scans the masked table and compares its row count with the restore."""

import dagster as dg

from refresh_pipeline.assets.keys import NO_PII_CHECK, masked_table_key
from refresh_pipeline.assets.priority import priority_tags
from refresh_pipeline.audit.scan import DETECTOR_VERSIONS, scan_table
from refresh_pipeline.masking.catalog import ColumnInfo, count_rows, read_tables, with_pii_numbers
from refresh_pipeline.masking.policy import ArrayRule, JsonPathRule, JsonRule, MaskingPolicy, TablePolicy, TransformRule
from refresh_pipeline.resources import RefreshResource
from refresh_pipeline.row_data_in_errors import without_row_data_in_errors


def kept_columns(table: TablePolicy, columns: tuple[ColumnInfo, ...]) -> set[str]:
    """Columns copied verbatim: where PII nobody classified would hide, so every detector runs there. A
    generated column computed from a masked column is not one: it is recomputed from the masked values (a
    tsvector of a scrubbed text holds its masked phones), and any other column it reads is audited itself."""
    if table.keep_all:
        return {column.name for column in columns}
    return {
        column.name
        for column in columns
        if column.name not in table.masked_columns
        and not any(source in table.masked_columns for source in column.generated_from)
    }


def scrubbed_columns(table: TablePolicy) -> set[str]:
    """Columns masked with `scrub` whole (a text, a document, every element of an array): scrub masks the
    identity numbers in them, so the audit looks for those there too."""
    return {
        name
        for name, rule in table.masked_columns.items()
        if (isinstance(rule, TransformRule) and rule.transform == "scrub")
        or (isinstance(rule, ArrayRule) and rule.element.transform == "scrub")
    }


def json_masked_paths(table: TablePolicy) -> dict[str, tuple[JsonPathRule, ...]]:
    """JSON columns masked by paths, with their paths: the rest of each document is kept, so every detector
    reads that rest."""
    return {name: rule.paths for name, rule in table.masked_columns.items() if isinstance(rule, JsonRule)}


def _no_pii_check(table: TablePolicy) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=masked_table_key(table),
        name=NO_PII_CHECK,
        blocking=True,
        op_tags=priority_tags(table),
        description=(
            f"No production email, phone or UPI handle survives anywhere in {table.qualified_name} (keyed "
            "fingerprints of the originals), no email outside the masked domain, no PII shape in a kept column "
            "or in what a JSON column's path rules keep, and no PAN, Aadhaar or card number in a scrubbed one, the "
            "table is masked per the policy and its "
            "row count equals the restore's."
        ),
    )
    @without_row_data_in_errors
    def no_pii_left(context: dg.AssetCheckExecutionContext, refresh: RefreshResource) -> dg.AssetCheckResult:
        restored = refresh.state().require("restored", "restored_instance")
        with refresh.connect_managed(restored.database) as conn:
            info = read_tables(conn).get((table.schema, table.table))
            if info is None:
                return dg.AssetCheckResult(
                    passed=False,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={"database": restored.database},
                    description=f"{table.qualified_name} does not exist in {restored.database}",
                )
            policy = refresh.policy()
            kept = kept_columns(table, info.columns)
            masked_by_paths = json_masked_paths(table)
            audit = scan_table(
                conn,
                with_pii_numbers(info, policy),
                refresh.key(),
                kept_columns=kept,
                scrubbed_columns=scrubbed_columns(table),
                json_masked_paths=masked_by_paths,
                allowlist=policy.allowlist,
                sample_percent=refresh.config().audit_sample_percent,
                log=context.log.info,
                connect=lambda: refresh.connect_managed(restored.database),
                workers=refresh.config().parallelism,
            )
            # A sampled audit read part of the rows: the row count is taken on its own then.
            rows_now = count_rows(conn, info) if audit.sample_percent else audit.rows_scanned
            restored_rows = conn.execute(
                "SELECT row_count FROM refresh_pipeline.restored_row_counts WHERE table_name = %s",
                (table.qualified_name,),
            ).fetchone()
            marker = conn.execute(
                "SELECT policy_digest FROM refresh_pipeline.masked_tables WHERE table_name = %s",
                (table.qualified_name,),
            ).fetchone()

        problems = []  # each starting with the table's name, as the audit's summary does
        if not audit.passed:
            problems.append(audit.summary())
        if restored_rows is None or restored_rows[0] != rows_now:
            expected = restored_rows[0] if restored_rows else "unknown"
            counts = f"row count {rows_now} differs from {expected} at restore"
            problems.append(f"{table.qualified_name}: {counts}")
        needs_masking = not table.keep_all and bool(table.masked_columns)
        if needs_masking and (marker is None or marker[0] != table.digest()):
            problems.append(f"{table.qualified_name}: the table has not been masked under the current policy")
        for problem in problems:
            context.log.error(problem)

        findings = {f.column: f.as_metadata() for f in audit.findings}
        return dg.AssetCheckResult(
            passed=not problems,
            severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(problems) or audit.summary(),
            metadata={
                "database": restored.database,
                "rows_scanned": audit.rows_scanned,
                "columns_scanned": dg.MetadataValue.json(audit.columns_scanned),
                "findings": dg.MetadataValue.json(findings),
                "known_value_audit": audit.known_value_audit,
                "kept_columns_pattern_scanned": dg.MetadataValue.json(sorted(kept & set(audit.columns_scanned))),
                "json_columns_kept_parts_pattern_scanned": dg.MetadataValue.json(
                    sorted(set(masked_by_paths) & set(audit.columns_scanned))
                ),
                "sample_percent": audit.sample_percent or 100.0,
                "detectors": dg.MetadataValue.json(DETECTOR_VERSIONS),
                "seconds": round(audit.seconds, 2),
            },
        )

    return no_pii_left


def build_pii_audit_checks(policy: MaskingPolicy) -> list[dg.AssetChecksDefinition]:
    return [_no_pii_check(table) for _, table in sorted(policy.tables.items())]
