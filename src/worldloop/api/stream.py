"""GET /api/v1/stream (server-sent events) and GET /api/v1/frame: what the viewer draws.

A frame is ``world.view_region(snapshot, bbox, limit)`` (see World.view_region), built and
serialized once per snapshot per (bbox, limit) however many clients watch, plus a small
``stats`` object added per event. Readers only wait on the snapshot board, so a stream never
holds anything the tick needs. Streams end within about a second once the world stops.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, request

from ..errors import WorldNotRunning
from ..metrics import FRAME_BUILD, STREAMS_OPEN
from ..runtime import WorldRuntime
from ..snapshot import Snapshot, dumps
from ..state import current_settings, get_runtime
from .errors import BadRequest, TooManyStreams

bp = Blueprint("worldloop_stream", __name__, url_prefix="/api/v1")

Bbox = tuple[float, float, float, float]

SINGLE_THREAD_MAX_SECONDS = 10.0
POLL = 0.5
"""Longest a stream waits without checking that the world still runs (bounds shutdown)."""


_closing = threading.Event()


def close_streams() -> None:
    """End every stream of this process within ``POLL`` s (a server is shutting down)."""
    _closing.set()


@dataclass(frozen=True, slots=True)
class View:
    """What one client asked to see: a region (None: everything), a cap, and a frame rate."""

    bbox: Bbox | None
    limit: int
    hz: float | None


def parse_view(args: Any, default_limit: int, max_limit: int, max_hz: float) -> View:
    """Validate ``bbox``, ``limit`` and ``hz`` query parameters (400 with details if wrong)."""
    bbox: Bbox | None = None
    raw = args.get("bbox")
    if raw is not None and raw != "":
        parts = raw.split(",")
        if len(parts) != 4:
            raise BadRequest("bbox must be x0,y0,x1,y1", details={"param": "bbox", "value": raw})
        try:
            x0, y0, x1, y1 = (float(p) for p in parts)
        except ValueError:
            raise BadRequest(
                "bbox must be four numbers", details={"param": "bbox", "value": raw}
            ) from None
        finite = all(math.isfinite(v) and abs(v) <= 1e9 for v in (x0, y0, x1, y1))
        if not finite or x1 <= x0 or y1 <= y0:
            raise BadRequest(
                "bbox needs numbers within ±1e9 with x0 < x1 and y0 < y1",
                details={"param": "bbox", "value": raw},
            )
        bbox = (x0, y0, x1, y1)
    limit = default_limit
    raw = args.get("limit")
    if raw is not None and raw != "":
        try:
            limit = int(raw)
        except ValueError:
            raise BadRequest(
                "limit must be an integer", details={"param": "limit", "value": raw}
            ) from None
        if not 0 <= limit <= max_limit:
            raise BadRequest(
                f"limit must be within 0..{max_limit}",
                details={"param": "limit", "value": limit, "max": max_limit},
            )
    hz: float | None = None
    raw = args.get("hz")
    if raw is not None and raw != "":
        try:
            hz = float(raw)
        except ValueError:
            raise BadRequest("hz must be a number", details={"param": "hz", "value": raw}) from None
        if not math.isfinite(hz) or hz <= 0 or hz > max_hz:
            raise BadRequest(
                f"hz must be > 0 and <= {max_hz:g}",
                details={"param": "hz", "value": raw, "max": max_hz},
            )
    return View(bbox, limit, hz)


def frame_json(rt: WorldRuntime, snap: Snapshot, bbox: Bbox | None, limit: int) -> bytes:
    """The frame of ``snap`` for (bbox, limit) as JSON bytes, built once per snapshot."""
    key = f"frame:{bbox}:{limit}"

    def build(s: Snapshot) -> bytes:
        started = time.perf_counter()
        data = dumps(rt.world.view_region(s, bbox, limit))
        FRAME_BUILD.labels(rt.name).observe(time.perf_counter() - started)
        return data

    return snap.cached(key, build)


def loop_stats(rt: WorldRuntime) -> dict[str, Any]:
    """Live loop figures for the viewer's panel (cheap; read without locks)."""
    st = rt.stats()
    return {
        "rate_hz": st.rate_hz,
        "paused": st.paused,
        "running": rt.running,
        "tick_duration_ms": round(rt.last_tick_duration * 1000.0, 3),
        "tick_lateness_ms": round(st.last_lateness * 1000.0, 3),
        "queue_depth": rt.queue_depth,
        "ticks": st.ticks,
        "overruns": st.overruns,
        "skipped": st.skipped,
        "errors": st.errors,
    }


def with_stats(frame: bytes, stats: dict[str, Any]) -> bytes:
    """Splice ``"stats"`` into a serialized frame object without re-encoding the frame."""
    head = b'{"stats":' + json.dumps(stats, separators=(",", ":")).encode()
    body = frame.strip()
    if body in (b"{}", b""):
        return head + b"}"
    return head + b"," + body[1:]


class StreamSlots:
    """Caps concurrent streams per process, so viewers cannot take every server thread."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._sem = threading.BoundedSemaphore(capacity)

    def take(self) -> None:
        if not self._sem.acquire(blocking=False):
            raise TooManyStreams(
                f"all {self.capacity} stream slots are in use; retry later",
                details={"capacity": self.capacity},
            )
        STREAMS_OPEN.inc()

    def give(self) -> None:
        STREAMS_OPEN.dec()
        self._sem.release()


def _event(name: str, data: bytes, event_id: int | None = None) -> bytes:
    head = f"event: {name}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return head.encode() + b"data: " + data + b"\n\n"


def events(
    rt: WorldRuntime,
    view: View,
    *,
    max_seconds: float | None,
    stats_every: float,
) -> Iterator[bytes]:
    """The SSE byte stream: a ``frame`` per new snapshot (at most ``view.hz`` a second), a small
    ``stats`` event when nothing new came for ``stats_every`` s, and the end when the world stops.
    """
    started = time.monotonic()
    last_tick = -1
    last_sent = started
    next_at = 0.0
    yield b"retry: 1000\n\n"
    while rt.running and not _closing.is_set():
        now = time.monotonic()
        if max_seconds is not None and now - started >= max_seconds:
            break
        if view.hz is not None and now < next_at:
            time.sleep(min(next_at - now, POLL))
            continue
        snap = rt.wait_after(last_tick, POLL)
        if snap is None or snap.tick <= last_tick:
            if time.monotonic() - last_sent >= stats_every:
                stats = json.dumps(loop_stats(rt), separators=(",", ":")).encode()
                yield _event("stats", stats)
                last_sent = time.monotonic()
            continue
        frame = frame_json(rt, snap, view.bbox, view.limit)
        yield _event("frame", with_stats(frame, loop_stats(rt)), snap.tick)
        last_tick = snap.tick
        last_sent = time.monotonic()
        if view.hz is not None:
            next_at = last_sent + 1.0 / view.hz
    yield b"event: end\ndata: {}\n\n"


def _view() -> View:
    cfg = current_settings()
    return parse_view(
        request.args,
        cfg.stream_default_limit,
        cfg.stream_max_limit,
        1000.0,
    )


@bp.get("/frame")
def frame() -> Response:
    """One frame of the latest snapshot (same ``bbox``/``limit`` as the stream)."""
    view = _view()
    rt = get_runtime()
    snap = rt.snapshot
    body = with_stats(frame_json(rt, snap, view.bbox, view.limit), loop_stats(rt))
    resp = Response(body, content_type="application/json")
    resp.headers["ETag"] = snap.etag
    resp.headers["Cache-Control"] = "no-cache"
    return resp


@bp.get("/stream")
def stream() -> Response:
    """Server-sent events: ``?hz=`` caps the frame rate, ``?bbox=&limit=`` the region."""
    view = _view()
    rt = get_runtime()
    rt.snapshot  # noqa: B018 - 503 now (not mid-stream) when the world is not served here
    if not rt.running:
        raise WorldNotRunning(f"world {rt.name!r} is not running in this process")
    cfg = current_settings()
    max_seconds = cfg.stream_max_seconds
    if max_seconds is None and not request.environ.get("wsgi.multithread", False):
        max_seconds = SINGLE_THREAD_MAX_SECONDS
    obs = current_app.extensions.get("worldloop_observe")
    slots: StreamSlots | None = obs.stream_slots if obs is not None else None
    if slots is not None:
        slots.take()
    body = events(
        rt,
        view,
        max_seconds=None if max_seconds is None else float(max_seconds),
        stats_every=cfg.stream_stats_every,
    )
    resp = Response(body, mimetype="text/event-stream")
    if slots is not None:
        resp.call_on_close(slots.give)  # runs even if the body never started
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Accel-Buffering"] = "no"
    return resp
