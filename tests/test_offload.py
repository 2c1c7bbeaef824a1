"""Offloading without a broker: the outbox, the plug-in and the in-process sender.

The runtime is paused and stepped by hand; the sender thread is waited on by condition. What is
checked: a request is sent only once its tick is durable and with its deterministic id, a result
is applied once however often it arrives, failures and time-outs come back as results, a restart
sends pending requests again, and replaying the journal reproduces the state hash.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.offload_app import Asker
from tests.support import wait_for
from worldloop import WorldRuntime
from worldloop.durability import replay
from worldloop.offload import OffloadPlugin, ThreadSender
from worldloop.outbox import TASK_RESULT
from worldloop.store import open_store


class Gate:
    """Tasks that wait for the test: ``release`` lets them finish."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.go = threading.Event()
        self.calls: list[dict[str, Any]] = []

    def work(self, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(params)
        self.started.set()
        assert self.go.wait(10)
        return {"value": 2 * int(params["value"])}

    def fail(self, params: dict[str, Any]) -> None:
        raise ValueError(f"no good: {params['value']}")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store_url() -> str:
    return f"memory://offload-{uuid.uuid4().hex}"


def runtime(url: str, plugin: OffloadPlugin | None) -> WorldRuntime:
    rt = WorldRuntime(
        Asker(), store=open_store(url), start_paused=True, snapshot_every=1000, hash_every=1
    )
    if plugin is not None:
        rt.add_plugin(plugin)
    return rt


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.go.set()


def ask(rt: WorldRuntime, task: str, value: int) -> str:
    ticket = rt.submit("ask", {"task": task, "value": value})
    rt.step(1)
    assert ticket.wait(5) and ticket.outcome is not None and ticket.outcome.ok
    task_id: str = ticket.outcome.result["task_id"]
    return task_id


def settle_next(rt: WorldRuntime) -> None:
    """Wait for the plug-in to queue a result, then apply it in one tick."""
    wait_for(lambda: rt.queue_depth >= 1, 10, what="a task result queued")
    rt.step(1)


def test_a_result_is_applied_once_and_replay_reproduces_it(store_url: str, gate: Gate) -> None:
    plugin = OffloadPlugin(ThreadSender({"t.work": gate.work}))
    rt = runtime(store_url, plugin)
    rt.start()
    try:
        task_id = ask(rt, "t.work", 21)
        nonce = rt.world.outbox.nonce
        assert nonce and task_id == f"asker.{nonce}.1"  # the world's name, nonce and sequence
        assert gate.started.wait(5)
        assert rt.world.outbox.pending.keys() == {task_id}
        gate.go.set()
        settle_next(rt)
        assert rt.world.applied == 1
        assert rt.world.results[task_id] == {
            "status": "succeeded",
            "result": {"value": 42},
            "error": None,
        }
        assert not rt.world.outbox.pending
        # the same result again (a redelivered task): journaled, changes nothing
        ticket = rt.enqueue(
            TASK_RESULT, {"task_id": task_id, "status": "succeeded", "result": {"value": 0}}
        )
        rt.step(1)
        assert ticket.wait(5) and ticket.outcome is not None
        assert ticket.outcome.result == {"task_id": task_id, "applied": False}
        assert rt.world.applied == 1 and rt.world.results[task_id]["result"] == {"value": 42}
        assert plugin.stats()["counts"] == {"sent": 1, "succeeded": 1}
        assert [t["state"] for t in plugin.stats()["tasks"]] == ["succeeded"]
        digest, tick = rt.world.state_hash(), rt.world.tick
    finally:
        rt.stop()
    assert len(gate.calls) == 1
    copy = Asker()
    result = replay(copy, open_store(store_url).load("asker", snapshot_tick=0))
    assert (result.tick, result.state_hash) == (tick, digest)
    assert copy.applied == 1 and len(gate.calls) == 1  # replay never runs the task


def test_failure_and_timeout_come_back_as_results(store_url: str, gate: Gate) -> None:
    clock = FakeClock()
    plugin = OffloadPlugin(
        ThreadSender({"t.work": gate.work, "t.fail": gate.fail}), timeout=30, clock=clock
    )
    rt = runtime(store_url, plugin)
    rt.start()
    try:
        failing = ask(rt, "t.fail", 7)
        settle_next(rt)
        assert rt.world.results[failing] == {
            "status": "failed",
            "result": None,
            "error": "ValueError: no good: 7",
        }
        slow = ask(rt, "t.work", 1)
        assert gate.started.wait(5)
        clock.now += 31
        settle_next(rt)
        assert rt.world.results[slow]["status"] == "timed_out"
        assert not rt.world.outbox.pending
        gate.go.set()  # the late result is not delivered; and would change nothing if it were
        rt.enqueue(TASK_RESULT, {"task_id": slow, "status": "succeeded", "result": 1})
        rt.step(1)
        assert rt.world.applied == 2 and rt.world.results[slow]["status"] == "timed_out"
        counts = plugin.stats()["counts"]
        assert counts["failed"] == 1 and counts["timed_out"] == 1 and counts["sent"] == 2
    finally:
        rt.stop()


def test_a_restart_sends_pending_requests_again(store_url: str, gate: Gate) -> None:
    first = runtime(store_url, None)  # no sender: the request is durable, never sent
    first.start()
    task_id = ask(first, "t.work", 5)
    first.stop()
    assert not gate.calls

    plugin = OffloadPlugin(ThreadSender({"t.work": gate.work}))
    rt = runtime(store_url, plugin)
    rt.start()
    try:
        assert rt.world.outbox.pending.keys() == {task_id}
        rt.step(1)  # the first tick after the start hands the recovered request over
        gate.go.set()
        settle_next(rt)
        assert rt.world.results[task_id]["result"] == {"value": 10}
        assert plugin.stats()["counts"] == {"resent": 1, "succeeded": 1}
        nonce = rt.world.outbox.nonce
        assert rt.world.request_task("t.work", {"value": 1, "sleep": 0}) == f"asker.{nonce}.2"
    finally:
        rt.stop()


def test_params_must_be_json() -> None:
    world = Asker()
    with pytest.raises(TypeError):
        world.request_task("t.work", {"value": object()})
    assert not world.outbox.pending and world.outbox.seq == 0


def test_tasks_in_the_admin_api_and_metrics(tmp_path: Any) -> None:
    from tests.offload_app import create_app

    app = create_app(
        {
            "TESTING": True,
            "WORLDLOOP_STORE_URL": f"memory://offload-{uuid.uuid4().hex}",
            "WORLDLOOP_ADMIN_TOKEN": "offload-admin-token-0123",
            "WORLDLOOP_AUTOSTART": "never",
            "WORLDLOOP_HANDLE_SIGNALS": False,
            "WORLDLOOP_START_PAUSED": True,
        }
    )
    client = app.test_client()
    admin = {"Authorization": "Bearer offload-admin-token-0123"}
    assert client.get("/api/v1/admin/tasks", headers=admin).get_json() == {
        "enabled": False,
        "counts": {},
        "tasks": [],
    }
    assert client.get("/api/v1/admin/tasks").status_code == 401
    gate = Gate()
    state = app.extensions["worldloop"]
    state.use_offload(ThreadSender({"t.fail": gate.fail}))
    state.start()
    try:
        rt = state.runtime
        task_id = ask(rt, "t.fail", 2)
        settle_next(rt)
        body = client.get("/api/v1/admin/tasks", headers=admin).get_json()
        assert body["enabled"] and body["counts"] == {"sent": 1, "failed": 1}
        [task] = body["tasks"]
        assert (task["id"], task["task"], task["state"]) == (task_id, "t.fail", "failed")
        assert task["error"] == "ValueError: no good: 2"
        text = client.get("/metrics").get_data(as_text=True)
        assert 'worldloop_task_events_total{event="failed",world="asker"} 1.0' in text
        assert 'worldloop_tasks_in_flight{world="asker"} 0.0' in text
    finally:
        state.stop()
