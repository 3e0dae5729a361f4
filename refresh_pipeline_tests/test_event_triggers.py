"""Production's event triggers do not fire during a refresh (pg_restore's DDL, the masking's staging tables)
and are on again, as production had them, in the promoted database."""

import psycopg

from refresh_pipeline_tests.graph import refresh_to_promotion

PRODUCTION = """
CREATE TABLE customers (id int PRIMARY KEY, email text);
INSERT INTO customers SELECT g, 'rider' || g || '@gmail.com' FROM generate_series(1, 200) g;
CREATE TABLE ddl_log (tag text, object text);
-- Unqualified, as such functions are written: pg_restore runs with an empty search_path.
CREATE FUNCTION log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        INSERT INTO ddl_log VALUES (r.command_tag, r.object_identity);
    END LOOP;
END $$;
CREATE EVENT TRIGGER ddl_audit ON ddl_command_end EXECUTE FUNCTION log_ddl();
CREATE FUNCTION refuse_drops() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tables are never dropped here';
END $$;
CREATE EVENT TRIGGER no_drops ON sql_drop EXECUTE FUNCTION refuse_drops();
ALTER EVENT TRIGGER no_drops ENABLE ALWAYS;
CREATE EVENT TRIGGER retired ON ddl_command_start EXECUTE FUNCTION refuse_drops();
ALTER EVENT TRIGGER retired DISABLE;
"""
POLICY = "tables:\n  customers:\n    id: keep\n    email: email\n  ddl_log: keep\n"
STATES = "SELECT evtname, evtenabled FROM pg_event_trigger ORDER BY 1"


def test_event_triggers_stay_off_during_the_refresh_and_come_back_as_they_were(create_database, write_config, tmp_path):
    source = create_database("event_triggers")
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(PRODUCTION)
        states = conn.execute(STATES).fetchall()
        logged = conn.execute("SELECT count(*) FROM ddl_log").fetchone()[0]
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    config = write_config(source, policy=policy)

    promoted = refresh_to_promotion(config)

    with psycopg.connect(promoted) as conn:
        assert conn.execute(STATES).fetchall() == states == [("ddl_audit", "O"), ("no_drops", "A"), ("retired", "D")]
        assert conn.execute("SELECT count(*) FROM ddl_log").fetchone()[0] == logged, "no DDL of ours logged"
        assert conn.execute("SELECT count(*) FROM customers WHERE email LIKE '%@gmail.com'").fetchone()[0] == 0
        assert conn.execute("SELECT to_regclass('refresh_pipeline.event_triggers_paused')").fetchone()[0] is None
