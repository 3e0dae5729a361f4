"""The benchmark script is not run here (it is not part of the test suite), but it must start on a clean
checkout: its imports resolve in the project's environment and bad arguments are refused before any work."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "bench" / "run.py"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--clone-runs", "0"], "--clone-runs must be at least 1"),
        (["--scale", "0"], "--scale must be above 0"),
        (["--parallelism", "0"], "--parallelism must be at least 1"),
    ],
)
def test_the_benchmark_starts_and_refuses_bad_arguments_before_any_work(arguments: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, str(BENCH), *arguments], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "generating demo production" not in result.stdout


def test_the_scrub_benchmark_refuses_bad_arguments_before_starting_a_server() -> None:
    script = BENCH.with_name("scrub_sizes.py")
    result = subprocess.run([sys.executable, str(script), "--lines", "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--lines must each be at least 1" in result.stderr
