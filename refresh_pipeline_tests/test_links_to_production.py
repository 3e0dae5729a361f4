"""Links from the restored database back to production, on real PostgreSQL: foreign servers, their user
mappings (production credentials) and subscriptions are cut right after the restore; production keeps its."""

import json

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from refresh_pipeline.config import load_config
from refresh_pipeline.links_to_production import DISCONNECTED_HOST, cut_links_to_production
from refresh_pipeline.masking.materialized_views import empty_views_over_foreign_tables
from refresh_pipeline.platforms.local import LocalPlatform
from refresh_pipeline_tests.graph import materialize, step_failure_messages
from refresh_pipeline_tests.helpers import refresh_through_cli

SECRET = "crm-password-of-production"


def _database(pg_server, create_database, prefix: str, schema: str) -> str:
    conninfo = create_database(prefix)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(schema.replace("{port}", str(pg_server.port)).replace("{socket}", str(pg_server.socket_dir)))
    return conninfo


@pytest.fixture
def production(pg_server, create_database):
    """A production database reading a live CRM database through postgres_fdw, subscribed to a publication,
    and with a file_fdw server (no host: nothing to cut)."""
    crm = _database(
        pg_server,
        create_database,
        "links_crm",
        "CREATE TABLE customers (id int PRIMARY KEY, email text);"
        "INSERT INTO customers SELECT g, 'rider' || g || '@gmail.com' FROM generate_series(1, 10) g;",
    )
    crm_name = psycopg.conninfo.conninfo_to_dict(crm)["dbname"]
    schema = f"""
        CREATE EXTENSION postgres_fdw;
        CREATE EXTENSION file_fdw;
        CREATE SERVER crm FOREIGN DATA WRAPPER postgres_fdw
            OPTIONS (host '{{socket}}', port '{{port}}', dbname '{crm_name}');
        CREATE SERVER crm_by_address FOREIGN DATA WRAPPER postgres_fdw
            OPTIONS (hostaddr '127.0.0.1', dbname '{crm_name}');
        CREATE SERVER exports FOREIGN DATA WRAPPER file_fdw;
        CREATE USER MAPPING FOR CURRENT_USER SERVER crm OPTIONS (user 'refresh', password '{SECRET}');
        CREATE USER MAPPING FOR PUBLIC SERVER crm_by_address OPTIONS (user 'refresh', password '{SECRET}');
        CREATE FOREIGN TABLE crm_customers (id int, email text) SERVER crm OPTIONS (table_name 'customers');
        CREATE TABLE bookings (id int PRIMARY KEY, customer_id int);
        INSERT INTO bookings SELECT g, g FROM generate_series(1, 10) g;
        CREATE VIEW booking_emails AS SELECT b.id, c.email FROM bookings b JOIN crm_customers c ON c.id = b.customer_id;
        CREATE MATERIALIZED VIEW booking_email_counts AS SELECT count(*) AS n FROM booking_emails;
        CREATE MATERIALIZED VIEW booking_counts AS SELECT count(*) AS n FROM bookings;
    """
    conninfo = _database(pg_server, create_database, "links_production", schema)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # CREATE SUBSCRIPTION refuses to run in a transaction block, so not in the script above.
        conn.execute(
            sql.SQL("CREATE SUBSCRIPTION crm_feed CONNECTION {} PUBLICATION crm_pub WITH (connect = false)").format(
                sql.Literal(f"dbname={crm_name} user=refresh password={SECRET}")
            )
        )
        assert conn.execute("SELECT count(*) FROM booking_emails").fetchone()[0] == 10, "production reads the CRM"
    yield conninfo
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("ALTER SUBSCRIPTION crm_feed SET (slot_name = NONE)")
        conn.execute("DROP SUBSCRIPTION crm_feed")


def _links(conninfo: str) -> tuple[list, list, list]:
    with psycopg.connect(conninfo) as conn:
        return (
            conn.execute("SELECT srvname, usename, umoptions FROM pg_user_mappings ORDER BY 1").fetchall(),
            conn.execute("SELECT srvname, srvoptions FROM pg_foreign_server ORDER BY 1").fetchall(),
            conn.execute(
                "SELECT subname, subconninfo FROM pg_subscription WHERE subdbid = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchall(),
        )


def test_a_refresh_cuts_every_link_and_leaves_productions_alone(production, pg_server, write_config, tmp_path, capsys):
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  bookings: keep\n")
    config = write_config(production, policy)

    staging = pg_server.dsn(refresh_through_cli(config, capsys))

    mappings, servers, subscriptions = _links(staging)
    assert mappings == [] and subscriptions == []
    options = dict(servers)
    assert f"host={DISCONNECTED_HOST}" in options["crm"] and f"host={DISCONNECTED_HOST}" in options["crm_by_address"]
    assert not any(o.startswith("hostaddr=") for o in options["crm_by_address"]), "libpq would use a hostaddr"
    assert options["exports"] is None, "a server without a host is left as it was"
    with psycopg.connect(staging) as conn, pytest.raises(psycopg.Error):
        conn.execute("SELECT email FROM booking_emails").fetchall()  # the view is there, production is not
    with psycopg.connect(staging) as conn:
        populated = dict(conn.execute("SELECT relname, relispopulated FROM pg_class WHERE relkind = 'm'").fetchall())
    assert populated == {"booking_email_counts": False, "booking_counts": True}, "what read production is emptied"

    mappings, servers, subscriptions = _links(production)
    assert len(mappings) == 2 and [name for name, _ in subscriptions] == ["crm_feed"], "production untouched"
    with psycopg.connect(production) as conn:
        assert conn.execute("SELECT count(*) FROM booking_emails").fetchone()[0] == 10


def test_a_database_without_links_is_left_as_it_is(create_database):
    with psycopg.connect(create_database("no_links"), autocommit=True) as conn:
        cut = cut_links_to_production(conn)
    assert (cut.foreign_servers, cut.user_mappings, cut.subscriptions) == ((), 0, ())


def test_the_restore_never_reads_production_through_a_link(production, pg_server, write_config, tmp_path):
    """A materialized view over a foreign table is not refreshed while restoring: with the CRM gone after the
    snapshot, a restore that read through production's foreign server would fail."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  bookings: keep\n")
    platform = LocalPlatform(load_config(write_config(production, policy)))
    snapshot = platform.snapshot()
    with psycopg.connect(production) as conn:
        crm = dict(conn.execute("SELECT srvname, srvoptions FROM pg_foreign_server").fetchall())["crm"]
    crm_name = next(option.split("=", 1)[1] for option in crm if option.startswith("dbname="))
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(crm_name)))
    try:
        name = platform.new_database_name()
        platform.restore(snapshot, name)
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(crm_name)))
    with psycopg.connect(pg_server.dsn(name), autocommit=True) as conn:
        populated = dict(conn.execute("SELECT relname, relispopulated FROM pg_class WHERE relkind = 'm'").fetchall())
        emptied = empty_views_over_foreign_tables(conn)  # named as in the masked database's metadata
        cut_links_to_production(conn)  # its subscription would keep the database from being dropped
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
    assert populated == {"booking_email_counts": False, "booking_counts": True}
    assert emptied == ["public.booking_email_counts"]


def test_a_partition_that_is_a_foreign_table_is_set_aside_for_the_refresh_and_attached_again(
    pg_server, create_database, write_config, tmp_path
):
    """Old bookings archived on another server, as a foreign-table partition: every step on `bookings` read it
    through the cut link and failed."""
    archive = _database(
        pg_server,
        create_database,
        "links_archive",
        "CREATE TABLE bookings_archive (id int, booked_on date, contact text);"
        "INSERT INTO bookings_archive SELECT g, date '2021-01-01' + g, 'rider' || g || '@gmail.com' "
        "FROM generate_series(1, 20) g;",
    )
    archive_name = psycopg.conninfo.conninfo_to_dict(archive)["dbname"]
    production = _database(
        pg_server,
        create_database,
        "links_partitions",
        f"""
        CREATE EXTENSION postgres_fdw;
        CREATE SERVER archive FOREIGN DATA WRAPPER postgres_fdw
            OPTIONS (host '{{socket}}', port '{{port}}', dbname '{archive_name}');
        CREATE USER MAPPING FOR CURRENT_USER SERVER archive OPTIONS (user 'refresh');
        CREATE TABLE bookings (id int NOT NULL, booked_on date NOT NULL, contact text) PARTITION BY RANGE (booked_on);
        CREATE FOREIGN TABLE bookings_archive PARTITION OF bookings FOR VALUES FROM ('2020-01-01') TO ('2025-01-01')
            SERVER archive;
        CREATE TABLE bookings_recent PARTITION OF bookings FOR VALUES FROM ('2025-01-01') TO ('2030-01-01');
        CREATE TABLE bookings_other PARTITION OF bookings DEFAULT;
        INSERT INTO bookings SELECT g, date '2025-01-01' + g, 'rider' || g || '@gmail.com'
            FROM generate_series(1, 50) g;
        """,
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  bookings: {id: keep, booked_on: keep, contact: email}\n")
    partitions = (
        "SELECT oid::regclass::text, relkind, pg_get_expr(relpartbound, oid) FROM pg_class WHERE relispartition "
        "ORDER BY 1"
    )
    with psycopg.connect(production) as conn:
        production_partitions = conn.execute(partitions).fetchall()

    result = materialize(write_config(production, policy), dg.DagsterInstance.ephemeral())

    assert result.success, step_failure_messages(result)
    restored = result.asset_materializations_for_node("restored_instance")[0].metadata
    promoted = result.asset_materializations_for_node("staging_database")[0].metadata
    assert (
        restored["foreign_partitions_detached"].value
        == promoted["foreign_partitions_attached"].value
        == ["bookings_archive"]
    )
    with psycopg.connect(pg_server.dsn(restored["database"].value)) as conn:
        assert conn.execute(partitions).fetchall() == production_partitions, "attached again, with its bounds"
        contacts = [contact for (contact,) in conn.execute("SELECT contact FROM ONLY bookings_recent").fetchall()]
        assert len(contacts) == 50 and all(contact.endswith("@example.com") for contact in contacts)
    with psycopg.connect(production) as conn:
        assert conn.execute("SELECT count(*) FROM bookings").fetchone()[0] == 70, "production reads its archive"
    reports = tmp_path / "work" / "reports" / restored["database"].value
    before_masking = json.loads((reports / "audit_report.json").read_text())["before_masking"]
    assert before_masking["foreign_partitions_detached"] == ["bookings_archive"]
    assert before_masking["links_to_production_cut"]["foreign_servers"] == ["archive"]
    assert "row_security_lifted" not in before_masking, "only what the restore did"
    assert '- foreign_partitions_detached: `["bookings_archive"]`' in (reports / "audit_report.md").read_text()
