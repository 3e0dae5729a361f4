"""Benchmark: `scrub` on one long text against the same text scrubbed line by line, side by side in one run.

    .venv/bin/python bench/scrub_sizes.py                   # CSVs of 1,000 to 64,000 rider lines
    .venv/bin/python bench/scrub_sizes.py --lines 1000 8000

Not part of the test suite. A text holding many emails and phones (an uploaded CSV of riders kept in one
column) must cost what its lines cost one by one: the ratio stays near 1 at every size. Appending each masked
token to the text, as scrub did, copied all of it every time, and the ratio grew with the size (64,000 lines:
41 s against 5 s).
"""

import argparse
import shutil
import socket
import tempfile
import time
from pathlib import Path

import psycopg

from refresh_pipeline.masking.keys import MASKING_PURPOSE, MaskingKey
from refresh_pipeline.masking.runner import install_functions
from refresh_pipeline.platforms.local_server import LocalServer

KEY = MaskingKey("scrub-bench-key-0123456789")
# A rider per line: an id, a name, an email and a phone (two tokens).
_LINES = """
CREATE TABLE riders_csv AS
SELECT g AS line_no, 'rider' || g || ',Rider ' || g || ',rider' || g || '@corp.in,+91 98'
       || lpad((g %% 1000)::text, 3, '0') || ' ' || lpad((g %% 100000)::text, 5, '0') AS line
FROM generate_series(1, %(lines)s) AS g
"""
_BY_LINE = "SELECT length(string_agg(refresh_pipeline.scrub(%(k)s, line), E'\\n' ORDER BY line_no)) FROM riders_csv"
_WHOLE = (
    "SELECT length(refresh_pipeline.scrub(%(k)s, (SELECT string_agg(line, E'\\n' ORDER BY line_no) FROM riders_csv)))"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _timed(conn: psycopg.Connection, query: str) -> tuple[float, int]:
    started = time.monotonic()
    length = conn.execute(query, {"k": KEY.sql_pads(MASKING_PURPOSE)}).fetchone()[0]
    return time.monotonic() - started, length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, nargs="+", default=[1000, 4000, 16000, 64000])
    args = parser.parse_args()
    if min(args.lines) < 1:
        parser.error("--lines must each be at least 1")

    root = Path(tempfile.mkdtemp(prefix="scrub_bench_"))
    root.chmod(0o755)
    server = LocalServer(root / "pgserver", _free_port())
    server.ensure_running()
    rows = []
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            install_functions(conn)
            for lines in args.lines:
                conn.execute("DROP TABLE IF EXISTS riders_csv")
                conn.execute(_LINES, {"lines": lines})
                by_line, expected = _timed(conn, _BY_LINE)
                whole, length = _timed(conn, _WHOLE)
                if length != expected:
                    raise SystemExit(f"{lines} lines: the whole text scrubbed to {length} characters, not {expected}")
                rows.append((lines, length, by_line, whole))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

    print(f"\n{'lines':>8} {'tokens':>8} {'MB':>6} {'by line s':>10} {'whole s':>9} {'ratio':>7}")
    for lines, length, by_line, whole in rows:
        print(f"{lines:8,} {2 * lines:8,} {length / 1e6:6.1f} {by_line:10.2f} {whole:9.2f} {whole / by_line:6.2f}x")
    print("\nThe ratio stays near 1 when scrub is linear in the tokens of one text.")


if __name__ == "__main__":
    main()
