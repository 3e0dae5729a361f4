"""Opening PostgreSQL sessions safely and describing them without secrets."""

from __future__ import annotations

import os

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from refresh_pipeline.errors import RefreshError

READ_ONLY_OPTIONS = "-c default_transaction_read_only=on"
# A row-level security policy that would hide rows fails the query instead (row_security.py): the refresh
# reads, masks and audits every row or none. Production's own timeouts (ALTER DATABASE ... SET
# statement_timeout = '30s', which an RDS restore keeps and the local restore carries over) would cancel
# long masking and audit statements or close idle pooled sessions mid-refresh; under production's
# default_transaction_isolation = serializable, parallel swaps recording their markers could fail each other.
SESSION_OPTIONS = (
    "-c row_security=off -c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0"
    r" -c default_transaction_isolation=read\ committed"
)
WRITABLE_OPTIONS = "-c default_transaction_read_only=off"  # production's setting, carried to its copy

_LIBPQ_ENV = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "sslmode": "PGSSLMODE",
    "options": "PGOPTIONS",
    "service": "PGSERVICE",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "sslrootcert": "PGSSLROOTCERT",
    "passfile": "PGPASSFILE",
}


def parse_conninfo(conninfo: str) -> dict[str, str]:
    try:
        return {k: str(v) for k, v in conninfo_to_dict(conninfo).items()}
    except psycopg.ProgrammingError as exc:
        raise RefreshError(f"not a valid PostgreSQL connection string ({redact(conninfo)}): {exc}") from None


def redact(conninfo: str) -> str:
    """The connection string with any password removed, for logs and metadata."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<unparseable connection string>"
    params.pop("password", None)
    return make_conninfo(**params)


def with_database(conninfo: str, dbname: str) -> str:
    return make_conninfo(conninfo, dbname=dbname)


def database_name(conninfo: str) -> str:
    return parse_conninfo(conninfo).get("dbname", "")


def libpq_env(conninfo: str, read_only: bool = False) -> dict[str, str]:
    """Environment for pg_dump/pg_restore, so credentials never appear on a command line (`ps`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for key, value in parse_conninfo(conninfo).items():
        if key in _LIBPQ_ENV:
            env[_LIBPQ_ENV[key]] = value
    # From the first statement on: pg_dump sets its own timeouts only after a few catalog queries, which
    # production's statement_timeout (ALTER DATABASE ... SET) could cancel.
    options = f"{SESSION_OPTIONS} {READ_ONLY_OPTIONS if read_only else ''}"
    env["PGOPTIONS"] = " ".join(f"{env.get('PGOPTIONS', '')} {options}".split())
    return env


def percent_safe(query: sql.Composable, context: psycopg.Connection | psycopg.Cursor) -> sql.Composable:
    """The query with each `%` of its identifiers and literals doubled. With parameters, psycopg reads every
    `%` of the composed text as a placeholder, also one in a quoted name (a column `rate%`) or a literal (a
    LIKE pattern); doubled, it reads it as `%`. Its own SQL text is left as written."""
    if isinstance(query, sql.Composed):
        return sql.Composed([percent_safe(part, context) for part in query])
    if isinstance(query, sql.SQL | sql.Placeholder):
        return query
    return sql.SQL(query.as_string(context).replace("%", "%%"))


class PercentSafeCursor(psycopg.Cursor):
    """A cursor that runs composed queries with parameters through percent_safe."""

    def execute(self, query, params=None, **kwargs):  # type: ignore[no-untyped-def, override]
        if params is not None and isinstance(query, sql.Composable):
            query = percent_safe(query, self)
        return super().execute(query, params, **kwargs)

    def executemany(self, query, params_seq, **kwargs):  # type: ignore[no-untyped-def, override]
        if isinstance(query, sql.Composable):
            query = percent_safe(query, self)
        return super().executemany(query, params_seq, **kwargs)


def connect(conninfo: str, *, read_only: bool = False, autocommit: bool = False) -> psycopg.Connection:
    """Open a session that sees every row or fails (no row-level security filtering); `read_only` makes
    every transaction in it refuse writes (used for production)."""
    existing = parse_conninfo(conninfo).get("options", "")
    options = f"{existing} {SESSION_OPTIONS} {READ_ONLY_OPTIONS if read_only else WRITABLE_OPTIONS}"
    conninfo = make_conninfo(conninfo, options=" ".join(options.split()))
    # Names and messages as str whatever the database's encoding: psycopg hands bytes to a SQL_ASCII client.
    conninfo = make_conninfo(conninfo, client_encoding="UTF8")
    try:
        conn = psycopg.connect(conninfo, autocommit=autocommit, connect_timeout=15, cursor_factory=PercentSafeCursor)
    except psycopg.OperationalError as exc:
        message = str(exc).replace(parse_conninfo(conninfo).get("password", "\0"), "***")
        raise RefreshError(f"cannot connect to {redact(conninfo)}: {message.strip()}") from None
    if conn.info.server_version >= 140000:  # a startup option PostgreSQL 13 would refuse
        conn.execute("SET idle_session_timeout = 0")
        if not autocommit:
            conn.commit()
    return conn
