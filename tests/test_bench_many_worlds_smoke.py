"""bench/many_worlds.py still runs (two small sizes, a short window; figures not asserted)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .support import ROOT, child_env

pytestmark = pytest.mark.slow


def test_many_worlds_bench_runs_and_prints_its_table() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "many_worlds.py"),
            *("--worlds", "1,3", "--baseline-worlds", "2", "--journal-worlds", "2"),
            *("--scheduler-tickers", "3", "--loop-threads", "2", "--seconds", "0.5"),
            *("--repeat", "1"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
        check=True,
    ).stdout
    assert "Command: `python bench/many_worlds.py" in out and "Machine: " in out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")]
    shown = [(cells[0].strip(), cells[1].strip()) for cells in rows if cells[1].strip().isdigit()]
    assert shown == [
        ("thread per world", "2"),
        ("pool of 2", "1"),
        ("pool of 2", "3"),
        ("pool of 2, SQLite journal", "2"),
        ("thread per ticker", "3"),
        ("pool of 2", "3"),
    ]
