"""The runners' registry on Redis (worldloop.registry): expiring entries on the Redis clock,
health, and the release channel."""

from __future__ import annotations

import threading

import redis

from tests.redis_support import REDIS_URL
from tests.support import wait_for
from worldloop.placement import Runner
from worldloop.registry import RunnerRegistry


def registry(prefix: str, rid: str, ttl: float = 0.6, capacity: float = 1.0) -> RunnerRegistry:
    client = redis.Redis.from_url(REDIS_URL)
    return RunnerRegistry(client, Runner(rid, "h", 1, capacity), prefix=prefix, ttl=ttl)


def test_runners_join_renew_expire_and_leave(prefix: str) -> None:
    a, b = registry(prefix, "a"), registry(prefix, "b")
    a.join()
    b.join()
    try:
        assert [r.id for r in a.runners()] == ["a", "b"]
        b._stop.set()  # b stops renewing as a killed process would: it expires after its ttl
        wait_for(lambda: [r.id for r in a.runners()] == ["a"], 5, 0.05, "b to expire")
        # a keeps renewing past several ttls
        threading.Event().wait(1.5)
        assert [r.id for r in a.runners()] == ["a"]
        a.leave()
        assert a.runners() == []
    finally:
        a.leave()
        b.leave()


def test_an_unhealthy_runner_leaves_until_healthy_again(prefix: str) -> None:
    healthy = threading.Event()
    healthy.set()
    a, watcher = registry(prefix, "a"), registry(prefix, "w", capacity=0.0)
    a.healthy = healthy.is_set
    a.join()
    watcher.join()  # capacity 0: never listed
    try:
        assert [r.id for r in watcher.runners()] == ["a"]
        healthy.clear()
        wait_for(lambda: watcher.runners() == [], 5, 0.05, "a to leave while unhealthy")
        healthy.set()
        wait_for(lambda: [r.id for r in watcher.runners()] == ["a"], 5, 0.05, "a to rejoin")
    finally:
        a.leave()
        watcher.leave()


def test_a_release_reaches_every_listener(prefix: str) -> None:
    a, b = registry(prefix, "a"), registry(prefix, "b")
    heard: list[str] = []
    b.listen(heard.append)
    try:
        wait_for(lambda: a.announce_release("w1") is None and "w1" in heard, 5, 0.1, "the release")
    finally:
        a.leave()
        b.leave()
