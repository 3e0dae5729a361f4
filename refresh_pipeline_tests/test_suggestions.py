"""The rules a policy snippet proposes for unclassified columns: from names, never weaker than `redact` for
text, and pasted as is they parse and cover every column."""

import psycopg
import pytest

from refresh_pipeline.masking.catalog import ColumnInfo, read_tables
from refresh_pipeline.masking.coverage import find_uncovered, policy_snippet
from refresh_pipeline.masking.policy import MaskingPolicy, parse_policy
from refresh_pipeline.masking.suggestions import suggested_rule
from refresh_pipeline.masking.validation import find_policy_problems
from refresh_pipeline_tests.helpers import database_with


def _pasted_snippet(conninfo: str) -> tuple[str, MaskingPolicy]:
    """The snippet for every column of the database, and the policy it is once pasted, which must apply."""
    with psycopg.connect(conninfo) as conn:
        tables = read_tables(conn)
    snippet = policy_snippet(find_uncovered(parse_policy("tables: {}"), tables))
    policy = parse_policy("tables:\n" + snippet)
    assert find_policy_problems(policy, tables) == [], snippet
    return snippet, policy


def _column(name: str, base_type: str) -> ColumnInfo:
    return ColumnInfo(name, base_type, base_type, False, True, False, False, None)


@pytest.mark.parametrize(
    ("column", "base_type", "rule"),
    [
        ("passenger_email", "text", "email"),
        ("homeAddress", "character varying", "address"),
        ("mobile_no", "text", "phone"),
        ("upi_handle", "text", "upi"),
        ("customer_name", "text", "name"),
        ("surname", "text", "last_name"),
        ("body", "text", "scrub"),
        ("route_name", "text", "redact"),  # a name, but maybe of a route: a person decides
        ("status", "text", "redact"),
        ("date_of_birth", "date", "date"),  # was `keep`
        ("created_at", "timestamp with time zone", "keep"),
        ("latitude", "double precision", "geo"),  # was `keep`
        ("home_lng", "numeric", "geo"),
        ("home_lat_e7", "bigint", "{transform: geo, scale: 10000000}"),  # was `keep`: degrees times 10^7
        ("lat", "integer", "{transform: geo, scale: 1000000}"),
        ("fare", "numeric", "keep"),
        ("lap_count", "double precision", "keep"),
        ("kyc_scan", "bytea", "null"),  # was `keep`: the audit reads no image
        ("route_map", "bytea", "keep"),
        ("last_seen_from", "inet", "ip"),  # was `keep`: any address, whatever its name
        ("network", "cidr", "ip"),
        ("card_number", "bigint", "{transform: number, min: 4000000000000000, max: 4999999999999999}"),  # was `keep`
        ("cc_no", "text", "fpe"),  # digits stay digits: the format, never the card
        ("credit_card", "character varying", "fpe"),
        ("scorecard_number", "text", "redact"),  # a score card's, not a payment card's
    ],
)
def test_a_rule_is_suggested_from_the_column_name(column, base_type, rule):
    assert suggested_rule(_column(column, base_type))[0] == rule


@pytest.mark.parametrize(
    ("table", "rule"),
    [("customers", "name"), ("emergency_contacts", "name"), ("Passengers", "name"), ("routes", "redact"),
     ("stops", "redact")],
)  # fmt: skip
def test_a_bare_name_is_a_persons_only_in_a_table_of_people(table, rule):
    assert suggested_rule(_column("name", "text"), table)[0] == rule
    assert suggested_rule(_column("full_name", "text"), table)[0] == "name"


def test_the_snippet_for_odd_names_parses_and_covers_every_column(create_database):
    conninfo = database_with(
        create_database,
        "snippet_names",
        'CREATE TABLE "Passenger Notes" ("Contact: Email" text, "#tag" text, date_of_birth date, route_name text,'
        " payload jsonb, mobile bigint, trip_id bigint);"
        'CREATE SCHEMA "v1.app"; CREATE TABLE "v1.riders" (email text); CREATE TABLE "v1.app"."a""b" (note text);'
        'CREATE TABLE "Fahrgäste" ("Straße" text, "line\u2028break" text);',
    )
    with psycopg.connect(conninfo) as conn:
        tables = read_tables(conn)
    uncovered = find_uncovered(parse_policy("tables: {}"), tables)
    snippet = policy_snippet(uncovered)

    policy = parse_policy("tables:\n" + snippet)
    assert find_uncovered(policy, tables) == []
    assert find_policy_problems(policy, tables) == []
    assert '  "\\"v1.riders\\"":' in snippet and policy.table('"v1.riders"').columns["email"].transform == "email"
    assert policy.table('"v1.app"."a""b"').columns["note"].transform == "scrub", "dots and quotes in names"
    assert '  "Fahrgäste":\n    "Straße": redact' in snippet, "letters beyond ASCII are not escaped"
    assert '"line\\u2028break"' in snippet, "a character YAML reads as a line break is"
    columns = policy.table("Passenger Notes").columns
    names = ("Contact: Email", "#tag", "date_of_birth", "payload", "mobile", "trip_id")
    suggested = [columns[name].transform for name in names]
    assert suggested == ["email", "redact", "date", "scrub", "phone", "keep"], "each applies as pasted"


def test_every_suggestion_applies_as_pasted_and_nothing_derived_is_kept_unread(create_database):
    conninfo = database_with(
        create_database,
        "snippet_types",
        "CREATE TYPE contact AS (email text, phone text);"
        "CREATE TABLE riders (id int, full_name text, search tsvector, search_strict tsvector NOT NULL,"
        " contact contact, gender char(1), email varchar(20), code varchar(5), emails text[], tags varchar(4)[],"
        " email_lower text GENERATED ALWAYS AS (lower(email)) STORED, phone numeric(12,2),"
        " profile_photo bytea NOT NULL, seen_from inet[], device_ids uuid[], home_lat_e5 int,"
        " home_lon_e5 numeric(9,0), town_lat numeric(6,2), town_lon numeric(7,3), events jsonb[], contacts contact[]);",
    )
    snippet, _policy = _pasted_snippet(conninfo)
    lines = {
        line.split(":")[0].strip(): line.split(":", 1)[1].split("#")[0].strip() for line in snippet.splitlines()[1:]
    }
    assert lines["search"] == '"null"' and lines["contact"] == '"null"', "a search vector or row type is nulled"
    assert lines["contacts"] == '"null"', "an array of row types too: the audit fails on the emails in their fields"
    assert lines["search_strict"] == "keep" and "NOT NULL or generated" in snippet
    assert "holds the words of the columns it indexes" in snippet
    assert lines["gender"] == '{transform: redact, value: "X"}', "redact, but a value that fits char(1)"
    assert lines["email"] == "{transform: hash, length: 20}", "a masked email (28 characters) does not fit"
    assert lines["code"] == '{transform: redact, value: "XXXXX"}'
    assert lines["emails"] == "{array: email}" and lines["tags"] == '{array: {transform: redact, value: "XXXX"}}'
    assert lines["email_lower"] == "keep", "a generated column is recomputed from the masked ones"
    assert lines["phone"] == "keep", "numeric(12,2) holds no whole phone number: `phone` would be refused"
    assert lines["profile_photo"] == "redact", "a NOT NULL file cannot be nulled: its bytes become REDACTED's"
    assert lines["seen_from"] == "{array: ip}" and lines["device_ids"] == "keep"
    assert lines["home_lat_e5"] == lines["home_lon_e5"] == "{transform: geo, scale: 100000}"
    assert lines["town_lat"] == "{transform: geo, radius_m: 1300}", "kept to ~1.1 km: moved further than 500 m"
    assert lines["town_lon"] == "geo"
    assert lines["events"] == "{array: scrub}", "documents in an array: kept, the audit failed on their emails"


def test_a_partition_key_is_kept_and_a_unique_column_hashed_as_pasted(create_database):
    """`redact` on a list partition's key leaves rows no partition; on a unique token it gives every row one
    value: either fails the refresh at that table."""
    conninfo = database_with(
        create_database,
        "snippet_keys",
        "CREATE TABLE tickets (id bigint, region text, city text, sold date, passenger_email text)"
        " PARTITION BY LIST (region);"
        "CREATE TABLE tickets_n PARTITION OF tickets FOR VALUES IN ('north') PARTITION BY HASH (lower(city));"
        "CREATE TABLE tickets_n0 PARTITION OF tickets_n FOR VALUES WITH (MODULUS 1, REMAINDER 0);"
        "CREATE TABLE sessions (token text PRIMARY KEY, code varchar(12) UNIQUE, label text, ref text,"
        " UNIQUE (label, ref), card_number bigint, debit_card_no varchar(19));",
    )
    snippet, policy = _pasted_snippet(conninfo)
    tickets, sessions = policy.table("tickets").columns, policy.table("sessions").columns
    assert tickets["region"].transform == tickets["city"].transform == "keep", "a sub-partition's key too"
    assert tickets["passenger_email"].transform == "email" and "a partition key" in snippet
    assert sessions["token"].transform == "hash" and "unique: `redact` gives every value" in snippet
    assert sessions["code"].transform == "hash" and sessions["code"].param_dict == {"length": 12}
    assert sessions["label"].transform == "redact", "unique only with another column: the data decides"
    assert sessions["card_number"].transform == "number" and sessions["debit_card_no"].transform == "fpe"


def test_masking_a_partition_key_is_refused_before_any_data_changes(create_database):
    conninfo = database_with(
        create_database,
        "partition_key_rules",
        'CREATE TABLE tickets (id bigint, region text, "Email" text, sold date) PARTITION BY LIST (region);'
        "CREATE TABLE tickets_n PARTITION OF tickets FOR VALUES IN ('north') PARTITION BY RANGE (sold);"
        "CREATE TABLE events (id bigint, email text, note text)"
        " PARTITION BY HASH (lower(coalesce(\"email\", 'note')));",
    )
    policy = parse_policy(
        "tables:\n  tickets: {id: keep, region: redact, Email: email, sold: date}\n"
        "  events: {id: keep, email: email, note: scrub}\n"
    )
    with psycopg.connect(conninfo) as conn:
        problems = find_policy_problems(policy, read_tables(conn))
    assert [problem.split(": ", 1)[1].split(" (")[0] for problem in problems] == [
        "public.events.email",
        "public.tickets.region",
        "public.tickets.sold",
    ], "a sub-partition's key too; a word in a key expression's string literal is no column"
    assert all("it is a partition key" in problem for problem in problems)


def test_a_built_in_point_or_device_address_of_a_person_is_nulled_not_kept_unread(create_database):
    """No transform changes a built-in point or a macaddr and the audit does not read either: a rider's home as a
    point was suggested `keep`, and its production location reached staging."""
    conninfo = database_with(
        create_database,
        "snippet_unread_types",
        "CREATE TABLE riders (id int, home point, phone_mac macaddr, seen_at point NOT NULL);"
        "CREATE TABLE stops (id int, location point NOT NULL, beacon macaddr8);",
    )
    snippet, policy = _pasted_snippet(conninfo)
    riders, stops = policy.table("riders").columns, policy.table("stops").columns
    assert riders["home"].transform == riders["phone_mac"].transform == "null"
    assert riders["seen_at"].transform == "keep" and "but NOT NULL: keep only a public place" in snippet
    assert stops["location"].transform == stops["beacon"].transform == "keep", "a stop's is a public place's"
    assert snippet.count("the audit does not read it") == 5
