"""Production PII written into the database's definitions, which every restore copies verbatim: a view that
filters on a customer's email, a function with a phone in its body, a column default, a CHECK constraint,
a domain's default or CHECK, a row-level security policy, a trigger's condition, a rule, or a comment; and, on
an RDS restore, production's pg_cron job commands (which stay, deactivated, wherever the extension is: the
instance's clearing copies them here, instance_clearing.py).

No pattern is applied (definitions hold the company's own addresses and numbers); only tokens equal to a
production value of the masked database's fingerprints count, and the allowlist applies as for tables.
Objects of extensions and of the pipeline's own schemas are not read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from refresh_pipeline.audit.fingerprints import fingerprints_present, run_fingerprint_probe, token_fingerprint
from refresh_pipeline.audit.scan import normalised_allowlist
from refresh_pipeline.instance_clearing import SCHEDULED_COMMANDS
from refresh_pipeline.masking.catalog import OWN_SCHEMAS, USER_SCHEMA
from refresh_pipeline.masking.keys import AUDIT_PURPOSE, MaskingKey
from refresh_pipeline.masking.session_key import key_relation

# (object, its definition) for every user object whose definition is text a person wrote. Objects of the
# server itself have oids below 16384 (FirstNormalObjectId); an extension's are its members in pg_depend.
_USER_SCHEMA = f"{USER_SCHEMA} AND n.nspname <> ALL(%(own)s)"


def _not_extension(catalog: str, oid: str) -> str:
    """`catalog`: the SQL for the object's catalog (`'pg_class'::regclass`, or a column holding one)."""
    return f"NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = {catalog} AND e.objid = {oid} AND e.deptype = 'e')"


_DEFINITIONS = f"""
SELECT 'view ' || c.oid::regclass::text, pg_get_viewdef(c.oid)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('v', 'm') AND {_USER_SCHEMA} AND {_not_extension("'pg_class'::regclass", "c.oid")}
UNION ALL
SELECT 'function ' || p.oid::regprocedure::text, p.prosrc
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE {_USER_SCHEMA} AND {_not_extension("'pg_proc'::regclass", "p.oid")}
UNION ALL
SELECT 'default of ' || a.adrelid::regclass::text || '.' || quote_ident(att.attname), pg_get_expr(a.adbin, a.adrelid)
  FROM pg_attrdef a JOIN pg_attribute att ON att.attrelid = a.adrelid AND att.attnum = a.adnum
  JOIN pg_class c ON c.oid = a.adrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE {_USER_SCHEMA} AND {_not_extension("'pg_class'::regclass", "c.oid")}
UNION ALL
SELECT 'constraint ' || quote_ident(con.conname) || ' on ' || con.conrelid::regclass::text,
       pg_get_constraintdef(con.oid)
  FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE con.contype = 'c' AND {_USER_SCHEMA} AND {_not_extension("'pg_class'::regclass", "c.oid")}
UNION ALL
SELECT 'domain ' || t.oid::regtype::text, concat_ws(' ', t.typdefault,
       (SELECT string_agg(pg_get_constraintdef(con.oid), ' ') FROM pg_constraint con WHERE con.contypid = t.oid))
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE t.typtype = 'd' AND {_USER_SCHEMA} AND {_not_extension("'pg_type'::regclass", "t.oid")}
UNION ALL
SELECT 'policy ' || quote_ident(pol.polname) || ' on ' || pol.polrelid::regclass::text,
       concat_ws(' ', pg_get_expr(pol.polqual, pol.polrelid), pg_get_expr(pol.polwithcheck, pol.polrelid))
  FROM pg_policy pol JOIN pg_class c ON c.oid = pol.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE {_USER_SCHEMA}
UNION ALL
SELECT 'trigger ' || quote_ident(t.tgname) || ' on ' || t.tgrelid::regclass::text, pg_get_triggerdef(t.oid)
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT t.tgisinternal AND {_USER_SCHEMA}
UNION ALL
SELECT 'rule ' || quote_ident(r.rulename) || ' on ' || r.ev_class::regclass::text, pg_get_ruledef(r.oid)
  FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE r.rulename <> '_RETURN' AND {_USER_SCHEMA}
UNION ALL
SELECT 'comment on ' || pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description
  FROM pg_description d, LATERAL pg_identify_object(d.classoid, d.objoid, d.objsubid) AS o
 WHERE d.objoid >= 16384
   AND {_not_extension("d.classoid", "d.objoid")}
   AND coalesce(o.schema, '') <> ALL(%(own)s)
   AND NOT (o.type = 'schema' AND o.identity = ANY(%(own)s))
"""


def _definitions(conn: psycopg.Connection) -> sql.Composable:
    """_DEFINITIONS, and the pg_cron job commands an RDS restore's clearing copied here, when there are any."""
    copied = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (SCHEDULED_COMMANDS.as_string(conn),)).fetchone()[0]
    if not copied:
        return sql.SQL(_DEFINITIONS)
    scheduled = sql.SQL("UNION ALL SELECT 'pg_cron job ' || job, command FROM {}").format(SCHEDULED_COMMANDS)
    return sql.SQL(_DEFINITIONS) + scheduled


_PROBE = """
WITH definitions (object, definition) AS MATERIALIZED ({definitions}),
tokens AS MATERIALIZED (
    SELECT d.object, t.kind, t.token FROM definitions AS d, LATERAL refresh_pipeline.pii_tokens(d.definition) AS t
    WHERE NOT t.token = ANY(%(allowlist)s)
),
hashed AS MATERIALIZED (
    SELECT t.object, {fingerprint} AS fingerprint FROM tokens AS t CROSS JOIN {key}
)
SELECT h.object, count(*)::bigint, ARRAY[]::text[] FROM hashed AS h
WHERE EXISTS (SELECT 1 FROM refresh_pipeline_audit.original_fingerprints f WHERE f.fingerprint = h.fingerprint)
GROUP BY h.object ORDER BY h.object
"""


@dataclass(frozen=True)
class DefinitionAudit:
    objects_read: int
    findings: dict[str, int]  # object (`view public.vip`, `comment on column ...`) -> production values in it
    seconds: float
    known_value_audit: bool  # False once promoted: the fingerprints are gone

    @property
    def passed(self) -> bool:
        return not self.findings


def audit_definitions(conn: psycopg.Connection, key: MaskingKey, allowlist: tuple[str, ...]) -> DefinitionAudit:
    """Tokens of every definition compared with production's fingerprints (needs them: before promotion)."""
    started = time.monotonic()
    params = {"own": list(OWN_SCHEMAS), "allowlist": normalised_allowlist(conn, allowlist)}
    definitions = _definitions(conn)
    objects = conn.execute(sql.SQL("SELECT count(*) FROM ({}) AS d").format(definitions), params).fetchone()[0]
    if not fingerprints_present(conn):
        return DefinitionAudit(objects, {}, time.monotonic() - started, known_value_audit=False)
    query = sql.SQL(_PROBE).format(
        definitions=definitions,
        fingerprint=token_fingerprint(sql.SQL("t.kind"), sql.SQL("t.token")),
        key=key_relation(AUDIT_PURPOSE),
    )
    hits = run_fingerprint_probe(conn, key, query, params)
    return DefinitionAudit(objects, {hit.column: hit.rows for hit in hits}, time.monotonic() - started, True)
