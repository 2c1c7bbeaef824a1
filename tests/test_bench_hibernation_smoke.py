"""bench/hibernation.py still runs (a few worlds, a few wakes; figures not asserted)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .support import ROOT, child_env

pytestmark = pytest.mark.slow


def test_hibernation_bench_runs_and_prints_its_tables() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "hibernation.py"),
            "--worlds",
            "6",
            "--sleep",
            "5",
            "--wakes",
            "3",
            "--wake-creatures",
            "200",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=child_env(),
        check=True,
    ).stdout
    assert "Command: `python bench/hibernation.py" in out and "Machine: " in out
    assert "| 5 asleep, 1 awake |" in out
    [row] = [line for line in out.splitlines() if line.startswith("| sleeping world")]
    assert row.split("|")[2].strip() == "3"  # three wakes timed
