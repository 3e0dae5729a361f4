"""Constraints masked rows can break, and what to tell the user when they do.

A transform that can give two different values one masked value (names from a list, a constant) on a
column under a unique index fails the table's swap. `validate` and the policy check warn about such
indexes before anything is masked. They warn rather than refuse: whether two rows really collide depends
on the data (a unique (route_id, stop_name) may never hold two names for one route).

When masked rows do break a constraint (unique, check, exclusion), the swap's transaction rolls back and
`constraint_violations_explained` turns the database's error into one naming the constraint, its columns
and the transforms to blame, never a value.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from refresh_pipeline.errors import RefreshError
from refresh_pipeline.masking.catalog import OWN_SCHEMAS, USER_SCHEMA, TableInfo
from refresh_pipeline.masking.policy import (
    ArrayRule,
    ColumnRule,
    JsonRule,
    MaskingPolicy,
    TablePolicy,
    TransformRule,
    describe_rule,
)
from refresh_pipeline.row_data_in_errors import first_line_without_row_data

# Transforms that give different values different masked values: value maps (email, phone, upi), keyed
# permutations (fpe, pan, aadhaar) and full-length keyed hashes.
_DISTINCT_MASKS = ("email", "phone", "upi", "fpe", "pan", "aadhaar")
_KEEPS_DISTINCT = frozenset({"keep", *_DISTINCT_MASKS})
# A keyed hash this long (in hex characters, 128 bits) does not collide in practice.
_DISTINCT_HASH_LENGTH = 32
_WHY_NOT_DISTINCT = {
    "redact": "gives every value the same replacement",
    "name": "picks names from a list",
    "first_name": "picks names from a list",
    "last_name": "picks names from a list",
    "address": "builds addresses from lists of houses and streets",
    "date": "moves dates within their year or month",
    "geo": "moves coordinates by a few hundred metres",
    "number": "picks numbers from a range",
    "ip": "maps addresses into 10.0.0.0/8 or fd00::/8",
    "scrub": "masks what it finds inside a text, which can make two texts alike",
}
# Transforms the warning suggests instead.
DISTINCT_TRANSFORMS = ", ".join(_DISTINCT_MASKS) + " or hash"

_UNIQUE_INDEXES = f"""
SELECT n.nspname, t.relname, ic.relname,
       array(SELECT a.attname FROM unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) WITH ORDINALITY AS k(attnum, at)
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum ORDER BY k.at)
       -- and the columns its expressions read
       || array(SELECT a.attname FROM pg_depend d
                JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
                WHERE i.indexprs IS NOT NULL AND d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
                  AND d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid AND d.refobjsubid > 0
                  AND NOT d.refobjsubid = ANY(i.indkey::int2[])
                ORDER BY a.attnum),
       {{nulls_not_distinct}}
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE i.indisunique AND t.relkind IN ('r', 'p') AND NOT t.relispartition AND {USER_SCHEMA}
  AND n.nspname <> ALL(%(own)s)
ORDER BY 1, 2, 3
"""


@dataclass(frozen=True)
class UniqueIndex:
    schema: str
    table: str
    name: str
    columns: tuple[str, ...]  # its key columns and the columns its expressions read
    nulls_not_distinct: bool


def read_unique_indexes(conn: psycopg.Connection) -> dict[tuple[str, str], list[UniqueIndex]]:
    """Every unique index (primary keys and unique constraints included) of every user table."""
    nulls = "i.indnullsnotdistinct" if conn.info.server_version >= 150000 else "false"
    indexes: dict[tuple[str, str], list[UniqueIndex]] = {}
    for schema, table, name, columns, nulls_not_distinct in conn.execute(
        _UNIQUE_INDEXES.format(nulls_not_distinct=nulls), {"own": list(OWN_SCHEMAS)}
    ).fetchall():
        indexes.setdefault((schema, table), []).append(
            UniqueIndex(schema, table, name, tuple(columns), bool(nulls_not_distinct))
        )
    return indexes


def _transform_reason(rule: TransformRule, nulls_not_distinct: bool) -> str | None:
    """Why this transform can give two different values one masked value; None when it cannot."""
    transform = rule.transform
    if transform in _KEEPS_DISTINCT:
        return None
    if transform == "hash":
        length = rule.param_dict.get("length", 64)
        return None if length >= _DISTINCT_HASH_LENGTH else f"keeps {length} characters of a hash"
    if transform == "null":
        return "sets every value to NULL, which this index counts as equal" if nulls_not_distinct else None
    return _WHY_NOT_DISTINCT.get(transform, "is not known to keep values distinct")


def collision_reason(rule: ColumnRule, nulls_not_distinct: bool = False) -> str | None:
    """Why masking a column with `rule` can give two different values the same masked value, or None."""
    if isinstance(rule, ArrayRule):
        return _transform_reason(rule.element, nulls_not_distinct)
    if isinstance(rule, JsonRule):
        for path in rule.paths:
            if reason := _transform_reason(path.rule, nulls_not_distinct):
                return f"at {path.path} {reason}"
        return None
    return _transform_reason(rule, nulls_not_distinct)


def _culprits(index: UniqueIndex, table_policy: TablePolicy) -> list[str]:
    """`column` (`transform`) why, for each column of the index whose masking can collide."""
    culprits = []
    for column in index.columns:
        rule = table_policy.columns.get(column)
        if rule is not None and (reason := collision_reason(rule, index.nulls_not_distinct)):
            culprits.append(f"{column} (`{describe_rule(rule)}` {reason})")
    return culprits


def find_unique_index_risks(
    policy: MaskingPolicy,
    tables: dict[tuple[str, str], TableInfo],
    indexes: dict[tuple[str, str], list[UniqueIndex]],
) -> list[str]:
    """A warning for each unique index with a column whose masking can give two rows the same value."""
    warnings = []
    for key, table_policy in sorted(policy.tables.items()):
        info = tables.get(key)
        if info is None or table_policy.keep_all:
            continue
        for index in indexes.get(key, []):
            if culprits := _culprits(index, table_policy):
                warnings.append(
                    f"{info.qualified_name}: unique index {index.name} on ({', '.join(index.columns)}) "
                    f"can be broken by masking: {'; '.join(culprits)}. If two rows get the same masked value "
                    f"the table's masking fails and nothing changes; {DISTINCT_TRANSFORMS} keep values distinct"
                )
    return warnings


# A CHECK of the table, or of a domain one of its columns has (for domains: the columns of that type).
_CHECK_CONSTRAINT = """
SELECT pg_get_constraintdef(c.oid),
       array(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)
             ORDER BY a.attnum)
FROM pg_constraint c WHERE c.conrelid = %(table)s::regclass AND c.conname = %(name)s AND c.contype = 'c'
UNION ALL
SELECT format('%%s of domain %%s', pg_get_constraintdef(c.oid), c.contypid::regtype),
       array(SELECT a.attname FROM pg_attribute a
             WHERE a.attrelid = %(table)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
               AND (a.atttypid = c.contypid OR a.atttypid = (SELECT t.typarray FROM pg_type t WHERE t.oid = c.contypid))
             ORDER BY a.attnum)
FROM pg_constraint c WHERE c.contypid <> 0 AND c.conname = %(name)s AND c.contype = 'c'
"""


def _masked_columns(columns: list[str], table_policy: TablePolicy) -> str:
    masked = [f"{c} (`{describe_rule(r)}`)" for c in columns if (r := table_policy.masked_columns.get(c)) is not None]
    return ", ".join(masked) or "none of its columns is masked"


def explain_violation(
    conn: psycopg.Connection, info: TableInfo, table_policy: TablePolicy, error: psycopg.IntegrityError
) -> str:
    """What to tell the user when masked rows broke a constraint (the transaction has rolled back): which
    constraint, its columns and the transforms to blame. Never a value."""
    name = error.diag.constraint_name
    if isinstance(error, psycopg.errors.CheckViolation):
        found = conn.execute(_CHECK_CONSTRAINT, {"table": info.ident.as_string(conn), "name": name}).fetchone()
        definition, columns = found if found else ("", [])
        return (
            f"{info.qualified_name}: masked values fail check constraint {name} {definition}, so nothing was "
            f"changed; masked columns it checks: {_masked_columns(columns, table_policy)}. Use transforms whose "
            "values pass it."
        )
    indexes = read_unique_indexes(conn).get((info.schema, info.name), [])
    index = next((i for i in indexes if i.name == name), None)
    if index is None:  # an exclusion constraint, NOT NULL
        return (
            f"{info.qualified_name}: masked rows break a constraint ({first_line_without_row_data(error)}), "
            "so nothing was changed; its masked columns need transforms whose values it accepts."
        )
    culprits = _culprits(index, table_policy)
    advice = f"Mask those columns with a transform that keeps values distinct ({DISTINCT_TRANSFORMS})."
    if not culprits:  # every masked column's transform keeps distinct values distinct
        culprits = [f"masked: {_masked_columns(list(index.columns), table_policy)}"]
        advice = (
            "Those transforms keep distinct values distinct, but read some spellings as one value (a UPI handle "
            "in another letter case): mask one of the columns with `hash`, which keeps every spelling apart."
        )
    # The swap stops at the first broken index; naming the others at risk saves a refresh per fix.
    others = [f"{i.name} on ({', '.join(i.columns)})" for i in indexes if i is not index and _culprits(i, table_policy)]
    return (
        f"{info.qualified_name}: masking gives two rows the same values for unique index {index.name} on "
        f"({', '.join(index.columns)}), so nothing was changed: {'; '.join(culprits)}. {advice}"
        + (f" Also at risk on this table: {', '.join(others)}." if others else "")
    )


@contextmanager
def constraint_violations_explained(
    conn: psycopg.Connection, info: TableInfo, table_policy: TablePolicy
) -> Iterator[None]:
    """Masked rows that break a constraint fail with a RefreshError naming it and the transforms to blame,
    instead of the database's error (whose detail would hold the row)."""
    try:
        yield
    except psycopg.IntegrityError as error:
        raise RefreshError(explain_violation(conn, info, table_policy, error)) from None
