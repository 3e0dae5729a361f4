"""Default deny: every column of every table must be classified by the policy."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import psycopg

from refresh_pipeline.masking.catalog import ColumnInfo, TableInfo
from refresh_pipeline.masking.check_conflicts import refuse_masked_emails
from refresh_pipeline.masking.policy import MaskingPolicy, policy_table_name
from refresh_pipeline.masking.suggestions import suggested_rule
from refresh_pipeline.masking.value_hints import ValueHint, sample_hints

# What samples of uncovered columns' values say, keyed by (schema, table, column): value_hints.sample_hints.
Hints = Mapping[tuple[str, str, str], ValueHint]


@dataclass(frozen=True)
class UncoveredColumn:
    schema: str
    table: str
    column: ColumnInfo

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.table}.{self.column.name}"

    @property
    def key(self) -> tuple[str, str, str]:
        return self.schema, self.table, self.column.name


def find_uncovered(policy: MaskingPolicy, tables: dict[tuple[str, str], TableInfo]) -> list[UncoveredColumn]:
    """Columns of the database that the policy neither masks nor explicitly keeps."""
    uncovered = []
    for key, info in sorted(tables.items()):
        table_policy = policy.tables.get(key)
        if table_policy is not None and table_policy.keep_all:
            continue
        covered = set(table_policy.columns) if table_policy else set()
        uncovered.extend(
            UncoveredColumn(info.schema, info.name, column) for column in info.columns if column.name not in covered
        )
    return uncovered


def sample_uncovered(
    conn: psycopg.Connection,
    tables: dict[tuple[str, str], TableInfo],
    uncovered: list[UncoveredColumn],
    log: Callable[[str], None] = lambda _message: None,
) -> Hints:
    """What samples of the uncovered columns' values say, for the snippet (value_hints.py), and which of the
    columns it would mask with `email` refuse @example.com by a CHECK (then masked at their own domain)."""
    hints = dict(sample_hints(conn, [(tables[(c.schema, c.table)], c.column) for c in uncovered], log))
    emailed: dict[tuple[str, str], list[ColumnInfo]] = {}
    for column in uncovered:
        if suggested_rule(column.column, column.table, hints.get(column.key))[0] == "email":
            emailed.setdefault((column.schema, column.table), []).append(column.column)
    for (schema, table), columns in emailed.items():
        for name in refuse_masked_emails(conn, tables[(schema, table)], columns):
            hint = hints.get((schema, table, name)) or ValueHint(None, "")
            hints[(schema, table, name)] = replace(hint, refuses_masked_emails=True)
    return hints


def policy_snippet(uncovered: list[UncoveredColumn], hints: Hints | None = None) -> str:
    """YAML to paste under `tables:`, one suggested rule per column (suggestions.py, from `hints` where a
    column has one); review each."""
    lines: list[str] = []
    current: tuple[str, str] | None = None
    for column in uncovered:
        if (column.schema, column.table) != current:
            current = (column.schema, column.table)
            name = policy_table_name(column.schema, column.table)
            lines.append(f"  {_yaml_key(name)}:")
        rule, why = suggested_rule(column.column, column.table, (hints or {}).get(column.key))
        note = f"{column.column.type_name}; {why}" if why else column.column.type_name
        lines.append(f"    {_yaml_key(column.column.name)}: {rule}  # REVIEW: {note}")
    return "\n".join(lines)


def _yaml_key(name: str) -> str:
    """The name as a YAML key: quoted when YAML would read it otherwise (`#`, `: `, a leading `-`, ...). Letters
    beyond ASCII stay as they are (`Fahrgäste`, not `Fahrg\\u00e4ste`); what does not print is escaped."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_ .$-]*", name) and not name.endswith(" "):
        return name
    readable = json.dumps(name, ensure_ascii=False)
    return readable if readable.isprintable() else json.dumps(name)


def describe_uncovered(uncovered: list[UncoveredColumn], policy_source: str, hints: Hints | None = None) -> str:
    """The error message for uncovered columns, with a snippet that would cover them."""
    names = ", ".join(column.qualified_name for column in uncovered)
    return (
        f"{len(uncovered)} column(s) are not covered by the masking policy {policy_source}: {names}.\n"
        "Every column must be masked or explicitly kept. Add to the policy (and review each line):\n"
        + policy_snippet(uncovered, hints)
    )
