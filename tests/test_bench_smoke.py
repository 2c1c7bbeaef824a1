"""The benchmark scripts still run (a short run; the figures themselves are not asserted)."""

from __future__ import annotations

import subprocess
import sys

from .support import ROOT, child_env


def test_jitter_bench_runs_and_prints_its_table():
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "jitter.py"), "--seconds", "0.5", "--rates", "20"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        check=True,
    ).stdout
    assert "| naive re-armed Timer | 20 |" in out
    assert "| worldloop Ticker | 20 |" in out
