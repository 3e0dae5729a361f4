"""Small helpers the tests share: reading a database the way a reviewer would."""

import contextlib
import json
import re
import socket
import socketserver
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from refresh_pipeline.cli import main
from refresh_pipeline.masking.runner import install_functions
from refresh_pipeline.platforms.local_server import LocalServer

EMAIL = re.compile(r"[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+")
PHONE = re.compile(r"(?<![0-9])(?:\+91[ -]?|0)?([6-9][0-9]{4})[ -]?([0-9]{5})(?![0-9])")


def database_with(create_database, prefix: str, schema: str) -> str:
    """A new database (from the `create_database` fixture) holding `schema` and the masking functions."""
    conninfo = create_database(prefix)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(schema)
        install_functions(conn)
    return conninfo


@contextmanager
def login_role(conninfo: str, prefix: str, attributes: str = "") -> Iterator[str]:
    """A new login role (with `attributes`: SUPERUSER, CREATEDB) of the server of `conninfo`; dropped after,
    with what it was granted in that database and on the server (DROP OWNED)."""
    role = sql.Identifier(name := f"{prefix}_{uuid.uuid4().hex[:8]}")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN {}").format(role, sql.SQL(attributes)))
    try:
        yield name
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(role))


def refresh_through_cli(config: Path, capsys) -> str:
    """Run the whole refresh as `refresh-pipeline run` does (in process); returns the staging database it
    promoted, as `status --json` names it."""
    assert main(["run", "--config", str(config), "--in-process"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["status", "--config", str(config), "--json"]) == 0
    return json.loads(capsys.readouterr().out)["staging_database"]


@contextmanager
def running_server(folder: Path, **settings: str) -> Iterator[LocalServer]:
    """An embedded PostgreSQL server of its own in `folder`, on a free port, with `settings` in its
    postgresql.conf (then a restart: shared_preload_libraries needs one); stopped afterwards."""
    server = LocalServer(folder, free_port())
    server.ensure_running()
    if settings:
        with (server.data_dir / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = '{value}'\n" for name, value in settings.items())
        server.stop()
        server.ensure_running()
    try:
        yield server
    finally:
        server.stop()


def heap_pages(conn: psycopg.Connection, table: str) -> int:
    return conn.execute(
        "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int", (table,)
    ).fetchone()[0]


def compact_pages(conn: psycopg.Connection, table: str) -> int:
    """Heap pages a freshly written copy of the table's rows takes: what the table takes without dead rows."""
    conn.execute(sql.SQL("CREATE TEMP TABLE fresh_copy AS SELECT * FROM {}").format(sql.Identifier(table)))
    pages = heap_pages(conn, "fresh_copy")
    conn.execute("DROP TABLE fresh_copy")
    return pages


def table_fingerprint(conninfo: str, table: str) -> str:
    """md5 over every row, order-independent: equal means identical content."""
    with psycopg.connect(conninfo) as conn:
        query = sql.SQL("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} t").format(
            sql.Identifier(table)
        )
        return conn.execute(query).fetchone()[0]


def row_counts(conninfo: str) -> dict[str, int]:
    with psycopg.connect(conninfo) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        return {
            t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0] for t in tables
        }


def data_dump(conninfo: str, schema: str = "public") -> str:
    """All data of a schema as text (pg_dump --data-only), lower-cased."""
    out = subprocess.run(
        ["pg_dump", "--data-only", f"--schema={schema}", "-d", conninfo], capture_output=True, text=True, check=True
    )
    return out.stdout.lower()


def statistics_dump(conninfo: str) -> str:
    """The sampled values ANALYZE keeps of every table's columns (pg_stats: most common values, histogram
    bounds), which anyone who may read a column can read, as text, lower-cased."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT concat_ws(' ', most_common_vals::text, histogram_bounds::text, most_common_elems::text) "
            "FROM pg_stats WHERE schemaname = 'public'"
        ).fetchall()
    return "\n".join(row[0] for row in rows).lower()


def production_identifiers(conninfo: str) -> tuple[set[str], set[str], set[str]]:
    """Customer emails, email local parts and 10-digit phone numbers of a demo production database."""
    with psycopg.connect(conninfo, options="-c default_transaction_read_only=on") as conn:
        rows = conn.execute("SELECT lower(email), phone FROM customers").fetchall()
    emails = {email for email, _ in rows}
    return emails, {e.split("@")[0] for e in emails}, {phone[-10:] for _, phone in rows}


def leaked_identifiers(dump: str, emails: set[str], local_parts: set[str], phones: set[str]) -> dict[str, set[str]]:
    """Production identifiers that appear in a dump, found by an implementation independent of the engine."""
    found_emails = set(EMAIL.findall(dump))
    found_locals = {token.split("@")[0] for token in re.findall(r"[a-z0-9._-]+@[a-z]+", dump)}
    found_phones = {a + b for a, b in PHONE.findall(dump)}
    return {
        "emails": found_emails & emails,
        "local_parts": found_locals & local_parts,
        "phones": found_phones & phones,
    }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def tcp_forwarder(socket_path: Path) -> Iterator[int]:
    """A port on 127.0.0.1 whose connections are relayed to a Unix socket: for clients that only speak TCP
    (an RDS-shaped config) against the tests' socket-only server."""

    class Relay(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with socket.socket(socket.AF_UNIX) as server_side:
                server_side.connect(str(socket_path))
                pumps = [
                    threading.Thread(target=_pump, args=(self.request, server_side), daemon=True),
                    threading.Thread(target=_pump, args=(server_side, self.request), daemon=True),
                ]
                for pump in pumps:
                    pump.start()
                for pump in pumps:
                    pump.join()

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Relay) as relay:
        relay.daemon_threads = True
        threading.Thread(target=relay.serve_forever, daemon=True).start()
        try:
            yield relay.server_address[1]
        finally:
            relay.shutdown()


def _pump(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):  # either side closing ends the relay
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)
