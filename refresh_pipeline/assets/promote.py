"""staging_database: promotes the restored database, only once every audit of that exact database passed."""

import time
from datetime import UTC, datetime

import dagster as dg

from refresh_pipeline.assets.keys import (
    MASKED_DATABASE,
    REFRESH_GROUP,
    required_check_keys,
)
from refresh_pipeline.audit.fingerprints import drop_fingerprints
from refresh_pipeline.autovacuum import resume_autovacuum
from refresh_pipeline.checks.records import latest_outcome
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.event_triggers import resume_event_triggers
from refresh_pipeline.foreign_partitions import attach_foreign_partitions_again
from refresh_pipeline.masking.catalog import read_tables
from refresh_pipeline.masking.coverage import describe_uncovered, find_uncovered
from refresh_pipeline.masking.originals import drop_scratch_tokens
from refresh_pipeline.masking.policy import MaskingPolicy
from refresh_pipeline.masking.runner import drop_leftover_staging
from refresh_pipeline.masking.value_map import clear_value_maps
from refresh_pipeline.platforms.connections import redact
from refresh_pipeline.publications import resume_publication_changes
from refresh_pipeline.reporting import write_audit_report
from refresh_pipeline.resources import RefreshResource
from refresh_pipeline.row_data_in_errors import without_row_data_in_errors
from refresh_pipeline.row_security import force_row_security_again
from refresh_pipeline.staging_logins import set_staging_logins
from refresh_pipeline.state import PromotionRecord


def failing_checks(instance: dg.DagsterInstance, keys: list[dg.AssetCheckKey], database: str) -> list[str]:
    """Why each required check does not vouch for `database` (never ran, failed, or audited another one).

    Blocking checks stop downstream steps of their own run only; this makes a later run (or a single
    re-materialization of staging_database) unable to promote an unaudited database.
    """
    failures = []
    for key in keys:
        outcome = latest_outcome(instance, key, database)
        if outcome.passed is None:
            failures.append(f"{outcome.check}: {outcome.reason}")
        elif not outcome.passed:
            failures.append(f"{outcome.check}: failed ({outcome.reason})")
    return failures


def build_staging_database_asset(policy: MaskingPolicy) -> dg.AssetsDefinition:
    check_keys = required_check_keys(policy)

    @dg.asset(group_name=REFRESH_GROUP, deps=[MASKED_DATABASE], kinds={"postgres"})
    @without_row_data_in_errors
    def staging_database(context: dg.AssetExecutionContext, refresh: RefreshResource) -> dg.MaterializeResult:
        """The stable staging name, pointed at the newly masked database once all its audits passed."""
        started = time.monotonic()
        restored = refresh.state().require("restored", "restored_instance")
        platform = refresh.platform()
        failures = failing_checks(context.instance, check_keys, restored.database)
        report_md, report_json = write_audit_report(
            context.instance, refresh.config(), refresh.policy(), restored.database, restored.snapshot_id
        )
        context.log.info(f"audit report: {report_md}")
        if failures:
            raise RefreshError(
                f"refusing to promote {restored.database}; these checks do not vouch for it:\n  "
                + "\n  ".join(failures)
            )
        with refresh.connect_managed(restored.database) as conn:
            uncovered = find_uncovered(refresh.policy(), read_tables(conn))
            if uncovered:
                raise RefreshError(describe_uncovered(uncovered, refresh.policy().source))
            drop_fingerprints(conn)
            clear_value_maps(conn)
            drop_scratch_tokens(conn)
            drop_leftover_staging(conn)
            resume_autovacuum(conn)
            force_row_security_again(conn)
            logins = platform.staging_login_passwords()
            login_changes = set_staging_logins(conn, logins) if logins is not None else None
            conn.execute("ANALYZE")
            # After ANALYZE: it samples a partitioned table's foreign partitions through their cut link.
            attached = attach_foreign_partitions_again(conn)
            publications = resume_publication_changes(conn)  # after our last UPDATE of our own tables
            # Last: before this, DDL of ours (ALTER TABLE ... ATTACH PARTITION) would fire them.
            event_triggers = resume_event_triggers(conn)
        previous = platform.promoted()
        platform.promote(restored.database)
        promoted_at = datetime.now(UTC).isoformat()
        refresh.state().write("promoted", PromotionRecord(restored.database, restored.snapshot_id, promoted_at))
        context.log.info(f"staging now points at {restored.database} (was {previous})")
        return dg.MaterializeResult(
            metadata={
                "database": restored.database,
                "snapshot_id": restored.snapshot_id,
                "previous_database": previous or "",
                "staging_conninfo": platform.staging_conninfo(),
                "database_conninfo": redact(platform.conninfo(restored.database)),
                "promoted_at": promoted_at,
                "checks_verified": len(check_keys),
                "foreign_partitions_attached": dg.MetadataValue.json(attached),
                "event_triggers_enabled_again": dg.MetadataValue.json(event_triggers),
                "publications_publishing_again": dg.MetadataValue.json(publications),
                "logins": dg.MetadataValue.json(
                    login_changes.as_metadata() if login_changes else "left as they are (the server's roles)"
                ),
                "audit_report": dg.MetadataValue.path(str(report_md)),
                "audit_report_json": dg.MetadataValue.path(str(report_json)),
                "seconds": round(time.monotonic() - started, 2),
            }
        )

    return staging_database
