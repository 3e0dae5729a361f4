"""Production's FOR ALL TABLES publications cover the pipeline's own tables in staging too: they publish no
updates or deletes during a refresh, and publish again, as production's do, in the promoted database."""

import json

import psycopg

from refresh_pipeline_tests.graph import refresh_to_promotion

PRODUCTION = """
CREATE TABLE customers (id int PRIMARY KEY, email text);
INSERT INTO customers SELECT g, 'rider' || g || '@gmail.com' FROM generate_series(1, 200) g;
CREATE TABLE bookings (id int PRIMARY KEY, customer_id int REFERENCES customers, seat text);
INSERT INTO bookings SELECT g, g, 'A' || g FROM generate_series(1, 200) g;
CREATE PUBLICATION everything FOR ALL TABLES;
CREATE PUBLICATION "Deletes" FOR ALL TABLES WITH (publish = 'delete, truncate');
CREATE PUBLICATION inserts FOR ALL TABLES WITH (publish = 'insert');
CREATE PUBLICATION listed FOR TABLE customers WITH (publish = 'update');
"""
POLICY = "tables:\n  customers:\n    id: keep\n    email: email\n  bookings: keep\n"
PUBLISHED = "SELECT pubname, pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication ORDER BY 1"


def test_publications_publish_no_changes_during_the_refresh_and_then_as_production(
    create_database, write_config, tmp_path
):
    source = create_database("publications")
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(PRODUCTION)
        published = conn.execute(PUBLISHED).fetchall()
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    config = write_config(source, policy=policy)

    promoted = refresh_to_promotion(config)

    with psycopg.connect(promoted) as conn:
        assert conn.execute(PUBLISHED).fetchall() == published
        assert conn.execute("SELECT count(*) FROM customers WHERE email LIKE '%@gmail.com'").fetchone()[0] == 0
        assert conn.execute("SELECT to_regclass('refresh_pipeline.publications_paused')").fetchone()[0] is None
    (report,) = (tmp_path / "work" / "reports").glob("*/audit_report.json")
    paused = json.loads(report.read_text())["before_masking"]["publications_paused"]
    assert paused == ["Deletes", "everything"], "those publishing updates or deletes of every table only"
