"""Jobs keep their once-per-slot guarantee across a failover in the Redis mode (issue 14, part
5): two real gunicorn servers on one Drift world (local Redis + PostgreSQL), with a world job on
the tick clock, a world job on the wall clock (every 0.5 s, misfire ``run_late``) and a
background job on the tick clock (tests/jobs_durability_app.py). The worker that runs the world
is killed with -9 mid-run; the other server's worker takes over from snapshot + journal. Then,
from the journal in PostgreSQL:

- every tick-job slot ran exactly once, each in the step after its slot, none missed;
- every wall-clock slot from the first to the last ran exactly once: the slots that fell while
  no one owned the world ran late, after the takeover (``run_late``), none twice;
- every background run (its log line in the server's instance folder) had a journaled claim,
  and no slot ran twice (at most once: a claim whose run died with the owner stays claimed);
- an independent replay of the whole journal (job commands included) reproduces every hash.

The single-server version of these oracles is tests/test_jobs_durability.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.durability_app import Drift
from tests.jobs_durability_app import CENSUS_EVERY, DAMP_EVERY, JOBS
from tests.redis_support import REDIS_URL, scaleout_env
from tests.scaleout_oracles import check_journal
from tests.store_support import PG_URL
from tests.support import (
    Server,
    free_port,
    gunicorn_argv,
    running_server,
    wait_for,
)
from tests.test_scaleout_gunicorn import epoch_now, owner_pid
from worldloop.durability import replay
from worldloop.jobs import JobScheduler, load_config_jobs
from worldloop.store.sql import SqlStore

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

TTL, POLL = 1.5, 0.2
RECOVERY_BOUND = 6.0
"""Seconds for recovery and the first ticks on a loaded 2-core machine (a tiny world)."""
WALL_EVERY = 0.5
WALL_JOBS: list[dict[str, Any]] = [
    *JOBS,
    {
        "name": "tidy",
        "func": "tests.jobs_durability_app:damp",
        "kind": "world",
        "every": WALL_EVERY,
        "misfire": "run_late",
    },
]


def ran_slots(records: list[tuple[int, dict[str, Any]]], name: str) -> Counter[float]:
    return Counter(
        float(r["payload"]["slot"]) for _, r in records if r["type"] == f"job:{name}" and r["ok"]
    )


def test_jobs_run_once_per_slot_across_a_kill_of_the_owner(
    tmp_path: Path, prefix: str, schema: str
) -> None:
    env = scaleout_env(prefix, schema, ttl=TTL, poll=POLL, WORLDLOOP_JOBS=json.dumps(WALL_JOBS))
    argv = gunicorn_argv(
        "-w", "1", "-k", "gthread", "--threads", "4", app="tests.durability_app:create_app()"
    )
    client = redis.Redis.from_url(REDIS_URL)
    for name in ("a", "b"):
        (tmp_path / name / "instance").mkdir(parents=True)  # where census.log goes

    def tick(*servers: Server) -> int:
        """The newest tick any of ``servers`` serves (-1: none answers, a worker restarting)."""
        ticks = [-1]
        for srv in servers:
            with contextlib.suppress(OSError):
                status, _, world = srv.get("/api/v1/world", timeout=5)
                ticks.append(int(world["tick"]) if status == 200 else -1)
        return max(ticks)

    with (
        running_server(argv, tmp_path / "a", env=env, name="a", port=free_port()) as a,
        running_server(argv, tmp_path / "b", env=env, name="b", port=free_port()) as b,
    ):
        pid = wait_for(lambda: owner_pid(client, prefix), 15, 0.05, "a runner")
        # mid-run: several slots of every job done, and the kill off any slot boundary
        wait_for(lambda: tick(a, b) >= 3 * CENSUS_EVERY + 3, 15, 0.05, "a few job slots")
        before, killed_at = epoch_now(schema), time.time()
        os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: epoch_now(schema) > before, TTL + POLL + RECOVERY_BOUND, 0.02, "a takeover"
        )
        taken_at = time.time()
        new_pid = owner_pid(client, prefix)
        assert new_pid is not None and new_pid != pid
        resumed = tick(a, b)
        # after it: more slots of every job, wall-clock ones on time again
        wait_for(lambda: tick(a, b) >= resumed + 3 * CENSUS_EVERY, 15, 0.05, "ticks after it")
        wait_for(lambda: time.time() > taken_at + 4 * WALL_EVERY, 5, 0.05, "wall-clock slots")
        assert "gives the world up" not in a.log + b.log
    down = taken_at - killed_at
    print(f"kill -9 of the owner: taken over after {down:.2f} s")

    head = check_journal(schema, [])
    store = SqlStore(PG_URL, schema=schema, readonly=True)
    try:
        assert store.snapshots("drift")[0].tick == 0  # the whole journal, from the start
        rec = store.load("drift", snapshot_tick=0)
    finally:
        store.close()
    world = Drift(8, 7)
    jobs = JobScheduler()
    for spec in load_config_jobs(WALL_JOBS):
        jobs.add(spec)
    jobs.bind(world)  # the replaying world knows the job commands, like the servers'
    result = replay(world, rec)
    assert result.tick == head and result.hashes_checked >= result.ticks

    records = [(t, r) for t, rs in rec.commands.items() for r in rs]
    for name, every in (("damp", DAMP_EVERY), ("census", CENSUS_EVERY)):
        ran = ran_slots(records, name)
        assert max(ran.values()) == 1, f"a {name} slot ran twice: {ran.most_common(3)}"
        # slot s is taken in the step that makes tick s + 1: every slot before the end, once
        assert set(ran) == {float(s) for s in range(0, head, every)}, name
        for t, r in records:
            if r["type"] == f"job:{name}" and r["ok"]:
                assert t == int(r["payload"]["slot"]) + 1

    tidy = ran_slots(records, "tidy")
    assert max(tidy.values()) == 1, f"a wall-clock slot ran twice: {tidy.most_common(3)}"
    slots = sorted(tidy)
    steps = round((slots[-1] - slots[0]) / WALL_EVERY)
    expected = [slots[0] + k * WALL_EVERY for k in range(steps + 1)]  # exact: halves of seconds
    assert slots == expected, "a wall-clock slot was missed"
    missed = [s for s in slots if killed_at < s < taken_at - WALL_EVERY]
    assert missed, "no wall-clock slot fell while the world had no owner"
    assert slots[-1] > taken_at + WALL_EVERY, "the wall-clock job did not go on after it"
    assert world.job_slots["tidy"] == slots[-1]

    lines: list[str] = []
    for name in ("a", "b"):
        log = tmp_path / name / "instance" / "census.log"
        lines += log.read_text().split() if log.exists() else []
    runs = Counter(float(s) for s in lines[0::3])
    assert runs, "the background job never ran"
    assert max(runs.values()) == 1, "a background slot ran twice"
    assert set(runs) <= set(ran_slots(records, "census"))  # never ran without a durable claim
    assert len(set(lines[2::3])) >= 2  # runs happened in the killed owner and in the new one
