"""The Redis bus across workers: a command put by one worker is taken by the owner and its
ticket resolves from the feed in the worker that put it; every worker serves the snapshot
(arrays included) and never goes back in (epoch, tick); commands taken but not committed are
read again by the next owner; an idempotency key is one command across workers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from tests.redis_support import REDIS_URL
from worldloop.bus import open_bus
from worldloop.bus.redis import RedisBus
from worldloop.commands import IdempotencyKey, Outcome
from worldloop.lease.redis import connect
from worldloop.snapshot import Snapshot

pytestmark = pytest.mark.redis


@pytest.fixture
def buses(prefix: str) -> Iterator[list[RedisBus]]:
    made: list[RedisBus] = []
    yield made
    for b in made:
        b.close()


def worker(buses: list[RedisBus], prefix: str) -> RedisBus:
    b = open_bus(f"{REDIS_URL}?prefix={prefix}", "w", queue_size=100)
    assert isinstance(b, RedisBus)
    buses.append(b)
    return b


def snap(tick: int) -> Snapshot:
    return Snapshot("w", tick, tick * 0.05, {"pos": np.arange(4.0) + tick}, {"n": 4})


def until(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not (callable(cond) and cond()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_ticket_resolves_in_the_worker_that_put_it(buses: list[RedisBus], prefix: str) -> None:
    owner, web = worker(buses, prefix), worker(buses, prefix)
    owner.start_at("0-0", epoch=1)
    ticket = web.put("kick", {"i": 1}, actor="ann")
    (command,) = owner.take()
    assert command.id == ticket.id and command.actor == "ann" and command.payload == {"i": 1}
    assert not ticket.done
    owner.publish(snap(5), [Outcome(command, True, {"moved": 1})])
    assert ticket.wait(5)
    assert (ticket.status, ticket.tick, ticket.to_dict()["result"]) == ("applied", 5, {"moved": 1})
    until(lambda: web.latest is not None and web.latest.tick == 5)
    assert web.latest is not None
    assert np.array_equal(web.latest.data["pos"], np.arange(4.0) + 5)
    assert web.latest.summary == {"n": 4} and web.latest.sim_time == 0.25
    assert web.depth == 0


def test_readers_never_go_back_in_epoch_and_tick(buses: list[RedisBus], prefix: str) -> None:
    old, web = worker(buses, prefix), worker(buses, prefix)
    old.start_at("0-0", epoch=1)
    old.publish(snap(10))
    until(lambda: web.latest is not None and web.latest.tick == 10)
    old.publish(snap(9))  # stale: ignored
    new = worker(buses, prefix)
    new.start_at("0-0", epoch=2)
    new.publish(snap(11))
    until(lambda: web.latest is not None and web.latest.tick == 11)
    old.publish(snap(12))  # a fenced old owner's late entry: epoch 1 < 2
    time.sleep(0.3)  # let the reader see it (nothing to wait on: it must not change)
    assert web.latest is not None and web.latest.tick == 11


def test_commands_taken_but_not_committed_go_to_the_next_owner(
    buses: list[RedisBus], prefix: str
) -> None:
    first, web = worker(buses, prefix), worker(buses, prefix)
    staged: list[str] = []
    first.on_taken = staged.append
    first.start_at("0-0", epoch=1)
    tickets = [web.put("kick", {"i": i}) for i in range(3)]
    a = first.take(1)
    first.publish(snap(1), [Outcome(a[0], True)])  # committed: offset staged[0]
    first.take()  # read, never committed (the owner dies here)
    second = worker(buses, prefix)
    second.start_at(staged[0], epoch=2)
    assert second.depth == 2
    again = second.take()
    assert [c.id for c in again] == [t.id for t in tickets[1:]]
    second.publish(snap(2), [Outcome(c, True) for c in again])
    for t in tickets:
        assert t.wait(5) and t.status == "applied"


def test_an_idempotency_key_is_one_command_across_workers(
    buses: list[RedisBus], prefix: str
) -> None:
    owner, one, two = worker(buses, prefix), worker(buses, prefix), worker(buses, prefix)
    owner.start_at("0-0", epoch=1)
    first = one.put("kick", {"i": 1}, "ann", IdempotencyKey("cmd:ann:k", "fp"))
    retry = two.put("kick", {"i": 1}, "ann", IdempotencyKey("cmd:ann:k", "fp"))
    assert retry.id == first.id and owner.depth == 1
    with pytest.raises(Exception, match="different request"):
        two.put("kick", {"i": 2}, "ann", IdempotencyKey("cmd:ann:k", "other"))
    (command,) = owner.take()
    owner.publish(snap(1), [Outcome(command, True, 3)])
    assert first.wait(5) and retry.wait(5) and retry.to_dict()["result"] == 3


def test_a_put_redis_does_not_take_is_a_503_to_retry(prefix: str) -> None:
    from tests.support import free_port
    from worldloop.bus.redis import BusUnavailable

    dead = RedisBus(connect(f"redis://127.0.0.1:{free_port()}/0"), "w", prefix=prefix, read=False)
    try:
        with pytest.raises(BusUnavailable) as err:
            dead.put("kick", {"i": 1})
        assert err.value.status == 503 and err.value.retry_after
        assert dead.depth == 0  # the last known count, not an error
    finally:
        dead.close()
