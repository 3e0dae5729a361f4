"""Running PostgreSQL's client tools (pg_dump, pg_restore) with errors that withhold row data."""

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from refresh_pipeline.errors import RefreshError
from refresh_pipeline.row_data_in_errors import withhold_row_data

# What the tools print about a failure; their other lines under --verbose are progress.
_FAILURE_LEVELS = ("error:", "warning:", "detail:", "hint:")


def run_client_tool(
    args: list[str], env: dict[str, str], what: str, on_progress: Callable[[str], None] | None = None
) -> str:
    """Run pg_dump or pg_restore; returns what it printed, or raises with its error output (rows withheld).
    With `on_progress` the tool runs --verbose and each line it prints goes there as it is printed (its
    standard output, which nothing then needs, is not kept)."""
    if on_progress is None:
        result = subprocess.run(args, env=env, capture_output=True, text=True, errors="replace")
        returncode, errors, output = result.returncode, result.stderr, result.stdout
    else:
        returncode, errors = _run_verbose(args, env, on_progress)
        output = ""
    if returncode != 0:
        # Withheld before the tail is cut, so no value is cut in half and then missed.
        errors = withhold_row_data(errors.strip())[-2000:]
        raise RefreshError(f"{what} failed (exit {returncode}, row values withheld): {errors}")
    return output


def _run_verbose(args: list[str], env: dict[str, str], on_progress: Callable[[str], None]) -> tuple[int, str]:
    prefix = f"{Path(args[0]).name}: "
    # Parallel jobs write the prefix and the message apart, so that two can pile up on one line ("pg_dump:
    # pg_dump: dumping contents of ...") and the other job's message stand alone on the next.
    prefixes = re.compile(f"^(?:{re.escape(prefix)})+")
    kept: list[str] = []
    process = subprocess.Popen(
        [args[0], "--verbose", *args[1:]],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    assert process.stderr is not None
    try:
        for line in process.stderr:
            line = line.rstrip("\n")
            on_progress(line)
            message = prefixes.sub("", line)
            if message == line:  # a line continuing a failure ("Command was: ..."), or a job's message
                kept.append(line)
            elif message.startswith(_FAILURE_LEVELS):
                kept.append(prefix + message)
    except BaseException:  # the step was stopped, or logging failed: the tool must not run on unwatched
        process.kill()
        raise
    finally:
        process.stderr.close()
        returncode = process.wait()
    return returncode, "\n".join(kept)
