"""The scale-out runtime in one process (two "workers" on one world, each with its own Redis
connections and store): one owns and ticks, the other serves and forwards commands; stopping
the owner hands the world over with nothing acknowledged lost; a fenced owner gives up."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.durability_app import Drift
from tests.redis_support import REDIS_URL, OwnRedis
from tests.store_support import PG_URL
from worldloop.scaleout import ScaleoutRuntime, scaleout_runtime
from worldloop.store.epoch import EpochFence
from worldloop.store.sql import SqlStore

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


@pytest.fixture
def workers(prefix: str, schema: str) -> Iterator[Callable[[], ScaleoutRuntime]]:
    made: list[ScaleoutRuntime] = []

    def make() -> ScaleoutRuntime:
        rt = scaleout_runtime(
            Drift(particles=8, seed=5),
            redis_url=REDIS_URL,
            store_url=PG_URL,
            schema=schema,
            prefix=prefix,
            ttl=1.5,
            poll=0.1,
            owner_options={"rate_hz": 50.0, "snapshot_every": 50, "hash_every": 1},
        )
        made.append(rt)
        rt.start()
        return rt

    yield make
    for rt in made:
        rt.stop()


def until(cond: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_one_owns_every_worker_serves_and_the_world_moves_on_a_stop(
    workers: Callable[[], ScaleoutRuntime], schema: str
) -> None:
    a = workers()
    until(lambda: a.owning)
    b = workers()
    until(lambda: b.latest is not None)
    assert not b.owning and a.takeovers == 1
    tickets = [b.submit("kick", {"i": i % 8, "dv": 1.0}) for i in range(20)]
    for t in tickets:
        assert t.wait(5) and t.status == "applied"
    assert b.command_status(tickets[0].id) is not None
    with pytest.raises(Exception, match="runs on another worker"):
        b.pause()
    before = b.tick
    a.stop()  # graceful: final snapshot, release; b takes over within its poll
    until(lambda: b.owning, 5.0)
    more = [b.submit("kick", {"i": 1, "dv": 2.0}) for _ in range(5)]
    for t in more:
        assert t.wait(5) and t.status == "applied"
    assert b.tick >= before
    store = SqlStore(PG_URL, schema=schema)
    try:
        for t in tickets + more:
            found = store.find_command("drift", t.id)
            assert found is not None and found["status"] == "applied"
    finally:
        store.close()


def test_a_fenced_owner_gives_the_world_up(
    workers: Callable[[], ScaleoutRuntime], schema: str
) -> None:
    a = workers()
    until(lambda: a.owning)
    rogue = EpochFence(SqlStore(PG_URL, schema=schema), "rogue")
    try:
        rogue.claim("drift")  # as a new owner would after a's lease expired
        until(lambda: a.given_up is not None, 5.0)
        assert "another runner" in a.given_up  # type: ignore[operator]
        # the Redis lease was free again (the rogue never took it): a stands by, wins it
        # again and claims a newer epoch than the rogue's
        until(lambda: a.takeovers == 2 and a.owning, 5.0)
        assert isinstance(a.owner, object) and a.owner is not None
        assert a.owner.lease.token == 3
    finally:
        rogue.store.close()


def test_an_idempotency_key_answers_across_workers_and_owners(
    workers: Callable[[], ScaleoutRuntime],
) -> None:
    from worldloop.commands import IdempotencyKey

    a = workers()
    until(lambda: a.owning)
    b = workers()
    until(lambda: b.latest is not None)
    first = b.submit("kick", {"i": 3, "dv": 1.0}, "ann", IdempotencyKey("cmd:ann:k", "fp"))
    assert first.wait(5) and first.status == "applied"
    a.stop()  # the owner changes
    until(lambda: b.owning, 5.0)
    c = workers()  # a worker that never saw the key: the journal answers
    until(lambda: c.latest is not None)
    again = c.submit("kick", {"i": 3, "dv": 1.0}, "ann", IdempotencyKey("cmd:ann:k", "fp"))
    assert again.id == first.id and again.status == "applied" and again.tick == first.tick
    with pytest.raises(Exception, match="different request"):
        c.submit("kick", {"i": 4, "dv": 1.0}, "ann", IdempotencyKey("cmd:ann:k", "other"))


def test_an_owner_cut_off_from_redis_stops_ticking_and_resumes_when_it_returns(
    schema: str, own_redis: OwnRedis
) -> None:
    """A test-owned redis-server, stopped (SIGSTOP: it hangs, as a partition does) past the
    lease's ttl: the owner fences itself (its ticks stop: the journal head stays put), and
    once Redis answers again the world is taken over afresh under a newer epoch."""
    url, start_redis = own_redis
    proc = start_redis()
    rt: ScaleoutRuntime | None = None
    store = SqlStore(PG_URL, schema=schema)
    try:
        rt = scaleout_runtime(
            Drift(particles=8, seed=5),
            redis_url=url,
            store_url=PG_URL,
            schema=schema,
            ttl=1.0,
            poll=0.1,
            owner_options={"rate_hz": 50.0, "snapshot_every": 50, "hash_every": 1},
        )
        rt.start()
        until(lambda: rt is not None and rt.owning and (store.head("drift") or 0) > 5)
        os.kill(proc.pid, signal.SIGSTOP)
        until(lambda: rt is not None and rt.given_up is not None, 5.0)
        assert "lease" in (rt.given_up or "")
        head = store.head("drift")
        time.sleep(0.5)  # nothing to wait on: ticks must not happen in this window
        assert store.head("drift") == head
        os.kill(proc.pid, signal.SIGCONT)
        until(lambda: rt is not None and rt.takeovers == 2 and rt.owning, 15.0)
        until(lambda: (store.head("drift") or 0) > (head or 0), 5.0)
        ticket = rt.submit("kick", {"i": 1, "dv": 1.0})
        assert ticket.wait(5) and ticket.status == "applied"
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        if rt is not None:
            rt.stop()
        store.close()


def test_the_flask_app_turns_the_redis_mode_on_by_settings(
    tmp_path: Path, prefix: str, schema: str
) -> None:
    from flask import Flask

    from tests.durability_app import create_world
    from worldloop import WorldLoop
    from worldloop.errors import ConfigError

    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(
        WORLDLOOP_REDIS_URL=REDIS_URL,
        WORLDLOOP_REDIS_PREFIX=prefix,
        WORLDLOOP_STORE_URL=PG_URL,
        WORLDLOOP_STORE_SCHEMA=schema,
        WORLDLOOP_STANDBY_POLL=0.1,
        WORLDLOOP_RUNNER="process",  # not used in this mode: every worker serves
    )
    loop = WorldLoop(app, world=create_world)
    rt = loop.runtime
    assert isinstance(rt, ScaleoutRuntime)
    try:
        until(lambda: rt.owning and rt.latest is not None)
        with app.test_client() as http_client:
            reply = http_client.get("/api/v1/world")
            assert reply.status_code == 200 and reply.get_json()["world"] == "drift"
            assert http_client.get("/readyz").status_code == 200
    finally:
        loop.stop(app)
    bad = Flask(__name__, instance_path=str(tmp_path / "bad"))
    bad.config.update(WORLDLOOP_REDIS_URL=REDIS_URL, WORLDLOOP_STORE_URL="memory://")
    with pytest.raises(ConfigError, match="needs a SQL store"):
        WorldLoop(bad, world=create_world)
