"""The local platform on a real PostgreSQL server: snapshot, restore, promote, retire, and its refusals."""

import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from refresh_pipeline.config import load_config
from refresh_pipeline.errors import RefreshError
from refresh_pipeline.platforms import disk_space
from refresh_pipeline.platforms.base import MANAGED_MARKER
from refresh_pipeline.platforms.client_progress import readable_size
from refresh_pipeline.platforms.connections import connect, database_name, libpq_env, redact
from refresh_pipeline.platforms.disk_space import SIZE_FILE, load_production_size
from refresh_pipeline.platforms.extensions import ExtensionVersion, create_pinned_extensions
from refresh_pipeline.platforms.local import SNAPSHOT_COMPRESSION, LocalPlatform
from refresh_pipeline.platforms.local_server import TUNING_FILE, LocalServer
from refresh_pipeline.platforms.postgres_binaries import find_client_binary, find_server_bin_dir
from refresh_pipeline.validate import validate_against_source
from refresh_pipeline_tests.helpers import free_port, login_role, row_counts, table_fingerprint


@pytest.fixture
def platform(demo_source, write_config) -> LocalPlatform:
    return LocalPlatform(load_config(write_config(demo_source)))


def test_production_sessions_refuse_writes(demo_source):
    with connect(demo_source, read_only=True) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("CREATE TABLE should_not_exist (id int)")


def test_tool_environment_for_production_is_read_only_and_keeps_the_password_off_the_command_line(demo_source):
    env = libpq_env(make_conninfo(demo_source, password="s3cret"), read_only=True)
    assert env["PGPASSWORD"] == "s3cret"
    result = subprocess.run(
        ["psql", "-Atc", "CREATE TABLE should_not_exist (id int)"], env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "read-only transaction" in result.stderr


def test_sessions_are_not_cancelled_or_isolated_by_productions_defaults(create_database, pg_server):
    production = create_database("timeouts")
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        database = sql.Identifier(database_name(production))
        conn.execute(sql.SQL("ALTER DATABASE {} SET statement_timeout = '1ms'").format(database))
        conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_isolation = serializable").format(database))
    for read_only in (True, False):
        env = libpq_env(production, read_only)
        result = subprocess.run(["psql", "-Atc", "SELECT pg_sleep(0.05)"], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        with connect(production, read_only=read_only) as conn:
            assert conn.execute("SHOW transaction_isolation").fetchone()[0] == "read committed"


def test_redacted_conninfo_has_no_password():
    assert "s3cret" not in redact("postgresql://user:s3cret@db.internal:5432/prod")
    assert "db.internal" in redact("postgresql://user:s3cret@db.internal:5432/prod")


def test_snapshot_and_restore_make_a_managed_dated_copy(platform, demo_source):
    snapshot = platform.snapshot()
    name = platform.new_database_name()

    restored = platform.restore(snapshot, name)

    assert name.startswith(platform.config.database_prefix)
    assert restored.snapshot_id == snapshot.snapshot_id
    assert [db.name for db in platform.list_managed()] == [name]
    copy = platform.conninfo(name)
    assert row_counts(copy) == row_counts(demo_source)
    assert table_fingerprint(copy, "customers") == table_fingerprint(demo_source, "customers")
    assert [s.snapshot_id for s in platform.list_snapshots()] == [snapshot.snapshot_id]
    platform.retire(name)


def test_snapshots_are_compressed_at_the_fast_level_not_the_default(platform):
    snapshot = platform.snapshot()
    listing = subprocess.run(
        [find_client_binary("pg_restore", None), "--list", snapshot.location],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert SNAPSHOT_COMPRESSION == 1
    assert f"Compression: {SNAPSHOT_COMPRESSION}\n" in listing  # pg_dump's default shows as -1


def test_two_restores_in_the_same_second_get_distinct_names(platform):
    snapshot = platform.snapshot()
    first = platform.restore(snapshot, platform.new_database_name()).name
    second = platform.new_database_name()
    assert second != first
    platform.retire(first)


def test_failed_restore_leaves_no_database_behind(platform):
    snapshot = platform.snapshot()
    for data_file in Path(snapshot.location).glob("*.dat.gz"):
        data_file.write_bytes(b"not a dump")

    with pytest.raises(RefreshError, match="restore of"):
        platform.restore(snapshot, platform.new_database_name())

    assert platform.list_managed() == []


def test_a_restore_the_disk_has_no_room_for_is_refused_before_anything_is_restored(platform, pg_server):
    """Production's size is recorded with the snapshot; a restore it would not fit on the staging server's disk
    (here a production of twice the free space) is refused at once, and one that fits says how much room it had."""
    snapshot = platform.snapshot()
    recorded = load_production_size(Path(snapshot.location))
    lines: list[str] = []
    platform.retire(platform.restore(snapshot, platform.new_database_name(), lines.append).name)
    free = shutil.disk_usage(pg_server.data_dir).free
    Path(snapshot.location, SIZE_FILE).write_text(json.dumps({"bytes": 2 * free}))

    with pytest.raises(RefreshError, match="not enough disk for the restore") as raised:
        platform.restore(snapshot, platform.new_database_name())

    assert recorded and recorded > 1_000_000, "the demo production's size on its disk"
    assert f"production was, when {snapshot.snapshot_id} was taken, {readable_size(recorded)};" in lines[0]
    assert lines[0].startswith("disk: ") and lines[0].endswith("free for the restore")
    assert f"({pg_server.data_dir})" in str(raised.value) and "Nothing was restored" in str(raised.value)
    assert platform.list_managed() == []


def test_validate_names_a_staging_disk_without_room_for_production(platform, pg_server, monkeypatch):
    """The same check before any refresh: on a staging server whose disk has 1 MB free."""
    assert validate_against_source(platform.config).problems == []
    full = shutil.disk_usage(pg_server.data_dir)._replace(free=1_000_000)
    monkeypatch.setattr(disk_space.shutil, "disk_usage", lambda path: full)

    (problem,) = validate_against_source(platform.config).problems

    assert problem.startswith("not enough disk for the restore: production is ")
    assert f"({pg_server.data_dir}) has 1 MB free" in problem


@pytest.fixture
def production_with_extensions_no_server_has(create_database, tmp_path) -> tuple[str, Path, int]:
    """Production using pg_trgm, hstore and uuid-ossp, two of them renamed in its catalog to extensions that no
    server has (as pgvector or timescaledb would be to a server without their packages); its policy; the
    server's major version."""
    production = create_database("extensions")
    with psycopg.connect(production, autocommit=True) as conn:
        conn.execute('CREATE EXTENSION pg_trgm; CREATE EXTENSION hstore; CREATE EXTENSION "uuid-ossp"')
        conn.execute("UPDATE pg_extension SET extname = 'vector_absent' WHERE extname = 'pg_trgm'")
        conn.execute("UPDATE pg_extension SET extname = 'time-series-absent' WHERE extname = 'hstore'")
        conn.execute("CREATE TABLE riders (id int PRIMARY KEY, email text)")
        major = conn.info.server_version // 10000
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  riders: {id: keep, email: email}\n")
    return production, policy, major


def _missing_extensions(major: int) -> str:
    return (
        "production uses extension(s) time-series-absent, vector_absent, which the staging server (PostgreSQL "
        f"{major}) does not have: install them for PostgreSQL {major} on it (Debian and Ubuntu package most as "
        f"postgresql-{major}-<name>; `apt-cache search postgresql-{major}` lists them) and run again"
    )


def test_a_restore_names_every_extension_the_server_lacks_before_restoring_anything(
    production_with_extensions_no_server_has, write_config
):
    production, policy, major = production_with_extensions_no_server_has
    platform = LocalPlatform(load_config(write_config(production, policy)))
    snapshot = platform.snapshot()

    with pytest.raises(RefreshError) as err:
        platform.restore(snapshot, platform.new_database_name())

    # Not uuid-ossp, which the server has.
    assert str(err.value) == f"cannot restore the snapshot: {_missing_extensions(major)}."
    assert platform.list_managed() == []


def test_validate_names_the_extensions_the_staging_server_lacks(production_with_extensions_no_server_has, write_config):
    production, policy, major = production_with_extensions_no_server_has
    problems = validate_against_source(load_config(write_config(production, policy))).problems
    assert problems == [_missing_extensions(major)]


def test_a_restore_creates_production_extensions_at_production_versions(create_database, write_config, tmp_path):
    """pg_restore creates an extension at the server's default version: production's are created first where
    the server offers them (pg_trgm 1.5, hstore 1.7 in its own schema), and a version it does not offer is said."""
    production = create_database("extension_versions")
    with psycopg.connect(production, autocommit=True) as conn:
        conn.execute(
            "CREATE SCHEMA ext; CREATE EXTENSION pg_trgm VERSION '1.5';"
            "CREATE EXTENSION hstore WITH SCHEMA ext VERSION '1.7'; CREATE EXTENSION citext;"
            "UPDATE pg_extension SET extversion = '9.9' WHERE extname = 'citext';"  # a version no server offers
            "CREATE TABLE riders (id int PRIMARY KEY, email citext UNIQUE, prefs ext.hstore, name text);"
            "CREATE INDEX riders_name ON riders USING gin (name gin_trgm_ops);"
            "INSERT INTO riders SELECT g, 'r' || g || '@x.in', ext.hstore('seat', 'aisle'), 'Rider ' || g"
            " FROM generate_series(1, 50) g"
        )
        default, offered = conn.execute(
            "SELECT a.default_version, string_agg(v.version, ', ' ORDER BY v.version) FROM pg_available_extensions a"
            " JOIN pg_available_extension_versions v USING (name) WHERE name = 'citext' GROUP BY 1"
        ).fetchone()
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  riders: {id: keep, email: email, prefs: scrub, name: name}\n")
    config = load_config(write_config(production, policy))
    platform = LocalPlatform(config)

    restored = platform.restore(platform.snapshot(), platform.new_database_name())
    with psycopg.connect(platform.conninfo(restored.name)) as conn:
        versions = dict(conn.execute("SELECT e.extname, e.extversion || ' in ' || n.nspname FROM pg_extension e"
                                     " JOIN pg_namespace n ON n.oid = e.extnamespace").fetchall())  # fmt: skip
        riders = conn.execute("SELECT count(*) FROM riders WHERE ext.fetchval(prefs, 'seat') = 'aisle'").fetchone()[0]
    warnings = validate_against_source(config).warnings
    platform.retire(restored.name)

    assert versions["pg_trgm"] == "1.5 in public" and versions["hstore"] == "1.7 in ext"
    assert versions["citext"] == f"{default} in public" and riders == 50
    note = (
        f"extension citext is {default} on the staging server and 9.9 in production, which the server does not "
        f"offer (it offers {offered})"
    )
    assert note in restored.notes and note in warnings


def test_a_not_valid_check_on_an_inheritance_parent_restores_with_its_childrens_older_rows(
    create_database, write_config
):
    """Production added a CHECK NOT VALID on a parent of plain inheritance; a child's older rows break it.
    pg_restore's jobs added it (to the children too) as soon as the parent's rows were in, and the child's
    rows loaded after that failed it: the restore failed."""
    production = create_database("inherited_not_valid")
    with psycopg.connect(production, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE people (id int, email text); CREATE TABLE drivers (licence text) INHERITS (people);"
            "INSERT INTO people SELECT g, 'p' || g || '@x.in' FROM generate_series(1, 3000) g;"
            "INSERT INTO drivers SELECT g, 'unknown', 'L' || g FROM generate_series(1, 20) g;"
            "ALTER TABLE people ADD CONSTRAINT email_shape CHECK (email LIKE '%@%') NOT VALID"
        )
        for table in ("stops", "routes", "trips", "fares"):  # rows the jobs load between the parent's and the child's
            conn.execute(
                sql.SQL("CREATE TABLE {} AS SELECT generate_series(1, 1000) AS id").format(sql.Identifier(table))
            )
    platform = LocalPlatform(load_config(write_config(production, parallelism=2)))
    snapshot = platform.snapshot()

    for _ in range(3):  # the jobs' order varies: each restore must hold
        restored = platform.restore(snapshot, platform.new_database_name())
        with psycopg.connect(platform.conninfo(restored.name)) as conn:
            constraints = conn.execute(
                "SELECT conrelid::regclass::text, convalidated, conislocal, coninhcount FROM pg_constraint"
                " WHERE conname = 'email_shape' ORDER BY 1"
            ).fetchall()
            rows = conn.execute("SELECT count(*) FROM people").fetchone()[0]
        platform.retire(restored.name)
        assert constraints == [("drivers", False, False, 1), ("people", False, True, 0)], "as in production"
        assert rows == 3020


def test_an_extension_whose_schema_the_dump_does_not_create_is_created_where_it_puts_itself(create_database):
    """postgis_topology makes its schema `topology` (an extension member, so not in the dump): it is created
    without naming a schema, which does not exist yet (hstore stands for it here)."""
    database = create_database("extension_own_schema")
    with psycopg.connect(database, autocommit=True) as conn:
        create_pinned_extensions(conn, [ExtensionVersion("hstore", "1.7", "topology")])
        created = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'hstore'").fetchone()
    assert created == ("1.7",)


def test_failed_snapshot_leaves_no_partial_snapshot(write_config, pg_server):
    platform = LocalPlatform(load_config(write_config(pg_server.dsn("no_such_database"))))
    with pytest.raises(RefreshError, match="snapshot of"):
        platform.snapshot()
    assert platform.list_snapshots() == []
    assert not any(platform.snapshot_dir.iterdir())


def test_retire_refuses_what_the_pipeline_did_not_create(platform, create_database, demo_source):
    lookalike = create_database(platform.config.database_prefix.rstrip("_"))
    assert database_name(lookalike).startswith(platform.config.database_prefix)

    with pytest.raises(RefreshError, match="not created by refresh_pipeline"):
        platform.retire(database_name(lookalike))
    with pytest.raises(RefreshError, match="production source"):
        platform.retire(database_name(demo_source))
    with connect(lookalike) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_retire_refuses_the_promoted_database(platform):
    name = platform.restore(platform.snapshot(), platform.new_database_name()).name
    platform.promote(name)

    with pytest.raises(RefreshError, match="promoted staging database"):
        platform.retire(name)
    assert [db.name for db in platform.list_managed()] == [name]


def test_promote_refuses_databases_the_pipeline_did_not_create(platform, create_database):
    other = database_name(create_database("unrelated"))
    with pytest.raises(RefreshError, match="not created by refresh_pipeline"):
        platform.promote(other)
    assert platform.promoted() is None


def test_managed_marker_is_a_database_comment(platform):
    name = platform.restore(platform.snapshot(), platform.new_database_name()).name
    with connect(platform.conninfo("postgres")) as conn:
        comment = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()[0]
    assert comment.startswith(MANAGED_MARKER)
    platform.retire(name)


def test_embedded_server_starts_once_and_stops(test_root):
    server = LocalServer(test_root / "second_server", port=free_port())
    server.ensure_running()
    server.ensure_running()
    assert server.is_running()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("probe")))
    server.stop()
    assert not server.is_running()
    shutil.rmtree(test_root / "second_server", ignore_errors=True)


def test_a_running_server_is_left_alone_by_every_session_that_asks_for_it(pg_server, monkeypatch):
    """Each session of a pool asks for the server; walking its data directory while it runs raced with
    the server's own temporary files (FileNotFoundError on pg_internal.init.<pid>)."""

    def walk(_server: LocalServer) -> None:
        raise AssertionError("the data directory of a running server was walked")

    monkeypatch.setattr(LocalServer, "_prepare_ownership", walk)
    pg_server.ensure_running()


def test_files_removed_while_ownership_is_prepared_are_skipped(test_root, monkeypatch):
    root = test_root / "ownership"
    (root / "data").mkdir(parents=True, exist_ok=True)
    vanished = root / "data" / "pg_internal.init.4242"
    real_rglob = Path.rglob
    monkeypatch.setattr(Path, "rglob", lambda self, pattern: [*real_rglob(self, pattern), vanished])
    LocalServer(root, port=free_port())._prepare_ownership()
    shutil.rmtree(root, ignore_errors=True)


def test_missing_server_binaries_are_explained():
    with pytest.raises(RefreshError, match="apt-get install postgresql"):
        find_server_bin_dir("/nonexistent/bin")


def _accepts_tcp(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_embedded_server_is_reachable_only_through_its_private_socket(pg_server):
    """The restored databases hold production's rows until masked: no local user but the server's may
    connect, so no TCP, and the socket's directory is the server user's alone."""
    assert not _accepts_tcp(pg_server.port)
    with psycopg.connect(pg_server.dsn()) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == ""
    directory = os.stat(pg_server.socket_dir)
    assert stat.S_IMODE(directory.st_mode) == 0o700
    assert directory.st_uid == os.stat(pg_server.data_dir).st_uid, "the server's own user"
    assert stat.S_IMODE(os.stat(pg_server.socket_dir / pg_server.socket_name).st_mode) & 0o077 == 0


def test_embedded_server_started_by_an_earlier_version_on_tcp_moves_to_its_socket(test_root):
    server = LocalServer(test_root / "tcp_era", port=free_port())
    server.ensure_running()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE kept")
    server.stop()
    # How earlier versions ran it: TCP on 127.0.0.1, no socket.
    tcp_only = f"-p {server.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories="
    pg_ctl = str(server.bin_dir / "pg_ctl")
    server._run([pg_ctl, "start", "-D", str(server.data_dir), "-l", str(server.log_file), "-w", "-o", tcp_only])
    assert _accepts_tcp(server.port)

    server.ensure_running()

    assert not _accepts_tcp(server.port)
    with psycopg.connect(server.dsn("kept")) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "kept"
    server.stop()
    shutil.rmtree(test_root / "tcp_era", ignore_errors=True)


def test_socket_of_a_deep_work_dir_lives_in_a_private_temporary_directory(tmp_path):
    short = LocalServer(tmp_path / "pgserver", port=54329)
    deep = LocalServer(tmp_path / ("d" * 100) / "pgserver", port=54329)

    assert short.socket_dir == (tmp_path / "pgserver" / "socket").absolute()
    assert deep.socket_dir.parent == Path(tempfile.gettempdir())
    assert len(os.fsencode(deep.socket_dir / deep.socket_name)) <= 107
    assert deep.socket_dir != LocalServer(tmp_path / ("e" * 100) / "pgserver", port=54329).socket_dir


def test_a_socket_directory_others_can_enter_is_refused(test_root):
    server = LocalServer(test_root / ("d" * 100) / "pgserver", port=free_port())
    server.socket_dir.mkdir(mode=0o755)
    server.socket_dir.chmod(0o755)
    try:
        with pytest.raises(RefreshError, match="only it can enter"):
            server.ensure_running()
        assert not (server.data_dir / "PG_VERSION").exists()
    finally:
        server.socket_dir.rmdir()


def test_embedded_server_is_sized_for_fingerprint_and_value_map_probes(pg_server):
    from refresh_pipeline.platforms.local_server import _shared_buffers_mb

    with psycopg.connect(pg_server.dsn()) as conn:
        pages, unit = conn.execute(
            "SELECT setting::bigint, unit FROM pg_settings WHERE name = 'shared_buffers'"
        ).fetchone()
    assert unit == "8kB"
    assert pages * 8 // 1024 == _shared_buffers_mb() >= 128


def test_a_server_created_by_an_earlier_version_gets_the_current_tuning_at_its_next_start(test_root):
    server = LocalServer(test_root / "older_server", port=free_port())
    server.ensure_running()
    server.stop()
    # As an earlier version left it: its settings appended to postgresql.conf, no tuning file included.
    (server.data_dir / TUNING_FILE).unlink(missing_ok=True)
    conf = server.data_dir / "postgresql.conf"
    lines = [line for line in conf.read_text().splitlines() if TUNING_FILE not in line]
    conf.write_text("\n".join([*lines, "wal_level = replica", "max_wal_senders = 10", ""]))

    server.ensure_running()
    with psycopg.connect(server.dsn()) as conn:
        settings = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name LIKE '%wal%'").fetchall())
    server.stop()
    server.ensure_running()  # the include is added once, however often the server starts
    server.stop()
    assert (settings["wal_level"], settings["max_wal_senders"]) == ("minimal", "0")
    assert conf.read_text().count(TUNING_FILE) == 1
    shutil.rmtree(test_root / "older_server", ignore_errors=True)


def test_embedded_server_writes_no_wal_for_rows_loaded_into_a_table_of_the_same_transaction(create_database):
    # What pg_restore's loads and the rebuilding swap (TRUNCATE + INSERT) rely on.
    conninfo = create_database("wal")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE logged (id int, body text)")
        start = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
        with conn.transaction():
            conn.execute("TRUNCATE logged")
            conn.execute("INSERT INTO logged SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g")
        truncated = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)", (start,)).fetchone()[0]
        start = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
        conn.execute("INSERT INTO logged SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g")
        appended = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)", (start,)).fetchone()[0]
    assert appended > 10 * 2**20, "rows added to a table of an earlier transaction are logged"
    assert truncated < 2**20, f"{truncated} bytes of WAL for a 13 MB load into a table truncated just before"


def test_pooled_sessions_start_the_embedded_server_once_and_then_just_connect(
    write_config, demo_source, test_root, monkeypatch
):
    from refresh_pipeline.resources.refresh import RefreshResource

    work_dir = test_root / "pooled_sessions"
    config = write_config(demo_source, local={"port": free_port()}, work_dir=str(work_dir))
    refresh = RefreshResource(config_path=str(config), masking_key="pool-test-key-0123456789")
    server = LocalPlatform(load_config(config)).server
    assert server is not None and not server.is_running()
    try:
        with refresh.connect_managed("postgres") as first:
            assert first.execute("SELECT 1").fetchone() == (1,)

        def ask(_server: LocalServer) -> bool:
            raise AssertionError("a session asked pg_ctl although the server accepts connections")

        monkeypatch.setattr(LocalServer, "is_running", ask)
        with refresh.connect_managed("postgres") as second:
            assert second.execute("SHOW jit").fetchone() == ("off",)
    finally:
        monkeypatch.undo()
        server.stop()
        shutil.rmtree(work_dir, ignore_errors=True)


def test_productions_tablespaces_are_not_asked_of_the_staging_server(
    create_database, write_config, pg_server, test_root
):
    """A self-hosted production keeps tables on disks of its own; pg_restore's `SET default_tablespace` for them
    failed the restore on a staging server without those tablespaces. The copy's tables go to its default."""
    location = test_root / f"production_disk_{os.urandom(4).hex()}"
    location.mkdir()
    data_dir = os.stat(pg_server.data_dir)
    os.chown(location, data_dir.st_uid, data_dir.st_gid)  # the server's user owns a tablespace's folder
    tablespace = sql.Identifier(location.name)
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLESPACE {} LOCATION {}").format(tablespace, sql.Literal(str(location))))
    source = create_database("tablespaces")
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE trips (id int PRIMARY KEY USING INDEX TABLESPACE {0}, note text) TABLESPACE {0};"
                "INSERT INTO trips SELECT g, 'trip ' || g FROM generate_series(1, 50) g"
            ).format(tablespace)
        )
    platform = LocalPlatform(load_config(write_config(source)))
    try:
        name = platform.new_database_name()
        platform.restore(platform.snapshot(), name)
        with psycopg.connect(platform.conninfo(name)) as conn:
            elsewhere = conn.execute(
                "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND reltablespace <> 0"
            ).fetchone()[0]
        assert row_counts(platform.conninfo(name)) == row_counts(source)
        assert elsewhere == 0
    finally:
        for managed in platform.list_managed():
            platform.retire(managed.name)
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("DROP TABLE trips")
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLESPACE {}").format(tablespace))


@pytest.fixture
def staging_role_not_superuser(pg_server) -> Iterator[str]:
    """A staging server role as README allows one: CREATEDB, and session_replication_role granted to mask."""
    with login_role(pg_server.dsn(), "stager", "CREATEDB") as role:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            grant = sql.SQL("GRANT SET ON PARAMETER session_replication_role TO {}")
            conn.execute(grant.format(sql.Identifier(role)))
        yield make_conninfo(pg_server.dsn(), user=role)


def test_what_only_a_superuser_can_restore_is_named_before_anything_is_restored(
    create_database, write_config, tmp_path, staging_role_not_superuser
):
    """pg_restore as a role that is not a superuser stopped at production's event triggers, after every row."""
    production = create_database("superuser_only")
    with psycopg.connect(production, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE customers (id int PRIMARY KEY, email text);"
            "CREATE FUNCTION log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;"
            "CREATE EVENT TRIGGER ddl_audit ON ddl_command_end EXECUTE FUNCTION log_ddl();"
            "CREATE PUBLICATION everything FOR ALL TABLES;"
        )
    policy = tmp_path / "policy.yaml"
    policy.write_text("tables:\n  customers: {id: keep, email: email}\n")
    as_superuser = load_config(write_config(production, policy))
    config = load_config(write_config(production, policy, local={"server_dsn": staging_role_not_superuser}))
    role = conninfo_to_dict(staging_role_not_superuser)["user"]

    assert validate_against_source(as_superuser).problems == []
    assert validate_against_source(config).problems == [
        f"the staging server's role {role} is not a superuser, and only a superuser can restore production's "
        "event trigger ddl_audit, publication everything (FOR ALL TABLES): the restore would stop there. Connect "
        "local.server_dsn as a superuser (the embedded server's role is one)"
    ]
    platform = LocalPlatform(config)
    with pytest.raises(RefreshError, match=f"role {role} is not a superuser.* event trigger ddl_audit: the restore"):
        platform.restore(platform.snapshot(), platform.new_database_name())
    assert platform.list_managed() == []


def test_validate_names_what_productions_role_cannot_read_for_the_snapshot(
    create_database, write_config, tmp_path, pg_server
):
    """pg_dump stopped at the first table, sequence or row-level secured table the read-only role could not read
    (`permission denied for table t`, a schema added since its grants); validate found nothing."""
    production = create_database("snapshot_access")
    with psycopg.connect(production, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE customers (id int PRIMARY KEY, email text);"
            "ALTER TABLE customers ENABLE ROW LEVEL SECURITY;"
            "CREATE SCHEMA billing; CREATE TABLE billing.invoices (id int PRIMARY KEY, total numeric);"
            "CREATE SEQUENCE billing.invoice_numbers;"
            "CREATE SCHEMA hidden; CREATE TABLE hidden.notes (id int PRIMARY KEY);"
        )
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "tables:\n  customers: {id: keep, email: email}\n  billing.invoices: keep\n  hidden.notes: keep\n"
    )
    # A superuser bypasses row-level security whatever its BYPASSRLS (false here) says.
    with login_role(production, "reader") as role, login_role(production, "super", "SUPERUSER") as superuser:
        with psycopg.connect(production, autocommit=True) as conn:
            grant = "GRANT SELECT ON customers TO {0}; GRANT USAGE ON SCHEMA billing TO {0}"
            conn.execute(sql.SQL(grant).format(sql.Identifier(role)))
        config = load_config(write_config(make_conninfo(production, user=role), policy))
        problems = validate_against_source(config).problems
        as_superuser = load_config(write_config(make_conninfo(production, user=superuser), policy))
        superuser_problems = validate_against_source(as_superuser).problems
        with psycopg.connect(production, autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "GRANT SELECT ON ALL TABLES IN SCHEMA billing TO {0}; GRANT SELECT ON billing.invoice_numbers"
                    " TO {0}; GRANT USAGE ON SCHEMA hidden TO {0}; GRANT SELECT ON hidden.notes TO {0};"
                    " ALTER ROLE {0} BYPASSRLS"
                ).format(sql.Identifier(role))
            )
        granted = validate_against_source(config).problems

    assert superuser_problems == []
    assert problems == [
        f"production's role {role} cannot read billing.invoice_numbers (no SELECT on the sequence), "
        "billing.invoices (no SELECT), hidden.notes (no USAGE on its schema), public.customers (row-level "
        "security, neither owned nor bypassed), which the snapshot dumps: pg_dump would stop there. Grant it what "
        "it lacks (GRANT USAGE ON SCHEMA, GRANT SELECT ON ALL TABLES IN SCHEMA and ON ALL SEQUENCES IN SCHEMA, or "
        "the role pg_read_all_data; BYPASSRLS for row-level security)"
    ]
    assert granted == []
