"""The world runtime: one writer, ordered commands, backpressure, contained failures, snapshots."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from worldloop import (
    Command,
    CommandInvalid,
    CommandRejected,
    ManualClock,
    QueueFull,
    System,
    World,
    WorldLockedError,
    WorldNotRunning,
    WorldRuntime,
)
from worldloop.lease import FileLease
from worldloop.world import rng_from_state, rng_state

from .support import wait_for

PERIOD = 0.0625


class Ledger(World):
    """A tiny world: a log of applied values, a counter array, and systems that can be broken."""

    name = "ledger"

    def __init__(self) -> None:
        super().__init__()
        self.log: list[int] = []
        self.values = np.zeros(4)
        self.rng = np.random.default_rng(7)
        self.break_system = False
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def validate(self, type_: str, payload: Mapping[str, Any], actor: str | None) -> dict[str, Any]:
        if type_ not in ("add", "explode", "refuse"):
            raise CommandInvalid(f"unknown command {type_!r}")
        v = payload.get("v", 0)
        if not isinstance(v, int):
            raise CommandInvalid("v must be an integer", details={"field": "v"})
        return {"v": v}

    def apply(self, command: Command) -> Any:
        if command.type == "refuse":
            raise CommandRejected("refused on purpose", details={"v": command.payload["v"]})
        if command.type == "explode":
            raise ZeroDivisionError("bug in a command handler")
        self.log.append(command.payload["v"])
        return {"position": len(self.log)}

    def systems(self) -> Sequence[System]:
        return (
            System("noise", self._noise),
            System("fragile", self._fragile),
            System("gate", self._gate),
        )

    def _noise(self) -> None:
        self.values += self.rng.normal(size=4)

    def _fragile(self) -> None:
        if self.break_system:
            raise RuntimeError("system failure")

    def _gate(self) -> None:
        if self.gate is not None:
            self.entered.set()
            self.gate.wait(10)

    def get_state(self) -> dict[str, Any]:
        return {"log": list(self.log), "values": self.values, "rng": rng_state(self.rng)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.log = list(state["log"])
        self.values = np.array(state["values"])
        self.rng = rng_from_state(state["rng"])

    def view(self) -> dict[str, Any]:
        return {"values": self.values, "count": len(self.log)}

    def summary(self) -> dict[str, Any]:
        return {"entity_count": len(self.log)}


@pytest.fixture
def rt(manual_clock: ManualClock):
    runtime = WorldRuntime(Ledger(), rate_hz=1 / PERIOD, clock=manual_clock, queue_size=8)
    runtime.start()
    assert runtime.ticker.wait_for_ticks(1, 5)
    yield runtime
    runtime.stop(2.0)


def tick(rt: WorldRuntime, clock: ManualClock, n: int = 1) -> None:
    for _ in range(n):
        target = rt.ticker.stats().ticks + 1
        clock.advance(PERIOD)
        assert rt.ticker.wait_for_ticks(target, 5)


def test_commands_apply_in_arrival_order_and_tickets_resolve(rt, manual_clock):
    tickets = [rt.submit("add", {"v": i}) for i in range(5)]
    assert [t.command.seq for t in tickets] == sorted(t.command.seq for t in tickets)
    assert not any(t.done for t in tickets)
    tick(rt, manual_clock)
    assert all(t.wait(5) for t in tickets)
    assert rt.world.log[-5:] == [0, 1, 2, 3, 4]
    assert {t.tick for t in tickets} == {rt.world.tick}
    assert tickets[-1].to_dict()["status"] == "applied"
    assert tickets[-1].to_dict()["result"] == {"position": len(rt.world.log)}
    assert rt.bus.ticket(tickets[0].id) is tickets[0]


def test_a_full_queue_refuses_instead_of_growing(rt, manual_clock):
    for i in range(8):
        rt.submit("add", {"v": i})
    with pytest.raises(QueueFull) as err:
        rt.submit("add", {"v": 99})
    assert err.value.status == 503
    assert rt.queue_depth == 8
    tick(rt, manual_clock)
    rt.submit("add", {"v": 100})  # room again after the tick drained it


def test_invalid_commands_are_refused_before_queueing(rt):
    with pytest.raises(CommandInvalid):
        rt.submit("teleport", {})
    with pytest.raises(CommandInvalid):
        rt.submit("add", {"v": "x"})
    assert rt.queue_depth == 0


def test_a_rejected_or_crashing_command_does_not_stop_the_others(rt, manual_clock, caplog):
    a = rt.submit("add", {"v": 1})
    r = rt.submit("refuse", {"v": 2})
    x = rt.submit("explode", {"v": 3})
    b = rt.submit("add", {"v": 4})
    tick(rt, manual_clock)
    for t in (a, r, x, b):
        assert t.wait(5)
    assert rt.world.log[-2:] == [1, 4]
    assert r.to_dict()["error"] == {
        "code": "command_rejected",
        "message": "refused on purpose",
        "details": {"v": 2},
    }
    assert x.to_dict()["status"] == "rejected"
    assert x.to_dict()["error"]["code"] == "command_failed"
    assert "bug in a command handler" in caplog.text
    assert rt.rejected["refuse"] == 1 and rt.applied["add"] == 2


def test_a_failing_system_is_counted_and_the_loop_keeps_ticking(rt, manual_clock, caplog):
    rt.world.break_system = True
    before = rt.world.tick
    tick(rt, manual_clock, 3)
    assert rt.world.tick == before + 3
    assert rt.world.system_errors["fragile"] == 3
    assert rt.snapshot.tick == before + 3
    assert "system failure" in caplog.text
    rt.world.break_system = False
    tick(rt, manual_clock)
    assert rt.world.system_errors["fragile"] == 3


def test_readers_never_wait_for_a_tick_in_progress(rt, manual_clock):
    before = rt.snapshot
    rt.world.gate = threading.Event()
    manual_clock.advance(PERIOD)
    assert rt.world.entered.wait(5)  # the loop thread is now stuck inside a tick
    got: list[int] = []
    reader = threading.Thread(target=lambda: got.append(rt.snapshot.tick))
    reader.start()
    reader.join(2)
    assert got == [before.tick]  # answered at once, with the last published state
    rt.world.gate.set()
    rt.world.gate = None
    wait_for(lambda: rt.snapshot.tick == before.tick + 1, 5, what="tick to finish")


def test_snapshots_are_immutable_and_serialized_once(rt, manual_clock, monkeypatch):
    snap = rt.snapshot
    with pytest.raises(ValueError):
        snap.data["values"][0] = 1.0  # read-only copy
    tick(rt, manual_clock)
    assert rt.snapshot is not snap
    assert not np.shares_memory(rt.snapshot.data["values"], rt.world.values)

    import worldloop.snapshot as snapshot_mod

    calls = []
    real = snapshot_mod.dumps
    monkeypatch.setattr(snapshot_mod, "dumps", lambda d: calls.append(1) or real(d))
    fresh = rt.snapshot
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(fresh.to_json())) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(results) == 16 and len(set(results)) == 1
    assert calls == [1]


def test_wait_for_snapshot_returns_the_next_tick(rt, manual_clock):
    current = rt.snapshot.tick
    result: list[int] = []
    waiter = threading.Thread(target=lambda: result.append(rt.wait_for_snapshot(current, 5).tick))
    waiter.start()
    tick(rt, manual_clock)
    waiter.join(5)
    assert result == [current + 1]
    assert rt.wait_for_snapshot(current + 1, 0.05).tick == current + 1  # timeout: latest


def test_max_commands_per_tick_leaves_the_rest_for_the_next_tick(manual_clock):
    rt = WorldRuntime(Ledger(), rate_hz=1 / PERIOD, clock=manual_clock, max_commands_per_tick=2)
    rt.start()
    assert rt.ticker.wait_for_ticks(1, 5)  # the first tick runs at once; start after it
    try:
        tickets = [rt.submit("add", {"v": i}) for i in range(5)]
        tick(rt, manual_clock)
        assert [t.done for t in tickets] == [True, True, False, False, False]
        tick(rt, manual_clock, 2)
        assert all(t.wait(5) for t in tickets)
        assert rt.world.log == [0, 1, 2, 3, 4]
    finally:
        rt.stop()


def test_stop_refuses_what_is_still_queued_and_further_submits(rt, manual_clock):
    pending = rt.submit("add", {"v": 1})
    assert rt.stop(2.0)
    assert pending.wait(1)
    assert pending.to_dict()["error"]["code"] == "world_stopped"
    with pytest.raises(WorldNotRunning):
        rt.submit("add", {"v": 2})


def test_pause_step_and_rate_through_the_runtime(rt, manual_clock):
    rt.pause()
    t = rt.world.tick
    assert rt.step(3) == t + 3
    rt.set_rate(4.0)
    assert rt.stats().rate_hz == 4.0
    rt.resume()
    assert not rt.stats().paused


def test_state_hash_is_reproduced_by_replaying_the_same_commands(manual_clock):
    a, b = Ledger(), Ledger()
    assert a.state_hash() == b.state_hash()
    cmds = [Command(id=str(i), seq=i, type="add", payload={"v": i}) for i in range(3)]
    a.step(cmds)
    b.step(cmds)
    assert a.state_hash() == b.state_hash()
    b.step([])
    assert a.state_hash() != b.state_hash()
    c = Ledger()
    c.restore(b.full_state())
    assert c.state_hash() == b.state_hash()
    c.step(cmds)
    b.step(cmds)
    assert c.state_hash() == b.state_hash()  # generator state restored too


def test_a_second_runtime_on_the_same_store_is_refused(tmp_path, manual_clock):
    lock = tmp_path / "world.db.lock"
    first = WorldRuntime(Ledger(), clock=manual_clock, lease=FileLease(lock, "ledger"))
    second = WorldRuntime(Ledger(), clock=manual_clock, lease=FileLease(lock, "ledger"))
    first.start()
    try:
        with pytest.raises(WorldLockedError) as err:
            second.start()
        assert "already running in another process" in err.value.message
        assert str(err.value.details["holder_pid"]).isdigit()
    finally:
        first.stop()
    second.start()  # the lease is free once the first one stopped
    second.stop()
