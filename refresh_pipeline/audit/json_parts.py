"""What a JSON column's path rules keep of each document, for the audit to read as a kept column is read: the
document with the value at every masked path blanked. The masked values hold masked phones and identity-shaped
numbers by design (`+91` and ten digits is a twelve-digit run), so the pattern detectors read only the rest;
the known-value audit still reads the whole document."""

from collections.abc import Sequence

from psycopg import sql

from refresh_pipeline.masking.policy import JsonPathRule

_BLANK = "'\"\"'::jsonb"


def kept_part(column: sql.Composable, paths: Sequence[JsonPathRule]) -> sql.Composed:
    """The text of `column` (json or jsonb) with the value each of `paths` selects replaced by "". A single-value
    path is set in place, tested on the original (absent, or through a scalar, it changes nothing); a wildcard
    path goes through mask_jsonb's walk with `redact`."""
    original = sql.SQL("({}::jsonb)").format(column)
    kept: sql.Composable = original
    for path in paths:
        steps = sql.Literal(list(path.steps))
        if path.settable:
            kept = sql.SQL(
                "jsonb_set_lax({kept}, {steps}::text[], CASE WHEN {original} #> {steps}::text[] IS NOT NULL"
                " THEN {blank} END, false, 'return_target')"
            ).format(kept=kept, steps=steps, original=original, blank=sql.SQL(_BLANK))
        else:
            kept = sql.SQL(
                "refresh_pipeline.mask_jsonb(''::bytea, {kept}, {steps}::text[], 'redact', '{{\"value\": \"\"}}')"
            ).format(kept=kept, steps=steps)
    return sql.SQL("({})::text").format(kept)
