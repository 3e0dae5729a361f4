"""The EC2 worker's output, shipped to CloudWatch Logs before it stops itself: a stopped worker's journal can
only be read by booting it, which runs a refresh. Everything the run writes to stdout and stderr (its step
processes too, which inherit them) still reaches the console and the journal, and is kept, line by line, to
be sent in one go at the end. It holds no secret and no row value: nothing the pipeline logs does."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import boto3
from botocore.exceptions import BotoCoreError, ClientError

MAX_LINES = 200_000  # the latest are kept: a run's output is a few thousand lines
EVENT_OVERHEAD = 26  # bytes CloudWatch Logs counts for each event besides its message
MAX_EVENT_BYTES = 256 * 1024 - EVENT_OVERHEAD
MAX_BATCH_BYTES = 1_048_576
MAX_BATCH_EVENTS = 10_000
_READER_WAIT = 5.0  # seconds: a step process that outlives the run may hold the pipe open


@dataclass
class CapturedOutput:
    lines: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=MAX_LINES))  # (epoch ms, text)


@contextmanager
def captured_output() -> Iterator[CapturedOutput]:
    """File descriptors 1 and 2 through a pipe for the block: copied to where they went, and kept."""
    captured = CapturedOutput()
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    reader = threading.Thread(target=_copy_and_keep, args=(read_end, saved_out, captured), daemon=True)
    reader.start()
    # Python's own streams onto the descriptors too, whatever they were made to point at before.
    streams = sys.stdout, sys.stderr
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    try:
        yield captured
    finally:
        sys.stdout.close()
        sys.stderr.close()
        sys.stdout, sys.stderr = streams
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        reader.join(_READER_WAIT)
        if not reader.is_alive():  # else it still copies to saved_out: its number must not be reused
            os.close(saved_out)
        os.close(saved_err)


def _copy_and_keep(read_end: int, console: int, captured: CapturedOutput) -> None:
    pending = b""
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            written = 0
            while written < len(chunk):
                written += os.write(console, chunk[written:])
            *complete, pending = (pending + chunk).split(b"\n")
            now = int(time.time() * 1000)
            captured.lines.extend((now, line.decode(errors="replace")) for line in complete)
    if pending:
        captured.lines.append((int(time.time() * 1000), pending.decode(errors="replace")))


def ship_output(captured: CapturedOutput, log_group: str, stream: str, region: str | None) -> str | None:
    """Send the kept lines to a new stream of `log_group`; returns why it could not, or None."""
    client = boto3.client("logs", region_name=region)
    try:
        client.create_log_stream(logGroupName=log_group, logStreamName=stream)
        for batch in _batches([(at, line or " ") for at, line in captured.lines.copy()]):
            client.put_log_events(logGroupName=log_group, logStreamName=stream, logEvents=batch)
    except (BotoCoreError, ClientError) as error:
        return f"could not send this run's output to CloudWatch Logs group {log_group}: {error}"
    return None


def _batches(lines: list[tuple[int, str]]) -> Iterator[list[dict[str, object]]]:
    batch: list[dict[str, object]] = []
    size = 0
    for at, line in lines:
        message = line.encode()[:MAX_EVENT_BYTES].decode(errors="ignore")
        event_size = len(message.encode()) + EVENT_OVERHEAD
        if batch and (size + event_size > MAX_BATCH_BYTES or len(batch) == MAX_BATCH_EVENTS):
            yield batch
            batch, size = [], 0
        batch.append({"timestamp": at, "message": message})
        size += event_size
    if batch:
        yield batch
