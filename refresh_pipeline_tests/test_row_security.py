"""Row-level security on real PostgreSQL, as a role that is not a superuser (an RDS master user is not): the
refresh masks and audits every row or fails; it never swaps in only the rows a policy lets it see."""

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from refresh_pipeline.errors import RefreshError
from refresh_pipeline.masking.catalog import read_tables
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.masking.originals import record_originals
from refresh_pipeline.masking.policy import parse_policy
from refresh_pipeline.masking.runner import install_functions, mask_table, require_trigger_control
from refresh_pipeline.platforms.connections import connect
from refresh_pipeline.row_security import force_row_security_again, lift_forced_row_security
from refresh_pipeline_tests.helpers import refresh_through_cli

KEY = MaskingKey("row-security-test-key-0123456789")
# Half the customers belong to tenant 2, which the policy hides unless app.tenant_id says otherwise.
SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, tenant_id int NOT NULL, email text NOT NULL);
INSERT INTO customers SELECT g, 1 + g % 2, 'rider' || g || '@gmail.com' FROM generate_series(1, 1000) g;
ALTER TABLE customers ENABLE ROW LEVEL SECURITY;
CREATE POLICY one_tenant ON customers
    USING (tenant_id = coalesce(nullif(current_setting('app.tenant_id', true), '')::int, 1));
"""
POLICY = parse_policy("tables:\n  customers: {id: keep, tenant_id: keep, email: email}\n")


def _trigger_control(grant: bool, role: str) -> sql.Composed:
    """What lets a role that is not a superuser turn triggers off (rds_superuser can on RDS)."""
    verb, preposition = ("GRANT", "TO") if grant else ("REVOKE", "FROM")
    return sql.SQL("{} SET ON PARAMETER session_replication_role {} {}").format(
        sql.SQL(verb), sql.SQL(preposition), sql.Identifier(role)
    )


@pytest.fixture(scope="module")
def roles(pg_server) -> Iterator[tuple[str, str]]:
    """A master-like role (LOGIN CREATEDB CREATEROLE, not a superuser, allowed to turn triggers off as RDS's
    rds_superuser is) and a role owning other tables."""
    suffix = uuid.uuid4().hex[:6]
    master, owner = f"rls_master_{suffix}", f"rls_owner_{suffix}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE").format(sql.Identifier(master)))
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(owner)))
        conn.execute(_trigger_control(True, master))
    yield master, owner
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        made = conn.execute("SELECT datname FROM pg_database WHERE datdba = %s::regrole", (master,)).fetchall()
        for (name,) in made:  # the refreshes' databases
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(_trigger_control(False, master))
        for role in (master, owner):
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def database(pg_server, roles) -> Iterator[str]:
    """A database the master-like role owns (as a restored RDS database is its master user's)."""
    name = f"rls_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(roles[0])))
    yield name
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _as(pg_server, database: str, role: str) -> str:
    return make_conninfo(pg_server.dsn(database), user=role)


def _emails_left(pg_server, database: str) -> tuple[int, int]:
    """(rows, production emails still there), read as a superuser."""
    with psycopg.connect(pg_server.dsn(database)) as conn:
        return conn.execute("SELECT count(*), count(*) FILTER (WHERE email LIKE 'rider%%') FROM customers").fetchone()


def test_a_table_forcing_its_policies_on_its_owner_is_masked_whole_and_forced_again(pg_server, roles, database):
    master = _as(pg_server, database, roles[0])
    with psycopg.connect(master, autocommit=True) as conn:
        conn.execute(SCHEMA + "ALTER TABLE customers FORCE ROW LEVEL SECURITY;")
        visible = conn.execute("SELECT count(*) FROM customers").fetchone()[0]
    assert visible == 500, "what a session with row security on sees: the hazard"

    with connect(master, autocommit=True) as conn:
        install_functions(conn)
        with pytest.raises(psycopg.Error, match="row-level security policy"):
            conn.execute("SELECT count(*) FROM customers")  # fails rather than counting half
        lifted = lift_forced_row_security(conn)
        record_originals(conn, list(read_tables(conn).values()), POLICY, KEY)
        mask_table(conn, POLICY, "customers", KEY)
        forced_during = conn.execute("SELECT relforcerowsecurity FROM pg_class WHERE relname = 'customers'").fetchone()
        again = force_row_security_again(conn)
        forced_after = conn.execute("SELECT relforcerowsecurity FROM pg_class WHERE relname = 'customers'").fetchone()
        bookkeeping = conn.execute("SELECT to_regclass('refresh_pipeline.row_security_lifted')").fetchone()[0]
    assert lifted == again == ["public.customers"]
    assert (forced_during, forced_after, bookkeeping) == ((False,), (True,), None)
    assert _emails_left(pg_server, database) == (1000, 0), "every row kept, every row masked"


def test_without_lifting_the_masking_fails_and_changes_nothing(pg_server, roles, database):
    master = _as(pg_server, database, roles[0])
    with psycopg.connect(master, autocommit=True) as conn:
        conn.execute(SCHEMA + "ALTER TABLE customers FORCE ROW LEVEL SECURITY;")
    with connect(master, autocommit=True) as conn:
        install_functions(conn)
        with pytest.raises((psycopg.Error, RefreshError), match="row-level security"):
            mask_table(conn, POLICY, "customers", KEY)
    assert _emails_left(pg_server, database) == (1000, 1000)


def test_policies_on_a_table_the_role_does_not_own_fail_naming_it_and_the_fix(pg_server, roles, database):
    master_role, owner_role = roles
    with psycopg.connect(pg_server.dsn(database), autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(sql.SQL("ALTER TABLE customers OWNER TO {}").format(sql.Identifier(owner_role)))
        conn.execute(sql.SQL("GRANT ALL ON customers TO {}").format(sql.Identifier(master_role)))
    master = _as(pg_server, database, master_role)
    with connect(master, autocommit=True) as conn, pytest.raises(RefreshError) as refused:
        lift_forced_row_security(conn)
    message = str(refused.value)
    assert f"hides rows of public.customers (owner {owner_role}) from {master_role}" in message
    assert f"GRANT <owner> TO {master_role}" in message and "BYPASSRLS" in message

    with psycopg.connect(pg_server.dsn(database), autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(owner_role), sql.Identifier(master_role)))
    with connect(master, autocommit=True) as conn:
        assert lift_forced_row_security(conn) == [], "a member of the owner sees every row of a table not forcing"
        assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 1000


def test_a_role_that_cannot_turn_triggers_off_is_refused_naming_the_grant(pg_server, roles, database):
    master_role = roles[0]
    master = _as(pg_server, database, master_role)
    with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
        admin.execute(_trigger_control(False, master_role))
        try:
            with connect(master, autocommit=True) as conn, pytest.raises(RefreshError) as refused:
                require_trigger_control(conn)
        finally:
            admin.execute(_trigger_control(True, master_role))
    with connect(master, autocommit=True) as conn:
        require_trigger_control(conn)
    assert f"GRANT SET ON PARAMETER session_replication_role TO {master_role}" in str(refused.value)


def test_a_superuser_sees_every_row_and_nothing_is_lifted(create_database):
    conninfo = create_database("rls_superuser")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SCHEMA + "ALTER TABLE customers FORCE ROW LEVEL SECURITY;")
    with connect(conninfo, autocommit=True) as conn:
        assert lift_forced_row_security(conn) == []
        assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 1000
        assert conn.execute("SELECT relforcerowsecurity FROM pg_class WHERE relname = 'customers'").fetchone()[0]
    with connect(conninfo, read_only=True) as conn:
        assert conn.execute("SHOW row_security").fetchone()[0] == "off"
        assert conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"


def test_a_refresh_as_a_role_that_is_not_a_superuser_masks_every_row_and_forces_the_policies_again(
    pg_server, roles, create_database, write_config, tmp_path, capsys
):
    production = create_database("rls_production")
    with psycopg.connect(production, autocommit=True) as conn:
        conn.execute(SCHEMA + "ALTER TABLE customers FORCE ROW LEVEL SECURITY;")
        conn.execute(
            "CREATE TABLE bookings (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers);"
            "INSERT INTO bookings SELECT g, 1 + g % 1000 FROM generate_series(1, 3000) g;"
            # Refreshed by pg_restore after the tables' constraints: it reads every customer.
            "CREATE MATERIALIZED VIEW customers_per_tenant AS SELECT tenant_id, count(*) FROM customers GROUP BY 1;"
        )
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  customers: {id: keep, tenant_id: keep, email: email}\n  bookings: keep\n")
    server = make_conninfo(pg_server.dsn("postgres"), user=roles[0])
    config = write_config(production, policy, local={"server_dsn": server})

    staging = refresh_through_cli(config, capsys)
    assert _emails_left(pg_server, staging) == (1000, 0), "every row restored and masked"
    with psycopg.connect(pg_server.dsn(staging)) as conn:
        forced = conn.execute("SELECT relforcerowsecurity FROM pg_class WHERE relname = 'customers'").fetchone()[0]
        bookings = conn.execute("SELECT count(*) FROM bookings").fetchone()[0]
        left = conn.execute("SELECT to_regclass('refresh_pipeline.row_security_lifted')").fetchone()[0]
        per_tenant = conn.execute("SELECT sum(count) FROM customers_per_tenant").fetchone()[0]
    assert (forced, bookings, left) == (True, 3000, None), "the policies forced again, as in production"
    assert per_tenant == 1000
    with psycopg.connect(production) as conn:
        assert conn.execute("SELECT relforcerowsecurity FROM pg_class WHERE relname = 'customers'").fetchone()[0]
