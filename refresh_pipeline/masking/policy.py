"""The masking policy: which transform applies to every column, loaded from YAML with line numbers."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from refresh_pipeline.errors import RefreshError

# Transforms that turn text into text; these are also allowed inside JSON paths and arrays.
TEXT_TRANSFORMS = frozenset({
    "redact", "hash", "email", "phone", "upi", "name", "first_name", "last_name", "address", "scrub", "pan",
    "aadhaar", "fpe", "ip",
})  # fmt: skip
LARGE_OBJECT_CHOICES = ("remove", "keep")
DEFAULT_RADIUS_M = 500  # how far `geo` moves a location by default, at most
REDACTED = "REDACTED"  # what `redact` writes without a `value` (functions.sql has the same default)
SCALAR_TRANSFORMS = TEXT_TRANSFORMS | {"keep", "null", "date", "geo", "number"}
_PARAMETERS: dict[str, frozenset[str]] = {
    "email": frozenset({"keep_domain", "keep_domains"}),
    "redact": frozenset({"value"}),
    "hash": frozenset({"length"}),
    "date": frozenset({"keep", "band_years"}),
    "geo": frozenset({"radius_m", "scale"}),
    "number": frozenset({"min", "max", "decimals"}),
}


_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parameter_problem(name: str, params: dict[str, Any]) -> str | None:
    """Why a transform's parameters are unusable, or None."""
    if name == "hash" and not (isinstance(params.get("length", 64), int) and 8 <= params.get("length", 64) <= 64):
        return "hash length must be a whole number from 8 to 64"
    if name == "redact" and not isinstance(params.get("value", ""), str):
        return "redact value must be a string"
    if name == "email" and not isinstance(params.get("keep_domain", False), bool):
        return "email keep_domain must be true or false"
    if name == "email" and "keep_domains" in params:
        domains = params["keep_domains"]
        if not isinstance(domains, list | tuple) or not domains:
            return "email keep_domains must be a list of domains, e.g. [busco.in, cityflo.com]"
        if bad := [d for d in domains if not (isinstance(d, str) and _DOMAIN.fullmatch(d))]:
            return f"email keep_domains: {bad[0]!r} is not a domain (e.g. busco.in)"
        if params.get("keep_domain"):
            return "email takes keep_domain: true (every domain) or keep_domains (those listed), not both"
    if name == "date":
        if params.get("keep", "year") not in ("year", "month"):
            return "date keep must be `year` or `month`"
        band = params.get("band_years")
        if band is not None and (not isinstance(band, int) or not 2 <= band <= 100):
            return "date band_years must be a whole number from 2 to 100"
    if name == "geo":
        radius, scale = params.get("radius_m", DEFAULT_RADIUS_M), params.get("scale", 1)
        if not (_is_number(radius) and radius > 0):
            return "geo radius_m must be a positive number of metres"
        if not (_is_number(scale) and scale > 0):
            return "geo scale must be a positive number (the stored value is degrees times it, e.g. 1000000)"
    if name == "number":
        low, high, decimals = params.get("min"), params.get("max"), params.get("decimals", 0)
        if not (_is_number(low) and _is_number(high)) or low > high:
            return "number needs numeric `min` and `max` with min <= max"
        if not isinstance(decimals, int) or not 0 <= decimals <= 6:
            return "number decimals must be a whole number from 0 to 6"
    return None


POLICY_VERSION = 1  # the format this code reads; a policy may say so with `version: 1`
_JSON_PATH_TOKEN = re.compile(r"\.([A-Za-z_][\w-]*)|\[\*\]|\[\"([^\"]+)\"\]|\[(\d+)\]")


@dataclass(frozen=True)
class TransformRule:
    """Apply one named transform (with parameters) to a value."""

    transform: str
    params: tuple[tuple[str, Any], ...] = ()
    line: int = 0

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def keeps_domains(self) -> bool:
        """`email` that masks some or every address at its own domain (keep_domain, keep_domains)."""
        params = self.param_dict
        return self.transform == "email" and bool(params.get("keep_domain") or params.get("keep_domains"))


@dataclass(frozen=True)
class JsonPathRule:
    path: str
    steps: tuple[str, ...]
    rule: TransformRule

    @property
    def settable(self) -> bool:
        """It selects at most one value, addressed the same way by #> and jsonb_set (no `*`, no index from the
        end)."""
        return not any(step == "*" or re.fullmatch(r"-\d+", step) for step in self.steps)


@dataclass(frozen=True)
class JsonRule:
    """Mask selected paths of a json/jsonb column; everything else in the document is kept."""

    paths: tuple[JsonPathRule, ...]
    line: int = 0


@dataclass(frozen=True)
class ArrayRule:
    """Mask every element of an array column with one transform."""

    element: TransformRule
    line: int = 0


ColumnRule = TransformRule | JsonRule | ArrayRule


@dataclass(frozen=True)
class TablePolicy:
    schema: str
    table: str
    keep_all: bool
    columns: dict[str, ColumnRule] = field(default_factory=dict)
    line: int = 0

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def policy_name(self) -> str:
        """The name as the policy writes it (policy_table_name), which MaskingPolicy.table() looks up."""
        return policy_table_name(self.schema, self.table)

    @property
    def masked_columns(self) -> dict[str, ColumnRule]:
        """Columns whose values change (everything but `keep`)."""
        return {
            name: rule
            for name, rule in self.columns.items()
            if not (isinstance(rule, TransformRule) and rule.transform == "keep")
        }

    def digest(self) -> str:
        """Identifies what masking this table means, to tell an already-masked table apart."""
        described = {name: _describe(rule) for name, rule in sorted(self.columns.items())}
        payload = json.dumps({"keep_all": self.keep_all, "columns": described}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _describe(rule: ColumnRule) -> Any:
    if isinstance(rule, TransformRule):
        return [rule.transform, list(rule.params)]
    if isinstance(rule, ArrayRule):
        return {"array": _describe(rule.element)}
    return {"json": {p.path: _describe(p.rule) for p in rule.paths}}


def describe_rule(rule: ColumnRule) -> str:
    """A short human description, for metadata and reports."""
    if isinstance(rule, TransformRule):
        return rule.transform
    if isinstance(rule, ArrayRule):
        return f"array({rule.element.transform})"
    return "json(" + ", ".join(f"{p.path}: {p.rule.transform}" for p in rule.paths) + ")"


@dataclass(frozen=True)
class MaskingPolicy:
    tables: dict[tuple[str, str], TablePolicy]
    source: str = "<policy>"
    # Known public values (a company helpline, a support address) the PII audit must not report.
    allowlist: tuple[str, ...] = ()
    # What happens to production's large objects (pg_largeobject): "remove", "keep" (audited) or unsaid.
    large_objects: str | None = None

    def table(self, qualified: str) -> TablePolicy:
        key = split_table_name(qualified)
        if key not in self.tables:
            raise RefreshError(f"{self.source}: table {qualified!r} is not in the policy.")
        return self.tables[key]


# A part of a table name: plain, or in double quotes (as in SQL, `""` inside) when it holds a dot or a quote.
_NAME_PART = re.compile(r'"((?:[^"]|"")+)"|([^".]+)')


def split_table_name(name: str) -> tuple[str, str]:
    """`schema.table` or bare `table` (meaning `public.table`); `public."v1.users"` for a name with a dot."""
    parts: list[str] = []
    position, complete = 0, False
    while match := _NAME_PART.match(name, position):
        parts.append(match[1].replace('""', '"') if match[1] is not None else match[2])
        position = match.end()
        complete = position == len(name)
        if complete or name[position] != ".":
            break
        position += 1
    if complete and len(parts) in (1, 2):
        return ("public", parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    raise RefreshError(
        f"bad table name {name!r}: write `table` or `schema.table`, and quote a name holding a dot: "
        '`public."v1.users"`.'
    )


def policy_table_name(schema: str, table: str) -> str:
    """How the policy names a table: bare in `public`, parts holding a dot or a quote in double quotes."""

    def part(name: str) -> str:
        return '"' + name.replace('"', '""') + '"' if "." in name or '"' in name else name

    return part(table) if schema == "public" else f"{part(schema)}.{part(table)}"


def json_path_text(steps: tuple[str, ...]) -> str | None:
    """('a', '*', 'odd key') → `$.a[*]["odd key"]`, as parse_json_path reads it; None for a key it cannot
    write (one holding a double quote)."""
    parts = []
    for step in steps:
        if step == "*":
            parts.append("[*]")
        elif re.fullmatch(r"[A-Za-z_][\w-]*", step):
            parts.append(f".{step}")
        elif step and '"' not in step:
            parts.append(f'["{step}"]')
        else:
            return None
    return "$" + "".join(parts)


def parse_json_path(path: str) -> tuple[str, ...]:
    """`$.a.b[*].c` → ('a', 'b', '*', 'c')."""
    if not path.startswith("$"):
        raise ValueError(f"JSON path {path!r} must start with '$'")
    steps: list[str] = []
    position = 1
    while position < len(path):
        match = _JSON_PATH_TOKEN.match(path, position)
        if not match:
            raise ValueError(f"JSON path {path!r} is not understood at {path[position:]!r}")
        token = match.group(0)
        steps.append("*" if token == "[*]" else next(g for g in match.groups() if g is not None))
        position = match.end()
    if not steps:
        raise ValueError(f"JSON path {path!r} selects the whole document; mask the column instead")
    return tuple(steps)


class _PolicyReader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: yaml.Node, message: str) -> RefreshError:
        return RefreshError(f"{self.source}, line {node.start_mark.line + 1}: {message}")

    def scalar(self, node: yaml.Node) -> Any:
        return yaml.safe_load(yaml.serialize(node)) if node is not None else None

    def mapping(self, node: yaml.Node, what: str) -> list[tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.value in seen:
                raise self.fail(key_node, f"{what}: {key_node.value!r} appears twice")
            seen.add(key_node.value)
        return node.value

    def transform(self, node: yaml.Node, where: str) -> TransformRule:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            name, params = str(node.value), {}
        elif isinstance(node, yaml.MappingNode):
            raw = self.scalar(node)
            if "transform" not in raw:
                raise self.fail(node, f"{where}: a rule mapping needs `transform: NAME` (or `json:` / `array:`)")
            name = str(raw.pop("transform"))
            params = raw
        else:
            raise self.fail(node, f"{where}: a rule is a transform name or a mapping")
        if name not in SCALAR_TRANSFORMS:
            raise self.fail(node, f"{where}: unknown transform {name!r}; known: {', '.join(sorted(SCALAR_TRANSFORMS))}")
        unknown = set(params) - _PARAMETERS.get(name, frozenset())
        if unknown:
            allowed = ", ".join(sorted(_PARAMETERS.get(name, ()))) or "none"
            raise self.fail(
                node,
                f"{where}: transform {name!r} has no parameter(s) {', '.join(sorted(unknown))} (allowed: {allowed})",
            )
        problem = parameter_problem(name, params)
        if problem:
            raise self.fail(node, f"{where}: {problem}")
        if "keep_domains" in params:  # compared with an address's domain in lower case; hashable
            params["keep_domains"] = tuple(sorted({domain.lower() for domain in params["keep_domains"]}))
        return TransformRule(transform=name, params=tuple(sorted(params.items())), line=line)

    def column_rule(self, node: yaml.Node, where: str) -> ColumnRule:
        if isinstance(node, yaml.MappingNode):
            keys = [k.value for k, _ in node.value]
            if keys == ["json"]:
                return self.json_rule(node.value[0][1], where)
            if keys == ["array"]:
                element = self.transform(node.value[0][1], f"{where} (array element)")
                if element.transform not in TEXT_TRANSFORMS:
                    raise self.fail(node, f"{where}: array elements take a text transform, not {element.transform!r}")
                return ArrayRule(element=element, line=node.start_mark.line + 1)
        return self.transform(node, where)

    def json_rule(self, node: yaml.Node, where: str) -> JsonRule:
        paths = []
        for path_node, rule_node in self.mapping(node, f"{where} json"):
            try:
                steps = parse_json_path(str(path_node.value))
            except ValueError as exc:
                raise self.fail(path_node, f"{where}: {exc}") from None
            rule = self.transform(rule_node, f"{where} {path_node.value}")
            if rule.transform not in TEXT_TRANSFORMS:
                raise self.fail(
                    rule_node,
                    f"{where} {path_node.value}: JSON values take a text transform, not {rule.transform!r}",
                )
            paths.append(JsonPathRule(path=str(path_node.value), steps=steps, rule=rule))
        if not paths:
            raise self.fail(node, f"{where}: json needs at least one path")
        return JsonRule(paths=tuple(paths), line=node.start_mark.line + 1)

    def policy(self, root: yaml.Node | None) -> MaskingPolicy:
        if root is None:
            raise RefreshError(f"{self.source}: the policy is empty; it needs a `tables:` mapping.")
        top = dict((k.value, v) for k, v in self.mapping(root, "the policy"))
        unknown = set(top) - {"tables", "version", "allowlist", "large_objects"}
        if unknown:
            raise self.fail(root, f"unknown top-level key(s) {', '.join(sorted(unknown))}; expected `tables:`")
        if "tables" not in top:
            raise self.fail(root, "the policy needs a `tables:` mapping")
        version = top.get("version")
        if version is not None and not (isinstance(version, yaml.ScalarNode) and version.value == str(POLICY_VERSION)):
            shown = version.value if isinstance(version, yaml.ScalarNode) else "a mapping or list"
            raise self.fail(version, f"version {shown} is not one this refresh_pipeline reads: write `version: 1`")
        tables: dict[tuple[str, str], TablePolicy] = {}
        for table_node, body in self.mapping(top["tables"], "tables"):
            try:
                schema, table = split_table_name(str(table_node.value))
            except RefreshError as exc:
                raise self.fail(table_node, str(exc)) from None
            if (schema, table) in tables:
                raise self.fail(table_node, f"table {schema}.{table} appears twice")
            line = table_node.start_mark.line + 1
            if isinstance(body, yaml.ScalarNode) and body.value == "keep":
                tables[(schema, table)] = TablePolicy(schema, table, keep_all=True, line=line)
                continue
            if not isinstance(body, yaml.MappingNode):
                raise self.fail(body, f"{schema}.{table}: write `keep` or a mapping of column: rule")
            columns = {
                str(c.value): self.column_rule(r, f"{schema}.{table}.{c.value}")
                for c, r in self.mapping(body, f"{schema}.{table}")
            }
            tables[(schema, table)] = TablePolicy(schema, table, keep_all=False, columns=columns, line=line)
        return MaskingPolicy(
            tables=tables,
            source=self.source,
            allowlist=self.allowlist(top.get("allowlist")),
            large_objects=self.large_objects(top.get("large_objects")),
        )

    def large_objects(self, node: yaml.Node | None) -> str | None:
        if node is None:
            return None
        if not (isinstance(node, yaml.ScalarNode) and node.value in LARGE_OBJECT_CHOICES):
            raise self.fail(
                node,
                "large_objects must be `remove` (deleted right after the restore) or `keep` (kept, and audited)",
            )
        return str(node.value)

    def allowlist(self, node: yaml.Node | None) -> tuple[str, ...]:
        if node is None:
            return ()
        values = self.scalar(node)
        if not isinstance(values, list) or not all(isinstance(v, str | int) for v in values):
            raise self.fail(node, "allowlist must be a list of values (strings), e.g. ['1800-123-4567']")
        return tuple(str(v) for v in values)


def parse_policy(text: str, source: str = "<policy>") -> MaskingPolicy:
    """Parse policy YAML text; errors name the line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise RefreshError(f"{source}: not valid YAML: {exc}") from None
    return _PolicyReader(source).policy(root)


def load_policy(path: Path) -> MaskingPolicy:
    if not path.is_file():
        raise RefreshError(f"masking policy not found: {path}")
    return parse_policy(path.read_text(), source=str(path))
