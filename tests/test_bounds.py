"""Every in-memory history, cache and queue is bounded by (estimated) bytes, and the estimates
are close to what the objects really weigh (tracemalloc)."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from flask import Flask

from worldloop import Settings
from worldloop.api.ratelimit import RateLimiter
from worldloop.bus.local import LocalBus
from worldloop.commands import CommandQueue, Outcome
from worldloop.errors import QueueFull
from worldloop.sizes import MiB, json_size, object_size
from worldloop.snapshot import Snapshot


def _resolve_all(q: CommandQueue, result: object) -> None:
    tickets = q.drain()
    for t in tickets:
        t.resolve(Outcome(t.command, True, result), 1)
    q.charge_results(tickets)


def test_the_command_history_keeps_tickets_under_its_byte_bound() -> None:
    q = CommandQueue(100_000, history_bytes=1 * MiB)
    for i in range(5_000):
        q.put("move_to", {"x": float(i), "y": 80.0}, "player-" + "a" * 24)
        if i % 100 == 99:
            _resolve_all(q, {"entity_id": i, "x": 1.0, "y": 2.0})
    assert q.history_bytes <= 1 * MiB
    assert 900 < q.history_len < 1400  # ~0.9 KB a ticket: the bound, not a count, decides
    newest = q.put("move_to", {"x": 1.0, "y": 1.0})
    assert q.get(newest.id) is newest


def test_bigger_commands_leave_fewer_tickets_in_the_history() -> None:
    small, big = CommandQueue(10_000, history_bytes=MiB), CommandQueue(10_000, history_bytes=MiB)
    for _ in range(3_000):
        small.put("say", {"text": "hi"})
        big.put("say", {"text": "x" * 4000})
    assert big.history_len * 4 < small.history_len
    assert big.history_bytes <= MiB and small.history_bytes <= MiB


def test_results_are_charged_to_the_history_once_resolved() -> None:
    q = CommandQueue(100, history_bytes=10 * MiB)
    q.put("a", {})
    before = q.history_bytes
    _resolve_all(q, {"list": list(range(1000))})
    assert q.history_bytes - before == object_size({"list": list(range(1000))})


def test_the_estimate_tracks_real_memory_of_the_history() -> None:
    bound = 4 * MiB
    gc.collect()
    tracemalloc.start()
    try:
        q = CommandQueue(1_000_000, history_bytes=bound)
        base = tracemalloc.get_traced_memory()[0]
        for i in range(20_000):
            q.put("move_to", {"x": float(i), "y": 2.0 * i}, f"player-{i % 7:024d}")
            if i % 50 == 49:
                _resolve_all(q, {"entity_id": i, "x": float(i), "y": 3.0})
        _resolve_all(q, None)
        gc.collect()
        real = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert q.history_bytes <= bound
    assert 0.6 * bound < real < 1.4 * bound, (real, bound)


def test_the_queue_refuses_past_its_payload_bytes_but_one_command_always_fits() -> None:
    q = CommandQueue(1_000, max_bytes=100_000)
    huge = {"text": "x" * 200_000}
    q.put("say", huge)  # alone in an empty queue: accepted
    with pytest.raises(QueueFull) as err:
        q.put("say", {"text": "y"})
    assert err.value.details["capacity_bytes"] == 100_000
    q.drain()
    assert q.queued_bytes == 0
    for _ in range(10):
        q.put("say", {"text": "z" * 3_000})
    assert q.queued_bytes == 10 * object_size({"text": "z" * 3_000})
    with pytest.raises(QueueFull):
        for _ in range(20):
            q.put("say", {"text": "z" * 3_000})
    taken = q.drain(5)
    assert len(taken) == 5 and q.queued_bytes <= 100_000 - 5 * object_size({"text": "z" * 3_000})


def test_a_snapshot_keeps_serialized_frames_under_its_bound() -> None:
    snap = Snapshot("w", 1, 0.05, {"n": 1}, cache_bytes=10_000)
    calls: list[str] = []

    def frame(key: str, size: int) -> bytes:
        def build(_s: Snapshot) -> bytes:
            calls.append(key)
            return b"x" * size

        return snap.cached(key, build)

    frame("whole", 50_000)  # the first one is kept however big: every reader shares it
    frame("whole", 50_000)
    assert calls == ["whole"] and snap.cache_bytes == 50_000
    for i in range(100):  # a client asking for ever new regions
        frame(f"region:{i}", 1_000)
    assert snap.cache_bytes == 50_000
    frame("region:0", 1_000)
    assert calls.count("region:0") == 2  # computed again: it was not kept
    assert snap.cached("index", lambda s: {"a": 1}) == {"a": 1}  # fixed keys always kept
    assert snap.cached("index", lambda s: {"b": 2}) == {"a": 1}


def test_a_snapshot_caches_frames_up_to_the_bound() -> None:
    snap = Snapshot("w", 1, 0.05, {"n": 1}, cache_bytes=10_000)
    for i in range(20):
        snap.cached(f"r{i}", lambda s: b"y" * 1_000)
    assert snap.cache_bytes == 10_000


def test_the_rate_limiter_forgets_the_least_recent_keys_past_its_bytes() -> None:
    now = [0.0]
    lim = RateLimiter(1.0, 2, max_bytes=20_000, clock=lambda: now[0])
    for i in range(1_000):
        now[0] += 1.0
        lim.hit(f"client-{i:06d}")
        if i % 10 == 0:
            lim.hit("keep")  # recently used: stays
    assert lim.memory_bytes <= 20_000
    assert 50 < len(lim) < 110
    assert "keep" in lim and "client-000999" in lim and "client-000000" not in lim


def test_json_size_is_the_compact_json_length() -> None:
    assert json_size({"a": 1}) == len('{"a":1}')
    assert json_size(None) == 4
    assert json_size(object()) > 0


def test_the_bounds_are_settings_and_reach_the_parts(tmp_path) -> None:
    env = {
        "WORLDLOOP_QUEUE_BYTES": "1000000",
        "WORLDLOOP_COMMAND_HISTORY_BYTES": "2000000",
        "WORLDLOOP_SNAPSHOT_CACHE_BYTES": "3000000",
        "WORLDLOOP_RATE_LIMIT_BYTES": "4000000",
    }
    s = Settings.from_config(env)
    assert (s.queue_bytes, s.command_history_bytes) == (1_000_000, 2_000_000)
    assert (s.snapshot_cache_bytes, s.rate_limit_bytes) == (3_000_000, 4_000_000)

    from worldloop.api.common import limiter
    from worldloop.demo import create_app

    app: Flask = create_app(
        {
            "TESTING": True,
            "WORLDLOOP_HANDLE_SIGNALS": False,
            "WORLDLOOP_AUTOSTART": "never",
            "WORLDLOOP_STORE_URL": "memory://",
            **env,
        },
        instance_path=str(tmp_path / "instance"),
    )
    rt = app.extensions["worldloop"].runtime
    assert isinstance(rt.bus, LocalBus)
    queue = rt.bus._queue
    assert (queue.max_bytes, queue.history_max_bytes) == (1_000_000, 2_000_000)
    assert rt._publish().cache_max_bytes == 3_000_000
    with app.test_request_context():
        assert limiter("token").max_bytes == 4_000_000
        assert limiter("join").max_bytes == 4_000_000
