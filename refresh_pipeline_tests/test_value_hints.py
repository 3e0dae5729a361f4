"""The policy snippet suggests from a sample of each uncovered column's values (read-only, counted on the
server): emails in a column named `address`, phones in a `bigint`; free text with PII inside noted, never
made weaker than the name's suggestion; and no sampled value printed."""

import re
import threading

import psycopg
import pytest

from refresh_pipeline.cli import main
from refresh_pipeline.masking import value_hints
from refresh_pipeline.masking.policy import json_path_text, parse_json_path
from refresh_pipeline.masking.value_hints import hint_from_counts

_PRODUCTION = """
CREATE EXTENSION citext;
CREATE TABLE members (
    member_id bigint PRIMARY KEY,
    login citext,                 -- emails, named like nothing
    address text,                 -- emails, named like a street address
    aliases text[],               -- emails
    contact varchar(12),          -- emails that a masked email would not fit
    history text,                 -- free text, some of it with a phone
    legacy_no bigint,             -- phones as numbers
    big_id bigint,                -- phone-shaped, but an identifier
    plan_code text,               -- no PII
    mostly_email text,            -- 70% emails, 30% 'n/a'
    remarks text,                 -- free text, named so, some with an email
    reachable_at text,            -- 90% phones, 10% names
    delivery jsonb,               -- names, addresses and birth dates under keys scrub does not read
    tax_ref char(10),             -- PANs, named like nothing
    signup_ref text,              -- emails as a URL's query string holds them
    inbox text                    -- emails in Devanagari
);
INSERT INTO members
SELECT g, 'member' || g || '@gmail.com', 'Member.' || g || '@yahoo.co.in', ARRAY['m' || g || '@hotmail.com'],
       'm' || g || '@x.in',
       CASE WHEN g % 4 = 0 THEN 'called back on 98450 ' || lpad(g::text, 5, '0') ELSE 'no answer' END,
       9845000000 + g, 9845000000 + g, 'PLAN-' || g % 3,
       CASE WHEN g % 10 < 7 THEN 'member' || g || '@gmail.com' ELSE 'n/a' END,
       CASE WHEN g % 5 = 0 THEN 'wrote from member' || g || '@gmail.com' ELSE 'fine' END,
       CASE WHEN g % 10 = 0 THEN 'Ravi Kumar' ELSE '+91 98450 ' || lpad(g::text, 5, '0') END,
       jsonb_build_object('to', jsonb_build_object('full_name', 'Member ' || g, 'address', 'Flat ' || g || ', Andheri',
                                                   'dob', '1990-01-01'),
                          'items', jsonb_build_array(jsonb_build_object('sku', 'A1', 'qty', 2)),
                          'holder name', 'Member ' || g, 'contact', 'member' || g || '@gmail.com'),
       'ABCPK' || lpad(g::text, 4, '0') || 'Z', 'member' || g || '%40gmail.com', 'सदस्य' || g || '@डाटामेल.भारत'
FROM generate_series(1, 2500) AS g;
"""


def _snippet_lines(err: str) -> dict[str, str]:
    """column -> 'rule  # REVIEW: note' of the snippet's lines."""
    lines = [line.strip() for line in err.splitlines() if "# REVIEW" in line]
    return {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in lines}


@pytest.fixture
def production(create_database) -> str:
    conninfo = create_database("hints_prod")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(_PRODUCTION)
    return conninfo


def test_validate_suggests_from_values_and_prints_none(production, write_config, tmp_path, capsys):
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ntables: {}\n")

    assert main(["validate", "--config", str(write_config(production, policy=policy))]) == 1

    err = capsys.readouterr().err
    lines = _snippet_lines(err)
    assert lines["login"] == "email  # REVIEW: citext; values: 1,000 of 1,000 sampled are emails"
    assert lines["address"].startswith("email  # REVIEW: text; values: 1,000 of 1,000"), "values go before the name"
    assert lines["aliases"].startswith("{array: email}  # REVIEW: text[]; values:")
    assert lines["contact"].startswith("{transform: hash, length: 12}"), "an email that fits the column"
    assert lines["history"] == (
        "redact  # REVIEW: text; values: 250 of 1,000 sampled hold an email, phone or UPI handle"
    ), "PII inside free text: a note, never `scrub` where the name says `redact` (names would stay)"
    assert lines["remarks"] == (
        "scrub  # REVIEW: text; named like free text; values: 200 of 1,000 sampled hold an email, phone or UPI handle"
    )
    assert lines["reachable_at"] == (
        "redact  # REVIEW: text; values: 900 of 1,000 sampled are phone numbers, 100 have no digit "
        "(`phone` keeps such a value as it is)"
    ), "`phone` would keep the names"
    assert lines["legacy_no"] == "phone  # REVIEW: bigint; values: 1,000 of 1,000 sampled are phone numbers"
    assert lines["big_id"] == "keep  # REVIEW: bigint", "an identifier is not sampled"
    assert lines["member_id"] == "keep  # REVIEW: bigint"
    assert lines["plan_code"] == "redact  # REVIEW: text", "no PII in the values: the name decides"
    assert lines["mostly_email"] == (
        "email  # REVIEW: text; named like email; values: 700 of 1,000 sampled hold an email, phone or UPI handle"
    ), "30% are no email: the name decides"
    assert lines["delivery"] == (
        "scrub  # REVIEW: jsonb; a document: scrub masks every email, phone and UPI handle in it, or list JSON "
        "paths; sampled documents have keys named like personal data scrub keeps: $.to.address (address), "
        '$.to.dob (redact), $.to.full_name (name), $["holder name"] (name); list JSON paths instead (each path '
        "changes only its own values)"
    ), "names under JSON keys: scrub would keep them"
    assert lines["tax_ref"] == "pan  # REVIEW: character(10); values: 1,000 of 1,000 sampled are PANs"
    assert lines["signup_ref"] == "email  # REVIEW: text; values: 1,000 of 1,000 sampled are emails", "not phones"
    assert lines["inbox"] == "email  # REVIEW: text; values: 1,000 of 1,000 sampled are emails"
    assert "sampling the values of 14 unclassified column(s)" in err
    values = ("member1@gmail.com", "Member.1@yahoo", "m1@hotmail", "98450", "9845000001", "Member 1", "Flat", "ABCPK")
    for value in values:
        assert value not in err, "counts only: no sampled value is printed"


def test_a_pasted_snippet_from_values_makes_validate_pass(production, write_config, tmp_path, capsys):
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ntables: {}\n")
    config = write_config(production, policy=policy)
    assert main(["validate", "--config", str(config)]) == 1
    snippet = "\n".join(line for line in capsys.readouterr().err.splitlines() if "# REVIEW" in line)
    policy.write_text("version: 1\ntables:\n  members:\n" + snippet + "\n")

    assert main(["validate", "--config", str(config)]) == 0, capsys.readouterr().err


def _validate_while_locked(production: str, config, capsys) -> str:
    """validate's output while another session holds a lock on the table (a long ALTER TABLE, say)."""
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with psycopg.connect(production) as conn:
            conn.execute("LOCK TABLE members IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        locked.wait(10)
        assert main(["validate", "--config", str(config)]) == 1
    finally:
        release.set()
        holder.join()
    return capsys.readouterr().err


@pytest.fixture
def empty_policy_config(production, write_config, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ntables: {}\n")
    return write_config(production, policy=policy)


def test_a_sample_that_cannot_be_read_in_time_leaves_the_name_to_decide(
    production, empty_policy_config, capsys, monkeypatch
):
    monkeypatch.setattr(value_hints, "SAMPLE_TIMEOUT_MS", 300)

    err = _validate_while_locked(production, empty_policy_config, capsys)

    lines = _snippet_lines(err)
    assert lines["address"] == "address  # REVIEW: text; named like address", "no sample: the name decides"
    assert lines["login"] == "redact  # REVIEW: citext"
    assert "sampling stopped" not in err


def test_sampling_stops_when_its_time_is_up(production, empty_policy_config, capsys, monkeypatch):
    monkeypatch.setattr(value_hints, "SAMPLE_TIMEOUT_MS", 300)
    monkeypatch.setattr(value_hints, "SAMPLES_BUDGET_S", 1)

    err = _validate_while_locked(production, empty_policy_config, capsys)

    stopped = re.search(r"sampling stopped after 1 s: (\d+) column\(s\) suggested from their names only", err)
    assert stopped and 0 < int(stopped[1]) < 11, err
    assert "# REVIEW" in err, "the snippet is printed all the same"


@pytest.mark.parametrize(
    ("sampled", "holding", "whole", "without_digits", "transform"),
    [
        (100, 100, {"email": 100}, 100, "email"),
        (100, 85, {"email": 80, "phone": 5}, 15, "email"),
        (100, 90, {"email": 45, "phone": 45}, 55, None),  # two kinds: a note
        (100, 3, {}, 97, None),  # PII inside a few texts
        (100, 79, {"upi": 79}, 21, None),
        (100, 100, {"phone": 100}, 0, "phone"),
        (100, 99, {"phone": 99}, 1, None),  # `phone` would keep the one without digits
        (100, 0, {"email": 0, "pan": 80}, 0, "pan"),  # no token of the PII pattern, yet whole PANs
    ],
)
def test_the_counts_of_a_sample_decide_the_transform(sampled, holding, whole, without_digits, transform):
    hint = hint_from_counts(sampled, holding, whole, without_digits)
    assert hint is not None and hint.transform == transform


def test_a_sample_without_pii_gives_no_hint():
    assert hint_from_counts(100, 0, {"email": 0}, 100) is None
    assert hint_from_counts(100, 0, {"email": 0, "pan": 79}, 0) is None, "some PAN-shaped codes: the name decides"


@pytest.mark.parametrize("path", ["$.a.b", "$.items[*].name", '$["holder name"].x', "$.to[*][*]"])
def test_a_sampled_path_is_written_as_the_policy_reads_it(path):
    assert json_path_text(parse_json_path(path)) == path
