"""Scheduled background jobs on real Celery workers (``on="celery"``): a real RabbitMQ, a real
``celery worker`` process, and exactly once per slot under kill -9 of the worker and the server.

Evidence is taken from three places: the marker file the job writes on the worker (which slots
really ran, in which process), the journal (each slot's completion record applied once), and a
replay of the journal into a fresh world (the same state hash). Under CI=true a missing broker
fails the tests; elsewhere they skip.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.offload_app import Asker, census
from tests.support import Server, wait_for
from tests.test_offload_celery import (
    AMQP,
    OnTime,
    broker_env,
    in_process_app,
    require_broker,
    start_server,
    start_worker,
)
from worldloop.durability import replay
from worldloop.jobs import JobScheduler
from worldloop.outbox import TASK_RESULT
from worldloop.store import open_store

pytestmark = pytest.mark.slow

EVERY = 10
"""Ticks between the job's slots (half a second at 20 Hz)."""


@pytest.fixture
def workers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for w in started:
        w.stop()


def job_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The broker, and the job, for the worker and the servers alike."""
    marker = tmp_path / "census"
    return {
        **broker_env(AMQP, "rpc://"),
        "OFFLOAD_JOB_EVERY": str(EVERY),
        "OFFLOAD_JOB_MARKER": str(marker),
        **extra,
    }


def ran(env: dict[str, str]) -> list[tuple[float, str]]:
    """(slot, pid) of every run that started on a worker."""
    path = Path(env["OFFLOAD_JOB_MARKER"])
    if not path.exists():
        return []
    return [(float(s), pid) for s, pid in (line.split() for line in path.read_text().splitlines())]


def job_id(world: Asker, slot: float) -> str:
    return f"asker.{world.outbox.nonce}.census@{int(slot)}"


def replay_journal(url: str) -> tuple[Asker, int, str, Counter[str]]:
    """Replay the whole journal into a fresh world that knows the job; also count, by task id,
    the completion records that were applied."""
    copy = Asker()
    jobs = JobScheduler()
    jobs.job("census", every_ticks=EVERY, on="celery")(census)
    jobs.bind(copy)
    store = open_store(url, readonly=True)
    try:
        rec = store.load("asker", snapshot_tick=0)
    finally:
        store.close()
    result = replay(copy, rec)
    applied: Counter[str] = Counter(
        r["result"]["task_id"]
        for records in rec.commands.values()
        for r in records
        if r["type"] == TASK_RESULT and r["ok"] and r["result"]["applied"]
    )
    return copy, result.tick, result.state_hash, applied


def stop_and_check(app: Flask, tmp_path: Path) -> tuple[Asker, Counter[str]]:
    """Stop the world; replay reproduces its hash; no completion was applied twice."""
    state = app.extensions["worldloop"]
    assert state.stop()
    world = state.runtime.world
    copy, tick, digest, applied = replay_journal(f"sqlite:///{tmp_path / 'world.db'}")
    assert (tick, digest) == (world.tick, world.state_hash())
    assert applied and max(applied.values()) == 1, applied
    return copy, applied


def job_status(app: Flask) -> dict[str, Any]:
    status: dict[str, Any] = app.extensions["worldloop"].jobs.status("census")
    return status


def test_a_scheduled_job_on_celery_runs_once_per_slot(
    tmp_path: Path, workers: list[Server]
) -> None:
    require_broker(AMQP)
    env = job_env(tmp_path)
    workers.append(start_worker(tmp_path, env, "worker"))
    app = in_process_app(tmp_path, env, OFFLOAD_JOB_EVERY=EVERY)
    world = app.extensions["worldloop"].runtime.world
    on_time = OnTime(app)
    try:
        wait_for(lambda: job_status(app)["runs"] >= 3, 30, what="three slots run on celery")
        status = job_status(app)
        assert status["on"] == "celery" and status["errors"] == 0
        assert status["last_result"]["status"] == "ok"
        assert status["last_result"]["value"]["app"] == "offload_app"  # in the app context
        on_time.check()
    finally:
        copy, applied = stop_and_check(app, tmp_path)
    slots = [slot for slot, _ in ran(env)]
    assert len(slots) == len(set(slots)) >= 3  # no slot ran twice
    assert {job_id(world, s) for s in slots} >= set(applied)
    assert all(s % EVERY == 0 for s in slots)
    assert f"Task worldloop.job.census[{job_id(world, slots[0])}] succeeded" in workers[0].log
    assert copy.applied == 0  # job outcomes close slots; they never reach on_task_result


def test_worker_killed_mid_run_the_slot_is_redelivered_and_closed_once(
    tmp_path: Path, workers: list[Server]
) -> None:
    require_broker(AMQP)
    env = job_env(tmp_path, OFFLOAD_JOB_SLEEP="60")
    workers.append(start_worker(tmp_path, env, "worker-1"))
    app = in_process_app(tmp_path, env, OFFLOAD_JOB_EVERY=EVERY)
    rt = app.extensions["worldloop"].runtime
    on_time = OnTime(app)
    try:
        wait_for(lambda: ran(env), 30, what="the first run to start")
        [(slot, pid1)] = ran(env)
        first = job_id(rt.world, slot)
        workers[0].signal_group(signal.SIGKILL)
        workers[0].proc.wait(10)
        tick = rt.tick
        wait_for(lambda: rt.tick >= tick + 3 * EVERY, 10, what="three slots' worth of ticks")
        assert rt.call(lambda: sorted(rt.world.outbox.pending)).result(5) == [first]
        assert job_status(app)["running"] == 1  # busy with the lost run: no new slot claimed
        workers.append(start_worker(tmp_path, env, "worker-2"))  # acks_late: redelivered
        wait_for(lambda: job_status(app)["runs"] >= 2, 30, what="the redelivered run, then more")
        runs = ran(env)
        assert [p for s, p in runs if s == slot] == [pid1, runs[1][1]] and runs[1][1] != pid1
        on_time.check()
    finally:
        _, applied = stop_and_check(app, tmp_path)
    assert applied[first] == 1


def test_server_killed_after_the_slot_is_durable_sends_it_after_recovery(
    tmp_path: Path, workers: list[Server]
) -> None:
    require_broker(AMQP)
    env = job_env(tmp_path)
    url = f"sqlite:///{tmp_path / 'world.db'}"
    server_env = {
        "PYTHONPATH": env["PYTHONPATH"],
        "WORLDLOOP_INSTANCE_PATH": str(tmp_path / "instance"),
        "WORLDLOOP_STORE_URL": url,
        "WORLDLOOP_RATE_HZ": "20",
        "WORLDLOOP_HASH_EVERY": "5",
        "OFFLOAD_JOB_EVERY": str(EVERY),
    }
    # No broker configured: the slot's run becomes durable and is never sent; then kill -9.
    srv = start_server(tmp_path, server_env, "server-1.log")
    try:
        wait_for(lambda: srv.get("/test/state")[2]["pending"], 30, what="a durable slot")
        state = srv.get("/test/state")[2]
        [first] = state["pending"]
        srv.signal_group(signal.SIGKILL)
        srv.proc.wait(10)
    finally:
        srv.stop()
    assert not ran(env)
    slot = state["job_slots"]["census"]
    assert first.endswith(f".census@{int(slot)}")

    workers.append(start_worker(tmp_path, env, "worker"))
    srv = start_server(tmp_path, {**server_env, **env}, "server-2.log")
    try:
        wait_for(
            lambda: first not in srv.get("/test/state")[2]["pending"], 30, what="the resent run"
        )
        assert "recovered at tick" in srv.log
    finally:
        srv.stop()
    assert [s for s, _ in ran(env)].count(slot) == 1  # sent once after recovery, run once

    final = start_server(tmp_path, {**server_env, "WORLDLOOP_START_PAUSED": "true"}, "final.log")
    try:
        state = final.get("/test/state")[2]
    finally:
        final.stop()
    _, tick, digest, applied = replay_journal(url)
    assert (tick, digest) == (state["tick"], state["hash"])
    assert applied[first] == 1 and max(applied.values()) == 1
