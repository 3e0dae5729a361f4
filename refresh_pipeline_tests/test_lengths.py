"""Masked values in columns with a length limit, on real PostgreSQL: names and addresses are cut by whole
words to fit; any other overflow fails before anything changes, naming the column without quoting a value."""

import re
from importlib import resources

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from refresh_pipeline.config import load_config
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.masking.catalog import read_tables
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.lengths import (
    EMAIL_AT_ITS_DOMAIN,
    FIT_ADVICE,
    FITTED_MAX_LENGTHS,
    IPV6_LENGTH,
    masked_length,
    masked_length_bound,
    masked_lengths_too_long,
)
from refresh_pipeline.masking.policy import parse_policy
from refresh_pipeline.masking.runner import mask_table
from refresh_pipeline.masking.validation import find_policy_problems
from refresh_pipeline.validate import validate_against_source
from refresh_pipeline_tests.helpers import database_with, login_role

KEY = MaskingKey("lengths-test-key-0123456789")

# The same originals in columns wide enough and in short ones; `refs` points at `people` so that the
# masking goes through the rewrite as well as through block ranges (`people_short` nobody points at).
PEOPLE = """
CREATE TABLE people (id int PRIMARY KEY, full_name text, first text, address text);
CREATE TABLE people_short (id int PRIMARY KEY, full_name varchar(14), first char(5), address varchar(24));
CREATE TABLE refs (id int PRIMARY KEY, person int REFERENCES people);
INSERT INTO people SELECT g, 'Ravi Kumar ' || g, 'Ravi' || g, g || ' Linking Road, Bandra West, Mumbai'
FROM generate_series(1, 3000) g;
INSERT INTO people_short SELECT id, left(full_name, 14), left(first, 5), left(address, 24) FROM people;
"""
POLICY = """
tables:
  people: {id: keep, full_name: name, first: first_name, address: address}
  people_short: {id: keep, full_name: name, first: first_name, address: address}
  refs: keep
"""


def _masked(conninfo: str, table: str) -> dict[int, tuple[str, str, str]]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(f"SELECT id, full_name, rtrim(first), address FROM {table} ORDER BY id").fetchall()
    return {row[0]: row[1:] for row in rows}


def test_names_and_addresses_are_cut_by_whole_words_to_fit_a_short_column(create_database):
    conninfo = database_with(create_database, "lengths_fit", PEOPLE)
    policy = parse_policy(POLICY)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        wide = mask_table(conn, policy, "people", KEY)
        short = mask_table(conn, policy, "people_short", KEY)
    assert wide.status == short.status == "masked"

    wide_values = _masked(conninfo, "people").values()
    short_values = list(_masked(conninfo, "people_short").values())
    assert max(len(name) for name, _, _ in wide_values) > 14 and max(len(a) for _, _, a in wide_values) > 24
    for name, first, address in short_values:
        assert len(name) <= 14 and len(first) <= 5 and len(address) <= 24, (name, first, address)
        assert re.fullmatch(r"[A-Z][a-z]+( [A-Z][a-z]+)?", name), "whole words of the name lists"
        assert re.fullmatch(r"[A-Z][a-z]{1,4}", first), "one word, cut by characters when still too long"
        assert re.fullmatch(r"\d+, [A-Za-z ]+(, [A-Za-z ]+)?", address), "trailing words dropped, no comma left"
    assert sum(" " not in name for name, _, _ in short_values) > 100, "long full names became first names"
    assert sum(address.count(",") == 1 for _, _, address in short_values) > 100, "long addresses lost their area"


def test_the_longest_values_are_what_the_functions_can_produce():
    functions = resources.files("refresh_pipeline.masking").joinpath("functions.sql").read_text()

    def longest(function: str) -> int:
        body = functions[functions.index(f"FUNCTION refresh_pipeline.{function}(") :]
        return max(len(name) for name in re.search(r"'\{(.*?)\}'::text\[\]", body).group(1).replace('"', "").split(","))

    first, last = longest("mask_first_name"), longest("mask_last_name")
    address_body = functions[functions.index("FUNCTION refresh_pipeline.mask_address(") :]
    lists = re.findall(r"'\{(.*?)\}'::text\[\]", address_body)[:2]
    streets, areas = (max(len(v) for v in items.replace('"', "").split(",")) for items in lists)
    expected = {
        "first_name": first,
        "last_name": last,
        "name": first + 1 + last,
        "address": len("400, ") + streets + len(", ") + areas,
    }
    assert expected == FITTED_MAX_LENGTHS


def test_a_masked_value_too_long_for_its_column_changes_nothing_and_names_the_column(create_database):
    conninfo = database_with(
        create_database,
        "lengths_overflow",
        "CREATE TABLE payers (id int PRIMARY KEY, upi varchar(12), note varchar(200));"
        "CREATE TABLE payments (id int PRIMARY KEY, payer int REFERENCES payers);"
        "INSERT INTO payers SELECT g, 'p' || g || '@ybl', 'paid' FROM generate_series(1, 500) g;",
    )
    policy = parse_policy("tables:\n  payers: {id: keep, upi: upi, note: keep}\n  payments: keep\n")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        before = conn.execute("SELECT array_agg(upi ORDER BY id) FROM payers").fetchone()[0]
        messages: list[str] = []
        with pytest.raises(RefreshError) as raised:
            mask_table(conn, policy, "payers", KEY, log=messages.append)
        after = conn.execute("SELECT array_agg(upi ORDER BY id) FROM payers").fetchone()[0]
        marker = conn.execute("SELECT count(*) FROM refresh_pipeline.masked_tables").fetchone()[0]
    message = str(raised.value)
    assert "public.payers.upi: 500 masked value(s) longer than its 12 characters (up to 14)" in message
    assert "note" not in message and "@ybl" not in message, "names the column, quotes no value"
    assert after == before and marker == 0, "nothing changed"
    assert any("not rewritten" in m for m in messages), "the rewrite gave way to the path that can say which column"


def test_arrays_and_domains_of_short_text_fit_or_fail_naming_the_column(create_database):
    conninfo = database_with(
        create_database,
        "lengths_arrays",
        "CREATE DOMAIN short_handle AS varchar(12);"
        "CREATE TABLE contacts (id int PRIMARY KEY, names varchar(12)[], handles varchar(12)[], upi short_handle);"
        "INSERT INTO contacts SELECT g, ARRAY['Ravi K' || g, 'Asha'], ARRAY['p' || g || '@ybl'], 'q' || g || '@ybl'"
        " FROM generate_series(1, 300) g;"
        "CREATE TABLE payers AS SELECT * FROM contacts;",
    )
    fits, too_short, overflows = (
        parse_policy(f"tables:\n  {rule}\n  {other}: keep\n")
        for rule, other in [
            ("contacts: {id: keep, names: {array: name}, handles: keep, upi: keep}", "payers"),
            ("contacts: {id: keep, names: {array: email}, handles: keep, upi: keep}", "payers"),
            ("payers: {id: keep, names: keep, handles: {array: upi}, upi: upi}", "contacts"),
        ]
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        (problem,) = find_policy_problems(too_short, read_tables(conn))
        assert mask_table(conn, fits, "contacts", KEY).status == "masked"
        names = conn.execute("SELECT array_agg(n) FROM contacts, unnest(names) AS n").fetchone()[0]
        with pytest.raises(RefreshError) as raised:
            mask_table(conn, overflows, "payers", KEY)
        unchanged = conn.execute("SELECT count(*) FROM payers WHERE handles[1] LIKE 'p%@ybl'").fetchone()[0]
    assert problem.endswith(
        "names (character varying(12)[]): `email` produces up to 28 characters; the column holds 12"
    )
    assert all(len(name) <= 12 and re.fullmatch(r"[A-Z][a-z]+( [A-Z][a-z]+)?", name) for name in names)
    assert "public.payers.handles: 300 masked value(s) longer than its 12 characters (up to 14)" in str(raised.value)
    assert "public.payers.upi: 300 masked value(s) longer than its 12 characters (up to 14)" in str(raised.value)
    assert unchanged == 300, "nothing changed"


# Values of every shape the growing transforms meet: emails and UPI handles of any length, phone-shaped UPI
# local parts, phones typed as emails, placeholders, IPv4 and IPv6 with and without a prefix, addresses in
# letters beyond ASCII, a phone after a URL's encoded space.
GROWING = """
CREATE TABLE samples (id int PRIMARY KEY, upi text, note text, phone text, ip text, handles text[]);
INSERT INTO samples VALUES
 (1, 'ravi.kumar@okaxis', 'mail ravi@gmail.com or +91 98765 43210', '+91 98765 43210', '192.168.1.10',
  ARRAY['a@ybl', 'ravi.kumar@okaxis']),
 (2, 'a@ybl', 'upi a.b@ybl and 9876543210@ybl, A.B@Example.CO.in', 'ravi@gmail.com', '10.0.0.1/24',
  ARRAY['9876543210@ybl']),
 (3, '9876543210@ybl', 'nothing here', '98765-43210', '2001:db8::1', ARRAY['-', 'x@y@ybl']),
 (4, '+919876543210@paytm', 'call 09876543210 or x@y@ybl', '-', '2001:db8::/32', NULL),
 (5, 'noatsign', '--', 'mail: ravi@gmail.com', 'N/A', ARRAY[]::text[]),
 (6, ' ', '', NULL, '-', ARRAY['']),
 (7, 'x@y@ybl', 'a@b.in a@b.in', '', '1.2.3.4', ARRAY['RAVI@OKSBI']),
 (8, NULL, NULL, '(022) 2345 6789', NULL, NULL),
 (9, '', 'Ravi@Gmail.Com wrote', '9876543210', '255.255.255.255/8', ARRAY['ravi@gmail.com']),
 (10, NULL, '/pay?pa=a%40ybl&to=ravi%40gmail.com&ph=%2B919876543210', NULL, NULL, NULL),
 (11, NULL, 'मेल राम.kumar@डाटामेल.भारत। sms?text=Call%20at%2098765 43210', NULL, NULL, NULL);
"""
GROWING_POLICY = parse_policy(
    "tables:\n  samples: {id: keep, upi: upi, note: scrub, phone: phone, ip: ip, handles: {array: upi}}\n"
)


def test_the_length_measured_without_the_key_is_the_masked_values_length(create_database):
    """`validate` measures production's values without the key: what it predicts is what the masking makes
    (the largest IPv4 address being its bound)."""
    conninfo = database_with(create_database, "growing", GROWING)
    columns = ["upi", "note", "phone", "ip"]
    predictions = sql.SQL(", ").join(
        [
            masked_length(transform, sql.SQL("{}::text").format(sql.Identifier(column)))
            for column, transform in zip(columns, ["upi", "scrub", "phone", "ip"], strict=True)
        ]
        + [sql.SQL("(SELECT max({}) FROM unnest(handles) AS e)").format(masked_length("upi", sql.SQL("e")))]
    )
    lengths = sql.SQL(", ").join(
        [sql.SQL("length({})").format(sql.Identifier(c)) for c in columns]
        + [sql.SQL("(SELECT max(length(e)) FROM unnest(handles) AS e)")]
    )
    # The cheap bound validate measures only values above the limit of: never below the masked length.
    bounds = sql.SQL(", ").join(
        masked_length_bound(transform, sql.SQL("{}::text").format(sql.Identifier(column)))
        for column, transform in zip([*columns, "handles"], ["upi", "scrub", "phone", "ip", "upi"], strict=True)
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        predicted = conn.execute(sql.SQL("SELECT id, {} FROM samples ORDER BY id").format(predictions)).fetchall()
        bounded = conn.execute(sql.SQL("SELECT id, {} FROM samples ORDER BY id").format(bounds)).fetchall()
        mask_table(conn, GROWING_POLICY, "samples", KEY)
        masked = conn.execute(sql.SQL("SELECT id, {} FROM samples ORDER BY id").format(lengths)).fetchall()
        notes = [row[0] for row in conn.execute("SELECT note FROM samples ORDER BY id")]
    assert sum("@example.com" in (note or "").lower() for note in notes) == 5, notes
    assert notes[-2].startswith("/pay?pa=") and "%40example.com&ph=%2B91" in notes[-2], "encoded as it was"
    assert notes[-1].startswith("मेल ") and "@example.com। sms?text=Call%20at%20" in notes[-1], "whole, not its tail"
    assert "98765 43210" not in notes[-1]
    for before, after in zip(predicted, masked, strict=True):
        ip_row = before[4] != after[4]
        assert before[:4] + before[5:] == after[:4] + after[5:], (before, after)
        assert not ip_row or (after[4] <= before[4] and before[0] in (1, 2, 7, 9)), "IPv4: at most the bound"
    assert max(row[4] for row in predicted if row[4] is not None) == IPV6_LENGTH + 3
    for bound, after in zip(bounded, masked, strict=True):
        assert all(b >= a for b, a in zip(bound[1:], after[1:], strict=True) if a is not None), (bound, after)


def test_emails_masked_at_their_own_domain_are_measured_as_long_as_they_come_out(create_database):
    """No static minimum (the domain decides): validate measures them, and says so in policy terms."""
    conninfo = database_with(
        create_database,
        "own_domain_lengths",
        "CREATE TABLE staff (id int PRIMARY KEY, email varchar(30));"
        "INSERT INTO staff VALUES (1, 'a@corp.in'), (2, ' b@depot.busco.in '), (3, 'Ravi.Kumar@X.in'),"
        " (4, 'not an email'), (5, ' '), (6, NULL);",
    )
    policy = parse_policy("tables:\n  staff: {id: keep, email: {transform: email, keep_domain: true}}\n")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        table = read_tables(conn)[("public", "staff")]
        assert find_policy_problems(policy, {("public", "staff"): table}) == [], "no static minimum of 28"
        too_long = masked_lengths_too_long(conn, table, policy.table("staff"))
        predicted = conn.execute(
            sql.SQL("SELECT id, {} FROM staff ORDER BY id").format(masked_length(EMAIL_AT_ITS_DOMAIN, sql.SQL("email")))
        ).fetchall()
        conn.execute("ALTER TABLE staff ALTER COLUMN email TYPE text")  # room for the one that does not fit
        mask_table(conn, policy, "staff", KEY)
        masked = conn.execute("SELECT id, length(email) FROM staff ORDER BY id").fetchall()
    assert predicted == masked == [(1, 24), (2, 33), (3, 21), (4, 28), (5, 1), (6, None)]
    assert too_long == [
        "public.staff.email: 1 value(s) would be longer than its 30 characters once masked with "
        "`{transform: email, keep_domain: true}` (up to 33)"
    ]


def test_emails_kept_at_listed_domains_only_are_measured_at_their_domain_and_others_at_example_com(create_database):
    """keep_domains: an address at a long personal domain comes out as <16 letters>@example.com, which fits."""
    conninfo = database_with(
        create_database,
        "listed_domain_lengths",
        "CREATE TABLE staff (id int PRIMARY KEY, email varchar(30));"
        "INSERT INTO staff VALUES (1, 'a@corp.in'), (2, ' b@depot.busco.in '), (3, 'r@a-long-personal-domain.in'),"
        " (4, 'not an email');",
    )
    policy = parse_policy(
        "tables:\n  staff: {id: keep, email: {transform: email, keep_domains: [corp.in, depot.busco.in]}}\n"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        table = read_tables(conn)[("public", "staff")]
        too_long = masked_lengths_too_long(conn, table, policy.table("staff"))
        predicted = conn.execute(
            sql.SQL("SELECT id, {} FROM staff ORDER BY id").format(
                masked_length(EMAIL_AT_ITS_DOMAIN, sql.SQL("email"), ("corp.in", "depot.busco.in"))
            )
        ).fetchall()
        conn.execute("ALTER TABLE staff ALTER COLUMN email TYPE text")
        mask_table(conn, policy, "staff", KEY)
        masked = conn.execute("SELECT id, length(email) FROM staff ORDER BY id").fetchall()
    assert predicted == masked == [(1, 24), (2, 33), (3, 28), (4, 28)]
    assert too_long == [
        "public.staff.email: 1 value(s) would be longer than its 30 characters once masked with "
        "`{transform: email, keep_domains: [corp.in, depot.busco.in]}` (up to 33)"
    ]


def test_validate_names_the_columns_whose_masked_values_would_not_fit(create_database, write_config, tmp_path):
    production = create_database("growing_production")
    with psycopg.connect(production, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE users (id int PRIMARY KEY, upi varchar(12), note varchar(40), ip varchar(15),"
            " handles varchar(16)[], phone varchar(20));"
            "INSERT INTO users SELECT g,"
            " CASE WHEN g <= 3 THEN 'ab' || g || '@ybl' ELSE '98765' || lpad(g::text, 5, '0') || '@y' END,"
            " CASE WHEN g = 1 THEN 'write to ab@cd.in or a@b.in' ELSE 'write to a@b.in' END,"
            " CASE WHEN g = 2 THEN '::1' ELSE '192.168.1.10' END,"
            " ARRAY['a@ybl', CASE WHEN g = 5 THEN 'b@okaxis' END], '+91 98765 43210' FROM generate_series(1, 5) g"
        )
        before = conn.execute("SELECT * FROM users ORDER BY id").fetchall()
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "tables:\n  users: {id: keep, upi: upi, note: scrub, ip: ip, handles: {array: upi}, phone: phone}\n"
    )

    said: list[str] = []
    problems = validate_against_source(load_config(write_config(production, policy)), log=said.append).problems

    assert problems == [
        "masked values would not fit their columns, so the masking would fail: "
        "public.users.upi: 3 value(s) would be longer than its 12 characters once masked with `upi` (up to 14); "
        "public.users.note: 1 value(s) would be longer than its 40 characters once masked with `scrub` (up to 69); "
        "public.users.ip: 1 value(s) would be longer than its 15 characters once masked with `ip` (up to 39); "
        "public.users.handles: 1 value(s) would be longer than its 16 characters once masked with `upi` (up to 17)"
        f". {FIT_ADVICE}"
    ]
    measured = "upi, note, ip, handles, phone"
    assert said[0] == f"public.users: measuring how long {measured} will be once masked (one read-only scan)"
    with psycopg.connect(production) as conn:
        assert conn.execute("SELECT * FROM users ORDER BY id").fetchall() == before


def test_validate_says_which_table_production_s_session_cannot_read_to_measure(create_database, write_config, tmp_path):
    """A role that may not read a table cannot measure it (nor take the snapshot): a problem naming the table;
    the tables after it are still measured in the same session."""
    production = create_database("growing_unreadable")
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  accounts: {id: keep, upi: upi}\n  notes: {id: keep, body: scrub}\n")
    with login_role(production, "reader") as role:
        with psycopg.connect(production, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE accounts (id int PRIMARY KEY, upi varchar(12));"
                "CREATE TABLE notes (id int PRIMARY KEY, body varchar(20));"
                "INSERT INTO notes VALUES (1, 'mail a@b.in');"
                f"GRANT SELECT ON notes TO {role}"
            )
        as_reader = make_conninfo(production, user=role)
        problems = validate_against_source(load_config(write_config(as_reader, policy))).problems
    assert problems == [
        f"production's role {role} cannot read public.accounts (no SELECT), which the snapshot dumps: pg_dump would "
        "stop there. Grant it what it lacks (GRANT USAGE ON SCHEMA, GRANT SELECT ON ALL TABLES IN SCHEMA and ON ALL "
        "SEQUENCES IN SCHEMA, or the role pg_read_all_data; BYPASSRLS for row-level security)",
        "public.accounts: cannot read its values to measure how long masked ones will be (InsufficientPrivilege: "
        "permission denied for table accounts); the snapshot reads them too",
        "masked values would not fit their columns, so the masking would fail: public.notes.body: 1 value(s) would "
        f"be longer than its 20 characters once masked with `scrub` (up to 33). {FIT_ADVICE}",
    ]
