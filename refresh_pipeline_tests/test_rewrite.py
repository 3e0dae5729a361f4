"""Masking a table other tables' foreign keys point at by rewriting it, on real PostgreSQL: the same masked
values as the block-range masking, no dead rows, the table exactly as it was described, progress logged; and
whatever cannot be rewritten is masked the other way."""

import psycopg
import pytest

from refresh_pipeline.masking import rewrite
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.policy import parse_policy
from refresh_pipeline.masking.runner import drop_leftover_staging, mask_table
from refresh_pipeline_tests.helpers import compact_pages, database_with, heap_pages

KEY = MaskingKey("rewrite-test-key-0123456789")

# What a rewrite must leave as it was, on and around the masked columns.
ORDERS = """
CREATE TABLE orders (
    id int PRIMARY KEY,
    contact text COLLATE "C" DEFAULT 'nobody@example.com' NOT NULL CHECK (contact <> ''),
    receipt jsonb,
    placed date,
    note text
);
ALTER TABLE orders ALTER COLUMN contact SET STATISTICS 500;
ALTER TABLE orders ALTER COLUMN contact SET (n_distinct = -0.5);
ALTER TABLE orders ALTER COLUMN contact SET STORAGE EXTERNAL;
ALTER TABLE orders ALTER COLUMN receipt SET COMPRESSION pglz;
COMMENT ON COLUMN orders.contact IS 'who to call';
COMMENT ON CONSTRAINT orders_contact_check ON orders IS 'never empty';
CREATE INDEX orders_contact ON orders (lower(contact)) WITH (fillfactor = 80);
COMMENT ON INDEX orders_contact IS 'by contact';
ALTER TABLE orders CLUSTER ON orders_contact;
CREATE UNIQUE INDEX orders_contact_id ON orders (contact, id);
ALTER TABLE orders REPLICA IDENTITY USING INDEX orders_contact_id;
CREATE STATISTICS orders_stats ON contact, placed FROM orders;
INSERT INTO orders
    SELECT g, 'Buyer' || (g % 300) || '@mail.in',
           jsonb_build_object('email', 'buyer' || (g % 300) || '@mail.in', 'total', g),
           date '2020-01-01' + g % 900, 'order ' || g
    FROM generate_series(1, 6000) g;
"""
REFERENCING = (
    "CREATE TABLE shipments (id int PRIMARY KEY, order_id int REFERENCES orders); INSERT INTO shipments VALUES (1, 7);"
)
POLICY = """
tables:
  orders: {id: keep, contact: email, receipt: {json: {"$.email": email}}, placed: date, note: keep}
  shipments: keep
"""


def _orders(create_database, prefix: str, referenced: bool, extra: str = "") -> str:
    conninfo = database_with(create_database, prefix, ORDERS + (REFERENCING if referenced else "") + extra)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return conninfo


def _masked(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute("SELECT id, contact, receipt, placed, note FROM orders ORDER BY id").fetchall()


def _description(conn: psycopg.Connection) -> list[str]:
    params = {"table": "public.orders", "masked": ["contact", "receipt", "placed"]}
    return rewrite._describe(conn, params)


def _connect(conninfo: str):
    return lambda: psycopg.connect(conninfo, autocommit=True)


def test_a_referenced_table_is_rewritten_once_with_the_values_block_ranges_give(create_database):
    rewritten_db = _orders(create_database, "rewrite_on", referenced=True)
    ranges_db = _orders(create_database, "rewrite_off", referenced=False)
    with psycopg.connect(rewritten_db, autocommit=True) as conn, psycopg.connect(ranges_db, autocommit=True) as other:
        before = _description(conn)
        messages: list[str] = []
        result = mask_table(
            conn, parse_policy(POLICY), "orders", KEY, log=messages.append, connect=_connect(rewritten_db)
        )
        other_messages: list[str] = []
        mask_table(other, parse_policy(POLICY), "orders", KEY, log=other_messages.append, blocks_per_range=10)
        after, masked, expected = _description(conn), _masked(conn), _masked(other)
        pages, compact = heap_pages(conn, "orders"), compact_pages(conn, "orders")
        dead = conn.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'orders'").fetchone()[0]
        leftovers = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'rewrite\\_progress\\_%'"
        ).fetchone()[0]
    assert any("in one rewrite of 6,000 rows" in m for m in messages), messages
    assert not any("DELETE + INSERT" in m or "block range" in m for m in messages), messages
    assert any("TRUNCATE + INSERT" in m for m in other_messages), "the table without references: block ranges"
    assert (result.status, result.rows) == ("masked", 6000)
    assert masked == expected, "the same masked values either way"
    assert not any("@mail.in" in row[1] or "@mail.in" in str(row[2]) for row in masked)
    assert after == before, "columns, indexes, constraints, statistics and comments as they were"
    assert pages <= compact and dead == 0, "no dead rows, nothing to compact"
    assert leftovers == 0, "the progress sequence is dropped"


def test_a_rewrite_logs_its_progress_from_another_session(create_database, monkeypatch):
    conninfo = _orders(
        create_database,
        "rewrite_progress",
        referenced=True,
        extra="INSERT INTO orders SELECT g, 'b' || g || '@mail.in' FROM generate_series(6001, 150000) g;",
    )
    monkeypatch.setattr(rewrite, "PROGRESS_INTERVAL", 0.05)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        messages: list[str] = []
        mask_table(conn, parse_policy(POLICY), "orders", KEY, log=messages.append, connect=_connect(conninfo))
    progress = [m for m in messages if "orders: rewriting:" in m]
    assert progress, messages
    rows = [int(m.split("rewriting: ")[1].split(" rows")[0].replace(",", "")) for m in progress]
    assert 0 < rows[0] <= 150000 and rows == sorted(rows), progress


@pytest.mark.parametrize(
    ("extra", "policy", "reason"),
    [
        (
            "CREATE VIEW contacts AS SELECT contact FROM orders;",
            POLICY,
            "cannot alter type of a column used by a view or rule); masking it block range by block range",
        ),
        ("", POLICY.replace("note: keep", "note: phone"), "not rewritten (a masked column needs the masking query"),
        (
            "ALTER TABLE shipments ADD COLUMN order_contact text, ADD COLUMN order_ref int,"
            " ADD FOREIGN KEY (order_contact, order_ref) REFERENCES orders (contact, id);",
            POLICY,
            "not rewritten (a masked column is part of a foreign key)",
        ),
    ],
    ids=["view on a masked column", "phone looked up in the value map", "masked column in a foreign key"],
)
def test_what_cannot_be_rewritten_is_masked_block_range_by_block_range(create_database, extra, policy, reason):
    conninfo = _orders(create_database, "rewrite_fallback", referenced=True, extra=extra)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        messages: list[str] = []
        result = mask_table(conn, parse_policy(policy), "orders", KEY, log=messages.append, connect=_connect(conninfo))
        unmasked = conn.execute("SELECT count(*) FROM orders WHERE contact LIKE '%@mail.in'").fetchone()[0]
        dead = conn.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'orders'").fetchone()[0]
    assert result.status == "masked" and unmasked == 0
    assert any("DELETE + INSERT" in m for m in messages), messages
    assert any("compacted (VACUUM FULL)" in m for m in messages), messages
    assert not any("rows in one rewrite in" in m for m in messages), messages
    assert any(reason in m for m in messages), messages
    assert dead == 0


def test_a_rewrite_refused_midway_leaves_the_table_and_its_marker_untouched(create_database):
    """An index the rewrite would build differently (a statistics target on a rebuilt expression index) rolls
    the whole rewrite back; then the masking is done the other way."""
    conninfo = _orders(
        create_database,
        "rewrite_inexact",
        referenced=True,
        extra="ALTER INDEX orders_contact ALTER COLUMN 1 SET STATISTICS 200;",
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        before = _description(conn)
        messages: list[str] = []
        mask_table(conn, parse_policy(POLICY), "orders", KEY, log=messages.append)
        after = _description(conn)
        markers = conn.execute("SELECT count(*) FROM refresh_pipeline.masked_tables").fetchone()[0]
    assert any("not rewritten (it would change index orders_contact)" in m for m in messages), messages
    assert any("DELETE + INSERT" in m for m in messages), messages
    assert markers == 1, "one marker: the rolled-back rewrite left none behind"
    index_after = [line for line in after if line.startswith("index orders_contact:")]
    assert index_after == [line for line in before if line.startswith("index orders_contact:")]


def test_what_a_killed_masking_step_left_behind_is_dropped(create_database):
    conninfo = _orders(create_database, "rewrite_leftovers", referenced=True)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE refresh_pipeline.rewrite_progress_0123456789ab")
        conn.execute("CREATE UNLOGGED TABLE refresh_pipeline.masked_rows_0123456789ab (id int)")
        conn.execute(  # the view a range-by-range staging reads its tables through
            "CREATE VIEW refresh_pipeline.masked_rows_ba9876543210 AS"
            " SELECT * FROM refresh_pipeline.masked_rows_0123456789ab"
        )
        dropped = drop_leftover_staging(conn)
        left = conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'refresh_pipeline'::regnamespace"
            " AND relname IN ('rewrite_progress_0123456789ab', 'masked_rows_0123456789ab', 'masked_rows_ba9876543210',"
            " 'value_map')"
        ).fetchall()
    assert sorted(dropped) == ["masked_rows_0123456789ab", "masked_rows_ba9876543210", "rewrite_progress_0123456789ab"]
    assert left == [("value_map",)], "the pipeline's own tables stay"
