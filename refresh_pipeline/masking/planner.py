"""Turns a table's policy into set-based SQL that rewrites the table with masked values."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from psycopg import sql

from refresh_pipeline.masking.catalog import TEXT_TYPES, ColumnInfo, TableInfo, column_text
from refresh_pipeline.masking.keys import MASKING_PURPOSE
from refresh_pipeline.masking.lengths import fitted
from refresh_pipeline.masking.policy import (
    DEFAULT_RADIUS_M,
    REDACTED,
    ArrayRule,
    ColumnRule,
    JsonPathRule,
    JsonRule,
    TablePolicy,
    TransformRule,
    describe_rule,
)
from refresh_pipeline.masking.session_key import key_column, key_relation, rewrite_key_expression

KEY = key_column(MASKING_PURPOSE)
_KEEP = TransformRule("keep")


@dataclass(frozen=True)
class Refs:
    """What a masked column's expression reads besides the row's own columns: the key, and the values of
    single-value JSON paths. The masking query reads both from its source (the joined key, each path
    extracted once per row); a table rewrite (rewrite.py) has only the row, so there they are spelled out."""

    key: sql.Composable
    extract_paths: bool  # each path value inline, instead of the source's column for it

    def path_value(self, column: ColumnInfo, ordinal: int, index: int, steps: tuple[str, ...]) -> sql.Composable:
        if self.extract_paths:
            return _path_extraction(column, steps)
        return _alias(ordinal, "path", index)


SOURCE_REFS = Refs(KEY, extract_paths=False)


def _text_call(
    transform: TransformRule, value: sql.Composable, refs: Refs, mapped: sql.Composable | None = None
) -> sql.Composable:
    if mapped is None:
        call = "refresh_pipeline.mask_text({key}, {transform}, {value}, {params}::jsonb)"
    else:
        call = "refresh_pipeline.mask_text_mapped({key}, {transform}, {value}, {params}::jsonb, {mapped})"
    return sql.SQL(call).format(
        key=refs.key,
        transform=sql.Literal(transform.transform),
        value=value,
        params=sql.Literal(json.dumps(transform.param_dict, sort_keys=True)),
        mapped=mapped,
    )


def _date_expression(column: ColumnInfo, ident: sql.Identifier, rule: TransformRule, refs: Refs) -> sql.Composable:
    params = rule.param_dict
    masked_day = sql.SQL("refresh_pipeline.mask_date({key}, {col}::date, {keep}, {band})").format(
        key=refs.key,
        col=ident,
        keep=sql.Literal(params.get("keep", "year")),
        band=sql.SQL("CAST({} AS int)").format(sql.Literal(params.get("band_years"))),
    )
    if column.base_type == "date":
        return masked_day
    # Timestamps keep their time of day; only the date moves.
    return sql.SQL("CAST({day} + ({col} - date_trunc('day', {col})) AS {type})").format(
        day=masked_day, col=ident, type=sql.SQL(column.type_name)
    )


def _location_expression(column: ColumnInfo, ident: sql.Identifier, radius_m: float, refs: Refs) -> sql.Composable:
    """A PostGIS value moved (functions.sql, mask_location). The SRID's units are read once per statement when
    the type fixes the SRID (`geometry(Point,4326)`), else per row; a geography is always in degrees."""
    srid = re.search(r"^(?:.*\.)?geometry\(\w+,\s*(\d+)\)$", column.type_name)
    units = (
        sql.SQL(", (SELECT refresh_pipeline.location_units({}))").format(sql.Literal(int(srid[1])))
        if srid
        else sql.SQL("")
    )
    return sql.SQL("refresh_pipeline.mask_location({key}, {col}, {radius}{units})").format(
        key=refs.key, col=ident, radius=sql.Literal(radius_m), units=units
    )


def _geo_or_number_expression(
    column: ColumnInfo, ident: sql.Identifier, rule: TransformRule, refs: Refs
) -> sql.Composable:
    params = rule.param_dict
    if rule.transform == "geo" and column.is_spatial:
        masked = _location_expression(column, ident, float(params.get("radius_m", DEFAULT_RADIUS_M)), refs)
    elif rule.transform == "geo" and "scale" in params:
        # Degrees times `scale` (`lat_e6`): moved as degrees, so a copy in degrees elsewhere moves alike.
        masked = sql.SQL(
            "refresh_pipeline.mask_geo({key}, {col}::double precision / {scale}, {radius}) * {scale}"
        ).format(
            key=refs.key,
            col=ident,
            scale=sql.Literal(float(params["scale"])),
            radius=sql.Literal(float(params.get("radius_m", DEFAULT_RADIUS_M))),
        )
    elif rule.transform == "geo":
        masked = sql.SQL("refresh_pipeline.mask_geo({key}, {col}::double precision, {radius})").format(
            key=refs.key, col=ident, radius=sql.Literal(float(params.get("radius_m", DEFAULT_RADIUS_M)))
        )
    else:
        masked = sql.SQL("refresh_pipeline.mask_number({key}, {col}::numeric, {low}, {high}, {decimals})").format(
            key=refs.key,
            col=ident,
            low=sql.Literal(params["min"]),
            high=sql.Literal(params["max"]),
            decimals=sql.Literal(params.get("decimals", 0)),
        )
    return sql.SQL("CAST({} AS {})").format(masked, sql.SQL(column.type_name))


def _alias(ordinal: int, *parts: object) -> sql.Identifier:
    """The name of a value the masking query computes for the column at `ordinal`: by position, so it stays
    short (PostgreSQL truncates names past 63 bytes) and apart from the table's own column names."""
    return sql.Identifier(" ".join(["refresh_pipeline", str(ordinal), *map(str, parts)]))


def _lookup_alias(ordinal: int, path: int | None, what: str) -> sql.Identifier:
    return _alias(ordinal, *(() if path is None else ("path", path)), what)


@dataclass(frozen=True)
class PhoneLookup:
    """A phone the masking query looks up in the value map with one join (the planner hashes the map)
    instead of one lookup per value inside mask_phone: a JSON phone 13.0 -> 7.8 us, a phone column
    9.9 -> 5.8 us. `value` is its text over the source's columns; the entry is NULL when the map has none,
    and mask_phone_mapped then looks it up itself (same result)."""

    value: sql.Composable
    ordinal: int
    path: int | None = None

    @property
    def mapped(self) -> sql.Identifier:
        return _lookup_alias(self.ordinal, self.path, "mapped")

    def join(self) -> sql.Composed:
        fingerprint = _lookup_alias(self.ordinal, self.path, "fingerprint")
        return sql.SQL(
            " LEFT JOIN (SELECT fingerprint AS {fingerprint}, masked AS {mapped} FROM refresh_pipeline.value_map"
            " WHERE kind = 'phone') AS {map} ON {fingerprint} = refresh_pipeline.map_fingerprint({key}, 'phone',"
            " refresh_pipeline.phone_national({value}))"
        ).format(
            fingerprint=fingerprint,
            mapped=self.mapped,
            map=_lookup_alias(self.ordinal, self.path, "map"),
            key=KEY,
            value=self.value,
        )


def _joins_value_map(path: JsonPathRule) -> bool:
    return path.settable and path.rule.transform == "phone"


def _phone_lookups(column: ColumnInfo, rule: ColumnRule, ordinal: int) -> list[PhoneLookup]:
    """Plain phone columns and single-value JSON paths masked as phones (arrays, wildcard paths and phones
    inside free text or UPI handles keep mask_phone's own lookup)."""
    if isinstance(rule, TransformRule) and rule.transform == "phone" and not (column.is_array or column.is_json):
        return [PhoneLookup(column_text(sql.Identifier(column.name)), ordinal)]
    if not isinstance(rule, JsonRule):
        return []
    return [
        PhoneLookup(
            sql.SQL("CASE WHEN jsonb_typeof({v}) IN ('string', 'number') THEN {v} #>> '{{}}' END").format(
                v=_alias(ordinal, "path", index)
            ),
            ordinal,
            index,
        )
        for index, path in enumerate(rule.paths)
        if _joins_value_map(path)
    ]


def _path_extractions(
    column: ColumnInfo, rule: ColumnRule, ordinal: int
) -> list[tuple[sql.Identifier, sql.Composable]]:
    """The values a JSON rule's single-value paths select, each read once per row by the plan's source
    (passed inline, the #> extraction would run once per mention in the masking functions)."""
    if not isinstance(rule, JsonRule):
        return []
    return [
        (_alias(ordinal, "path", index), _path_extraction(column, path.steps))
        for index, path in enumerate(rule.paths)
        if path.settable
    ]


def _path_extraction(column: ColumnInfo, steps: tuple[str, ...]) -> sql.Composed:
    return sql.SQL("{}::jsonb #> {}::text[]").format(sql.Identifier(column.name), sql.Literal(list(steps)))


def _json_expression(
    column: ColumnInfo, ident: sql.Identifier, rule: JsonRule, ordinal: int, refs: Refs
) -> sql.Composable:
    """Each single-value path is set in place from the value the source read (jsonb_set_lax, no walk);
    wildcard paths go through the recursive mask_jsonb walk."""
    expression: sql.Composable = sql.SQL("{}::jsonb").format(ident)
    for index, path in enumerate(rule.paths):
        arguments = {
            "key": refs.key,
            "steps": sql.Literal(list(path.steps)),
            "transform": sql.Literal(path.rule.transform),
            "params": sql.Literal(json.dumps(path.rule.param_dict, sort_keys=True)),
        }
        if path.settable:
            if _joins_value_map(path):
                masked = (
                    "refresh_pipeline.mask_json_value_mapped({key}, {value}, {transform}, {params}::jsonb, {mapped})"
                )
            else:
                masked = "refresh_pipeline.mask_json_value({key}, {value}, {transform}, {params}::jsonb)"
            expression = sql.SQL(
                "jsonb_set_lax({doc}, {steps}::text[], " + masked + ", false, 'return_target')"
            ).format(
                doc=expression,
                value=refs.path_value(column, ordinal, index, path.steps),
                mapped=_lookup_alias(ordinal, index, "mapped"),
                **arguments,
            )
        else:
            expression = sql.SQL(
                "refresh_pipeline.mask_jsonb({key}, {doc}, {steps}::text[], {transform}, {params}::jsonb)"
            ).format(doc=expression, **arguments)
    return sql.SQL("{}::json").format(expression) if column.base_type == "json" else expression


def column_expression(column: ColumnInfo, rule: ColumnRule, ordinal: int, refs: Refs = SOURCE_REFS) -> sql.Composable:
    """The SQL expression for the masked value of the column at `ordinal` (the column itself when kept),
    over the plan's source (its path extractions and phone lookups) unless `refs` says otherwise."""
    ident = sql.Identifier(column.name)
    if isinstance(rule, JsonRule):
        return _json_expression(column, ident, rule, ordinal, refs)
    if isinstance(rule, ArrayRule):
        element = fitted(column, rule.element, _text_call(rule.element, column_text(sql.Identifier("element")), refs))
        if column.base_type == "cidr":
            element = sql.SQL("network(CAST({} AS inet))::text").format(element)
        masked = sql.SQL(
            "CASE WHEN {col} IS NULL THEN NULL ELSE refresh_pipeline.array_shaped_like(ARRAY(SELECT {element} "
            "FROM unnest({col}) WITH ORDINALITY AS u(element, position) ORDER BY position), {col}) END"
        ).format(col=ident, element=element)
        # A text array is assigned as is; others (bigint[], inet[], uuid[]) cast back explicitly.
        text_array = column.unqualified_type in TEXT_TYPES
        return masked if text_array else sql.SQL("CAST({} AS {})").format(masked, sql.SQL(column.type_name))
    if rule.transform == "keep":
        return ident
    if rule.transform == "null":
        return sql.SQL("CAST(NULL AS {})").format(sql.SQL(column.type_name))
    if rule.transform == "date":
        return _date_expression(column, ident, rule, refs)
    if rule.transform in ("geo", "number"):
        return _geo_or_number_expression(column, ident, rule, refs)
    if rule.transform == "redact" and column.is_bytes:  # a file: its bytes become the redact text's
        value = sql.Literal(rule.param_dict.get("value", REDACTED))
        return sql.SQL("CASE WHEN {} IS NULL THEN NULL ELSE convert_to({}, 'UTF8') END").format(ident, value)
    lookups = _phone_lookups(column, rule, ordinal)
    masked = _text_call(rule, column_text(ident), refs, lookups[0].mapped if lookups else None)
    masked = fitted(column, rule, masked)
    if column.is_text:
        return masked  # assignment casts back, and refuses values longer than the column
    if column.base_type == "cidr":  # a masked network's address has host bits set, which cidr refuses
        masked = sql.SQL("network(CAST({} AS inet))").format(masked)
    return sql.SQL("CAST({} AS {})").format(masked, sql.SQL(column.type_name))


@dataclass(frozen=True)
class TableMaskingPlan:
    """How one table is masked: masked rows are computed into a staging table (in block ranges, possibly
    by several sessions), then swapped in in one transaction (masking/swap.py).

    Rewriting instead of UPDATE keeps unique keys valid throughout: a masked value may equal another
    row's not-yet-masked original, which an in-place UPDATE would reject as a duplicate.
    """

    table: TableInfo
    rules: dict[str, str]
    select_list: sql.Composed
    target: sql.Composable  # ONLY <table> unless partitioned
    extractions: list[tuple[sql.Identifier, sql.Composable]]  # JSON path values the select list reads
    lookups: list[PhoneLookup]  # phones looked up by a join
    table_ident: sql.Composed
    names: sql.Composed
    overriding: sql.Composable
    # Each masked column's expression over the row alone (key from the transaction's setting), for a table
    # rewrite; None when a masked column needs the masking query (a value-map join, an array subquery).
    rewrite: list[tuple[ColumnInfo, sql.Composable]] | None = None

    @property
    def masked_columns(self) -> list[str]:
        return [name for name, rule in self.rules.items() if rule != "keep"]

    def _source(self, condition: sql.Composable, relation: sql.Composable | None = None) -> sql.Composed:
        """The rows to mask (of `relation`, one partition, when given) joined to the session's key
        (session_key.py); with JSON path values read once per row in a subquery the planner keeps (OFFSET 0),
        so the select list reads them as plain columns, and the value map joined per phone."""
        extracted = sql.SQL("").join(sql.SQL(", {} AS {}").format(e, alias) for alias, e in self.extractions)
        fence = sql.SQL(" OFFSET 0" if self.extractions or self.lookups else "")
        return sql.SQL("(SELECT *{} FROM {} WHERE {}{}) AS source CROSS JOIN {}{}").format(
            extracted,
            relation if relation is not None else self.target,
            condition,
            fence,
            key_relation(MASKING_PURPOSE),
            sql.SQL("").join(lookup.join() for lookup in self.lookups),
        )

    def create_staging(self, staging: sql.Composable) -> sql.Composed:
        return sql.SQL("CREATE UNLOGGED TABLE {staging} AS SELECT {select} FROM {source} WITH NO DATA").format(
            staging=staging, select=self.select_list, source=self._source(sql.SQL("true"))
        )

    def fill_staging(
        self, staging: sql.Composable, condition: sql.Composable, relation: sql.Composable | None = None
    ) -> sql.Composed:
        return sql.SQL("INSERT INTO {staging} SELECT {select} FROM {source}").format(
            staging=staging, select=self.select_list, source=self._source(condition, relation)
        )

    def insert_rows(self, staging: sql.Composable) -> sql.Composed:
        return sql.SQL("INSERT INTO {target} ({names}){overriding} SELECT {names} FROM {staging}").format(
            target=self.table_ident, names=self.names, overriding=self.overriding, staging=staging
        )


def plan_table_masking(table: TableInfo, table_policy: TablePolicy) -> TableMaskingPlan:
    columns = [c for c in table.columns if not c.generated]  # generated columns recompute on INSERT
    table_ident = table.ident
    # ONLY: rows of inheritance children belong to those tables; a partitioned parent covers its partitions.
    target = table_ident if table.partitioned else sql.SQL("ONLY {}").format(table_ident)
    rules = {c.name: table_policy.columns.get(c.name, _KEEP) for c in columns}
    return TableMaskingPlan(
        table=table,
        rules={name: describe_rule(rule) for name, rule in rules.items()},
        select_list=sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(column_expression(c, rules[c.name], i), sql.Identifier(c.name))
            for i, c in enumerate(columns)
        ),
        target=target,
        extractions=[e for i, c in enumerate(columns) for e in _path_extractions(c, rules[c.name], i)],
        lookups=[lookup for i, c in enumerate(columns) for lookup in _phone_lookups(c, rules[c.name], i)],
        table_ident=table_ident,
        names=sql.SQL(", ").join(sql.Identifier(c.name) for c in columns),
        overriding=sql.SQL(" OVERRIDING SYSTEM VALUE" if any(c.identity_always for c in columns) else ""),
        rewrite=_rewrite_expressions(columns, rules),
    )


def _rewrite_expressions(
    columns: list[ColumnInfo], rules: dict[str, ColumnRule]
) -> list[tuple[ColumnInfo, sql.Composable]] | None:
    masked = [(i, c) for i, c in enumerate(columns) if describe_rule(rules[c.name]) != "keep"]
    needs_query = (
        c.is_array or isinstance(rules[c.name], ArrayRule) or _phone_lookups(c, rules[c.name], i) for i, c in masked
    )
    if any(needs_query):
        return None
    refs = Refs(rewrite_key_expression(MASKING_PURPOSE), extract_paths=True)
    return [(c, column_expression(c, rules[c.name], i, refs)) for i, c in masked]
