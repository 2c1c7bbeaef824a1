"""The Bus contract: commands in order and bounded, tickets resolved only by a publish (after
the journal commit), snapshots readable and awaitable, and nothing left hanging at stop.
Parametrized over every bus: ``local://`` and ``redis://`` (its own key prefix per test). A shared
bus (Redis) leaves unjournaled commands for the world's next owner instead of refusing them."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from tests.redis_support import REDIS_URL, drop_prefix, require_redis
from worldloop.bus import Bus, open_bus
from worldloop.commands import CommandQueue, IdempotencyKey, Outcome
from worldloop.errors import IdempotencyKeyReused, QueueFull
from worldloop.snapshot import Snapshot


@pytest.fixture(params=["local://", pytest.param("redis://", marks=pytest.mark.redis)])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    url, prefix = request.param, ""
    if url == "redis://":
        require_redis()
        prefix = f"wltest-{uuid.uuid4().hex[:12]}:"
        url = f"{REDIS_URL}?prefix={prefix}"
    b = open_bus(url, "w", queue_size=4)
    try:
        yield b
    finally:
        b.close()
        if prefix:
            drop_prefix(prefix)


def shared(bus: Bus) -> bool:
    """A bus whose commands outlive this runner (they wait for the world's next owner)."""
    return bus.url.startswith("redis")


def snap(tick: int) -> Snapshot:
    return Snapshot("w", tick, tick * 0.05, {"tick": tick})


def test_commands_are_taken_in_the_order_they_were_put(bus: Bus) -> None:
    tickets = [bus.put("add", {"v": i}, actor="ann") for i in range(4)]
    assert bus.depth == 4
    first = bus.take(3)
    assert [c.payload["v"] for c in first] == [0, 1, 2]
    assert [c.id for c in first] == [t.id for t in tickets[:3]]
    assert [c.seq for c in first] == sorted(c.seq for c in first)
    assert first[0].actor == "ann" and first[0].type == "add"
    rest = bus.take()
    assert [c.payload["v"] for c in rest] == [3] and bus.depth == 0
    assert bus.take() == []
    assert bus.last_seq == rest[0].seq


def test_a_full_bus_refuses_instead_of_growing(bus: Bus) -> None:
    for i in range(4):
        bus.put("add", {"v": i})
    with pytest.raises(QueueFull) as err:
        bus.put("add", {"v": 99})
    assert err.value.status == 503
    assert bus.depth == 4
    bus.take(1)
    bus.put("add", {"v": 100})  # room again once the loop took one


def test_a_key_put_twice_gives_the_first_ticket_and_queues_once(bus: Bus) -> None:
    key = IdempotencyKey("cmd:ann:k1", "fp")
    first = bus.put("add", {"v": 1}, "ann", key)
    for _ in range(6):  # more than the queue holds: a retry takes no room
        assert bus.put("add", {"v": 1}, "ann", IdempotencyKey("cmd:ann:k1", "fp")) is first
    assert bus.depth == 1 and bus.keyed("cmd:ann:k1") is first
    with pytest.raises(IdempotencyKeyReused) as err:
        bus.put("add", {"v": 2}, "ann", IdempotencyKey("cmd:ann:k1", "other"))
    assert err.value.status == 422
    (taken,) = bus.take()
    assert taken.key == key and taken.to_record()["key"] == "cmd:ann:k1"
    bus.publish(snap(1), [Outcome(taken, True, 7)])
    assert bus.put("add", {"v": 1}, "ann", key) is first and first.done
    assert bus.keyed("cmd:bob:k1") is None and bus.depth == 0


def test_remembered_keys_are_bounded_but_never_forget_one_in_flight() -> None:
    now = [0.0]
    q = CommandQueue(100, keys=3, key_seconds=10.0, clock=lambda: now[0])
    pending = q.put("add", {}, "ann", IdempotencyKey("s0", "f"))
    for i in range(1, 6):
        q.put("add", {}, "ann", IdempotencyKey(f"s{i}", "f"))
    assert q.keyed("s0") is pending  # in flight: kept beyond the count bound
    for ticket in q.drain():
        ticket.resolve(Outcome(ticket.command, True), 1)
    q.put("add", {}, "ann", IdempotencyKey("s6", "f"))
    assert [s for s in (f"s{i}" for i in range(7)) if q.keyed(s)] == ["s4", "s5", "s6"]
    now[0] = 100.0  # and by age
    q.put("add", {}, "ann", IdempotencyKey("s7", "f"))
    assert q.keyed("s4") is None and q.keyed("s5") is None
    assert q.keyed("s6") is not None and q.keyed("s7") is not None  # both still in flight


def test_tickets_resolve_only_when_their_tick_is_published(bus: Bus) -> None:
    ok, bad = bus.put("add", {"v": 1}), bus.put("add", {"v": "x"})
    assert bus.ticket(ok.id) is ok and bus.ticket("nope") is None
    commands = bus.take()
    assert not ok.done and not bad.done  # taken is not applied: the journal comes first
    seen: list[Snapshot | None] = []
    waiter = threading.Thread(target=lambda: (ok.wait(5), seen.append(bus.latest)))
    waiter.start()
    outcomes = [
        Outcome(commands[0], True, {"total": 1}),
        Outcome(commands[1], False, None, "invalid", "v must be a number", {"v": "x"}),
    ]
    bus.publish(snap(7), outcomes)
    waiter.join(5)
    assert seen and seen[0] is not None and seen[0].tick == 7  # snapshot first, then tickets
    assert (ok.status, ok.tick, ok.to_dict()["result"]) == ("applied", 7, {"total": 1})
    assert (bad.status, bad.tick) == ("rejected", 7)
    assert bad.to_dict()["error"]["code"] == "invalid"


def test_latest_and_wait_after(bus: Bus) -> None:
    assert bus.latest is None
    assert bus.wait_after(0, 0.01) is None  # nothing published yet, after the timeout
    bus.publish(snap(1))
    assert bus.latest is not None and bus.latest.tick == 1
    assert bus.wait_after(0, 5).tick == 1  # type: ignore[union-attr]  # newer: at once
    stale = bus.wait_after(1, 0.05)  # nothing newer: the latest after the timeout
    assert stale is not None and stale.tick == 1
    timer = threading.Timer(0.05, lambda: bus.publish(snap(2)))
    timer.start()
    try:
        fresh = bus.wait_after(1, 10)
    finally:
        timer.join()
    assert fresh is not None and fresh.tick == 2


def test_settle_resolves_taken_commands_without_a_snapshot(bus: Bus) -> None:
    ticket = bus.put("add", {"v": 1})
    (command,) = bus.take()
    bus.settle([Outcome(command, False, None, "store_unavailable", "journal failed")], 4)
    if shared(bus):  # not refused: the next owner reads it again from the journaled offset
        assert not ticket.done and bus.latest is None
        return
    assert ticket.done and ticket.status == "rejected" and ticket.tick == 4
    assert bus.latest is None


def test_refuse_waiting_leaves_nothing_hanging_at_stop(bus: Bus) -> None:
    tickets = [bus.put("add", {"v": i}) for i in range(3)]
    if shared(bus):  # left in the stream for the next owner, not refused
        assert bus.refuse_waiting("world_stopped", "the world stopped", 9) == 0
        assert bus.depth == 3 and not any(t.done for t in tickets)
        return
    assert bus.refuse_waiting("world_stopped", "the world stopped", 9, {"why": "stop"}) == 3
    assert bus.depth == 0 and bus.take() == []
    for ticket in tickets:
        assert ticket.wait(0) and ticket.status == "rejected" and ticket.tick == 9
        assert ticket.to_dict()["error"] == {
            "code": "world_stopped",
            "message": "the world stopped",
            "details": {"why": "stop"},
        }
    assert bus.refuse_waiting("world_stopped", "again", 9) == 0


def test_numbering_continues_after_recovery(bus: Bus) -> None:
    bus.set_last_seq(41)
    assert bus.put("add", {"v": 1}).command.seq == 42
    bus.set_last_seq(10)  # never goes back
    assert bus.put("add", {"v": 2}).command.seq == 43
