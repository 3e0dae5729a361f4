"""The rules a policy snippet proposes for unclassified columns: from names, never weaker than `redact` for
text, and pasted as is they parse and cover every column."""

import psycopg
import pytest

from refresh_pipeline.masking.catalog import read_tables
from refresh_pipeline.masking.coverage import find_uncovered, policy_snippet
from refresh_pipeline.masking.policy import parse_policy
from refresh_pipeline.masking.suggestions import suggested_rule
from refresh_pipeline.masking.validation import find_policy_problems
from refresh_pipeline_tests.helpers import database_with


@pytest.mark.parametrize(
    ("column", "is_text", "is_date", "rule"),
    [
        ("passenger_email", True, False, "email"),
        ("homeAddress", True, False, "address"),
        ("mobile_no", True, False, "phone"),
        ("upi_handle", True, False, "upi"),
        ("customer_name", True, False, "name"),
        ("surname", True, False, "last_name"),
        ("body", True, False, "scrub"),
        ("route_name", True, False, "redact"),  # a name, but maybe of a route: a person decides
        ("status", True, False, "redact"),
        ("date_of_birth", False, True, "date"),  # was `keep`
        ("created_at", False, True, "keep"),
        ("latitude", False, False, "keep"),
    ],
)
def test_a_rule_is_suggested_from_the_column_name(column, is_text, is_date, rule):
    assert suggested_rule(column, is_text, is_date)[0] == rule


def test_the_snippet_for_odd_names_parses_and_covers_every_column(create_database):
    conninfo = database_with(
        create_database,
        "snippet_names",
        'CREATE TABLE "Passenger Notes" ("Contact: Email" text, "#tag" text, date_of_birth date, route_name text,'
        " payload jsonb, mobile bigint, trip_id bigint);",
    )
    with psycopg.connect(conninfo) as conn:
        tables = read_tables(conn)
    uncovered = find_uncovered(parse_policy("tables: {}"), tables)
    snippet = policy_snippet(uncovered)

    policy = parse_policy("tables:\n" + snippet)
    assert find_uncovered(policy, tables) == []
    assert find_policy_problems(policy, tables) == []
    columns = policy.table("Passenger Notes").columns
    names = ("Contact: Email", "#tag", "date_of_birth", "payload", "mobile", "trip_id")
    suggested = [columns[name].transform for name in names]
    assert suggested == ["email", "redact", "date", "scrub", "phone", "keep"], "each applies as pasted"
