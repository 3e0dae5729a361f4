"""The small state record that lets each asset find what the previous step produced, across runs."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from refresh_pipeline.errors import RefreshError


@dataclass(frozen=True)
class SnapshotRecord:
    snapshot_id: str
    location: str
    taken_at: str


@dataclass(frozen=True)
class RestoreRecord:
    database: str
    snapshot_id: str
    restored_at: str


@dataclass(frozen=True)
class PromotionRecord:
    database: str
    snapshot_id: str
    promoted_at: str


_SECTIONS = {"snapshot": SnapshotRecord, "restored": RestoreRecord, "promoted": PromotionRecord}


class StateFile:
    """`state.json` in the work dir; every update is locked and written atomically."""

    def __init__(self, work_dir: Path) -> None:
        self.path = work_dir / "state.json"

    def _read_raw(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {}
        try:
            return json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise RefreshError(f"{self.path} is not valid JSON ({exc}); delete it to start afresh.") from None

    def read(self, section: str) -> Any:
        raw = self._read_raw().get(section)
        return _SECTIONS[section](**raw) if raw else None

    def require(self, section: str, produced_by: str) -> Any:
        record = self.read(section)
        if record is None:
            raise RefreshError(f"no {section} recorded in {self.path}: materialize {produced_by} first.")
        return record

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def write(self, section: str, record: Any) -> None:
        with self._locked():
            raw = self._read_raw()
            raw[section] = asdict(record)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as out:
                    json.dump(raw, out, indent=2, sort_keys=True)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
