"""Running PostgreSQL's client tools (pg_dump, pg_restore) with errors that withhold row data."""

import subprocess

from refresh_pipeline.errors import RefreshError
from refresh_pipeline.row_data_in_errors import withhold_row_data


def run_client_tool(args: list[str], env: dict[str, str], what: str) -> str:
    """Run pg_dump or pg_restore; returns what it printed, or raises with its error output (rows withheld)."""
    result = subprocess.run(args, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        # Withheld before the tail is cut, so no value is cut in half and then missed.
        output = withhold_row_data(result.stderr.strip())[-2000:]
        raise RefreshError(f"{what} failed (exit {result.returncode}, row values withheld): {output}")
    return result.stdout
