"""Scheduled jobs survive kill -9 exactly: world jobs replay, no slot runs twice, nothing lost.

A real server (tests/durability_app.py) runs the Drift world with a world job every 5 ticks and
a background job every 7 ticks (tests/jobs_durability_app.py) under command load, and is killed
with SIGKILL a few times. At the end the restarted world's hash equals an independent replay of
the whole journal (job commands included), every world-job and claim slot appears exactly once,
every background run that happened had a durable claim and ran at most once, and every
acknowledged command is in the journal.
"""

from __future__ import annotations

import json
import random
import signal
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.durability_app import Drift
from tests.jobs_durability_app import CENSUS_EVERY, DAMP_EVERY, JOBS
from tests.store_support import PG_URL, drop_pg_schema, require_postgres
from tests.support import wait_for
from tests.test_durability import Load, server_env, start_server
from worldloop.durability import replay
from worldloop.jobs import JobScheduler, load_config_jobs
from worldloop.store import SqlStore

pytestmark = pytest.mark.slow

ROUNDS = 5


def test_jobs_under_load_survive_kill9_exactly_sqlite(tmp_path: Path) -> None:
    jobs_kill_cycles(tmp_path, f"sqlite:///{tmp_path / 'instance' / 'worldloop.db'}", None)


@pytest.mark.postgres
def test_jobs_under_load_survive_kill9_exactly_postgres(tmp_path: Path) -> None:
    require_postgres()
    schema = f"wl_test_{uuid.uuid4().hex[:12]}"
    try:
        jobs_kill_cycles(tmp_path, PG_URL, schema)
    finally:
        drop_pg_schema(schema)


def jobs_kill_cycles(tmp_path: Path, url: str, schema: str | None) -> None:
    env = server_env(tmp_path, url, schema, WORLDLOOP_JOBS=json.dumps(JOBS))
    rng = random.Random(31)
    acked: dict[str, tuple[int, dict[str, Any], str]] = {}
    for n in range(ROUNDS):
        srv = start_server(tmp_path, env, f"server-{n}")
        try:
            start_tick = srv.get("/api/v1/world")[2]["tick"]
            with Load(srv, seed=100 + n) as load:
                target = rng.randint(20, 60)
                ticks = start_tick + rng.randint(30, 70)  # a random moment, census runs included
                wait_for(lambda: load.count() >= target, 30, what=f"{target} acks")  # noqa: B023
                wait_for(lambda: srv.get("/api/v1/world")[2]["tick"] >= ticks, 30)  # noqa: B023
                srv.signal_group(signal.SIGKILL)
                srv.proc.wait(10)
            assert srv.proc.returncode == -signal.SIGKILL
            acked.update(load.acked)
        finally:
            srv.stop()

    final = start_server(tmp_path, {**env, "WORLDLOOP_START_PAUSED": "true"}, "server-final")
    try:
        status, _, state = final.get("/test/state")
        assert status == 200, state
    finally:
        final.stop()
    assert "recovered at tick" in final.log

    store = SqlStore(url, schema=schema, readonly=True)
    try:
        rec = store.load("drift", snapshot_tick=0)
    finally:
        store.close()
    world = Drift()
    jobs = JobScheduler()
    for spec in load_config_jobs(JOBS):
        jobs.add(spec)
    jobs.bind(world)  # the replaying world knows the job commands, like the server's
    result = replay(world, rec)
    # the final server stopped without ticking; its SIGTERM snapshot is of the same tick
    assert result.tick == state["tick"]
    assert result.state_hash == state["hash"]

    records = [(t, r) for t, rs in rec.commands.items() for r in rs]
    final_tick = result.tick
    for name, every in (("damp", DAMP_EVERY), ("census", CENSUS_EVERY)):
        ran = Counter(
            r["payload"]["slot"] for _, r in records if r["type"] == f"job:{name}" and r["ok"]
        )
        assert max(ran.values()) == 1, f"a {name} slot ran twice: {ran.most_common(3)}"
        # slot s is taken in the step that makes tick s + 1: every slot before the end, once
        assert set(ran) == {float(s) for s in range(0, final_tick, every)}, name
        assert world.job_slots[name] == max(ran)
        for t, r in records:
            if r["type"] == f"job:{name}" and r["ok"]:
                slot = int(r["payload"]["slot"])
                if name == "damp":  # a world job is never busy: claimed when due
                    assert t == slot + 1, (name, slot, t)
                else:  # a background job's claim waits while max_concurrent runs are busy,
                    # never past the next slot (from there on it would coalesce to that one)
                    assert slot + 1 <= t <= slot + every, (name, slot, t)

    lines = (tmp_path / "instance" / "census.log").read_text().split()
    census_runs = Counter(float(s) for s in lines[0::3])
    assert census_runs, "the background job never ran"
    assert max(census_runs.values()) == 1, "a background slot ran twice"
    claimed = {r["payload"]["slot"] for _, r in records if r["type"] == "job:census" and r["ok"]}
    assert set(census_runs) <= claimed  # never ran without a durable claim
    assert len(set(lines[2::3])) >= 2  # runs happened in several of the killed servers

    journal = {r["id"]: (t, r) for t, r in records}
    assert acked
    for cid, (acked_tick, payload, outcome) in acked.items():
        assert cid in journal, f"acknowledged command {cid} (tick {acked_tick}) was lost"
        jtick, record = journal[cid]
        assert jtick == acked_tick and record["payload"] == payload
        assert record["ok"] == (outcome == "applied")
