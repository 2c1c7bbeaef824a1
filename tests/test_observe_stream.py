"""GET /api/v1/stream and /api/v1/frame: frames per tick, ?hz, viewport, caching, clean end."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.frames import layer
from tests.observe_world import make_test_app, runtime_of
from worldloop import WorldRuntime
from worldloop.snapshot import Snapshot

FRAME_KEYS = {"tick", "sim_time", "summary", "world", "bbox", "grid", "layers", "panel"}


make_app = make_test_app


@pytest.fixture
def garden(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path)
    yield app
    app.extensions["worldloop"].stop()


def rt_of(app: Flask) -> WorldRuntime:
    runtime: WorldRuntime = runtime_of(app)
    return runtime


class SSE:
    """Reads server-sent events from a streaming test-client response, one at a time."""

    def __init__(self, app: Flask, url: str) -> None:
        self.resp = app.test_client().get(url, buffered=False)
        assert self.resp.status_code == 200, self.resp.get_data()
        assert self.resp.mimetype == "text/event-stream"
        self._chunks = iter(self.resp.response)
        self._buf = b""

    def next(self) -> tuple[str, dict[str, Any], int | None]:
        """(event name, decoded data, id); comments and retry lines are skipped."""
        while True:
            while b"\n\n" not in self._buf:
                self._buf += next(self._chunks)
            raw, self._buf = self._buf.split(b"\n\n", 1)
            fields: dict[str, str] = {}
            for line in raw.decode().split("\n"):
                key, _, value = line.partition(": ")
                fields[key] = value
            if "data" in fields:
                ident = fields.get("id")
                return (
                    fields.get("event", "message"),
                    json.loads(fields["data"]),
                    None if ident is None else int(ident),
                )

    def frames(self, count: int) -> list[dict[str, Any]]:
        out = []
        while len(out) < count:
            name, data, _ = self.next()
            if name == "frame":
                out.append(data)
        return out

    def close(self) -> None:
        self.resp.close()


def test_stream_sends_every_tick_as_a_full_frame(garden: Flask) -> None:
    sse = SSE(garden, "/api/v1/stream")
    try:
        frames = sse.frames(8)
    finally:
        sse.close()
    ticks = [f["tick"] for f in frames]
    assert ticks == sorted(set(ticks))
    # At 50 Hz a reader keeps up: consecutive frames are (nearly always) consecutive ticks.
    assert sum(b - a == 1 for a, b in itertools.pairwise(ticks)) >= 4
    f = frames[-1]
    assert f.keys() >= FRAME_KEYS
    assert f["world"] == {"width": 400.0, "height": 300.0}
    g = f["grid"]
    assert len(g["levels"]) == g["rows"] * g["cols"] == 30 * 40
    assert layer(f, "creature")["total_in_view"] == 300 == len(layer(f, "creature")["x"])
    assert layer(f, "player")["label"] == ["Scout"]
    assert f["panel"]["stats"] == {"creatures": 300, "players": 1}
    stats = f["stats"]
    assert stats["rate_hz"] == 50.0 and stats["paused"] is False and stats["running"] is True
    assert stats["tick_duration_ms"] >= 0 and stats["queue_depth"] == 0


def test_hz_caps_the_frame_rate(garden: Flask) -> None:
    sse = SSE(garden, "/api/v1/stream?hz=4")
    try:
        sse.frames(1)
        times, ticks = [], []
        for _ in range(4):
            (f,) = sse.frames(1)
            times.append(time.monotonic())
            ticks.append(f["tick"])
    finally:
        sse.close()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.2  # 1/4 s apart, minus scheduling slack
    assert all(b - a >= 2 for a, b in itertools.pairwise(ticks))  # ticks skipped


def test_viewport_and_limit_restrict_the_frame(garden: Flask) -> None:
    sse = SSE(garden, "/api/v1/stream?bbox=0,0,200,150&limit=20")
    try:
        (f,) = sse.frames(1)
    finally:
        sse.close()
    assert f["bbox"] == [0, 0, 200, 150]
    c = layer(f, "creature")
    assert len(c["x"]) == 20 < c["total_in_view"] < 300
    assert all(0 <= x < 200 for x in c["x"]) and all(0 <= y < 150 for y in c["y"])


def test_each_frame_is_built_once_per_tick_for_all_readers(garden: Flask) -> None:
    rt = rt_of(garden)
    calls: list[tuple[int, Any, int]] = []
    original = rt.world.view_region
    lock = threading.Lock()

    def counting(snap: Snapshot, bbox: Any, limit: int) -> dict[str, Any]:
        with lock:
            calls.append((snap.tick, bbox, limit))
        return original(snap, bbox, limit)

    rt.world.view_region = counting  # type: ignore[method-assign]
    readers = [SSE(garden, "/api/v1/stream?limit=50") for _ in range(4)]
    got: list[list[int]] = [[] for _ in readers]

    def read(i: int) -> None:
        got[i] = [f["tick"] for f in readers[i].frames(10)]

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(readers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for r in readers:
        r.close()
    assert all(len(g) == 10 for g in got)
    seen = {t for g in got for t in g}
    assert len(calls) == len({c[0] for c in calls})  # never twice for one tick
    assert len(calls) == len(seen) and len(seen) < sum(len(g) for g in got)


def test_paused_world_sends_stats_events_not_frames(garden: Flask) -> None:
    rt = rt_of(garden)
    garden.config["WORLDLOOP_STREAM_STATS_EVERY"] = 0.1
    sse = SSE(garden, "/api/v1/stream")
    try:
        sse.frames(1)
        rt.pause()
        rt.ticker.wait_for_ticks(rt.stats().ticks + 1, 0.1)  # a tick under way may finish
        paused_tick = rt.snapshot.tick
        events = [sse.next() for _ in range(6)]
    finally:
        sse.close()
    frames = [d for name, d, _ in events if name == "frame"]
    stats = [d for name, d, _ in events if name == "stats"]
    assert all(f["tick"] <= paused_tick for f in frames) and len(frames) <= 1
    assert stats and stats[-1]["paused"] is True


def test_stream_ends_when_the_world_stops(garden: Flask) -> None:
    rt = rt_of(garden)
    sse = SSE(garden, "/api/v1/stream")
    sse.frames(2)
    names: list[str] = []
    done = threading.Event()

    def drain() -> None:
        try:
            while True:
                names.append(sse.next()[0])
        except StopIteration:
            done.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    t0 = time.monotonic()
    rt.stop()
    assert done.wait(3), "stream did not end after the world stopped"
    assert time.monotonic() - t0 < 3
    assert names[-1] == "end"
    sse.close()


def test_stream_slots_are_bounded_and_released(tmp_path: Path) -> None:
    app = make_app(tmp_path, WORLDLOOP_STREAM_MAX_CLIENTS=1)
    try:
        first = SSE(app, "/api/v1/stream")
        first.frames(1)
        resp = app.test_client().get("/api/v1/stream")
        assert resp.status_code == 503
        assert resp.get_json()["error"]["code"] == "too_many_streams"
        first.close()
        again = SSE(app, "/api/v1/stream")
        again.frames(1)
        again.close()
    finally:
        app.extensions["worldloop"].stop()


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("bbox=1,2,3", "bbox"),
        ("bbox=a,b,c,d", "bbox"),
        ("bbox=5,0,1,10,3", "bbox"),  # any two corners are fine (normalized); five numbers not
        ("bbox=0,0,nan,10", "bbox"),
        ("bbox=0,0,inf,10", "bbox"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("limit=99999999", "limit"),
        ("hz=0", "hz"),
        ("hz=inf", "hz"),
        ("hz=fast", "hz"),
    ],
)
def test_bad_parameters_are_400_json(garden: Flask, query: str, param: str) -> None:
    for path in ("/api/v1/stream", "/api/v1/frame"):
        resp = garden.test_client().get(f"{path}?{query}")
        assert resp.status_code == 400
        err = resp.get_json()["error"]
        assert err["code"] == "bad_request" and err["details"]["param"] == param


def test_frame_endpoint_returns_the_latest_frame(garden: Flask) -> None:
    rt = rt_of(garden)
    assert rt.ticker.wait_for_ticks(1, 5)
    rt.pause()
    rt.ticker.wait_for_ticks(rt.stats().ticks + 1, 0.1)  # a tick already under way may finish
    resp = garden.test_client().get("/api/v1/frame?limit=5")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["tick"] == rt.snapshot.tick
    assert resp.headers["ETag"] == rt.snapshot.etag
    assert len(layer(body, "creature")["x"]) == 5 and body["stats"]["paused"] is True


def test_stream_of_a_world_not_running_here_is_503(garden: Flask) -> None:
    rt_of(garden).stop()
    client = garden.test_client()
    # The last snapshot is still there, but a stream of a stopped world would never move.
    resp = client.get("/api/v1/stream")
    assert resp.status_code == 503
    assert resp.get_json()["error"]["code"] == "world_not_running"


def test_streams_are_cut_after_max_seconds_and_sooner_on_one_thread_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worldloop.api import stream as stream_module

    app = make_app(tmp_path, WORLDLOOP_STREAM_MAX_SECONDS=0.5)
    try:
        sse = SSE(app, "/api/v1/stream")
        t0 = time.monotonic()
        names = []
        with pytest.raises(StopIteration):
            while True:
                names.append(sse.next()[0])
        assert 0.4 < time.monotonic() - t0 < 3
        assert names[-1] == "end" and "frame" in names
        sse.close()
        # A server without threads (gunicorn sync) gets the short default cut.
        app.config["WORLDLOOP_STREAM_MAX_SECONDS"] = None
        monkeypatch.setattr(stream_module, "SINGLE_THREAD_MAX_SECONDS", 0.3)
        resp = app.test_client().get(
            "/api/v1/stream", buffered=False, environ_overrides={"wsgi.multithread": False}
        )
        t0 = time.monotonic()
        body = b"".join(resp.response)
        assert time.monotonic() - t0 < 3
        assert body.endswith(b"event: end\ndata: {}\n\n")
        resp.close()
    finally:
        app.extensions["worldloop"].stop()
