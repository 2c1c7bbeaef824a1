"""bench/shutdown.py still runs (a small world; the figures themselves are not asserted)."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT, child_env


def test_shutdown_bench_runs_and_prints_its_table() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "shutdown.py"),
            "--creatures",
            "2000",
            "--ticks",
            "3",
            "--repeat",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
        check=True,
    ).stdout
    assert "| no store (baseline) |" in out
    assert "| SQLite (WAL, synchronous=FULL) |" in out and "| 1/1 |" in out
