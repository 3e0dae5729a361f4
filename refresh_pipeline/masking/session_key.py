"""How the SQL key reaches the database: as COPY data into a temporary table of the session, read by the
statements through a one-row join.

Never as a bind parameter or literal: statement logging (log_statement, log_min_duration_statement, which
managed databases commonly turn on and ship to central logs) prints every statement's parameters, and
auto_explain prints plans, where a parameter appears as a constant. COPY data is neither a statement nor
part of a plan, and a joined column appears in plans by name only. Where a statement cannot join (a table
rewrite's USING expression), the server copies the key from that table into a setting of the transaction."""

import psycopg
from psycopg import sql

from refresh_pipeline.masking.keys import MaskingKey

_TABLE = "refresh_pipeline_keys"


def key_column(purpose: str) -> sql.Identifier:
    """The column that holds the key of `purpose` in statements joining key_relation(purpose): named apart
    from any column a user table may have."""
    return sql.Identifier(f"refresh_pipeline {purpose} key")


def key_relation(purpose: str) -> sql.Composed:
    """A one-row relation for a FROM list (a primary-key lookup, so the planner knows it is one row)."""
    return sql.SQL("(SELECT pads AS {column} FROM pg_temp.{table} WHERE purpose = {purpose}) AS {column}").format(
        column=key_column(purpose), table=sql.Identifier(_TABLE), purpose=sql.Literal(purpose)
    )


def share_key(session: psycopg.Connection, key: MaskingKey, purpose: str) -> None:
    """Make the key of `purpose` available to the session's following statements. Repeatable; inside a
    transaction that is rolled back, it is gone again with it."""
    table = sql.Identifier(_TABLE)
    session.execute(
        sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (purpose text PRIMARY KEY, pads bytea NOT NULL)").format(table)
    )
    session.execute(sql.SQL("DELETE FROM pg_temp.{} WHERE purpose = %s").format(table), (purpose,))
    with session.cursor().copy(sql.SQL("COPY pg_temp.{} (purpose, pads) FROM STDIN").format(table)) as copy:
        copy.write_row((purpose, key.sql_pads(purpose)))


def _setting(purpose: str) -> str:
    return f"refresh_pipeline.{purpose}_pads"


def rewrite_key_expression(purpose: str) -> sql.Composed:
    """The key of `purpose` where a statement cannot join it: an ALTER TABLE ... USING expression sees only
    the row. Read from a setting of the session's transaction (share_key_in_setting)."""
    return sql.SQL("decode(current_setting({}), 'hex')").format(sql.Literal(_setting(purpose)))


def share_key_in_setting(session: psycopg.Connection, key: MaskingKey, purpose: str) -> None:
    """For the rest of the session's transaction, rewrite_key_expression(purpose) reads the key. Copied
    into the setting on the server from the key's COPY'd table, so it is never in a statement, a parameter or a
    plan either; the setting is the session's own and ends with its transaction."""
    share_key(session, key, purpose)
    session.execute(
        sql.SQL(
            "SELECT set_config({setting}, encode(pads, 'hex'), true) IS NOT NULL FROM pg_temp.{table} "
            "WHERE purpose = {purpose}"
        ).format(setting=sql.Literal(_setting(purpose)), table=sql.Identifier(_TABLE), purpose=sql.Literal(purpose))
    )
