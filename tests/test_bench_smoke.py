"""The benchmark scripts still run (short runs at small sizes; the figures are not asserted,
only that each prints its table, with the header that says what produced it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .support import ROOT, child_env

pytestmark = pytest.mark.slow


def run_bench(script: str, *args: str, timeout: float = 300) -> str:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
        check=True,
    ).stdout
    assert f"Command: `python bench/{script}" in out
    assert "Machine: " in out and "NumPy " in out
    return out


def test_jitter_bench_runs_and_prints_its_table():
    out = run_bench("jitter.py", "--seconds", "0.5", "--rates", "20")
    assert "| naive re-armed Timer | 20 |" in out
    assert "| worldloop Ticker | 20 |" in out


def test_meadow_tick_bench_compares_implementations_with_equal_hashes(tmp_path: Path):
    out = run_bench(
        "meadow_tick.py",
        *("--sizes", "1000", "--players", "5", "--ticks", "3", "--warmup", "1"),
        *("--naive-size", "1000", "--live-seconds", "0.3"),
        *("--impl-sizes", "2000", "--impl-ticks", "3", "--impl-warmup", "1"),
        *("--out", str(tmp_path / "t.md")),
    )
    assert "| 2,000 | NumPy as it was (baseline) |" in out
    assert "| 2,000 | NumPy kernels (default) |" in out
    assert "one tick each in turn" in out and "blocks of 10 consecutive ticks" in out
    assert "deaths / births per tick" in out  # measured on a settled meadow
    assert "DIFFERENT" not in out  # the script also exits non-zero then


def test_recovery_bench_restarts_a_killed_world(tmp_path: Path):
    out = run_bench(
        "recovery.py",
        *("--creatures", "2000", "--cases", "old,default", "--repeat", "1", "--load-seconds", "1"),
        *("--out", str(tmp_path / "r.md")),
    )
    rows = [line for line in out.splitlines() if line.startswith(("| every", "| default"))]
    table, timeline = rows[:2], rows[2:]
    assert len(table) == 2 and all(line.endswith("| yes |") for line in table)
    assert "| baseline: a trivial Flask app" in out
    assert len(timeline) == 2 and not any("?" in line for line in timeline), out
    # the restart under load: its run listed, nothing acknowledged lost, no duplicate
    assert len([line for line in out.splitlines() if line.startswith("| median |")]) == 1, out
    assert "Every run: acknowledged commands lost 0, duplicates none" in out, out


def test_durability_bench_runs(tmp_path: Path):
    out = run_bench(
        "durability.py",
        *("--creatures", "1000", "--ticks", "30", "--journal-ticks", "10", "--commands", "2"),
        *("--pg", "postgresql+psycopg://nobody@127.0.0.1:1/none", "--out", str(tmp_path / "d.md")),
    )
    assert "| SQLite (WAL, synchronous=FULL) |" in out and "| True |" in out


def test_group_commit_bench_runs(tmp_path: Path):
    out = run_bench(
        "group_commit.py",
        *("--worlds", "3", "--seconds", "0.5", "--warmup", "0.3"),
        *("--out", str(tmp_path / "g.md")),
    )
    assert "| one transaction per world (baseline) |" in out and "| group commit |" in out
    assert (tmp_path / "g.md").read_text() == out


def test_observe_and_jobs_benches_run(tmp_path: Path):
    out = run_bench(
        "observe.py",
        *("--creatures", "1000", "--ticks", "5", "--rounds", "1", "--out", str(tmp_path / "o.md")),
    )
    assert "## Metrics listener vs the tick" in out
    out = run_bench("jobs_overhead.py", "--ticks", "20", "--rounds", "1", "--jobs", "3")
    assert "| no jobs (baseline) |" in out


def test_frames_binary_bench_compares_json_binary_and_deltas(tmp_path: Path):
    pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium (make browser)")
    out = run_bench(
        "frames_binary.py",
        *("--sizes", "300", "--ticks", "5", "--rounds", "2", "--out", str(tmp_path / "f.md")),
    )
    assert "| 300 | " in out and "## Bytes per viewer per second" in out


def test_ratelimit_bench_compares_memory_and_redis_limiters(tmp_path: Path):
    from tests.redis_support import REDIS_URL, require_redis

    require_redis()
    out = run_bench(
        "ratelimit.py",
        *("--hits", "200", "--keys", "20", "--threads", "2", "--redis", REDIS_URL),
        *("--out", str(tmp_path / "r.md")),
    )
    assert "| in-process token bucket (`memory://`, baseline) | 2 |" in out
    assert "| Redis token bucket (`redis://`, one Lua script) | 2 |" in out
    assert "fail open, within the backoff | 1 |" in out


def test_readpath_bench_compares_the_hot_reads_with_the_trivial_app(tmp_path: Path):
    out = run_bench(
        "readpath.py",
        *(
            "--creatures",
            "500",
            "--rounds",
            "2",
            "--requests",
            "20",
            "--out",
            str(tmp_path / "r.md"),
        ),
    )
    assert "| trivial Flask GET /api/v1/world (baseline) | " in out
    for read in ("/api/v1/world", "/api/v1/world/snapshot", "/api/v1/entities?limit=50"):
        assert f"| GET {read} | " in out
    assert "(RemoteRuntime;" in out  # a web worker of the split, the world in its runner
    assert (tmp_path / "r.md").read_text() == out


def test_runner_prio_bench_compares_nice_values():
    out = run_bench("runner_prio.py", "--quick", "--nice", "0,10")
    assert "| measure | goal | r1 nice 0 | r1 nice 10 |" in out
    assert "| 10 |" in out  # the median row of the variant
