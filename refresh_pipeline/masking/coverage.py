"""Default deny: every column of every table must be classified by the policy."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from refresh_pipeline.masking.catalog import TEXT_CASTABLE, WHOLE_NUMBER_TYPES, TableInfo
from refresh_pipeline.masking.policy import MaskingPolicy
from refresh_pipeline.masking.suggestions import suggested_rule


@dataclass(frozen=True)
class UncoveredColumn:
    schema: str
    table: str
    column: str
    type_name: str
    is_text: bool  # text-like, also under a domain
    is_date: bool = False
    is_whole_number: bool = False  # bigint or numeric: may hold a phone or an Aadhaar number
    is_document: bool = False  # json, jsonb, xml or hstore: scrub applies to the whole value

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.table}.{self.column}"


def find_uncovered(policy: MaskingPolicy, tables: dict[tuple[str, str], TableInfo]) -> list[UncoveredColumn]:
    """Columns of the database that the policy neither masks nor explicitly keeps."""
    uncovered = []
    for key, info in sorted(tables.items()):
        table_policy = policy.tables.get(key)
        if table_policy is not None and table_policy.keep_all:
            continue
        covered = set(table_policy.columns) if table_policy else set()
        uncovered.extend(
            UncoveredColumn(
                info.schema,
                info.name,
                column.name,
                column.type_name,
                column.is_text,
                column.is_date,
                not column.is_array and column.base_type in WHOLE_NUMBER_TYPES,
                not column.is_array and column.base_type.rsplit(".", 1)[-1] in TEXT_CASTABLE["scrub"],
            )
            for column in info.columns
            if column.name not in covered
        )
    return uncovered


def policy_snippet(uncovered: list[UncoveredColumn]) -> str:
    """YAML to paste under `tables:`, one suggested rule per column (suggestions.py); review each."""
    lines: list[str] = []
    current: tuple[str, str] | None = None
    for column in uncovered:
        if (column.schema, column.table) != current:
            current = (column.schema, column.table)
            name = column.table if column.schema == "public" else f"{column.schema}.{column.table}"
            lines.append(f"  {_yaml_key(name)}:")
        rule, why = suggested_rule(
            column.column, column.is_text, column.is_date, column.is_whole_number, column.is_document
        )
        note = f"{column.type_name}; {why}" if why else column.type_name
        lines.append(f"    {_yaml_key(column.column)}: {rule}  # REVIEW: {note}")
    return "\n".join(lines)


def _yaml_key(name: str) -> str:
    """The name as a YAML key: quoted when YAML would read it otherwise (`#`, `: `, a leading `-`, ...)."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_ .$-]*", name) and not name.endswith(" ") else json.dumps(name)


def describe_uncovered(uncovered: list[UncoveredColumn], policy_source: str) -> str:
    """The error message for uncovered columns, with a snippet that would cover them."""
    names = ", ".join(column.qualified_name for column in uncovered)
    return (
        f"{len(uncovered)} column(s) are not covered by the masking policy {policy_source}: {names}.\n"
        "Every column must be masked or explicitly kept. Add to the policy (and review each line):\n"
        + policy_snippet(uncovered)
    )
