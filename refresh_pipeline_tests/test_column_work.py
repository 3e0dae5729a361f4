"""Work items of a table's text columns: their estimated cost follows what there is to tokenise, not how
many heap blocks they span, so the costliest start first and progress and ETA count real work."""

import psycopg

from refresh_pipeline.chunked import Progress
from refresh_pipeline.column_work import text_column_work
from refresh_pipeline.masking.catalog import read_tables

# A short status repeated on every row spans every block; the JSON documents are long and all different.
SCHEMA = """
CREATE TABLE payments (id int PRIMARY KEY, status text, gateway_response jsonb);
INSERT INTO payments
SELECT g, (ARRAY['ok', 'failed', 'pending'])[g % 3 + 1],
       jsonb_build_object('txn', 'TXN' || g, 'note', repeat('paid by card ', 12), 'email', 'p' || g || '@mail.in')
FROM generate_series(1, 6000) g;
"""


def _work(conninfo: str, analyze: bool) -> dict[str, list]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SCHEMA)
        if analyze:
            conn.execute("ANALYZE payments")
        table = read_tables(conn)[("public", "payments")]
        work = text_column_work(conn, table, blocks_per_range=40)
    by_column: dict[str, list] = {}
    for item in work:
        by_column.setdefault(item.column.name, []).append(item)
    return {"order": [item.column.name for item in work], **by_column}


def test_a_short_repeated_column_costs_less_than_json_documents_spread_over_fewer_blocks(create_database):
    work = _work(create_database("work_estimate"), analyze=True)
    (status,) = work["status"]
    documents = work["gateway_response"]
    assert len(documents) > 3
    assert all(status.block_range.blocks > item.block_range.blocks for item in documents), (
        "the whole status column spans more blocks than any range of documents"
    )
    per_block = {item.column.name: item.cost / item.block_range.blocks for item in (status, documents[0])}
    assert per_block["status"] < per_block["gateway_response"] / 4
    assert work["order"][-1] == "status", "the costliest items come first (by blocks, status would)"
    assert abs(sum(i.cost for i in documents) / len(documents) - documents[0].cost) < documents[0].cost * 0.25


def test_without_statistics_every_item_still_has_a_cost(create_database):
    work = _work(create_database("work_estimate_no_stats"), analyze=False)
    items = [*work["status"], *work["gateway_response"]]
    assert len(work["gateway_response"]) > 3 and all(item.cost >= 1.0 for item in items)


def test_progress_counts_work_not_items():
    messages: list[str] = []
    progress = Progress("reading", total=100.0, log=messages.append, interval=0.0, unit="tokens")
    progress.add(10, 75.0)
    progress.add(500, 5.0)
    assert messages[0].startswith("reading: 10 tokens (75%)")
    assert messages[1].startswith("reading: 510 tokens (80%)")
    progress.add(0, 20.0)
    assert "(100%)" in messages[-1] and messages[-1].endswith("ETA 0 s")


def test_progress_logs_the_end_when_the_items_add_up_to_the_total_in_another_order():
    """The total is summed in the pool's order, the work as items end: 72.43 + 23.65 + 94.58 is 190.66000000000003
    one way and 190.66 the other, which must still count as done."""
    costs = [72.43, 23.65, 94.58]
    messages: list[str] = []
    progress = Progress("auditing", total=sum(costs), log=messages.append, interval=3600.0)
    for cost in reversed(costs):
        progress.add(1, cost)
    assert len(messages) == 1 and messages[0].startswith("auditing: 3 rows (100%)"), messages
