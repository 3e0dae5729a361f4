"""Checks that a policy can be applied to a database, before any data is touched."""

from __future__ import annotations

import psycopg
from psycopg import sql

from refresh_pipeline.masking.catalog import (
    FRACTIONAL_TYPES,
    NUMBER_PII_TRANSFORMS,
    NUMBER_TYPES,
    TEXT_CASTABLE,
    TEXT_TYPES,
    ColumnInfo,
    TableInfo,
)
from refresh_pipeline.masking.coordinates import is_whole_number, scale_in_name, step_metres
from refresh_pipeline.masking.lengths import length_problem
from refresh_pipeline.masking.policy import (
    DEFAULT_RADIUS_M,
    ArrayRule,
    ColumnRule,
    JsonRule,
    MaskingPolicy,
    TransformRule,
)


def _rule_problem(column: ColumnInfo, rule: ColumnRule) -> str | None:
    if column.partition_key and not (isinstance(rule, TransformRule) and rule.transform == "keep"):
        return (
            "it is a partition key (of the table or one of its sub-partitions): a masked value would belong in "
            "another partition, or in none; keep it"
        )
    if isinstance(rule, JsonRule):
        return None if column.is_json else f"a JSON path rule needs a json/jsonb column, not {column.type_name}"
    if isinstance(rule, ArrayRule):
        return _array_rule_problem(column, rule)
    transform = rule.transform
    if transform == "keep":
        return None
    if column.generated:
        return "it is a generated column; keep it and mask the columns it is computed from"
    if transform == "null":
        return None if column.nullable else "`null` on a NOT NULL column; use `redact` or another transform"
    if transform == "date":
        return None if column.is_date else f"`date` needs a date or timestamp column, not {column.type_name}"
    if transform == "geo":
        return _geo_problem(column, rule)
    if transform == "number":
        fits = not column.is_array and column.base_type in NUMBER_TYPES
        return None if fits else f"`number` needs a numeric or integer column, not {column.type_name}"
    if transform == "redact" and column.is_bytes:
        return None
    if not column.is_array and column.unqualified_type in TEXT_CASTABLE.get(transform, ()):
        return _castable_problem(column, transform)
    if not column.is_text:
        return f"`{transform}` needs a text column, not {column.type_name}"
    return length_problem(column, rule)


def _geo_problem(column: ColumnInfo, rule: TransformRule) -> str | None:
    """`geo` takes spatial columns and fractional numbers; a whole-number column only with the scale its
    degrees are stored at (moved by less than 1 unscaled, it would round back to the original)."""
    if column.is_spatial:
        return None
    params = rule.param_dict
    radius = params.get("radius_m", DEFAULT_RADIUS_M)
    if not column.is_array and is_whole_number(column):
        if "scale" not in params:
            example = scale_in_name(column) or 1_000_000
            return (
                f"`geo` on a whole-number column needs the scale its values are degrees times: "
                f"{{transform: geo, scale: {example}}} if 19.072830 is stored as {round(19.07283 * example)}"
            )
        return _geo_resolution_problem(column, step_metres(column, params["scale"]), radius)
    if not column.is_array and column.base_type in FRACTIONAL_TYPES:
        return _geo_resolution_problem(column, step_metres(column, params.get("scale")), radius)
    return f"`geo` needs a numeric, real, double precision, geometry or geography column, not {column.type_name}"


def _geo_resolution_problem(column: ColumnInfo, step_m: float | None, radius_m: float) -> str | None:
    """A column keeping coordinates to a step of at least radius_m would round every moved value back."""
    if step_m is None or step_m < radius_m:
        return None
    return (
        f"`geo` moves a coordinate by {radius_m / 2:g} to {radius_m:g} m, but {column.type_name} keeps it to "
        f"~{step_m:.0f} m, so it would round back to the original: set radius_m above {step_m:.0f}"
    )


def _castable_problem(column: ColumnInfo, transform: str) -> str | None:
    if transform in NUMBER_PII_TRANSFORMS and column.numeric_digits[1] > 0:
        return f"`{transform}` needs whole numbers, not {column.type_name}"
    return None


def _array_rule_problem(column: ColumnInfo, rule: ArrayRule) -> str | None:
    """An array rule masks each element as its transform masks a column of the element's type."""
    transform = rule.element.transform
    if column.is_array and column.unqualified_type in TEXT_TYPES - {"name"}:
        return length_problem(column, rule.element)
    if column.is_array and column.unqualified_type in TEXT_CASTABLE.get(transform, ()):
        return _castable_problem(column, transform)
    castable = sorted(TEXT_CASTABLE.get(transform, ()))
    also = f" or an array of {', '.join(castable)}" if castable else ""
    return f"an array rule with `{transform}` needs a text array column{also}, not {column.type_name}"


def find_policy_problems(policy: MaskingPolicy, tables: dict[tuple[str, str], TableInfo]) -> list[str]:
    """Every reason the policy cannot be applied, each naming the policy line, column and type."""
    problems = []
    for key, table_policy in sorted(policy.tables.items()):
        info = tables.get(key)
        where = f"{policy.source}, line {table_policy.line}"
        if info is None:
            problems.append(f"{where}: table {table_policy.qualified_name} does not exist in the database")
            continue
        for column_name, rule in table_policy.columns.items():
            line = rule.line if not isinstance(rule, TransformRule) or rule.line else table_policy.line
            column = info.column(column_name)
            if column is None:
                problems.append(
                    f"{policy.source}, line {line}: column {info.qualified_name}.{column_name} does not exist"
                )
                continue
            problem = _rule_problem(column, rule)
            if problem:
                problems.append(
                    f"{policy.source}, line {line}: {info.qualified_name}.{column_name} ({column.type_name}): {problem}"
                )
    return problems


def find_unmatched_json_paths(
    conn: psycopg.Connection, policy: MaskingPolicy, tables: dict[tuple[str, str], TableInfo]
) -> list[str]:
    """JSON path rules that match nothing in a column that does hold documents: usually a typo that would
    leave the PII it meant to mask in place."""
    problems = []
    for key, table_policy in sorted(policy.tables.items()):
        info = tables.get(key)
        if info is None:
            continue
        for column_name, rule in table_policy.columns.items():
            column = info.column(column_name)
            if not isinstance(rule, JsonRule) or column is None or not column.is_json:
                continue
            target = info.ident
            col = sql.Identifier(column_name)
            has_documents = conn.execute(
                sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {} IS NOT NULL)").format(target, col)
            ).fetchone()[0]
            if not has_documents:
                continue
            for path in rule.paths:
                matched = conn.execute(
                    sql.SQL(
                        "SELECT EXISTS (SELECT 1 FROM {} WHERE refresh_pipeline.jsonb_path_selects({}::jsonb, %s))"
                    ).format(target, col),
                    (list(path.steps),),
                ).fetchone()[0]
                if not matched:
                    problems.append(
                        f"{policy.source}, line {path.rule.line}: {info.qualified_name}.{column_name} "
                        f"({column.type_name}): JSON path {path.path} matches no value in any row"
                    )
    return problems
