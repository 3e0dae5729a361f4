"""Progress of a snapshot (pg_dump) and a restore (pg_restore), read from their --verbose lines: how much of
the tables' rows is done, weighted by size, and how many indexes, constraints and materialized views, logged
every few seconds with the time left. The lines name tables and items, never a value.

Done is what the tool says it finished (`finished item N`). Where it works one item after another and says
only when it starts one (pg_dump with one job; pg_restore's `processing item` lines), starting the next item
finishes the one before.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from refresh_pipeline.masking.catalog import USER_SCHEMA

Log = Callable[[str], None]

LOG_INTERVAL = 10.0  # seconds between progress lines

# Matched anywhere in a line: parallel jobs' lines can lose their "pg_dump: " to the line before.
_DUMP_STARTED = re.compile(r'dumping contents of table "(?P<table>.+)"$')
_DUMP_FINISHED = re.compile(r"finished item \d+ TABLE DATA (?P<name>.+)$")
_RESTORE_STARTED = re.compile(r"(?P<how>launching|processing) item (?P<id>\d+) ")
_RESTORE_FINISHED = re.compile(r"finished item (?P<id>\d+) ")
# One job: 'creating INDEX "public.bookings_rider_idx"', 'processing data for table "public.bookings"'.
_RESTORE_NAMED = re.compile(r'(?:creating (?P<kind>[A-Z ]+?)|processing data for table) "(?P<name>.+)"$')
# pg_restore --list lines: "<dump id>; <catalog oid> <oid> <description> <schema> <tag> <owner>"
_LISTED = re.compile(
    r"^(?P<id>\d+); \d+ \d+ (?P<kind>TABLE DATA|INDEX|CONSTRAINT|FK CONSTRAINT|MATERIALIZED VIEW DATA) "
    r"(?P<schema>\S+) (?P<tag>.+) \S+$"
)
_OTHER_KINDS = {
    "INDEX": "indexes and constraints",
    "CONSTRAINT": "indexes and constraints",
    "FK CONSTRAINT": "indexes and constraints",
    "MATERIALIZED VIEW DATA": "materialized views",
}

# Every table pg_dump dumps the rows of (not an extension's), as it names it when it starts and when it
# finishes, with its size on disk (no privilege needed to read it).
_TABLE_SIZES = f"""
SELECT n.nspname || '.' || c.relname, c.relname, pg_table_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND {USER_SCHEMA}
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
"""


def readable_size(size: float) -> str:
    if size >= 1e10:
        return f"{size / 1e9:,.0f} GB"
    return f"{size / 1e6:,.0f} MB" if size >= 1e6 else f"{size / 1e3:,.0f} kB"


@dataclass
class ItemProgress:
    """Items started and finished; the tables' rows weighted by `weights` (bytes), other items counted."""

    label: str
    weights: dict[str, float]  # table item -> its size
    size_note: str  # what the sizes are: "on production's disk", "compressed"
    log: Log
    others: dict[str, set[str]] = field(default_factory=dict)  # "indexes and constraints" -> their items
    interval: float = field(default_factory=lambda: LOG_INTERVAL)
    started_at: float = field(default_factory=time.monotonic)
    _running: list[str] = field(default_factory=list)  # started, not finished, oldest first
    _done: set[str] = field(default_factory=set)
    _last_log: float = field(default_factory=time.monotonic)

    def start(self, item: str, one_at_a_time: bool) -> None:
        if one_at_a_time:
            self._done.update(self._running)
            self._running.clear()
        self._running.append(item)
        self._maybe_log()

    def finish(self, item: str) -> None:
        if item in self._running:
            self._running.remove(item)
        self._done.add(item)
        self._maybe_log()

    def finished(self) -> None:
        """The tool exited successfully: what it did, without the totals (some tables have rows it does not
        copy: an extension's, a scheduler's left out)."""
        self._done.update(self._running)
        self._running.clear()
        done = self._done_sizes()
        parts = [f"rows of {len(done):,} tables ({readable_size(sum(done))} {self.size_note})"]
        parts += [f"{len(items & self._done):,} {what}" for what, items in self.others.items()]
        self.log(f"{self.label} done in {time.monotonic() - self.started_at:,.1f} s: {', '.join(parts)}")

    def is_done(self, item: str) -> bool:
        return item in self._done

    def _done_sizes(self) -> list[float]:
        """The size of each table whose rows are done."""
        return [self.weights[item] for item in self._done if item in self.weights]

    def _maybe_log(self) -> None:
        now = time.monotonic()
        if now - self._last_log >= self.interval:
            self._last_log = now
            self.log(self.describe(now))

    def describe(self, now: float) -> str:
        elapsed = max(now - self.started_at, 1e-6)
        total = sum(self.weights.values())
        tables = self._done_sizes()
        fraction = sum(tables) / total if total else 1.0
        parts = [
            f"rows of {len(tables):,} of {len(self.weights):,} tables ({fraction:.0%} of {readable_size(total)} "
            f"{self.size_note})"
        ]
        parts += [f"{len(items & self._done):,} of {len(items):,} {what}" for what, items in self.others.items()]
        timing = f"{elapsed:,.1f} s elapsed"
        if 0 < fraction < 1:
            timing += f", rows ETA {elapsed * (1 - fraction) / fraction:,.0f} s"
        return f"{self.label}: {', '.join(parts)}, {timing}"


class DumpProgress:
    """pg_dump's --verbose lines: tables by their qualified name as it prints them, sized on production."""

    def __init__(self, production: psycopg.Connection, label: str, jobs: int, log: Log) -> None:
        weights: dict[str, float] = {}
        self.by_name: dict[str, list[str]] = {}  # 'bookings' -> ['public.bookings', 'archive.bookings']
        for qualified, name, size in production.execute(_TABLE_SIZES).fetchall():
            weights[qualified] = float(size)
            self.by_name.setdefault(name, []).append(qualified)
        self.progress = ItemProgress(label, weights, "on production's disk", log)
        self.one_at_a_time = jobs == 1
        self.finished = self.progress.finished

    def line(self, text: str) -> None:
        if self.one_at_a_time and (match := _DUMP_STARTED.search(text)):
            self.progress.start(match["table"], one_at_a_time=True)
        elif match := _DUMP_FINISHED.search(text):
            self.progress.finish(self._table_named(match["name"]))

    def _table_named(self, name: str) -> str:
        """The finished line names the table without its schema (and a parallel pg_dump does not always
        print the line naming the table it starts): the first table of that name not done yet."""
        return next((t for t in self.by_name.get(name, []) if not self.progress.is_done(t)), name)


class RestoreProgress:
    """pg_restore's --verbose lines over one or more passes, the tables' rows sized by their files in the
    snapshot folder. With parallel jobs the lines give each item's dump id; with one job only its kind and
    name, as the listing has them."""

    def __init__(self, listing: list[str], snapshot: str, label: str, jobs: int, log: Log) -> None:
        weights: dict[str, float] = {}
        others: dict[str, set[str]] = {}
        self.by_name: dict[str, str] = {}  # 'INDEX "public.bookings_rider_idx"' -> its dump id
        for entry in listing:
            if not (match := _LISTED.match(entry)):
                continue
            item, kind = match["id"], match["kind"]
            self.by_name[f'{kind} "{match["schema"]}.{match["tag"]}"'] = item
            if kind == "TABLE DATA":
                weights[item] = float(sum(f.stat().st_size for f in Path(snapshot).glob(f"{item}.dat*")))
            else:
                others.setdefault(_OTHER_KINDS[kind], set()).add(item)
        self.progress = ItemProgress(label, weights, "compressed", log, others)
        self.finished = self.progress.finished
        self.one_job = jobs == 1

    def line(self, text: str) -> None:
        if self.one_job:
            if match := _RESTORE_NAMED.search(text):
                named = f'{match["kind"] or "TABLE DATA"} "{match["name"]}"'
                self.progress.start(self.by_name.get(named, named), one_at_a_time=True)
        elif match := _RESTORE_STARTED.search(text):
            self.progress.start(match["id"], one_at_a_time=match["how"] == "processing")
        elif match := _RESTORE_FINISHED.search(text):
            self.progress.finish(match["id"])
