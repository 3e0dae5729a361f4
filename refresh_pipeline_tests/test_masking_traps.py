"""The whole refresh on a schema built from the traps real production schemas hold: PII as keys and
foreign keys, case-variant emails, unique expression indexes, audit triggers and rules (also ENABLE ALWAYS),
generated and identity columns, partitions, a materialized view, comments, JSON numbers, free text."""

import random
import re
import subprocess
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql

from refresh_pipeline.demo.check_digits import verhoeff_check_digit
from refresh_pipeline.masking.keys import MASKING_PURPOSE, MaskingKey
from refresh_pipeline.masking.runner import install_functions
from refresh_pipeline_tests.conftest import TEST_KEY
from refresh_pipeline_tests.graph import refresh_to_promotion

SCHEMA = r"""
CREATE TABLE customers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL CHECK (email LIKE '%@%'),
    phone varchar(20) NOT NULL UNIQUE CHECK (phone ~ '^\+91'),
    pan char(10),
    aadhaar text,
    device_id uuid,
    last_ip inet,
    lat numeric(9, 6),
    lon numeric(9, 6),
    born date,
    email_domain text GENERATED ALWAYS AS (split_part(email, '@', 2)) STORED
);
CREATE UNIQUE INDEX customers_email_lower ON customers (lower(email));
COMMENT ON TABLE customers IS 'registered riders';
COMMENT ON COLUMN customers.email IS 'login e-mail';
CREATE TABLE phone_accounts (phone varchar(20) PRIMARY KEY REFERENCES customers (phone), credits int NOT NULL);
CREATE TABLE referrals (
    id serial PRIMARY KEY,
    referrer_phone varchar(20) NOT NULL REFERENCES customers (phone),
    referee_email text,
    note text
);
CREATE TABLE customer_audit (id serial PRIMARY KEY, action text, old_email text, payload jsonb);
CREATE FUNCTION audit_customer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO customer_audit (action, old_email, payload) VALUES (TG_OP, OLD.email, to_jsonb(OLD));
    RETURN NULL;
END $$;
CREATE TRIGGER customers_audit AFTER UPDATE OR DELETE ON customers FOR EACH ROW EXECUTE FUNCTION audit_customer();
CREATE TRIGGER customers_audit_always AFTER INSERT ON customers FOR EACH ROW EXECUTE FUNCTION audit_customer();
ALTER TABLE customers ENABLE ALWAYS TRIGGER customers_audit_always;
CREATE RULE referrals_logged AS ON INSERT TO referrals DO ALSO
    INSERT INTO customer_audit (action, old_email) VALUES ('referral', NEW.referee_email);
ALTER TABLE referrals ENABLE ALWAYS RULE referrals_logged;
CREATE TABLE events (id bigint NOT NULL, occurred date NOT NULL, payload jsonb, tags text[])
    PARTITION BY RANGE (occurred);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE MATERIALIZED VIEW customer_contacts AS SELECT id, email, phone FROM customers;
CREATE MATERIALIZED VIEW customer_count AS SELECT count(*) FROM customers WITH NO DATA;
"""

POLICY = """
tables:
  customers:
    id: keep
    email: email
    phone: phone
    pan: pan
    aadhaar: aadhaar
    device_id: fpe
    last_ip: ip
    lat: {transform: geo, radius_m: 200}
    lon: {transform: geo, radius_m: 200}
    born: {transform: date, band_years: 5}
    email_domain: keep
  phone_accounts:
    phone: phone
    credits: keep
  referrals:
    id: keep
    referrer_phone: phone
    referee_email: email
    note: scrub
  customer_audit:
    id: keep
    action: keep
    old_email: email
    payload:
      json:
        "$.email": email
        "$.phone": phone
        "$.pan": pan
        "$.aadhaar": aadhaar
        "$.device_id": fpe
        "$.last_ip": ip
        "$.lat": redact
        "$.lon": redact
        "$.born": redact
  events:
    id: keep
    occurred: keep
    payload:
      json:
        "$.contacts[*].email": email
        "$.contacts[*].phone": phone
        "$.who.phone": phone
    tags: {array: scrub}
"""

N = 600


def _aadhaar(rng: random.Random) -> str:
    body = str(rng.randint(2, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(10))
    return body + verhoeff_check_digit(body)


def _unmapped_masks(scratch: str) -> tuple[str, str]:
    """What customer 0's phone and email would mask to without the value map (under the test key)."""
    with psycopg.connect(scratch, autocommit=True) as conn:
        install_functions(conn)
        pads = MaskingKey(TEST_KEY).sql_pads(MASKING_PURPOSE)
        phone, email = conn.execute(
            "SELECT refresh_pipeline.mask_phone(%s, '+919876500000'), "
            "refresh_pipeline.mask_email(%s, 'rider.0@mail0.com')",
            (pads, pads),
        ).fetchone()
    return phone, email


def _load(conninfo: str, collisions: tuple[str, str]) -> None:
    rng = random.Random(7)
    with psycopg.connect(conninfo) as conn:
        conn.execute(SCHEMA)
        customers = []
        for i in range(N):
            email = f"Rider.{i}@Mail{i % 7}.com" if i % 3 == 0 else f"rider.{i}@mail{i % 7}.com"
            phone = f"+9198765{i:05d}"  # near-identical numbers
            customers.append((email, phone))
            conn.execute(
                "INSERT INTO customers (email, phone, pan, aadhaar, device_id, last_ip, lat, lon, born) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (email, phone, f"ABC{'PFC'[i % 3]}{chr(65 + i % 26)}{1000 + i:04d}{chr(65 + i % 7)}", _aadhaar(rng),
                 f"550e8400-e29b-41d4-a716-{i:012x}", f"192.168.{i // 250}.{i % 250}",
                 19 + rng.random() / 10, 72.8 + rng.random() / 10, f"{1970 + i % 40}-0{1 + i % 9}-1{i % 9}"),
            )  # fmt: skip
        # Production values equal to what customer 0 would mask to: the value map must steer around them.
        conn.execute(
            "INSERT INTO customers (email, phone, pan, aadhaar, born) VALUES (%s, %s, 'ABCPZ0000Z', %s, '1990-01-01')",
            (collisions[1], collisions[0], _aadhaar(rng)),
        )
        # The same address with spaces around it: two values of the unique index, and of the exact join.
        for padded in (f"  {customers[3][0]}", f"{customers[3][0]} "):
            conn.execute(
                "INSERT INTO customers (email, phone, pan, aadhaar, born) VALUES (%s, %s, 'ABCPZ0000Z', %s, "
                "'1990-01-01')",
                (padded, f"+9187654{len(padded):05d}", _aadhaar(rng)),
            )
            referral = "INSERT INTO referrals (referrer_phone, referee_email) VALUES (%s, %s)"
            conn.execute(referral, (customers[0][1], padded))
        conn.execute("UPDATE customers SET email = email WHERE id % 10 = 0")  # audit rows holding PII
        for i in range(0, N, 2):
            conn.execute("INSERT INTO phone_accounts VALUES (%s, %s)", (customers[i][1], i))
        for i in range(N):
            email, phone = customers[(i * 7) % N]
            referee = customers[(i * 11) % N][0]
            spelled = f"0{phone[-10:-5]}-{phone[-5:]}"
            conn.execute(
                "INSERT INTO referrals (referrer_phone, referee_email, note) VALUES (%s, %s, %s)",
                (phone, referee.upper() if i % 5 == 0 else referee,
                 f"Referred by {email}, call {spelled} or +91 {phone[-10:-5]} {phone[-5:]}"),
            )  # fmt: skip
        for i in range(N):
            email, phone = customers[i]
            payload = {"contacts": [{"email": email, "phone": int(phone[-10:])}, {"email": customers[(i + 1) % N][0]}],
                       "who": {"phone": phone}, "amount": i}  # fmt: skip
            conn.execute(
                "INSERT INTO events VALUES (%s, %s, %s, %s)",
                (i, f"{2025 + i % 2}-03-0{1 + i % 9}", psycopg.types.json.Jsonb(payload), [email, phone[-10:]]),
            )
        conn.execute("REFRESH MATERIALIZED VIEW customer_contacts")
        conn.execute("ANALYZE")


@pytest.fixture(scope="module")
def trap_source(pg_server) -> str:
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        for name in ("trap_production", "trap_scratch"):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    conninfo = pg_server.dsn("trap_production")
    _load(conninfo, _unmapped_masks(pg_server.dsn("trap_scratch")))
    return conninfo


def _refresh(source: str, server_dsn: str, work_dir: Path) -> str:
    """One full refresh of `source` with the trap policy; returns the promoted database's conninfo."""
    work_dir.mkdir(parents=True)
    (work_dir / "policy.yaml").write_text(POLICY)
    config = work_dir / "config.yaml"
    prefix = f"trap{work_dir.name[-4:]}_"
    config.write_text(yaml.safe_dump({
        "source_dsn": source, "policy": "policy.yaml", "work_dir": str(work_dir), "database_prefix": prefix,
        "local": {"server_dsn": server_dsn},
    }))  # fmt: skip
    with pytest.MonkeyPatch.context() as env:
        env.setenv("REFRESH_MASKING_KEY", TEST_KEY)
        return refresh_to_promotion(config)


@pytest.fixture(scope="module")
def staging(trap_source, pg_server, tmp_path_factory) -> str:
    return _refresh(trap_source, pg_server.dsn(), tmp_path_factory.mktemp("trap") / "run_a")


def _user_data(conninfo: str) -> str:
    dump = subprocess.run(
        ["pg_dump", "--data-only", "--exclude-schema=refresh_pipeline*", "-d", conninfo],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    # Newer pg_dump brackets the output with a random \restrict token; it is not data.
    return "\n".join(line for line in dump.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))


def _rows(conninfo: str, query: str) -> list[tuple]:
    with psycopg.connect(conninfo) as conn:
        return sorted(conn.execute(query).fetchall())


def _originals(conninfo: str) -> dict[str, set[str]]:
    with psycopg.connect(conninfo, options="-c default_transaction_read_only=on") as conn:
        rows = conn.execute(
            "SELECT email, phone, pan, aadhaar, device_id::text, host(last_ip) FROM customers"
        ).fetchall()
    return {
        "emails": {r[0].lower() for r in rows},
        "phones": {r[1][-10:] for r in rows},
        "pans": {r[2].lower() for r in rows},
        "aadhaars": {r[3] for r in rows},
        "devices": {r[4] for r in rows if r[4]},
        "ips": {r[5] for r in rows if r[5]},
    }


JOINS = {
    "fk phone": "SELECT r.id, c.id FROM referrals r JOIN customers c ON c.phone = r.referrer_phone",
    "pii primary key": "SELECT p.credits, c.id FROM phone_accounts p JOIN customers c ON c.phone = p.phone",
    "exact email": "SELECT r.id, c.id FROM referrals r JOIN customers c ON c.email = r.referee_email",
    "case-insensitive email": "SELECT r.id, c.id FROM referrals r JOIN customers c "
    "ON lower(c.email) = lower(r.referee_email)",
    "json email": "SELECT e.id, c.id FROM events e JOIN customers c ON c.email = e.payload #>> '{contacts,1,email}'",
    "json number phone": "SELECT e.id, c.id FROM events e JOIN customers c "
    "ON right(c.phone, 10) = (e.payload #>> '{contacts,0,phone}')",
    "array element": "SELECT e.id, c.id FROM events e JOIN customers c ON c.email = e.tags[1]",
    "view": "SELECT v.id, c.id FROM customer_contacts v JOIN customers c ON c.email = v.email AND c.phone = v.phone",
}  # fmt: skip


def test_no_original_value_survives_anywhere(trap_source, staging):
    dump = _user_data(staging).lower()
    digits_joined = re.sub(r"(?<=\d)[ -](?=\d)", "", dump)
    originals = _originals(trap_source)

    assert not [e for e in originals["emails"] if e in dump]
    assert not [p for p in originals["phones"] if p in digits_joined]
    assert not [p for p in originals["pans"] if p in dump]
    assert not [a for a in originals["aadhaars"] if a in digits_joined]
    assert not [d for d in originals["devices"] if d in dump]
    assert not [ip for ip in originals["ips"] if f"{ip}\t" in dump or f"{ip}/" in dump]


@pytest.mark.parametrize("join", sorted(JOINS))
def test_every_join_returns_the_same_row_pairs_as_production(trap_source, staging, join):
    production_pairs = _rows(trap_source, JOINS[join])
    assert production_pairs, "the join must match something in production to mean anything"
    assert _rows(staging, JOINS[join]) == production_pairs


def test_masked_values_keep_formats_and_never_equal_a_production_value(trap_source, staging):
    originals = _originals(trap_source)
    rows = _rows(staging, "SELECT email, phone, pan, aadhaar, device_id::text, host(last_ip), lat, born, email_domain, "
                          "refresh_pipeline.verhoeff_valid(aadhaar) FROM customers")  # fmt: skip
    production = dict(_rows(trap_source, "SELECT id, born FROM customers"))
    for email, phone, pan, aadhaar, device, ip, lat, _born, domain, aadhaar_valid in rows:
        assert email.strip().lower().endswith("@example.com") and domain.strip().lower() == "example.com"
        assert email.lower() not in originals["emails"]
        assert re.fullmatch(r"\+91[6-9]\d{9}", phone) and phone[-10:] not in originals["phones"]
        assert re.fullmatch(r"[A-Z]{3}[PFC][A-Z]\d{4}[A-Z]", pan)
        assert re.fullmatch(r"[2-9]\d{11}", aadhaar) and aadhaar_valid
        assert device is None or re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", device)
        assert ip is None or ip.startswith("10.")
        assert lat is None or abs(float(lat) - 19.05) < 0.06
    assert {b.year // 5 for b in dict(_rows(staging, "SELECT id, born FROM customers")).values()} <= {
        b.year // 5 for b in production.values()
    }
    json_phone_types = _rows(staging, "SELECT DISTINCT jsonb_typeof(payload #> '{contacts,0,phone}') FROM events")
    assert json_phone_types == [("number",)]


def test_spaces_around_an_email_stay_around_its_masked_form(trap_source, staging):
    padded = "SELECT p.email, c.email FROM customers p JOIN customers c ON c.email = btrim(p.email) AND c.id <> p.id"
    assert len(_rows(trap_source, padded)) == 2
    (leading, bare), (trailing, bare_again) = _rows(staging, padded)
    assert bare == bare_again and bare.lower().endswith("@example.com") and bare != bare.lower(), "cased as production"
    assert (leading, trailing) == (f"  {bare}", f"{bare} ")


def test_schema_objects_end_up_as_in_production(trap_source, staging):
    triggers = "SELECT tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal"
    assert _rows(staging, triggers) == _rows(trap_source, triggers)
    rules = "SELECT rulename, ev_enabled FROM pg_rewrite WHERE rulename <> '_RETURN' AND ev_class >= 16384"  # not pg_*
    assert _rows(staging, rules) == _rows(trap_source, rules) == [("referrals_logged", "A")]
    assert _rows(staging, "SELECT count(*) FROM customer_audit") == _rows(
        trap_source, "SELECT count(*) FROM customer_audit"
    )
    identity = "SELECT last_value FROM customers_id_seq"
    assert _rows(staging, identity) == _rows(trap_source, identity)
    comments = "SELECT obj_description('customers'::regclass), col_description('customers'::regclass, 2)"
    assert _rows(staging, comments) == _rows(trap_source, comments) == [("registered riders", "login e-mail")]
    counts = "SELECT (SELECT count(*) FROM events_2025), (SELECT count(*) FROM events_2026)"
    assert _rows(staging, counts) == _rows(trap_source, counts)
    populated = "SELECT relname, relispopulated FROM pg_class WHERE relkind = 'm' ORDER BY 1"
    assert (
        _rows(staging, populated)
        == _rows(trap_source, populated)
        == [
            ("customer_contacts", True),
            ("customer_count", False),
        ]
    ), "a view production never populated is neither refreshed nor read by the audit"


def test_same_key_gives_byte_identical_output_twice(trap_source, staging, pg_server, tmp_path):
    again = _refresh(trap_source, pg_server.dsn(), tmp_path / "run_b")
    assert _user_data(again) == _user_data(staging)
