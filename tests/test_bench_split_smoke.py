"""bench/runner_split.py still runs: five real gunicorn servers in its --quick form (a small
world, short windows). The figures are not asserted, only that the table has every row, with
the header that says what produced it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .support import ROOT, child_env

pytestmark = pytest.mark.slow


def test_runner_split_bench_runs_and_prints_its_table() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "runner_split.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=180,
        env=child_env(),
        check=True,
    ).stdout
    assert "Command: `python bench/runner_split.py --quick`" in out
    assert "| measure | goal | A | B | C |" in out
    for row in ("reader p99 ticking / paused", "4 snapshot pollers: tick rate", "ack p99 ms"):
        assert f"| {row}" in out
    assert "C vs B throughput (2 web workers vs 1)" in out
    assert "| players joined | 20 |" in out
