"""CHECK constraints a fixed-shape mask cannot pass are problems before anything is masked: in validate, in
check-policy and in the refresh's coverage check, read from the schema alone (no row read)."""

import psycopg
import pytest

from refresh_pipeline.cli import main
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.masking.catalog import read_tables
from refresh_pipeline.masking.check_conflicts import find_check_conflicts, refuse_masked_emails
from refresh_pipeline.masking.coverage import find_uncovered, policy_snippet, sample_uncovered
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.policy import TransformRule, parse_policy
from refresh_pipeline.masking.runner import install_functions, mask_table

SCHEMA = """
CREATE DOMAIN company_email AS text CHECK (VALUE LIKE '%@busco.in');
CREATE TABLE staff (
    id int PRIMARY KEY,
    work_email text CHECK (work_email LIKE '%@busco.in'),     -- no `email` value passes
    login company_email,                                       -- nor here, through the domain
    any_email text CHECK (any_email LIKE '%_@_%'),             -- masked emails pass
    code text CHECK (length(code) = 6),                        -- a 16-digit hash does not
    nick text CHECK (nick <> 'REDACTED'),                      -- `redact`'s default value does not
    badge text CHECK (badge IS NOT NULL),                      -- NULL does not
    mobile text CHECK (mobile ~ '^\\+91[0-9]{10}$'),           -- `phone` keeps the format: not tried
    pair_a text, pair_b text, CHECK (pair_a IS DISTINCT FROM pair_b)  -- two columns: the others NULL
);
"""
POLICY = """
tables:
  staff:
    id: keep
    work_email: email
    login: email
    any_email: email
    code: {transform: hash, length: 16}
    nick: redact
    badge: "null"
    mobile: phone
    pair_a: email
    pair_b: keep
"""


@pytest.fixture
def production(create_database) -> str:
    conninfo = create_database("check_conflicts")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SCHEMA)  # no rows: the schema alone tells
    return conninfo


def test_each_check_a_fixed_shape_mask_fails_is_named_with_its_column(production):
    with psycopg.connect(production, options="-c default_transaction_read_only=on") as conn:
        problems = find_check_conflicts(conn, parse_policy(POLICY), read_tables(conn))

    by_column = {problem.split(":")[0]: problem for problem in problems}
    assert sorted(by_column) == [
        "public.staff.badge",
        "public.staff.code",
        "public.staff.login",
        "public.staff.nick",
        "public.staff.work_email",
    ]
    assert by_column["public.staff.work_email"].startswith(
        "public.staff.work_email: `email` masks every value to <16 letters>@example.com, which fails check "
        "constraint staff_work_email_check CHECK ((work_email ~~ '%@busco.in'::text))"
    )
    assert (
        "`{transform: email, keep_domain: true}` masks the address at its own domain"
        in by_column["public.staff.work_email"]
    )
    assert "fails its domain company_email" in by_column["public.staff.login"]
    assert "to 16 hex digits" in by_column["public.staff.code"] and "to 'REDACTED'" in by_column["public.staff.nick"]
    assert "to NULL" in by_column["public.staff.badge"]


def test_emails_masked_at_their_own_domain_pass_a_company_domain_check(production):
    own_domain = POLICY.replace("work_email: email", "work_email: {transform: email, keep_domain: true}").replace(
        "login: email", "login: {transform: email, keep_domain: true}"
    )
    with psycopg.connect(production, options="-c default_transaction_read_only=on") as conn:
        problems = find_check_conflicts(conn, parse_policy(own_domain), read_tables(conn))
    assert sorted(problem.split(":")[0] for problem in problems) == [
        "public.staff.badge",
        "public.staff.code",
        "public.staff.nick",
    ]


def test_the_snippet_masks_emails_a_check_holds_to_a_company_at_their_own_domain(production):
    """The pasted snippet passes the CHECK that `email` would fail; a column without such a CHECK keeps `email`."""
    with psycopg.connect(production, options="-c default_transaction_read_only=on") as conn:
        tables = read_tables(conn)
        uncovered = find_uncovered(parse_policy("tables: {}"), tables)
        snippet = policy_snippet(uncovered, sample_uncovered(conn, tables, uncovered))
        pasted = parse_policy("tables:\n" + snippet)
        conflicts = find_check_conflicts(conn, pasted, tables)
        staff = tables[("public", "staff")]
        through_domain = refuse_masked_emails(conn, staff, [staff.column("login"), staff.column("any_email")])
    assert through_domain == ["login"], "its domain's CHECK refuses them too"
    own_domain = {
        name: rule.transform
        for name, rule in pasted.table("staff").columns.items()
        if isinstance(rule, TransformRule) and rule.param_dict.get("keep_domain")
    }
    assert own_domain == {"work_email": "email"}, snippet
    assert "a CHECK refuses @example.com" in snippet
    assert not [c for c in conflicts if "email" in c.split(":")[0]], conflicts


def test_validate_and_check_policy_refuse_such_a_policy(production, write_config, tmp_path, capsys):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)

    assert main(["validate", "--config", str(write_config(production, policy=policy))]) == 1
    assert "public.staff.work_email: `email` masks every value" in capsys.readouterr().err
    assert main(["check-policy", "--policy", str(policy), "--dsn", production]) == 1
    assert "the refresh would stop at this table" in capsys.readouterr().err

    policy.write_text(POLICY.replace("work_email: email", "work_email: keep").replace("login: email", "login: keep")
                      .replace("length: 16", "length: 8").replace("nick: redact", "nick: {transform: redact, value: x}")
                      .replace('badge: "null"', "badge: redact"))  # fmt: skip
    code_fits = main(["check-policy", "--policy", str(policy), "--dsn", production])
    err = capsys.readouterr().err
    assert "public.staff.code" in err and code_fits == 1, "a hash of 8 digits still fails length() = 6"


def test_what_the_check_predicts_is_what_masking_meets(production):
    key = MaskingKey("check-conflicts-test-key-0123456789")
    kept = ("id", "login", "code", "nick", "badge", "mobile", "pair_a", "pair_b")
    policy = parse_policy(
        "tables:\n  staff:\n    work_email: email\n    any_email: email\n"
        + "".join(f"    {name}: keep\n" for name in kept)
    )
    with psycopg.connect(production, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO staff (id, work_email, any_email, badge, pair_a) VALUES (1, 'a@busco.in', 'b@x.in', 'B1', 'p')"
        )
        install_functions(conn)
        predicted = find_check_conflicts(conn, policy, read_tables(conn))
        with pytest.raises(RefreshError, match="masked values fail check constraint staff_work_email_check"):
            mask_table(conn, policy, "staff", key)
    assert [problem.split(":")[0] for problem in predicted] == ["public.staff.work_email"], "any_email passes"
