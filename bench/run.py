"""Benchmark: our full refresh vs a plain clone and a naive UPDATE, side by side in one run.

    .venv/bin/python bench/run.py --scale 1      # S=1: 200k customers, 1M bookings, 1M payments

Not part of the test suite. Everything is measured in this one process run on this machine, and printed
as ratios to the plain clone (a), so a regression in any phase shows as a ratio, not an absolute time.
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psutil
import psycopg
import yaml
from psycopg import sql

from refresh_pipeline.demo.dataset import load_demo_database
from refresh_pipeline.masking.catalog import WHOLE_NUMBER_TYPES, ColumnInfo, read_tables
from refresh_pipeline.masking.policy import ArrayRule, JsonRule, load_policy
from refresh_pipeline.platforms.connections import libpq_env
from refresh_pipeline.platforms.local_server import LocalServer
from refresh_pipeline.platforms.postgres_binaries import find_client_binary

DEMO_POLICY = Path(__file__).parents[1] / "refresh_pipeline" / "demo" / "policy.yaml"
TARGETS = {"full refresh": 1.5, "mask": 1.0, "audit": 0.3}


@dataclass
class Measurement:
    name: str
    seconds: float
    rows: int = 0
    note: str = ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(args: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(args, env=env, check=True, capture_output=True, text=True)


def _recreate(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _settle(server: LocalServer, source: str, done_with: list[str]) -> None:
    """A quiet server before each measurement: the databases measured before are dropped (autovacuum would
    otherwise clean the naive UPDATE's dead rows during the next measurement), production is vacuumed
    once (it was just loaded), and dirty buffers are written out."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for name in done_with:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
        conn.execute("CHECKPOINT")


def _size(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]


@dataclass
class CpuUse:
    machine: float  # core-seconds the whole machine was busy
    server: float  # core-seconds of the PostgreSQL server's processes


class _CpuMeter:
    """CPU spent during one measurement by the machine and by the PostgreSQL server (postmaster, its live
    children and the ones it reaped). The workload is CPU-bound, and core-seconds vary less from run to
    run than wall time, so they show a regression that wall-time noise would hide."""

    def __init__(self, server: LocalServer) -> None:
        self.postmaster = psutil.Process(int((server.data_dir / "postmaster.pid").read_text().split()[0]))
        self.use = CpuUse(0.0, 0.0)

    def __enter__(self) -> "_CpuMeter":
        self._start = CpuUse(self._machine(), self._server())
        return self

    def __exit__(self, *_exc: object) -> None:
        self.use = CpuUse(self._machine() - self._start.machine, self._server() - self._start.server)

    @staticmethod
    def _machine() -> float:
        times = psutil.cpu_times()
        busy = ("user", "nice", "system", "irq", "softirq", "steal")  # guest time is counted in user already
        return sum(getattr(times, name, 0.0) for name in busy)

    def _server(self) -> float:
        own = self.postmaster.cpu_times()
        total = own.user + own.system + own.children_user + own.children_system
        for child in self.postmaster.children():
            try:
                times = child.cpu_times()
            except psutil.Error:  # exited meanwhile: counted in children_* from now on
                continue
            total += times.user + times.system
        return total


def plain_clone(server: LocalServer, source: str, dump_dir: Path, jobs: int) -> tuple[float, CpuUse]:
    """(a) pg_dump -Fd -Z0 -j N + pg_restore -j N into a new database: what any clone costs."""
    pg_dump = find_client_binary("pg_dump", server.bin_dir)
    pg_restore = find_client_binary("pg_restore", server.bin_dir)
    shutil.rmtree(dump_dir, ignore_errors=True)
    _recreate(server.dsn(), "bench_plain_clone")
    started = time.monotonic()
    with _CpuMeter(server) as meter:
        _run([pg_dump, "-Fd", "-Z0", f"-j{jobs}", "-f", str(dump_dir)], env=libpq_env(source, read_only=True))
        _run([pg_restore, f"-j{jobs}", "--no-owner", "-d", "bench_plain_clone", str(dump_dir)],
             env=libpq_env(server.dsn("bench_plain_clone")))  # fmt: skip
    return time.monotonic() - started, meter.use


def clone_baseline(
    server: LocalServer, source: str, dump_dir: Path, jobs: int, runs: int
) -> tuple[Measurement, CpuUse]:
    """(a) as the median of `runs` clones: one clone's time varied by +-15% between runs, and every ratio
    is divided by it."""
    times: list[float] = []
    uses: list[CpuUse] = []
    for _ in range(runs):
        _settle(server, source, ["bench_plain_clone"])
        seconds, use = plain_clone(server, source, dump_dir, jobs)
        times.append(seconds)
        uses.append(use)
    note = f"median of {runs}: " + ", ".join(f"{t:.1f}" for t in sorted(times)) + " s" if runs > 1 else ""
    median = CpuUse(statistics.median(u.machine for u in uses), statistics.median(u.server for u in uses))
    return Measurement("(a) plain clone: pg_dump + pg_restore", statistics.median(times), note=note), median


def _naive_expression(column: str, rule: object, info: ColumnInfo) -> sql.Composable:
    col = sql.Identifier(column)
    if info.base_type in WHOLE_NUMBER_TYPES:  # a phone kept as a number
        return sql.SQL("CAST(6000000000 + abs(hashtextextended({}::text, 0)) % 4000000000 AS {})").format(
            col, sql.SQL(info.type_name)
        )
    if isinstance(rule, JsonRule):
        expression: sql.Composable = col
        for path in rule.paths:
            steps = [s for s in path.steps if s != "*"]
            expression = sql.SQL(
                "CASE WHEN {e} #> {p} IS NULL THEN {e} ELSE jsonb_set({e}, {p}, to_jsonb(md5({e} #>> {p})), false) END"
            ).format(e=expression, p=sql.Literal(steps))
        return sql.SQL("CASE WHEN {c} IS NULL THEN NULL ELSE {e} END").format(c=col, e=expression)
    if isinstance(rule, ArrayRule):
        return sql.SQL("ARRAY(SELECT md5(x) FROM unnest({}) x)").format(col)
    if getattr(rule, "transform", "") == "redact":
        return sql.Literal(rule.param_dict.get("value", "REDACTED"))
    return sql.SQL("left(md5({}::text), 16)").format(col)


def naive_update(server: LocalServer, dump_dir: Path, jobs: int) -> Measurement:
    """(b) one UPDATE per table over the masked columns, one connection (what hand-written scripts do)."""
    pg_restore = find_client_binary("pg_restore", server.bin_dir)
    _recreate(server.dsn(), "bench_naive")
    conninfo = server.dsn("bench_naive")
    _run([pg_restore, f"-j{jobs}", "--no-owner", "-d", "bench_naive", str(dump_dir)], env=libpq_env(conninfo))
    policy = load_policy(DEMO_POLICY)
    size_before = _size(conninfo)
    started = time.monotonic()
    rows = 0
    with psycopg.connect(conninfo, autocommit=True) as conn:
        tables = read_tables(conn)
        for table in policy.tables.values():
            if table.keep_all or not table.masked_columns:
                continue
            info = tables[(table.schema, table.table)]
            assignments = sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(name), _naive_expression(name, rule, info.column(name)))
                for name, rule in table.masked_columns.items()
                if not (hasattr(rule, "transform") and rule.transform in ("null", "geo", "date"))
            )
            rows += conn.execute(sql.SQL("UPDATE {} SET {}").format(sql.Identifier(table.table), assignments)).rowcount
    seconds = time.monotonic() - started
    growth = _size(conninfo) / size_before - 1
    return Measurement("(b) naive UPDATE per table", seconds, rows, f"database grew {growth:.0%}")


class _RssSampler(threading.Thread):
    """Peak RSS of the refresh's Python processes (the CLI and its step workers), sampled every 0.2 s."""

    def __init__(self, root_pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(root_pid)
        self.peak_single = 0
        self.peak_total = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            try:
                processes = [self.root, *self.root.children(recursive=True)]
                sizes = [p.memory_info().rss for p in processes if "python" in p.name().lower()]
            except psutil.Error:
                continue
            if sizes:
                self.peak_single = max(self.peak_single, max(sizes))
                self.peak_total = max(self.peak_total, sum(sizes))


def _phase(step_key: str) -> str:
    if step_key == "production_snapshot":
        return "snapshot"
    if step_key == "restored_instance":
        return "restore (+ fingerprints, value maps)"
    if step_key.startswith("masked__") and step_key.count("_no_pii_left") == 0:
        return "mask"
    if step_key in ("masked_database", "staging_database", "retired_staging"):
        return "promote"
    return "audit"


def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def _growth(server: LocalServer, source: str) -> str:
    """The promoted staging database's size against production's (dead rows left by masking show here)."""
    with psycopg.connect(server.dsn()) as conn:
        staging = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'bench\\_staging\\_%' ORDER BY datname DESC LIMIT 1"
        ).fetchone()[0]
    return f"{_size(server.dsn(staging)) / _size(source) - 1:+.0%} vs"


def our_refresh(
    server: LocalServer, source: str, work_dir: Path, parallelism: int, show_steps: bool = False
) -> tuple[list[Measurement], dict, CpuUse]:
    """(c) the refresh through the entry point users run: `refresh-pipeline run --config`."""
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    config = work_dir / "bench.yaml"
    config.write_text(yaml.safe_dump({
        "source_dsn": source, "policy": str(DEMO_POLICY), "work_dir": str(work_dir), "parallelism": parallelism,
        "database_prefix": "bench_staging_", "local": {"server_dsn": server.dsn()},
    }))  # fmt: skip
    env = {**os.environ, "REFRESH_MASKING_KEY": "benchmark-key-0123456789", "DAGSTER_HOME": str(work_dir / "dh")}
    cli = Path(sys.executable).with_name("refresh-pipeline")
    started = time.monotonic()
    run_started = time.time()
    with _CpuMeter(server) as meter:
        process = subprocess.Popen([str(cli), "run", "--config", str(config)], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        sampler = _RssSampler(process.pid)
        sampler.start()
        _, stderr = process.communicate()
    wall = time.monotonic() - started
    sampler.stopped.set()
    if process.returncode != 0:
        raise SystemExit(f"the refresh failed:\n{stderr[-4000:]}")

    os.environ["DAGSTER_HOME"] = str(work_dir / "dh")
    with dg.DagsterInstance.get() as instance:
        run = instance.get_runs(limit=1)[0]
        starts: dict[str, float] = {}
        steps: list[tuple[str, float, float]] = []
        started_at = run_started
        intervals: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for record in instance.all_logs(run.run_id):
            event = record.dagster_event
            if event is None or not record.step_key:
                continue
            if event.event_type_value == "STEP_START":
                starts[record.step_key] = record.timestamp
            elif event.event_type_value == "STEP_SUCCESS":
                intervals[_phase(record.step_key)].append((starts[record.step_key], record.timestamp))
                steps.append((record.step_key, starts[record.step_key] - started_at, record.timestamp - started_at))
    all_steps = [interval for phase in intervals.values() for interval in phase]
    measurements = [Measurement(f"(c) {phase}", _union(spans)) for phase, spans in intervals.items()]
    busy = _union(all_steps)
    measurements.append(Measurement("(c) orchestration overhead", max(0.0, wall - busy), note="wall - busy steps"))
    measurements.append(Measurement("(c) full refresh", wall, note=f"staging {_growth(server, source)} production"))
    if show_steps:
        print("\nsteps (start, end, seconds since the run began):")
        for step, begin, end in sorted(steps, key=lambda step: step[1]):
            print(f"  {step:55} {begin:7.1f} {end:7.1f} {end - begin:7.1f}")
    memory = {
        "peak single process MB": sampler.peak_single / 2**20,
        "peak all processes MB": sampler.peak_total / 2**20,
    }
    return measurements, memory, meter.use


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--steps", action="store_true", help="also print each step's start, end and duration")
    parser.add_argument("--clone-runs", type=int, default=3, help="(a) is the median of this many clones")
    args = parser.parse_args()
    if args.clone_runs < 1:
        parser.error("--clone-runs must be at least 1")
    if args.scale <= 0:
        parser.error("--scale must be above 0 (1 = 200k customers, 1M bookings, 1M payments)")
    if args.parallelism < 1:
        parser.error("--parallelism must be at least 1")

    root = args.work_dir or Path(tempfile.mkdtemp(prefix="refresh_bench_"))
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    server = LocalServer(root / "pgserver", _free_port())
    server.ensure_running()
    try:
        _recreate(server.dsn(), "bench_production")
        source = server.dsn("bench_production")
        print(f"generating demo production at scale {args.scale} ...", flush=True)
        started = time.monotonic()
        counts = load_demo_database(source, scale=args.scale, log=lambda _m: None)
        total_rows = sum(counts.values())
        print(f"  {total_rows:,} rows in {time.monotonic() - started:.0f} s; size {_size(source) / 2**20:.0f} MB")

        baseline, baseline_cpu = clone_baseline(server, source, root / "dump", args.parallelism, args.clone_runs)
        _settle(server, source, ["bench_plain_clone"])
        naive = naive_update(server, root / "dump", args.parallelism)
        _settle(server, source, ["bench_naive"])
        ours, memory, ours_cpu = our_refresh(server, source, root / "refresh", args.parallelism, args.steps)
    finally:
        server.stop()
        if args.work_dir is None:
            shutil.rmtree(root, ignore_errors=True)

    print(f"\nscale {args.scale}, parallelism {args.parallelism}, {total_rows:,} rows; ratios to (a)\n")
    print(f"{'measurement':45} {'seconds':>9} {'rows/s':>11} {'ratio':>7}  target")
    for m in [baseline, naive, *ours]:
        rows = m.rows or total_rows
        phase = m.name.removeprefix("(c) ")
        target = TARGETS.get(phase)
        ratio = m.seconds / baseline.seconds
        verdict = "" if target is None else f"<= {target:.1f}x {'met' if ratio <= target else 'MISSED'}"
        if phase == "orchestration overhead":
            full = next(x for x in ours if x.name == "(c) full refresh").seconds
            verdict = f"<= 10% of run {'met' if m.seconds <= 0.1 * full else 'MISSED'} ({m.seconds / full:.0%})"
        print(f"{m.name:45} {m.seconds:9.1f} {rows / max(m.seconds, 1e-9):11,.0f} {ratio:6.2f}x  {verdict} {m.note}")
    single, total = memory["peak single process MB"], memory["peak all processes MB"]
    verdict = "met" if single < 300 else "MISSED"
    print(f"{'peak RSS, largest Python process (MB)':45} {single:9.0f}  target < 300 MB {verdict}")
    print(f"{'peak RSS, all Python processes together (MB)':45} {total:9.0f}  (CLI + step workers)")
    full = next(x for x in ours if x.name == "(c) full refresh").seconds
    heading = f"CPU, core-seconds ({psutil.cpu_count()} cores)"
    print(f"\n{heading:45} {'machine':>9} {'PostgreSQL':>11} {'ratio':>7}  (machine core-s to (a)'s)")
    for name, use, wall in [("(a) plain clone", baseline_cpu, baseline.seconds), ("(c) full refresh", ours_cpu, full)]:
        busy = use.machine / (wall * (psutil.cpu_count() or 1))
        print(f"{name:45} {use.machine:9.1f} {use.server:11.1f} {use.machine / baseline_cpu.machine:6.2f}x  "
              f"machine {busy:.0%} busy")  # fmt: skip


if __name__ == "__main__":
    main()
