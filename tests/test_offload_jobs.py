"""Scheduled background jobs on the offload path (``on="celery"``), without a broker: the
in-process sender stands in for Celery, the runtime is paused and stepped by hand.

What is checked: each slot's run is a task request with a deterministic id (world, nonce, job,
slot), sent once durable, closed by its result (the completion record) exactly once; a restart
sends a pending slot again and claims no new slot meanwhile; a result refused by a full command
queue is offered again until it is taken; each new world draws its own nonce; replaying the
journal reproduces the state hash without running a job.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.offload_app import Asker
from tests.support import wait_for
from worldloop import JobContext, JobScheduler, WorldRuntime
from worldloop.durability import replay
from worldloop.errors import ConfigError
from worldloop.jobs import make_spec, spec_from_config
from worldloop.lease import MemoryLease
from worldloop.offload import OffloadPlugin, ThreadSender
from worldloop.outbox import TASK_RESULT
from worldloop.snapshot import Snapshot
from worldloop.store import open_store

EVERY = 4


class Census:
    """A job on Celery whose runs the test holds until ``go`` is set."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.go.set()
        self.runs: list[tuple[float | None, int, Any]] = []

    def __call__(self, snapshot: Snapshot, ctx: JobContext) -> dict[str, Any]:
        assert self.go.wait(10)
        self.runs.append((ctx.slot, snapshot.tick, snapshot.summary.get("pending")))
        return {"seen_tick": snapshot.tick}


@pytest.fixture
def census() -> Iterator[Census]:
    c = Census()
    yield c
    c.go.set()


def declare(sender: ThreadSender, plugin: OffloadPlugin) -> Any:
    """What ``use_offload`` does for jobs on Celery: register the task, keep its time-out."""

    def sink(name: str, task: Any, timeout: float | None) -> None:
        sender.register(name, task)
        if timeout is not None:
            plugin.timeouts[name] = timeout

    return sink


class Rig:
    """A paused runtime on ``url`` whose scheduler has ``census`` every EVERY ticks on Celery,
    sent by an in-process sender (or by none: requests stay durable and unsent)."""

    def __init__(self, url: str, census: Census, *, sender: bool = True, **options: Any) -> None:
        self.jobs = JobScheduler()
        self.jobs.job("census", every_ticks=EVERY, on="celery", timeout=30)(census)
        self.rt = WorldRuntime(
            Asker(),
            store=open_store(url),
            lease=MemoryLease(f"asker-{uuid.uuid4().hex}"),
            start_paused=True,
            hash_every=1,
            **options,
        )
        self.jobs.attach(self.rt)
        self.plugin: OffloadPlugin | None = None
        if sender:
            threads = ThreadSender({})
            self.plugin = OffloadPlugin(threads)
            self.jobs.use_task_sink(declare(threads, self.plugin))
            self.rt.add_plugin(self.plugin)
        self.rt.start()

    def counts(self) -> dict[str, int]:
        assert self.plugin is not None
        counts: dict[str, int] = self.plugin.stats()["counts"]
        return counts


def settle(rt: WorldRuntime) -> None:
    wait_for(lambda: rt.queue_depth >= 1, 10, what="a task result queued")
    rt.step(1)


def replayed(url: str, census: Census) -> tuple[int, str]:
    """The journal from tick 0 replayed into a fresh world that knows the same job."""
    copy = Asker()
    jobs = JobScheduler()
    jobs.job("census", every_ticks=EVERY, on="celery")(census)
    jobs.bind(copy)
    result = replay(copy, open_store(url).load("asker", snapshot_tick=0))
    return result.tick, result.state_hash


@pytest.fixture
def url() -> str:
    return f"memory://offload-jobs-{uuid.uuid4().hex}"


def test_each_slot_runs_once_and_its_result_closes_it(url: str, census: Census) -> None:
    rig = Rig(url, census)
    rt = rig.rt
    try:
        nonce = rt.world.outbox.nonce
        rt.step(1)  # tick 0: slot 0 claimed; its run recorded in the outbox
        assert rt.world.job_slots == {"census": 0.0}
        [request] = rt.world.outbox.pending.values()
        assert request.id == f"asker.{nonce}.census@0" and request.task == "worldloop.job.census"
        settle(rt)
        assert not rt.world.outbox.pending
        for _ in range(2 * EVERY):
            rt.step(1)
            if rt.world.outbox.pending:
                settle(rt)
        assert [slot for slot, _, _ in census.runs] == [0.0, 4.0, 8.0]
        assert all(seen > slot for slot, seen, _ in census.runs)  # a snapshot after the claim
        assert (rig.counts()["sent"], rig.counts()["succeeded"]) == (3, 3)
        # a redelivered run's result changes nothing: its slot is closed
        ticket = rt.enqueue(
            TASK_RESULT, {"task_id": f"asker.{nonce}.census@4", "status": "succeeded"}
        )
        rt.step(1)
        assert ticket.wait(5) and ticket.outcome is not None
        assert ticket.outcome.result == {"task_id": f"asker.{nonce}.census@4", "applied": False}
        assert rt.world.applied == 0  # job results never reach the world's on_task_result
        digest, tick = rt.world.state_hash(), rt.world.tick
    finally:
        rt.stop()
    runs = len(census.runs)
    assert replayed(url, census) == (tick, digest)
    assert len(census.runs) == runs  # replay reads the journaled results, runs nothing


def test_the_job_status_shows_runs_on_celery(url: str, census: Census) -> None:
    rig = Rig(url, census)
    rt, jobs = rig.rt, rig.jobs
    try:
        census.go.clear()
        rt.step(1)
        assert jobs.status("census")["running"] == 1
        assert jobs.status("census")["on"] == "celery"
        assert rig.plugin is not None and rig.plugin.timeouts == {"worldloop.job.census": 30}
        census.go.set()
        settle(rt)
        status = jobs.status("census")
        assert status["running"] == 0 and status["runs"] == 1
        assert status["last_result"]["status"] == "ok"
        assert status["last_result"]["value"] == {"seen_tick": 1}
        assert status["last_slot"] == {"tick": 0}
        run = jobs.run_now("census")  # a manual run is a journaled claim too
        assert run["command_id"]
        rt.step(1)
        settle(rt)
        assert jobs.status("census")["runs"] == 2 and census.runs[-1][0] is None
    finally:
        rt.stop()


def test_a_restart_sends_the_pending_slot_again_and_claims_none_meanwhile(
    url: str, census: Census
) -> None:
    first = Rig(url, census, sender=False).rt  # the claim is durable; nothing sends it
    first.step(1)
    nonce = first.world.outbox.nonce
    assert list(first.world.outbox.pending) == [f"asker.{nonce}.census@0"]
    first.stop()
    assert not census.runs

    census.go.clear()
    rig = Rig(url, census)
    rt = rig.rt
    try:
        assert rt.world.outbox.nonce == nonce  # the nonce is world state: kept across restarts
        rt.step(2 * EVERY)  # the recovered request is handed over; the job is busy with it
        assert rt.world.job_slots == {"census": 0.0}
        census.go.set()
        settle(rt)
        assert [slot for slot, _, _ in census.runs] == [0.0]
        assert rig.counts() == {"resent": 1, "succeeded": 1}
        rt.step(1)  # free again: the newest slot missed meanwhile runs once (coalesce)
        assert rt.world.job_slots == {"census": 8.0}
        settle(rt)
        assert [slot for slot, _, _ in census.runs] == [0.0, 8.0]
        digest, tick = rt.world.state_hash(), rt.world.tick
    finally:
        rt.stop()
    assert replayed(url, census) == (tick, digest)


def test_a_result_refused_by_a_full_queue_is_offered_again(url: str, census: Census) -> None:
    census.go.clear()
    rig = Rig(url, census, queue_size=2)
    rt = rig.rt
    try:
        rt.step(1)
        assert rig.plugin is not None
        wait_for(lambda: rig.counts().get("sent") == 1, 5, what="the run sent")
        rt.enqueue("noop", {})
        rt.enqueue("noop", {})  # the command queue is full
        census.go.set()
        wait_for(lambda: rig.counts().get("result_retries", 0) >= 2, 10, what="offered again")
        assert rt.world.outbox.pending and rt.queue_depth == 2  # not applied, not lost
        rt.step(1)  # the queue drains; the next offer is taken
        settle(rt)
        assert not rt.world.outbox.pending and len(census.runs) == 1
        assert rig.jobs.status("census")["runs"] == 1
    finally:
        rt.stop()


def test_each_new_world_draws_its_own_nonce_and_old_states_keep_their_ids(
    census: Census,
) -> None:
    a = Rig(f"memory://nonce-{uuid.uuid4().hex}", census, sender=False).rt
    b = Rig(f"memory://nonce-{uuid.uuid4().hex}", census, sender=False).rt
    try:
        assert a.world.outbox.nonce and b.world.outbox.nonce
        assert a.world.outbox.nonce != b.world.outbox.nonce  # same name, other ids
    finally:
        a.stop()
        b.stop()
    legacy = Asker()
    legacy.restore({**Asker().full_state(), "__outbox__": '{"pending": [], "seq": 3}'})
    assert legacy.outbox.nonce is None and not legacy.outbox.begin()
    assert legacy.request_task("t.work", {}) == "asker.4"  # a state from before nonces


def test_only_background_jobs_run_on_celery() -> None:
    with pytest.raises(ConfigError, match="only background jobs"):
        make_spec("w", lambda w, c: None, kind="world", every=1, on="celery")
    with pytest.raises(ConfigError, match="on must be"):
        make_spec("b", lambda s, c: None, every=1, on="elsewhere")
    spec = spec_from_config(
        {"func": "tests.test_offload_jobs:Census", "every_ticks": 3, "on": "celery"}
    )
    assert spec.offloaded and spec.task_name == "worldloop.job.Census"
