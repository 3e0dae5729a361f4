"""Materialized views refreshed from the masked tables, on real PostgreSQL, in the order they read each other."""

import psycopg

from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.materialized_views import materialized_view_reads, refresh_materialized_views
from refresh_pipeline.masking.policy import parse_policy
from refresh_pipeline.masking.runner import mask_table
from refresh_pipeline_tests.helpers import database_with

KEY = MaskingKey("views-test-key-0123456789")


def test_a_view_read_through_plain_views_is_refreshed_before_the_one_reading_it(create_database):
    """z_first is read by a_last through two plain views: refreshed second (which of the two went first changed
    from run to run), a_last kept z_first's originals and the audit of materialized views failed."""
    conninfo = database_with(
        create_database,
        "views_order",
        "CREATE TABLE customers (id int PRIMARY KEY, email text);"
        "INSERT INTO customers SELECT g, 'rider' || g || '@gmail.com' FROM generate_series(1, 50) g;"
        "CREATE MATERIALIZED VIEW z_first AS SELECT id, email FROM customers;"
        "CREATE VIEW m_middle AS SELECT * FROM z_first;"
        "CREATE VIEW n_middle AS SELECT * FROM m_middle WHERE id > 0;"
        "CREATE MATERIALIZED VIEW a_last AS SELECT * FROM n_middle;"
        "CREATE MATERIALIZED VIEW alone AS SELECT count(*) FROM customers;",
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        reads = materialized_view_reads(conn)
        mask_table(conn, parse_policy("tables:\n  customers: {id: keep, email: email}\n"), "customers", KEY)
        order = refresh_materialized_views(conn)
        originals = conn.execute("SELECT count(*) FROM a_last WHERE email LIKE '%@gmail.com'").fetchone()[0]
    assert reads == {"public.a_last": {"public.z_first"}}
    assert order.index("public.z_first") < order.index("public.a_last") and len(order) == 3
    assert originals == 0
