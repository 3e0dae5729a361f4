"""What tables and columns a database holds, as the masking engine needs to know them."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from refresh_pipeline.masking.policy import ArrayRule, MaskingPolicy, TransformRule

# Schemas the pipeline itself creates on the restored database; never part of the policy.
OWN_SCHEMAS = ("refresh_pipeline", "refresh_pipeline_audit")
# SQL condition on pg_namespace `n`: not a system schema (for queries run with parameters, hence %%).
USER_SCHEMA = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'"
TEXT_TYPES = frozenset({"text", "character varying", "character", "citext", "name"})
DATE_TYPES = frozenset({"date", "timestamp without time zone", "timestamp with time zone"})
JSON_TYPES = frozenset({"json", "jsonb"})
# Other types whose values are text inside: no transform applies to them, but the audit reads them.
OTHER_TEXT_TYPES = frozenset({"xml", "hstore", "tsvector"})
# PostGIS locations (unqualified: the extension's schema varies); `geo` moves them, the audit compares them.
SPATIAL_TYPES = frozenset({"geometry", "geography"})
FRACTIONAL_TYPES = frozenset({"numeric", "double precision", "real"})
INTEGER_TYPES = frozenset({"integer", "bigint", "smallint"})
NUMBER_TYPES = FRACTIONAL_TYPES | INTEGER_TYPES
WHOLE_NUMBER_TYPES = frozenset({"bigint", "numeric"})
# Where a phone or an Aadhaar number is stored as a number: a bigint or whole numeric, or a double precision
# (a spreadsheet's import; it holds 15 digits exactly). integer is too small, real too coarse.
PHONE_NUMBER_TYPES = WHOLE_NUMBER_TYPES | {"double precision"}
# Non-text types some text transforms also accept (cast to text and back): a phone or an Aadhaar number is
# often stored as a bigint (integer is too small for either). Names are unqualified (an extension's hstore).
TEXT_CASTABLE = {
    "ip": frozenset({"inet", "cidr"}),
    "fpe": frozenset({"uuid"}),
    "phone": PHONE_NUMBER_TYPES,
    "aadhaar": PHONE_NUMBER_TYPES,
    # A whole document or markup, scrubbed as its text: masked tokens are letters, digits and @, which keep
    # it valid (an email inside a JSON string, a phone that is a JSON number).
    "scrub": frozenset({"json", "jsonb", "xml", "hstore"}),
}
# Whole-number columns masked with these are PII kept as numbers: collected at restore and audited as text.
NUMBER_PII_TRANSFORMS = frozenset({"phone", "aadhaar"})
# How much of each value of a kept bytea column the audit reads (a file's text is usually near its start).
AUDITED_BYTES = 65536


def column_text(column: sql.Composable) -> sql.Composed:
    """A column's value as text in the database's default collation. Masking and audit functions then work
    whatever collation the column has (regular expressions and LIKE refuse a nondeterministic one, such as a
    case-insensitive ICU collation), and values that collation calls equal stay apart (`Ravi@x.in` and
    `ravi@x.in` are two values to mask alike, not one)."""
    return sql.SQL('({}::text COLLATE "default")').format(column)


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type_name: str  # format_type(), e.g. 'character varying(64)', 'text[]'
    base_type: str  # type without modifiers; for arrays the element's
    is_array: bool
    nullable: bool
    generated: bool
    identity_always: bool
    max_length: int | None
    composite: bool = False  # a row type (or an array of one): its fields print as text
    generated_from: tuple[str, ...] = ()  # a generated column's: the columns its expression reads
    unique_alone: bool = False  # the whole key of a unique index (a primary key, a unique token)
    # Routes rows to partitions (its table's, or a sub-partition's): a masked value would belong in another one.
    partition_key: bool = False
    # A number (or an array of them) the policy masks as phones or Aadhaar numbers (with_pii_numbers).
    pii_number: bool = False
    audited_bytes: bool = False  # a kept bytea column the audit reads as text (with_kept_bytes)

    @property
    def is_bytes(self) -> bool:
        """A bytea column (a file, an image, a scanned document)."""
        return not self.is_array and self.base_type == "bytea"

    @property
    def is_text(self) -> bool:
        return not self.is_array and self.unqualified_type in TEXT_TYPES  # citext may print as public.citext

    @property
    def is_json(self) -> bool:
        return not self.is_array and self.base_type in JSON_TYPES

    @property
    def is_date(self) -> bool:
        return not self.is_array and self.base_type in DATE_TYPES

    @property
    def is_spatial(self) -> bool:
        return not self.is_array and self.unqualified_type in SPATIAL_TYPES

    @property
    def unqualified_type(self) -> str:
        """The base type without its schema: an extension's `public.hstore` is `hstore`."""
        return self.base_type.rsplit(".", 1)[-1]

    @property
    def holds_text(self) -> bool:
        """Could hold PII as text: text-like, JSON, XML, hstore, a row type, or an array of those."""
        return (
            self.pii_number
            or self.audited_bytes
            or self.composite
            or self.unqualified_type in TEXT_TYPES | JSON_TYPES | OTHER_TEXT_TYPES
        )

    def as_text(self, alias: str) -> sql.Composed:
        """The column's value as the tokeniser reads it. Bytes: their first AUDITED_BYTES, printable ASCII as
        is and every other byte escaped, so an email or phone stored as bytes shows and nothing fails to
        decode."""
        column = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(self.name))
        if self.audited_bytes:
            return sql.SQL("encode(substring({} FROM 1 FOR {}), 'escape')").format(column, sql.Literal(AUDITED_BYTES))
        return column_text(column)

    @property
    def numeric_digits(self) -> tuple[int | None, int]:
        """(digits before the point, digits after) of a numeric(p, s); (None, 0) when unbounded (bigint,
        unconstrained numeric) or not a number."""
        if match := re.fullmatch(r"numeric\((\d+)(?:,\s*(\d+))?\)(?:\[\])*", self.type_name):
            scale = int(match[2] or 0)
            return int(match[1]) - scale, scale
        return None, 0

    @property
    def scalar_text(self) -> bool:
        """One text value per row (not JSON, an array or a row type): its whole value can be PII."""
        return self.is_text or (self.pii_number and not self.is_array)


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    partitioned: bool
    columns: tuple[ColumnInfo, ...]

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def ident(self) -> sql.Composed:
        """The schema-qualified, quoted name, for composing SQL."""
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.name))

    @property
    def own_rows(self) -> sql.Composed:
        """The table's own rows, to read FROM: a plain table's without its inheritance children (each is masked,
        counted and audited as a table of its own, so a parent's audit must not read a child not masked yet), a
        partitioned table's from its partitions."""
        return self.ident if self.partitioned else sql.SQL("ONLY {}").format(self.ident)

    def column(self, name: str) -> ColumnInfo | None:
        return next((c for c in self.columns if c.name == name), None)


_TABLES_SQL = f"""
SELECT n.nspname, c.relname, c.relkind = 'p'
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = ANY(%s) AND NOT c.relispartition
  AND {USER_SCHEMA}
  AND n.nspname <> ALL(%s)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""

# A column of a domain is described by the type under the domain (`CREATE DOMAIN email AS text` is text to
# the masking and the audit), with the domain's length limit; so is an array's element (an array of varchar(n)
# has its elements' limit).
_COLUMNS_SQL = """
SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
       format_type(CASE WHEN e.typtype = 'd' THEN e.typbasetype ELSE coalesce(e.oid, t.oid) END, NULL),
       t.typcategory = 'A', NOT a.attnotnull, a.attgenerated <> '', a.attidentity = 'a',
       CASE WHEN m.typmod > 4 AND format_type(coalesce(e.oid, t.oid), NULL) IN ('character varying', 'character')
            THEN m.typmod - 4 END,
       coalesce(e.typtype, t.typtype) = 'c',
       array(SELECT source.attname FROM pg_attrdef ad
             JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                             AND d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid AND d.refobjsubid > 0
             JOIN pg_attribute source ON source.attrelid = c.oid AND source.attnum = d.refobjsubid
             WHERE a.attgenerated <> '' AND ad.adrelid = c.oid AND ad.adnum = a.attnum
             ORDER BY source.attnum),
       EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = c.oid AND x.indisunique AND x.indnkeyatts = 1
                                           AND x.indkey[0] = a.attnum)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type declared ON declared.oid = a.atttypid
JOIN pg_type t ON t.oid = CASE WHEN declared.typtype = 'd' THEN declared.typbasetype ELSE declared.oid END
LEFT JOIN pg_type e ON e.oid = CASE WHEN t.typcategory = 'A' THEN t.typelem END
CROSS JOIN LATERAL (SELECT CASE WHEN declared.typtype = 'd' THEN declared.typtypmod ELSE a.atttypmod END AS typmod) m
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind = ANY(%s) AND NOT c.relispartition
  AND n.nspname <> ALL(%s)
ORDER BY n.nspname, c.relname, a.attnum
"""


# Per partitioned table (not a partition itself), the key of every partitioned table of its tree: its columns,
# and the expression of a key on expressions (`HASH (lower(email))`).
_PARTITION_KEYS = """
SELECT n.nspname, root.relname,
       array(SELECT k.attname FROM pg_attribute k WHERE k.attrelid = pt.partrelid AND k.attnum = ANY(pt.partattrs)),
       pg_get_expr(pt.partexprs, pt.partrelid)
FROM pg_class root
JOIN pg_namespace n ON n.oid = root.relnamespace
CROSS JOIN LATERAL pg_partition_tree(root.oid) AS tree
JOIN pg_partitioned_table pt ON pt.partrelid = tree.relid
WHERE root.relkind = 'p' AND NOT root.relispartition
"""
# An identifier in an expression as pg_get_expr prints it: quoted ("Region", with "" inside) or plain; and a
# string literal, whose words are none.
_IDENTIFIER = re.compile(r'"((?:[^"]|"")*)"|([A-Za-z_][A-Za-z0-9_$]*)')
_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")


def _partition_key_columns(conn: psycopg.Connection) -> dict[tuple[str, str], set[str]]:
    """The columns each partitioned table's rows are routed by. An expression's are the names it reads (a
    function named like a column counts too: a column kept needlessly, never one masked out of its partition)."""
    keys: dict[tuple[str, str], set[str]] = {}
    for schema, table, columns, expressions in conn.execute(_PARTITION_KEYS).fetchall():
        names = keys.setdefault((schema, table), set())
        names.update(columns)
        for quoted, plain in _IDENTIFIER.findall(_STRING_LITERAL.sub("", expressions or "")):
            names.add(quoted.replace('""', '"') if quoted else plain)
    return keys


def _read_relations(conn: psycopg.Connection, kinds: list[str]) -> dict[tuple[str, str], TableInfo]:
    own = list(OWN_SCHEMAS)
    tables = {(s, t): p for s, t, p in conn.execute(_TABLES_SQL, (kinds, own)).fetchall()}
    columns: dict[tuple[str, str], list[ColumnInfo]] = {key: [] for key in tables}
    keys = _partition_key_columns(conn) if "p" in kinds else {}
    for schema, table, name, *column, generated_from, unique in conn.execute(_COLUMNS_SQL, (kinds, own)).fetchall():
        if (schema, table) in columns:
            partition_key = name in keys.get((schema, table), ())
            info = ColumnInfo(
                name, *column, generated_from=tuple(generated_from), unique_alone=unique, partition_key=partition_key
            )
            columns[(schema, table)].append(info)
    return {
        key: TableInfo(schema=key[0], name=key[1], partitioned=bool(partitioned), columns=tuple(columns[key]))
        for key, partitioned in tables.items()
    }


_LEAF_PARTITIONS = """
SELECT n.nspname, c.relname FROM pg_partition_tree(%s::regclass) AS t
JOIN pg_class AS c ON c.oid = t.relid JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE t.isleaf AND c.relkind = 'r'
ORDER BY n.nspname, c.relname
"""


def leaf_partitions(conn: psycopg.Connection, table: TableInfo) -> list[TableInfo]:
    """The partitions holding a partitioned table's rows (sub-partitions' too; foreign ones are detached for
    the refresh), each as a plain table with the parent's columns (a ctid names a row only within one)."""
    rows = conn.execute(_LEAF_PARTITIONS, (table.ident.as_string(conn),)).fetchall()
    return [dataclasses.replace(table, schema=schema, name=name, partitioned=False) for schema, name in rows]


def count_rows(conn: psycopg.Connection, table: TableInfo) -> int:
    """The table's own rows (own_rows): as restored, as masked, as audited."""
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.own_rows)).fetchone()[0]


def read_tables(conn: psycopg.Connection) -> dict[tuple[str, str], TableInfo]:
    """Every user table (partitioned parents, not their partitions), keyed by (schema, table)."""
    return _read_relations(conn, ["r", "p"])


def read_materialized_views(conn: psycopg.Connection) -> dict[tuple[str, str], TableInfo]:
    """Every populated user materialized view; they hold copies of table data, so they need auditing. (An
    unpopulated one holds nothing, and reading it is an error.)"""
    populated = set(
        conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'm' AND c.relispopulated"
        ).fetchall()
    )
    return {key: info for key, info in _read_relations(conn, ["m"]).items() if key in populated}


def with_pii_numbers(table: TableInfo, policy: MaskingPolicy) -> TableInfo:
    """The table with its number columns (and arrays of them) the policy masks as phones or Aadhaar numbers
    marked `pii_number`, so that collecting production's PII and the audit read them as text like
    text columns."""
    table_policy = policy.tables.get((table.schema, table.name))
    if table_policy is None:
        return table

    def pii_number(column: ColumnInfo) -> bool:
        rule = table_policy.columns.get(column.name)
        if isinstance(rule, ArrayRule) and column.is_array:
            rule = rule.element
        elif column.is_array:
            return False
        return (
            isinstance(rule, TransformRule)
            and rule.transform in NUMBER_PII_TRANSFORMS
            and column.base_type in PHONE_NUMBER_TYPES
        )

    return _with_marked(table, "pii_number", pii_number)


def with_kept_bytes(table: TableInfo, kept_columns: set[str]) -> TableInfo:
    """The table with its kept bytea columns marked `audited_bytes`: the audit reads them as text too."""
    return _with_marked(table, "audited_bytes", lambda c: c.name in kept_columns and c.is_bytes)


def _with_marked(table: TableInfo, flag: str, marked: Callable[[ColumnInfo], bool]) -> TableInfo:
    columns = tuple(dataclasses.replace(c, **{flag: True}) if marked(c) else c for c in table.columns)
    return dataclasses.replace(table, columns=columns)


def column_words(name: str) -> str:
    """A column's name as lower-case words joined by `_`: `homeAddress` -> `home_address`, `Passenger Email` ->
    `passenger_email`."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return re.sub(r"[^a-z0-9]+", "_", snake.lower()).strip("_")
