"""Production databases in other encodings and locales, on real PostgreSQL: the restored database has
production's encoding and locale (or says how it differs), and masking and the audit work in it."""

import json
import re
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from refresh_pipeline.config import load_config
from refresh_pipeline.platforms.database_locale import LOCALE_FILE
from refresh_pipeline.platforms.local import LocalPlatform
from refresh_pipeline_tests.helpers import refresh_through_cli

SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, full_name text, email text, note text);
INSERT INTO customers
SELECT g, E'Jos\\xe9 M\\xfcller ' || g, 'jose' || g || '@gmail.com', E'caf\\xe9 at stop ' || g || ', call 98765'
       || lpad(g::text, 5, '0') || E' or mail jos\\xe9' || g || E'@ex\\xe4mple.com'
FROM generate_series(1, 50) g;
"""
POLICY = "tables:\n  customers: {id: keep, full_name: name, email: email, note: scrub}\n"


def _production(pg_server, name: str, encoding: str) -> str:
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE 'C' LC_CTYPE 'C'").format(
                sql.Identifier(name), sql.Literal(encoding)
            )
        )
    conninfo = pg_server.dsn(name)
    # Latin-1 bytes: 'José Müller', 'café'. A SQL_ASCII database stores them as they come, not UTF-8.
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SET client_encoding TO 'LATIN1'")
        conn.execute(SCHEMA)
    return conninfo


@pytest.fixture
def productions(pg_server):
    made = {
        encoding: _production(pg_server, f"enc_{encoding.lower()}_production", encoding)
        for encoding in ("LATIN1", "SQL_ASCII")
    }
    yield made
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        for conninfo in made.values():
            name = psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"]
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _database_settings(conninfo: str) -> tuple[str, str, str]:
    with psycopg.connect(conninfo, client_encoding="UTF8") as conn:
        return conn.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
            "WHERE datname = current_database()"
        ).fetchone()


def test_the_restored_database_has_productions_encoding_and_locale(productions, write_config):
    platform = LocalPlatform(load_config(write_config(productions["LATIN1"])))
    snapshot = platform.snapshot()
    recorded = json.loads((Path(snapshot.location) / LOCALE_FILE).read_text())

    restored = platform.restore(snapshot, platform.new_database_name())

    assert recorded["encoding"] == "LATIN1" and recorded["collate"] == "C"
    assert _database_settings(platform.conninfo(restored.name)) == ("LATIN1", "C", "C")
    assert restored.notes == ()
    platform.retire(restored.name)


def test_a_locale_this_server_lacks_falls_back_and_says_so(productions, write_config):
    platform = LocalPlatform(load_config(write_config(productions["LATIN1"])))
    snapshot = platform.snapshot()
    locale_file = Path(snapshot.location) / LOCALE_FILE
    recorded = json.loads(locale_file.read_text())
    missing = {"encoding": "UTF8", "collate": "xx_XX.UTF-8", "ctype": "xx_XX.UTF-8"}
    locale_file.write_text(json.dumps({**recorded, **missing}))

    restored = platform.restore(snapshot, platform.new_database_name())

    assert _database_settings(platform.conninfo(restored.name)) == ("UTF8", "C.UTF-8", "C.UTF-8")
    (note,) = restored.notes
    assert "cannot create production's encoding UTF8, LC_COLLATE xx_XX.UTF-8" in note
    assert "invalid locale name" in note and "staging has encoding UTF8, LC_COLLATE C.UTF-8" in note
    platform.retire(restored.name)

    locale_file.unlink()  # a snapshot taken before the locale was recorded: the server's defaults
    older = platform.restore(snapshot, platform.new_database_name())
    assert "does not record production's encoding and locale" in older.notes[0]
    platform.retire(older.name)


@pytest.mark.parametrize("encoding", ["SQL_ASCII", "LATIN1"])
def test_a_refresh_masks_and_audits_a_database_in_another_encoding(
    productions, pg_server, write_config, tmp_path, capsys, encoding
):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    config = write_config(productions[encoding], policy)

    staging = pg_server.dsn(refresh_through_cli(config, capsys))

    assert _database_settings(staging)[0] == encoding
    with psycopg.connect(staging) as conn:
        conn.execute("SET client_encoding TO 'LATIN1'")
        rows = conn.execute("SELECT full_name, email, note FROM customers ORDER BY id").fetchall()
    with psycopg.connect(productions[encoding]) as conn:
        conn.execute("SET client_encoding TO 'LATIN1'")
        originals = conn.execute("SELECT full_name, email, note FROM customers ORDER BY id").fetchall()
    for (name, email, note), (original_name, _, original_note) in zip(rows, originals, strict=True):
        assert name != original_name and "Müller" not in name and name.isascii()
        assert email.endswith("@example.com")
        assert note.startswith("café at stop ") and note != original_note, "the phone in it masked, é kept"
        assert "exämple" not in note and re.search(r"or mail [a-p]{16}@example\.com$", note), "the address whole"


CASE_INSENSITIVE_SCHEMA = """
CREATE COLLATION case_insensitive (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE customers (
    id int PRIMARY KEY,
    email text COLLATE case_insensitive NOT NULL UNIQUE,
    phone text COLLATE case_insensitive,
    note text COLLATE case_insensitive,
    aliases text[] COLLATE case_insensitive
);
INSERT INTO customers
SELECT g, 'Rider' || g || '@Gmail.com', '+91 98765 ' || lpad(g::text, 5, '0'),
       'call 98765' || lpad(g::text, 5, '0') || ' or rider' || g || '@gmail.com', ARRAY['rider' || g || '@yahoo.com']
FROM generate_series(1, 60) g;
CREATE TABLE bookings (id int PRIMARY KEY, email text COLLATE case_insensitive REFERENCES customers (email));
INSERT INTO bookings SELECT g, 'RIDER' || (1 + g % 60) || '@GMAIL.COM' FROM generate_series(1, 200) g;
"""
CASE_INSENSITIVE_POLICY = """
tables:
  customers: {id: keep, email: email, phone: phone, note: scrub, aliases: {array: email}}
  bookings: {id: keep, email: email}
"""


def test_columns_of_a_case_insensitive_collation_are_masked_audited_and_still_join(
    create_database, write_config, tmp_path, capsys
):
    """A nondeterministic ICU collation (case-insensitive emails, as PostgreSQL's docs suggest instead of
    citext) refuses regular expressions and LIKE: the refresh failed reading the originals."""
    production = create_database("case_insensitive")
    with psycopg.connect(production, autocommit=True) as conn:
        conn.execute(CASE_INSENSITIVE_SCHEMA)
        originals = {email.lower() for (email,) in conn.execute("SELECT email FROM customers")}
        pairs = "SELECT b.id, c.id FROM bookings b JOIN customers c ON c.email = b.email ORDER BY 1"
        production_pairs = conn.execute(pairs).fetchall()
    policy = tmp_path / "policy.yaml"
    policy.write_text(CASE_INSENSITIVE_POLICY)
    config = write_config(production, policy)

    staging = refresh_through_cli(config, capsys)
    with psycopg.connect(production.rsplit("dbname=", 1)[0] + f"dbname={staging}") as conn:
        assert conn.execute(pairs).fetchall() == production_pairs, "booking emails still equal their customers'"
        text = " ".join(str(row) for row in conn.execute("SELECT * FROM customers").fetchall()).lower()
        assert not [email for email in originals if email in text]
        emails = [email for (email,) in conn.execute("SELECT email FROM customers")]
        assert len(emails) == 60 and all(email.lower().endswith("@example.com") for email in emails)
