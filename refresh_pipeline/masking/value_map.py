"""The per-refresh value map: every production email, phone and UPI local part, wherever it appears, gets one
masked value that is unique and never equal to any production value of its kind."""

import psycopg
from psycopg import sql

from refresh_pipeline.chunked import Connect, raise_work_mem, run_ranges
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.masking.catalog import ColumnInfo, TableInfo, column_text, with_pii_numbers
from refresh_pipeline.masking.keys import MASKING_PURPOSE, MaskingKey
from refresh_pipeline.masking.policy import MaskingPolicy, TransformRule
from refresh_pipeline.masking.session_key import key_column, key_relation, share_key

ORIGINAL_TOKENS = "refresh_pipeline_original_tokens"
MAX_ROUNDS = 50
MAX_MOVED_LISTED = 10_000
ALL_ROWS = sql.SQL("true")
KEY = key_column(MASKING_PURPOSE)

KINDS = ("email", "phone", "upi")
_WHOLE_VALUE = {
    "email": "lower(btrim({col}))",
    "phone": "right(regexp_replace({col}, '[^0-9]', '', 'g'), 10)",
    "upi": "lower(btrim({col}))",
}
# What the map is keyed by, from a collected token: the token itself, or a UPI handle's local part.
_MAP_KEY = {
    "email": "token",
    "phone": "token",
    "upi": "refresh_pipeline.upi_map_key(token)",
}
_FIRST_CANDIDATE = {
    "email": "refresh_pipeline.email_candidate({key}, token)",
    "phone": "refresh_pipeline.phone_candidate({key}, token)",
    "upi": "refresh_pipeline.upi_candidate({key}, token)",
}
_NEXT_CANDIDATE = {
    # Not email_candidate(masked): a value moved because its candidate equals an original would then take
    # that original's own first candidate, and move it too.
    "email": "refresh_pipeline.hmac_letters({key}, 'email:retry:' || v.masked, 16) || '@example.com'",
    "phone": "left(v.masked, 1) || refresh_pipeline.fpe_digits({key}, substr(v.masked, 2), 'phone:retry')",
    "upi": "refresh_pipeline.hmac_letters({key}, 'upi:retry:' || v.masked, 10)",
}


def _create_token_table(conn: psycopg.Connection) -> None:
    """The session's temporary table of plaintext tokens, dropped at commit."""
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} (kind text, token text, PRIMARY KEY (kind, token)) ON COMMIT DROP"
        ).format(sql.Identifier(ORIGINAL_TOKENS))
    )


def _distinct_values(
    table: TableInfo, column: ColumnInfo, condition: sql.Composable, source: sql.Composable | None
) -> sql.Composed:
    """The column's values as text (of `source`, one partition, when given), each value once: repeated values
    (a customer's email on every booking) are tokenised once. JSON documents are rarely repeated, so they are
    not de-duplicated first."""
    target = source if source is not None else table.ident
    col = sql.Identifier(column.name)
    distinct = sql.SQL("" if column.is_json else "DISTINCT ")
    # Not ONLY: a partitioned table's rows live in its partitions.
    return sql.SQL("(SELECT {distinct}{text} AS v FROM {target} WHERE {col} IS NOT NULL AND {condition})").format(
        distinct=distinct, text=column_text(col), col=col, target=target, condition=condition
    )


def collect_original_tokens(
    conn: psycopg.Connection,
    tables: list[TableInfo],
    policy: MaskingPolicy,
    condition: sql.Composable = ALL_ROWS,
    columns: frozenset[str] | None = None,
    into: sql.Composable | None = None,
    source: sql.Composable | None = None,
) -> int:
    """Into a temporary table (dropped at commit, so plaintext never persists), or `into`: every email,
    phone and UPI token of every text, JSON and array column, plus the whole values of columns masked as
    email or phone (of the rows matching `condition`, e.g. one block range, of `source` when given: one
    partition of the one table; of `columns` only when given). Call inside a transaction; returns how many
    token rows were added."""
    if into is None:
        _create_token_table(conn)
    tokens = into if into is not None else sql.Identifier(ORIGINAL_TOKENS)
    added = 0
    raise_work_mem(conn)
    for table in (with_pii_numbers(t, policy) for t in tables):
        rules = policy.tables.get((table.schema, table.name))
        for column in table.columns:
            if not column.holds_text or (columns is not None and column.name not in columns):
                continue
            found = [sql.SQL("SELECT tok.kind, tok.token FROM src, LATERAL refresh_pipeline.pii_tokens(src.v) AS tok")]
            rule = rules.columns.get(column.name) if rules else None
            if isinstance(rule, TransformRule) and rule.transform in _WHOLE_VALUE and column.scalar_text:
                value = sql.SQL(_WHOLE_VALUE[rule.transform]).format(col=sql.Identifier("v"))
                found.append(
                    sql.SQL("SELECT {kind}, {value} FROM src WHERE {value} <> ''").format(
                        kind=sql.Literal(rule.transform), value=value
                    )
                )
            # The column is read once for its tokens and its whole values.
            added += conn.execute(
                sql.SQL(
                    "WITH src AS MATERIALIZED {values} "
                    "INSERT INTO {tokens} SELECT DISTINCT kind, token FROM ({found}) AS found (kind, token) "
                    "ON CONFLICT DO NOTHING"
                ).format(
                    values=_distinct_values(table, column, condition, source),
                    tokens=tokens,
                    found=sql.SQL(" UNION ALL ").join(found),
                )
            ).rowcount
    return added


def original_tokens_collected(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"pg_temp.{ORIGINAL_TOKENS}",)).fetchone()[0]


# Built once the map is filled (index_value_maps): filling it with the indexes in place cost ~4x as much.
# value_map_lookup also keeps each original mapped once; lookups while masking read it alone (the map is
# vacuumed once built).
_INDEXES = {
    "value_map_lookup": "CREATE UNIQUE INDEX IF NOT EXISTS value_map_lookup ON refresh_pipeline.value_map "
    "(fingerprint, kind) INCLUDE (masked)",
    "value_map_masked": "CREATE INDEX IF NOT EXISTS value_map_masked ON refresh_pipeline.value_map (kind, masked)",
}


def start_value_maps(conn: psycopg.Connection) -> None:
    """An empty, unindexed map, ready for sessions to add candidates to."""
    conn.execute(
        sql.SQL("DROP INDEX IF EXISTS {}").format(
            sql.SQL(", ").join(sql.Identifier("refresh_pipeline", name) for name in _INDEXES)
        )
    )
    conn.execute("TRUNCATE refresh_pipeline.value_map")
    for kind in _MOVED_LISTS:
        _define_moved(conn, kind, sql.SQL("NULL"))


def index_value_maps(conn: psycopg.Connection) -> None:
    for statement in _INDEXES.values():
        conn.execute(statement)


def add_value_map_candidates(conn: psycopg.Connection, key: MaskingKey, source: sql.Composable | None = None) -> None:
    """Map the collected tokens to their first candidate. `source` yields distinct (kind, token) rows that no
    other call adds (default: this session's temporary token table); several sessions may add at once."""
    share_key(conn, key, MASKING_PURPOSE)
    tokens = source if source is not None else sql.Identifier(ORIGINAL_TOKENS)
    for kind in KINDS:
        fingerprint = sql.SQL("refresh_pipeline.map_fingerprint({key}, {kind}, token)").format(
            key=KEY, kind=sql.Literal(kind)
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO refresh_pipeline.value_map (kind, fingerprint, masked) "
                "SELECT {kind}, {fingerprint}, {candidate} FROM"
                " (SELECT DISTINCT {map_key} AS token FROM {tokens} WHERE kind = {kind}) AS t CROSS JOIN {key_relation}"
                " WHERE length(token) >= 2"
            ).format(
                kind=sql.Literal(kind),
                map_key=sql.SQL(_MAP_KEY[kind]),
                fingerprint=fingerprint,
                candidate=sql.SQL(_FIRST_CANDIDATE[kind]).format(key=KEY),
                tokens=tokens,
                key_relation=key_relation(MASKING_PURPOSE),
            )
        )


def resolve_value_maps(
    conn: psycopg.Connection, key: MaskingKey, connect: Connect | None = None, workers: int = 1
) -> dict[str, int]:
    """Resolve every conflict once all tokens are mapped: a candidate that equals some production value,
    or another original's candidate, moves on to a next keyed candidate until none conflicts; values
    without conflict keep their candidate, so they mask the same way every week. Kinds never conflict
    with each other, so with a pool (`connect`, `workers`) they are resolved side by side. Returns how
    many values were mapped per kind."""
    kinds = KINDS
    index_value_maps(conn)

    def resolve(session: psycopg.Connection, kind: str) -> int:
        with session.transaction():
            share_key(session, key, MASKING_PURPOSE)
            raise_work_mem(session)  # round 1 hashes the whole map
            _resolve_conflicts(session, kind)
        return 0

    run_ranges(kinds, resolve, conn, connect, workers)
    for kind in _MOVED_LISTS:
        _publish_moved(conn, kind)
    if not conn.info.transaction_status:  # VACUUM cannot run inside a caller's transaction
        conn.execute("VACUUM (ANALYZE) refresh_pipeline.value_map")
    return {
        kind: conn.execute("SELECT count(*) FROM refresh_pipeline.value_map WHERE kind = %s", (kind,)).fetchone()[0]
        for kind in kinds
    }


# Kinds whose masking function consults the map only for the values a conflict moved, listed in a function.
_MOVED_LISTS = {"email": "moved_emails", "upi": "moved_upis"}


def _publish_moved(conn: psycopg.Connection, kind: str) -> None:
    """Name the few values of `kind` a conflict moved in refresh_pipeline.moved_emails() (moved_upis()); every
    other value masks to its first candidate without a lookup. Past MAX_MOVED_LISTED, every one is looked up."""
    moved = (
        conn.execute(
            "SELECT array_agg(fingerprint ORDER BY fingerprint) FROM ("
            " SELECT fingerprint FROM refresh_pipeline.value_map WHERE kind = %s AND moved_in_round > 0"
            " LIMIT %s) AS m",
            (kind, MAX_MOVED_LISTED + 1),
        ).fetchone()[0]
        or []
    )
    listed = sql.SQL("NULL") if len(moved) > MAX_MOVED_LISTED else sql.Literal(moved)
    _define_moved(conn, kind, listed)


def _define_moved(conn: psycopg.Connection, kind: str, value: sql.Composable) -> None:
    conn.execute(
        sql.SQL(
            "CREATE OR REPLACE FUNCTION refresh_pipeline.{}() RETURNS bytea[] "
            "LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$ SELECT {}::bytea[] $fn$"
        ).format(sql.Identifier(_MOVED_LISTS[kind]), value)
    )


def build_value_maps(conn: psycopg.Connection, key: MaskingKey) -> dict[str, int]:
    """Fill refresh_pipeline.value_map from the tokens collected in this session and resolve conflicts."""
    with conn.transaction():
        start_value_maps(conn)
        add_value_map_candidates(conn, key)
    return resolve_value_maps(conn, key)


def _resolve_conflicts(conn: psycopg.Connection, kind: str) -> None:
    # Round 1 checks every value; later rounds only those that just moved and any value they now equal
    # (a value that conflicts with no production value keeps not conflicting). The candidates are
    # materialised first and checked by joins: hash joins for round 1's whole map, index lookups for the
    # few of later rounds (checked row by row with EXISTS, every round cost as much as round 1: S=1 phones
    # 5.3 + 4.2 s -> 1.0 + 0.3 s).
    move = sql.SQL(
        "WITH candidate AS MATERIALIZED ("
        " SELECT v.fingerprint, v.masked FROM refresh_pipeline.value_map v WHERE v.kind = {kind}"
        " AND (%(round)s = 1 OR v.moved_in_round = %(round)s - 1 OR v.masked IN (SELECT j.masked"
        "      FROM refresh_pipeline.value_map j WHERE j.kind = {kind} AND j.moved_in_round = %(round)s - 1))),"
        " moving AS ("
        # equal to a production value of its kind
        "  SELECT c.fingerprint FROM candidate c CROSS JOIN {key_relation}"
        "   JOIN refresh_pipeline.value_map o ON o.kind = {kind}"
        "   AND o.fingerprint = refresh_pipeline.map_fingerprint({key}, {kind}, lower(c.masked))"
        "  UNION"
        # or to another original's masked value (the lowest fingerprint keeps it)
        "  SELECT c.fingerprint FROM candidate c JOIN refresh_pipeline.value_map d ON d.kind = {kind}"
        "   AND d.masked = c.masked AND d.fingerprint < c.fingerprint)"
        " UPDATE refresh_pipeline.value_map v SET masked = {next}, moved_in_round = %(round)s"
        " FROM moving m CROSS JOIN {key_relation} WHERE v.kind = {kind} AND v.fingerprint = m.fingerprint"
    ).format(
        kind=sql.Literal(kind),
        next=sql.SQL(_NEXT_CANDIDATE[kind]).format(key=KEY),
        key=KEY,
        key_relation=key_relation(MASKING_PURPOSE),
    )
    for round_number in range(1, MAX_ROUNDS + 1):
        if conn.execute(move, {"round": round_number}).rowcount == 0:
            return
    raise RefreshError(f"could not find unique masked {kind} values in {MAX_ROUNDS} rounds; the domain is too full.")


def clear_value_maps(conn: psycopg.Connection) -> None:
    """Empty the map before promotion: staging needs no fingerprints of production values."""
    conn.execute("TRUNCATE refresh_pipeline.value_map")
    for kind in _MOVED_LISTS:
        _define_moved(conn, kind, sql.SQL("NULL"))
