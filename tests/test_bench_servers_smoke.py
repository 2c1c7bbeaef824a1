"""The benchmarks that start real servers still run (short runs at small sizes; the figures are
not asserted, only that each prints its table with the header that says what produced it):
deploy sizing, players, the runner split and the Celery offload. Together with the other
``test_bench_*smoke`` modules, every benchmark of ``bench/run_all.py`` is kept runnable."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_bench_smoke import run_bench
from tests.test_offload_celery import AMQP, require_broker

pytestmark = pytest.mark.slow


def test_deploy_sizing_bench_runs() -> None:
    out = run_bench("deploy_sizing.py", "--creatures", "2000", "--viewers", "2", "--settle", "1")
    assert "|" in out


def test_players_bench_runs() -> None:
    out = run_bench("players.py", "--players", "2", "--seconds", "1", "--rate", "5")
    assert "|" in out


def test_runner_split_bench_runs() -> None:
    out = run_bench("runner_split.py", "--quick", timeout=600)
    assert "| measure | goal |" in out and "C vs B throughput" in out


def test_celery_offload_bench_runs() -> None:
    require_broker(AMQP)
    out = run_bench("celery_offload.py", "--seconds", "2", "--forecast-ticks", "50")
    assert "|" in out


def test_gateway_bench_runs(tmp_path: Path) -> None:
    out = run_bench(
        "gateway.py",
        *("--viewers", "20", "--seconds", "2", "--players", "5", "--entities", "2000"),
        *("--client-procs", "1", "--out", str(tmp_path / "gateway.md")),
        timeout=600,
    )
    assert "frames delivered" in out and "ack p50" in out
    assert "via gateway, all players in step: ack p50" in out  # the worst case too
