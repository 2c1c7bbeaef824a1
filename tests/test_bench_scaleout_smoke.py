"""The scale-out benchmark still runs (a short run at small sizes; figures not asserted)."""

from __future__ import annotations

import pytest

from .redis_support import require_redis
from .store_support import require_postgres
from .test_bench_smoke import run_bench

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]


def test_scaleout_bench_runs() -> None:
    require_redis()
    require_postgres()
    args = ["--commands", "20", "--kills", "1", "--creatures", "500", "--ticks", "2"]
    args += ["--read-creatures", "500", "--read-seconds", "1", "--read-clients", "4"]
    args += ["--read-rounds", "1", "--read-procs", "1", "--read-lead", "1"]
    out = run_bench("scaleout.py", *args)
    assert "## Command acknowledgement" in out and "## Failover after kill -9" in out
    assert "## Feed cost per tick" in out and "shuffled + zlib" in out
    assert "## Read throughput" in out and "| R2 | Redis mode" in out and "## On paper" in out


def test_placement_bench_runs() -> None:
    require_redis()
    require_postgres()
    out = run_bench("scaleout_placement.py", "--worlds", "5")
    for event in ("| join (graceful", "| leave: SIGTERM", "| join again", "| kill -9"):
        assert event in out, out
