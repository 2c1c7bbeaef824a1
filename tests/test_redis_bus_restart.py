"""The Redis bus across a restart of a Redis without persistence (a test-owned redis-server):
every key is gone, so a retry with an idempotency key whose command was still waiting puts it
anew (it was never journaled, never acknowledged) instead of waiting on it forever; a stream
whose ids restart below the journaled cursor (the new Redis's clock is behind) still hands every
new command to the owner; a feed that restarts below what a worker read is read afresh; and the
ticket of a command lost with Redis stops holding the worker's ticket history once it is older
than its key would be."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from tests.redis_support import OwnRedis
from worldloop.bus.redis import RedisBus
from worldloop.commands import IdempotencyKey, Outcome
from worldloop.lease.redis import connect
from worldloop.runner.shm import pack
from worldloop.snapshot import Snapshot

pytestmark = pytest.mark.redis

FUTURE = "9999999999999-5"
"""A journaled cursor far ahead of any clock: what a Redis with its clock behind sees."""


@pytest.fixture
def buses() -> Iterator[list[RedisBus]]:
    made: list[RedisBus] = []
    yield made
    for b in made:
        b.close()


def until(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not (callable(cond) and cond()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_keyed_command_lost_with_redis_is_put_again_on_retry(
    own_redis: OwnRedis, buses: list[RedisBus]
) -> None:
    url, start = own_redis
    proc = start()
    web = RedisBus(connect(url), "w")
    buses.append(web)
    key = IdempotencyKey("cmd:ann:0123456789abcdef", "fp")
    first = web.put("kick", {"i": 1}, "ann", key)
    assert web.put("kick", {"i": 1}, "ann", key).id == first.id  # in flight: the same command

    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    start()  # empty: the stream, the key and the command are gone (never acknowledged)
    again = web.put("kick", {"i": 1}, "ann", key)
    assert again.id != first.id and not again.done

    owner = RedisBus(connect(url), "w", read=False)
    buses.append(owner)
    owner.start_at("0-0", 2)
    taken = owner.take()
    assert [c.id for c in taken] == [again.id]
    owner.publish(Snapshot("w", 1, 0.05, {}, {}), [Outcome(taken[0], True, "ok")])
    until(lambda: again.done)
    assert again.status == "applied"
    assert web.put("kick", {"i": 1}, "ann", key).id == again.id  # resolved: answered here


def test_commands_put_after_a_restart_reach_an_owner_behind_the_cursor(
    own_redis: OwnRedis, buses: list[RedisBus]
) -> None:
    url, start = own_redis
    start()
    owner = RedisBus(connect(url), "w", read=False)
    web = RedisBus(connect(url), "w", read=False)
    buses.extend((owner, web))
    owner.start_at(FUTURE, 3)  # the journal's cursor is past the new Redis's clock
    ticket = web.put("kick", {"i": 2})
    assert [c.id for c in owner.take()] == [ticket.id]
    assert owner.depth == 0
    later = web.put("kick", {"i": 3})
    assert [c.id for c in owner.take()] == [later.id]


def test_a_feed_restarted_below_what_a_worker_read_is_read_afresh(
    own_redis: OwnRedis, buses: list[RedisBus]
) -> None:
    url, start = own_redis
    start()
    client = connect(url)
    reader = RedisBus(connect(url), "w")
    buses.append(reader)
    body = pack({"sim_time": 0.0, "created_at": time.time(), "summary": {}, "data": {}})
    client.xadd(reader.feed_key, {"epoch": 1, "tick": 0, "snap": body, "out": b"[]"}, id=FUTURE)
    until(lambda: reader.position == (1, 0))  # the reader is past the future id now
    client.delete(reader.feed_key)  # as a Redis restarted with its clock behind leaves it
    owner = RedisBus(connect(url), "w", read=False)
    buses.append(owner)
    owner.epoch = 2
    owner.publish(Snapshot("w", 7, 0.35, {"x": 1}, {}))
    assert owner.flush(5)
    until(lambda: reader.position == (2, 7))


def test_a_ticket_lost_with_redis_does_not_hold_the_history_forever(
    own_redis: OwnRedis, buses: list[RedisBus]
) -> None:
    url, start = own_redis
    proc = start()
    web = RedisBus(connect(url), "w", history=3, key_seconds=1.0)
    buses.append(web)
    lost = web.put("kick", {"i": 0})
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    start()
    owner = RedisBus(connect(url), "w", read=False)
    buses.append(owner)
    owner.start_at("0-0", 2)
    until(lambda: time.time() - lost.command.submitted_at > 1.0)  # older than its key now
    tickets = [web.put("kick", {"i": i}) for i in range(1, 7)]
    taken = owner.take()
    assert [c.id for c in taken] == [t.id for t in tickets]
    owner.publish(Snapshot("w", 1, 0.05, {}, {}), [Outcome(c, True, None) for c in taken])
    until(lambda: all(t.done for t in tickets))
    web.put("kick", {"i": 7})  # remembering it evicts the oldest: the lost one first
    assert web.ticket(lost.id) is None and not lost.done
    assert len(web._tickets) <= 3
