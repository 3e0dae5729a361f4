"""The policy file: what it accepts, and errors that name the line."""

import pytest

from refresh_pipeline.errors import RefreshError
from refresh_pipeline.masking.policy import (
    ArrayRule,
    JsonRule,
    TransformRule,
    parse_json_path,
    parse_policy,
    policy_table_name,
    split_table_name,
)

GOOD = """\
tables:
  routes: keep
  billing.invoices:
    id: keep
    email: email
    note: {transform: redact, value: "n/a"}
    payload:
      json:
        "$.customer.phone": phone
        "$.items[*].email": email
    aliases: {array: scrub}
"""


def test_policy_maps_tables_to_keep_or_column_rules():
    policy = parse_policy(GOOD)

    assert policy.tables[("public", "routes")].keep_all
    invoices = policy.tables[("billing", "invoices")]
    assert invoices.columns["email"] == TransformRule("email", (), 5)
    assert invoices.columns["note"].param_dict == {"value": "n/a"}
    assert isinstance(invoices.columns["payload"], JsonRule)
    assert [p.steps for p in invoices.columns["payload"].paths] == [("customer", "phone"), ("items", "*", "email")]
    assert isinstance(invoices.columns["aliases"], ArrayRule)
    assert set(invoices.masked_columns) == {"email", "note", "payload", "aliases"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tables:\n  t:\n    a: emial\n", "line 3: public.t.a: unknown transform 'emial'"),
        ("tables:\n  t:\n    a: email\n    a: keep\n", "line 4: public.t: 'a' appears twice"),
        ("tables:\n  t:\n    a: {json: {'customer.email': email}}\n", "must start with '$'"),
        ("tables:\n  t:\n    a: {json: {'$.x': date}}\n", "JSON values take a text transform"),
        ("tables:\n  t:\n    a: {transform: hash, colour: red}\n", "has no parameter(s) colour"),
        ("tables:\n  t: drop\n", "line 2: public.t: write `keep` or a mapping"),
        ("tabels:\n  t: keep\n", "unknown top-level key(s) tabels"),
        ("tables:\n  a.b.c: keep\n", "bad table name 'a.b.c'"),
        ("", "the policy is empty"),
        ("tables:\n  t:\n    a: {transform: number, min: 5}\n", "number needs numeric `min` and `max`"),
        ("tables:\n  t:\n    a: {transform: geo, radius_m: -1}\n", "geo radius_m must be a positive number"),
        ("tables:\n  t:\n    a: {transform: date, keep: week}\n", "date keep must be `year` or `month`"),
        ("tables:\n  t:\n    a: {transform: email, keep_domain: yes please}\n", "keep_domain must be true or false"),
        ("tables:\n  t:\n    a: {transform: email, keep_domains: busco.in}\n", "keep_domains must be a list of"),
        ("tables:\n  t:\n    a: {transform: email, keep_domains: []}\n", "keep_domains must be a list of domains"),
        ("tables:\n  t:\n    a: {transform: email, keep_domains: ['@busco.in']}\n", "'@busco.in' is not a domain"),
        (
            "tables:\n  t:\n    a: {transform: email, keep_domain: true, keep_domains: [busco.in]}\n",
            "keep_domain: true (every domain) or keep_domains (those listed), not both",
        ),
        ("tables:\n  t:\n    a: {array: geo}\n", "array elements take a text transform"),
        ("allowlist: helpline\ntables:\n  t: keep\n", "allowlist must be a list"),
        ("version: 2\ntables:\n  t: keep\n", "line 1: version 2 is not one this refresh_pipeline reads"),
        ("version: [1]\ntables:\n  t: keep\n", "version a mapping or list is not one"),
    ],
)
def test_bad_policy_is_refused_with_the_line_and_reason(text, expected):
    with pytest.raises(RefreshError) as error:
        parse_policy(text, source="policy.yaml")
    assert expected in str(error.value)
    assert str(error.value).startswith("policy.yaml")


def test_a_policy_may_say_its_version():
    (table,) = parse_policy("version: 1\ntables:\n  t: keep\n").tables.values()
    assert (table.qualified_name, table.keep_all) == ("public.t", True)


def test_json_path_syntax():
    assert parse_json_path("$.a.b") == ("a", "b")
    assert parse_json_path('$.a[*]["odd key"][2]') == ("a", "*", "odd key", "2")
    with pytest.raises(ValueError):
        parse_json_path("$")


def test_table_digest_changes_with_its_rules_only():
    first = parse_policy("tables:\n  t:\n    a: email\n    b: keep\n").tables[("public", "t")]
    same = parse_policy("tables:\n  t:\n    b: keep\n    a: email\n").tables[("public", "t")]
    other = parse_policy("tables:\n  t:\n    a: hash\n    b: keep\n").tables[("public", "t")]
    assert first.digest() == same.digest()
    assert first.digest() != other.digest()


def test_allowlist_is_read_as_strings():
    policy = parse_policy("allowlist: ['+91 22 4000 1234', 18001234567]\ntables:\n  t: keep\n")
    assert policy.allowlist == ("+91 22 4000 1234", "18001234567")


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("customers", ("public", "customers")),
        ("billing.invoices", ("billing", "invoices")),
        ('public."v1.users"', ("public", "v1.users")),
        ('"v1.users"', ("public", "v1.users")),
        ('"v1.app"."a""b"', ("v1.app", 'a"b')),
        ("Sales.Customer Accounts", ("Sales", "Customer Accounts")),
    ],
)
def test_table_names_split_as_sql_does_with_quotes_around_dots(name, parts):
    assert split_table_name(name) == parts
    assert split_table_name(policy_table_name(*parts)) == parts, "the snippet's spelling reads back"


@pytest.mark.parametrize("name", ["a.b.c", "a..b", '"unclosed', "a.", ".b", '"a"b'])
def test_table_names_that_name_no_table_are_refused(name):
    with pytest.raises(RefreshError, match="quote a name holding a dot"):
        split_table_name(name)
