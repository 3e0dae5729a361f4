"""Constraints masked rows can break, on real PostgreSQL: unique indexes a transform can break are warned
about before masking, and a broken unique, check or exclusion constraint fails the table at once, naming
the constraint and the transforms to blame, with nothing changed and no value quoted."""

import re

import psycopg
import pytest

from refresh_pipeline.audit.fingerprints import record_original_fingerprints
from refresh_pipeline.audit.scan import scan_table
from refresh_pipeline.cli import main
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.masking.catalog import read_tables
from refresh_pipeline.masking.constraints import collision_reason, find_unique_index_risks, read_unique_indexes
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.policy import parse_policy
from refresh_pipeline.masking.runner import mask_table
from refresh_pipeline_tests.helpers import database_with

KEY = MaskingKey("constraints-test-key-0123456789")


def _rule(yaml_rule: str):
    return parse_policy(f"tables:\n  t: {{c: {yaml_rule}}}\n").table("t").columns["c"]


@pytest.mark.parametrize(
    ("rule", "collides"),
    [
        ("keep", False),
        ("email", False),
        ("phone", False),
        ("fpe", False),
        ("pan", False),
        ("aadhaar", False),
        ("hash", False),
        ("{transform: hash, length: 16}", True),
        ("name", True),
        ("address", True),
        ("date", True),
        ("upi", False),
        ("ip", True),
        ("redact", True),
        ("scrub", True),
        ("{array: email}", False),
        ("{array: first_name}", True),
        ('{json: {"$.email": email, "$.phone": phone}}', False),
        ('{json: {"$.email": email, "$.name": name}}', True),
    ],
)
def test_which_transforms_can_give_two_values_one_masked_value(rule, collides):
    assert (collision_reason(_rule(rule)) is not None) is collides


def test_null_collides_only_where_the_index_counts_nulls_as_equal():
    assert collision_reason(_rule("'null'")) is None
    assert "NULL" in collision_reason(_rule("'null'"), nulls_not_distinct=True)


SCHEMA = """
CREATE TABLE members (
    id int PRIMARY KEY,
    username text NOT NULL UNIQUE,
    email text NOT NULL,
    full_name text,
    dob date,
    city text,
    UNIQUE (full_name, dob)
);
CREATE UNIQUE INDEX members_lower_email ON members (lower(email));
CREATE UNIQUE INDEX members_city_name ON members (city) INCLUDE (full_name) WHERE city <> '';
CREATE TABLE events (id int, at date, who text, PRIMARY KEY (id, at), UNIQUE (who, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE tags (id int PRIMARY KEY, label text UNIQUE NULLS NOT DISTINCT);
"""
POLICY = """
tables:
  members: {id: keep, username: name, email: email, full_name: name, dob: date, city: keep}
  events: {id: keep, at: keep, who: email}
  tags: {id: keep, label: 'null'}
"""


def test_unique_indexes_are_read_with_their_columns_in_index_order(create_database):
    conninfo = database_with(create_database, "constraints_read", SCHEMA)
    with psycopg.connect(conninfo) as conn:
        indexes = read_unique_indexes(conn)
    columns = {(i.table, i.name): (i.columns, i.nulls_not_distinct) for found in indexes.values() for i in found}
    assert columns == {
        ("members", "members_pkey"): (("id",), False),
        ("members", "members_username_key"): (("username",), False),
        ("members", "members_full_name_dob_key"): (("full_name", "dob"), False),
        ("members", "members_lower_email"): (("email",), False),
        ("members", "members_city_name"): (("city",), False),  # INCLUDE columns do not make rows unique
        ("events", "events_pkey"): (("id", "at"), False),
        ("events", "events_who_at_key"): (("who", "at"), False),
        ("tags", "tags_pkey"): (("id",), False),
        ("tags", "tags_label_key"): (("label",), True),
    }, "partitions' own copies of the parent's indexes are not listed"


def test_validate_warns_about_each_unique_index_masking_can_break(create_database, write_config, tmp_path, capsys):
    conninfo = database_with(create_database, "constraints_warn", SCHEMA)
    with psycopg.connect(conninfo) as conn:
        warnings = find_unique_index_risks(parse_policy(POLICY), read_tables(conn), read_unique_indexes(conn))
    assert len(warnings) == 3, warnings
    username, full_name_dob, label = sorted(warnings, key=lambda w: ("username" not in w, "dob" not in w))
    assert username.startswith("public.members: unique index members_username_key on (username)")
    assert "username (`name` picks names from a list)" in username
    assert "full_name (`name` picks names from a list); dob (`date` moves dates" in full_name_dob
    assert "tags_label_key on (label)" in label and "NULL" in label

    policy_path = tmp_path / "constraints_policy.yaml"
    policy_path.write_text(POLICY)
    assert main(["validate", "--config", str(write_config(conninfo, policy=policy_path))]) == 0, "warnings only"
    err = capsys.readouterr().err
    assert err.count("warning: ") == 3 and "members_username_key" in err


def _members(conninfo: str, rows: int = 2000, referenced: bool = False) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO members SELECT g, 'user' || g, 'user' || g || '@gmail.com', 'Ravi Kumar ' || g,"
            " DATE '1990-01-01' + g, 'city' || g FROM generate_series(1, %s) g",
            (rows,),
        )
        if referenced:
            conn.execute("CREATE TABLE logins (id int PRIMARY KEY, member int REFERENCES members)")


@pytest.mark.parametrize("referenced", [False, True], ids=["block ranges", "rewrite"])
def test_masked_rows_breaking_a_unique_index_fail_at_once_naming_it(create_database, referenced):
    conninfo = database_with(create_database, "constraints_unique", SCHEMA)
    _members(conninfo, referenced=referenced)
    policy = parse_policy(POLICY.replace("  tags:", "  logins: keep\n  tags:") if referenced else POLICY)
    messages: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        before = conn.execute("SELECT md5(string_agg(m::text, ',' ORDER BY id)) FROM members m").fetchone()[0]
        with pytest.raises(RefreshError) as raised:
            mask_table(conn, policy, "members", KEY, log=messages.append)
        after = conn.execute("SELECT md5(string_agg(m::text, ',' ORDER BY id)) FROM members m").fetchone()[0]
        marker = conn.execute("SELECT count(*) FROM refresh_pipeline.masked_tables").fetchone()[0]
    message = str(raised.value)
    assert message.startswith("public.members: masking gives two rows the same values for unique index members_")
    assert "nothing was changed" in message and "(`name` picks names from a list)" in message
    assert "members_username_key" in message and "members_full_name_dob_key" in message, "the other one at risk too"
    assert "Ravi Kumar" not in message and "@gmail" not in message and "user1" not in message, "no value quoted"
    assert after == before and marker == 0, "nothing changed"
    assert not any("DELETE + INSERT" in m for m in messages), "no second attempt that must fail the same way"


def test_distinct_transforms_keep_unique_indexes_intact(create_database):
    conninfo = database_with(create_database, "constraints_distinct", SCHEMA)
    _members(conninfo)
    policy = parse_policy(
        POLICY.replace("username: name", "username: fpe").replace("full_name: name", "full_name: hash")
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        assert mask_table(conn, policy, "members", KEY).status == "masked"
        distinct = conn.execute(
            "SELECT count(DISTINCT username), count(DISTINCT lower(email)), count(*) FROM members"
        ).fetchone()
    assert distinct == (2000, 2000, 2000)


def test_a_unique_index_broken_by_a_distinct_transform_says_which_spellings_it_joins(create_database):
    conninfo = database_with(
        create_database,
        "constraints_spellings",
        "CREATE TABLE payees (id int PRIMARY KEY, vpa text UNIQUE);"
        "INSERT INTO payees VALUES (1, 'ravi.k@okaxis'), (2, 'Ravi.K@okaxis');",
    )
    with psycopg.connect(conninfo, autocommit=True) as conn, pytest.raises(RefreshError) as raised:
        mask_table(conn, parse_policy("tables:\n  payees: {id: keep, vpa: upi}\n"), "payees", KEY)
    message = str(raised.value)
    assert "payees_vpa_key on (vpa)" in message and "masked: vpa (`upi`)" in message
    assert "a UPI handle in another letter case" in message and "`hash`" in message
    assert "Mask those columns with a transform that keeps values distinct" not in message, "upi already does"


def test_masked_values_failing_a_check_constraint_name_it(create_database):
    conninfo = database_with(
        create_database,
        "constraints_check",
        "CREATE TABLE staff (id int PRIMARY KEY, email text CONSTRAINT corporate CHECK (email LIKE '%@corp.in'));"
        "INSERT INTO staff SELECT g, 'staff' || g || '@corp.in' FROM generate_series(1, 300) g;",
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        with pytest.raises(RefreshError) as raised:
            mask_table(conn, parse_policy("tables:\n  staff: {id: keep, email: email}\n"), "staff", KEY)
        unchanged = conn.execute("SELECT count(*) FROM staff WHERE email LIKE 'staff%'").fetchone()[0]
    message = str(raised.value)
    assert message.startswith("public.staff: masked values fail check constraint corporate CHECK")
    assert "masked columns it checks: email (`email`)" in message and "staff1@" not in message
    assert unchanged == 300


def test_emails_masked_at_their_own_domain_pass_a_company_check_and_the_audit(create_database):
    """`{transform: email, keep_domain: true}`: a work address keeps its company, as a CHECK (or the application
    telling corporate riders by their domain) needs; the local part is masked, distinct and audited."""
    conninfo = database_with(
        create_database,
        "constraints_keep_domain",
        "CREATE TABLE staff (id int PRIMARY KEY, email text UNIQUE CONSTRAINT corporate CHECK (email ILIKE '%@%.in%'),"
        " alias text);"
        "INSERT INTO staff SELECT g, CASE g % 3 WHEN 0 THEN 'Staff' || g || '@Corp.in' WHEN 1 THEN 'staff' || g"
        " || '@corp.in' ELSE ' staff' || g || '@depot.busco.in ' END, 'staff' || g || '@corp.in'"
        " FROM generate_series(1, 300) g;",
    )
    policy = parse_policy("tables:\n  staff: {id: keep, email: {transform: email, keep_domain: true}, alias: keep}\n")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        tables = read_tables(conn)
        record_original_fingerprints(conn, list(tables.values()), policy, KEY)
        mask_table(conn, policy, "staff", KEY)
        rows = dict(conn.execute("SELECT id, email FROM staff").fetchall())
        with_alias = scan_table(conn, tables[("public", "staff")], KEY, kept_columns={"id", "alias"})
        conn.execute("UPDATE staff SET alias = email")  # masked addresses copied into a kept column
        copied = scan_table(conn, tables[("public", "staff")], KEY, kept_columns={"id", "alias"})
    assert re.fullmatch(r"[A-P][A-Pa-p]{15}@Corp\.in", rows[3]) and re.fullmatch(r"[a-p]{16}@corp\.in", rows[1])
    assert re.fullmatch(r" [a-p]{16}@depot\.busco\.in ", rows[2]), "spaces around stay"
    assert len(set(rows.values())) == 300 and not any("staff" in email.lower() for email in rows.values())
    assert [f.column for f in with_alias.findings] == ["alias"], "the kept originals are still found"
    assert copied.passed, "an address masked at its own domain is no PII, in any column"


def test_keep_domains_keeps_only_the_listed_companies_domains(create_database):
    """`keep_domains: [corp.in, BusCo.in]`: riders at those companies keep their domain (matched in any case),
    a personal domain of one's own (`ravi@ravikumar.in`) and the mail providers' go to example.com; every
    address stays distinct and the audit passes."""
    conninfo = database_with(
        create_database,
        "constraints_keep_domains",
        "CREATE TABLE riders (id int PRIMARY KEY, email text UNIQUE);"
        "INSERT INTO riders SELECT g, CASE g % 4 WHEN 0 THEN 'Rider' || g || '@Corp.in' WHEN 1 THEN 'rider' || g"
        " || '@busco.in' WHEN 2 THEN 'rider' || g || '@gmail.com' ELSE 'rider' || g || '@rider' || g || '.in' END"
        " FROM generate_series(1, 300) g;",
    )
    policy = parse_policy(
        "tables:\n  riders: {id: keep, email: {transform: email, keep_domains: [corp.in, BusCo.in]}}\n"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        tables = read_tables(conn)
        record_original_fingerprints(conn, list(tables.values()), policy, KEY)
        mask_table(conn, policy, "riders", KEY)
        rows = dict(conn.execute("SELECT id, email FROM riders").fetchall())
        audit = scan_table(conn, tables[("public", "riders")], KEY, kept_columns={"id"})
    assert re.fullmatch(r"[A-P][A-Pa-p]{15}@Corp\.in", rows[4]) and re.fullmatch(r"[a-p]{16}@busco\.in", rows[1])
    assert re.fullmatch(r"[a-p]{16}@example\.com", rows[2]) and re.fullmatch(r"[a-p]{16}@example\.com", rows[3])
    assert len(set(rows.values())) == 300 and not any("rider" in email.lower() for email in rows.values())
    assert audit.passed


def test_masked_values_failing_a_domain_check_name_the_domain_and_column(create_database):
    conninfo = database_with(
        create_database,
        "constraints_domain",
        "CREATE DOMAIN corporate_email AS text CONSTRAINT corporate CHECK (VALUE LIKE '%@corp.in');"
        "CREATE TABLE staff (id int PRIMARY KEY, email corporate_email, note text);"
        "INSERT INTO staff SELECT g, 'staff' || g || '@corp.in', 'x' FROM generate_series(1, 300) g;",
    )
    with psycopg.connect(conninfo, autocommit=True) as conn, pytest.raises(RefreshError) as raised:
        mask_table(conn, parse_policy("tables:\n  staff: {id: keep, email: email, note: keep}\n"), "staff", KEY)
    message = str(raised.value)
    assert "fail check constraint corporate CHECK ((VALUE ~~ '%@corp.in'::text)) of domain corporate_email" in message
    assert "masked columns it checks: email (`email`)" in message
