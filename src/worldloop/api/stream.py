"""GET /api/v1/stream (server-sent events) and GET /api/v1/frame: what the viewer draws.

A frame is ``world.view_region(snapshot, bbox, limit)`` (by default the world's
``World.scene`` encoded by worldloop.frame.scene_json), built and
serialized once per snapshot per (bbox, limit) however many clients watch, plus a small
``stats`` object added per event. Readers only wait on the snapshot board, so a stream never
holds anything the tick needs. Streams end within about a second once the world stops.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from flask import Blueprint, Response, current_app, request
from pydantic import BaseModel, Field, WithJsonSchema

from ..errors import WorldNotRunning
from ..hosting import Capacity, shutting_down
from ..hosting import capacity as server_capacity
from ..metrics import FRAME_BUILD, STREAMS_OPEN
from ..runtime import WorldRuntime
from ..snapshot import Snapshot, dumps
from ..state import current_settings, get_runtime, state_of
from .common import not_modified
from .declare import Reply, operation
from .errors import TooManyStreams
from .params import Box, ViewQuery

if TYPE_CHECKING:
    from .openapi import DocContext

bp = Blueprint("worldloop_stream", __name__, url_prefix="/api/v1")

Bbox = Box

SINGLE_THREAD_MAX_SECONDS = 10.0
POLL = 0.5
"""Longest a stream waits without checking that the world still runs (bounds shutdown)."""


_closing = threading.Event()


def close_streams() -> None:
    """End every stream of this process within ``POLL`` s (a server is shutting down).

    Under gunicorn, streams also end by themselves once the worker is told to stop (its
    ``alive`` flag, see worldloop.hosting.shutting_down), with or without worldloop's hooks.
    """
    _closing.set()


class LoopStats(BaseModel):
    """Live loop figures, read without locks when the event is sent."""

    rate_hz: float
    paused: bool
    running: bool
    tick_duration_ms: float
    tick_lateness_ms: float
    queue_depth: int
    ticks: int
    overruns: int
    skipped: int
    errors: int


class FrameWorld(BaseModel):
    """The world's bounds: x in 0..width, y in 0..height, origin at the top left."""

    width: float
    height: float


Color = Annotated[str, Field(description="A CSS colour, e.g. #f2c14e or hsl(40,80%,60%).")]


class FrameLayer(BaseModel):
    """Entities of one kind as parallel columns (worldloop.frame.Layer): every per-entity
    column has one value per entity, in the same order as x and y."""

    kind: str = Field(description="What these entities are (the viewer's legend).")
    x: list[float]
    y: list[float]
    total_in_view: int = Field(description="Entities of this kind in the region before limit.")
    size: float = Field(description="Marker radius, screen pixels.")
    id: list[int] | None = None
    label: list[str | None] | None = Field(None, description="Written under each marker.")
    heading: list[float] | None = Field(
        None, description="Radians, 0 = +x, y down: the marker becomes an arrow."
    )
    shade: list[Annotated[float, Field(ge=0, le=1)]] | None = Field(
        None, description="0 pale .. 1 full colour."
    )
    color: Color | list[Color] | None = Field(None, description="One for the layer, or one each.")
    say: list[str | None] | None = Field(None, description="A speech bubble over each marker.")


class FrameGrid(BaseModel):
    """A field under the entities (worldloop.frame.Grid): levels 0..255, row-major, rows*cols
    square cells of side cell from (x0, y0), shaded from low (0) to high (255)."""

    kind: str
    cols: int
    rows: int
    cell: float
    x0: float
    y0: float
    low: Color
    high: Color
    levels: list[Annotated[int, Field(ge=0, le=255)]]


class FrameSeries(BaseModel):
    """One plotted line: the viewer samples value over time."""

    label: str
    value: float
    color: Color | None


class FramePanel(BaseModel):
    """The figures and plot the world wants in the viewer's panel (worldloop.frame.Panel)."""

    stats: dict[str, float | int | str]
    plots: list[FrameSeries]
    plot_title: str
    plot_unit: str = Field(description="Unit of the plot's vertical axis.")


class Frame(BaseModel):
    """World.view_region(snapshot, bbox, limit) plus the loop's stats: the frame protocol
    (docs/your-world.md). Every world gives tick, sim_time and summary; a world that defines
    World.scene adds world (bounds), bbox, background, layers, and optionally grid and panel."""

    stats: LoopStats
    tick: int
    sim_time: float
    summary: dict[str, Any]
    world: FrameWorld | None = None
    bbox: Annotated[list[float], Field(min_length=4, max_length=4)] | None = Field(
        None, description="The region drawn (x0, y0, x1, y1), clipped to the world."
    )
    background: Color | None = None
    layers: list[FrameLayer] | None = Field(None, description="Drawn in order, last on top.")
    grid: FrameGrid | None = None
    panel: FramePanel | None = None


_FRAME = "#/components/schemas/Frame"
_STATS = "#/components/schemas/LoopStats"
EVENT_VARIANTS = [
    {
        "required": ["id"],
        "properties": {"event": {"const": "frame"}, "data": {"contentSchema": {"$ref": _FRAME}}},
    },
    {"properties": {"event": {"const": "stats"}, "data": {"contentSchema": {"$ref": _STATS}}}},
    {"properties": {"event": {"const": "end"}, "data": {"const": "{}"}}},
]
"""What each event's data holds (JSON Schema keeps contentSchema as an annotation)."""


class StreamEvent(BaseModel):
    """One server-sent event (as OpenAPI 3.0/3.1 tools read a text/event-stream schema: per
    event). data is JSON text: a Frame for frame events (id = tick), LoopStats for stats events,
    {} for the final end event."""

    event: Literal["frame", "stats", "end"]
    data: Annotated[str, WithJsonSchema({"type": "string", "contentMediaType": "application/json"})]
    id: Annotated[str, Field(pattern="^[0-9]+$")] | None = None
    retry: int | None = None


@dataclass(frozen=True, slots=True)
class View:
    """What one client asked to see: a region (None: everything), a cap, and a frame rate."""

    bbox: Bbox | None
    limit: int
    hz: float | None


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
    """Caps concurrent streams per process, so viewers cannot take every server thread.

    The cap is ``WORLDLOOP_STREAM_MAX_CLIENTS``, lowered to what the server can give once it
    is known (see worldloop.hosting.capacity): on gunicorn gthread, ``--threads`` minus
    ``WORLDLOOP_STREAM_RESERVE_THREADS`` kept for the API and the probes; none on a sync
    worker, where a stream would hold the only thread.
    """

    def __init__(self, max_clients: int, reserve: int = 0) -> None:
        self.max_clients = max_clients
        self.reserve = reserve
        self._lock = threading.Lock()
        self._capacity: Capacity | None = None
        self._sem: threading.BoundedSemaphore | None = None

    @property
    def capacity(self) -> int:
        known = self._capacity
        return self.max_clients if known is None else known.streams

    def resolve(self, multithread: bool | None = None) -> Capacity:
        """Find the server's capacity once (the gunicorn worker is on the stack here)."""
        with self._lock:
            if self._capacity is None:
                self._capacity = server_capacity(
                    max_streams=self.max_clients, reserve=self.reserve, multithread=multithread
                )
                self._sem = threading.BoundedSemaphore(max(1, self._capacity.streams))
            return self._capacity

    def take(self, multithread: bool | None = None) -> None:
        cap = self.resolve(multithread)
        assert self._sem is not None
        if cap.streams <= 0 and self.max_clients <= 0:
            raise TooManyStreams(
                "event streams are switched off here (WORLDLOOP_STREAM_MAX_CLIENTS=0); "
                "GET /api/v1/frame serves single frames",
                details={"capacity": 0},
            )
        if cap.streams <= 0:
            fix = (
                "run gunicorn -k gthread --threads 16 (or -c python:worldloop.gunicorn_conf)"
                if cap.server == "gunicorn"
                else "give the server more threads"
            )
            raise TooManyStreams(
                f"this server cannot hold an event stream without stalling other requests "
                f"({cap.worker_class or cap.server} worker, {cap.threads} thread(s)); {fix}; "
                "GET /api/v1/frame serves single frames meanwhile",
                details={"capacity": 0, "worker_class": cap.worker_class, "threads": cap.threads},
            )
        if not self._sem.acquire(blocking=False):
            raise TooManyStreams(
                f"all {cap.streams} stream slots are in use; retry later",
                details={"capacity": cap.streams},
            )
        STREAMS_OPEN.inc()

    def give(self) -> None:
        STREAMS_OPEN.dec()
        assert self._sem is not None
        self._sem.release()


def frame_event(rt: WorldRuntime, snap: Snapshot, view: View) -> bytes:
    """The whole ``frame`` event for ``snap`` and ``view``, built once per snapshot however
    many clients watch (its stats are those of the first reader's instant in that tick), so
    each further viewer costs a socket write, not an encoding."""

    def build(s: Snapshot) -> bytes:
        frame = frame_json(rt, s, view.bbox, view.limit)
        return _event("frame", with_stats(frame, loop_stats(rt)), s.tick)

    return snap.cached(f"event:{view.bbox}:{view.limit}", build)


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
    while rt.running and not _closing.is_set() and not shutting_down():
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
        yield frame_event(rt, snap, view)
        last_tick = snap.tick
        last_sent = time.monotonic()
        if view.hz is not None:
            next_at = last_sent + 1.0 / view.hz
    yield b"event: end\ndata: {}\n\n"


def gateway_url() -> str | None:
    """Where this request's stream is served when a gateway serves streams (a web worker of a
    runner process whose gateway is on: worldloop.gateway.address), else None: same path and
    query, on WORLDLOOP_GATEWAY_URL, or on the gateway's port of the host the client asked for."""
    base = gateway_base()
    if base is None:
        return None
    return base + (request.full_path if request.query_string else request.path)


def gateway_base() -> str | None:
    """The gateway's base URL as this request's client reaches it, or None (no gateway): an
    explicit WORLDLOOP_GATEWAY always, an ``auto`` one while the runner reports it listening
    (worldloop.gateway.address)."""
    from ..gateway.address import AUTO, mode

    state = state_of()
    cfg = state.settings
    configured = mode(cfg.gateway)
    if configured is None or not state.splits:
        return None
    address = configured
    if configured == AUTO:
        ipc = getattr(state.runtime, "ipc", None)
        found = getattr(ipc, "gateway", None)
        if not isinstance(found, str):
            return None
        address = found
    if cfg.gateway_url:
        return cfg.gateway_url.rstrip("/")
    from ..gateway.supervise import parse_address

    host, port = parse_address(address)
    if host in ("0.0.0.0", "::", ""):
        host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{request.scheme}://{host}:{port}"


def _view(query: ViewQuery) -> View:
    limit = query.limit
    if limit is None:
        limit = current_settings().stream_default_limit
    return View(query.bbox, limit, query.hz)


_BAD_PARAM = (400, "A malformed or out-of-range parameter (details.param names it)")


@bp.get("/frame")
@operation(
    "One frame of the latest snapshot (the stream's data, once)",
    tags=("viewer",),
    query=ViewQuery,
    headers=(("If-None-Match", "An ETag from an earlier answer: 304 when no new tick."),),
    responses={
        200: Reply("The frame", Frame, headers=("ETag", "Cache-Control")),
        304: Reply("No new tick since the ETag sent"),
    },
    errors=(_BAD_PARAM, (503, "No snapshot published yet")),
)
def frame(query: ViewQuery) -> Response:
    """One frame of the latest snapshot (same ``bbox``/``limit`` as the stream)."""
    view = _view(query)
    rt = get_runtime()
    snap = rt.snapshot
    headers = {"ETag": snap.etag, "Cache-Control": "no-cache"}
    if not_modified(snap.etag):
        return Response(status=304, headers=headers)
    body = with_stats(frame_json(rt, snap, view.bbox, view.limit), loop_stats(rt))
    return Response(body, content_type="application/json", headers=headers)


def _event_schemas(ctx: DocContext, op: dict[str, Any]) -> None:
    """StreamEvent, with its variants by event type, which refer to Frame and LoopStats."""
    ctx.ref(Frame)
    ctx.ref(LoopStats)
    ctx.ref(StreamEvent)
    ctx.annotate("StreamEvent", oneOf=EVENT_VARIANTS)


@bp.get("/stream")
@operation(
    "Live frames as server-sent events",
    tags=("viewer",),
    description=(
        "Starts with `retry: 1000`, then a `frame` event per new snapshot (id = tick, "
        "data = Frame JSON; at most hz a second), a `stats` event (LoopStats JSON) "
        "when no new tick came for about a second (e.g. paused), and `end` (data {}) "
        "when the world stops or the stream reaches WORLDLOOP_STREAM_MAX_SECONDS "
        "(10 s by default on one-request-per-worker servers). Needs a threaded "
        "server; WORLDLOOP_STREAM_MAX_CLIENTS streams per process."
    ),
    query=ViewQuery,
    amend=_event_schemas,
    responses={
        200: Reply(
            "The event stream; the schema describes one event",
            media_type="text/event-stream",
            schema={"$ref": "#/components/schemas/StreamEvent"},
            headers=("Cache-Control",),
        )
    },
    errors=(
        _BAD_PARAM,
        (
            503,
            "The world does not run in this process, or every stream slot is taken "
            "(too_many_streams)",
        ),
    ),
)
def stream(query: ViewQuery) -> Response:
    """Server-sent events: ``?hz=`` caps the frame rate, ``?bbox=&limit=`` the region."""
    target = gateway_url()
    if target is not None:
        return Response(status=307, headers={"Location": target, "Cache-Control": "no-store"})
    view = _view(query)
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
        slots.take(bool(request.environ.get("wsgi.multithread", False)))
    body = events(
        rt,
        view,
        max_seconds=None if max_seconds is None else float(max_seconds),
        stats_every=cfg.stream_stats_every,
    )
    resp = Response(body, mimetype="text/event-stream")
    if slots is not None:
        resp.call_on_close(slots.give)  # runs even if the body never started
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Accel-Buffering"] = "no"
    return resp
