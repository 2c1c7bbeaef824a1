"""The binary encoding of a frame: typed arrays a browser reads without parsing JSON, and deltas.

A :class:`FrameState` is one frame of a :class:`~worldloop.frame.Scene`, quantized once:
positions as uint16 against the world's bounds (1/65535 of its width: finer than the JSON's
0.01 for worlds up to 655 units wide, and about as fine up to 1000), headings as uint16 turns,
shades as uint8, ids as int32, the grid as its uint8 levels. :func:`encode` writes it whole (a
*keyframe*) or as the change from an earlier state the client holds (a *delta*): numeric columns
as wrapping differences against the base entity with the same id (or at the same index when the
ids did not change), the grid left out when its hash is the base's and sent as a difference
otherwise.
Differences are exact in integers, so a chain of deltas reproduces the keyframe bit for bit.
The message is deflated when that pays. The small rest (summary, stats, panel, strings) rides
along as a short UTF-8 JSON block. Layout (little-endian; arrays 4-byte aligned in the body)::

    envelope  "WL" u8 version u8 encoding(0 raw, 1 deflate-raw)   then the body
    body      u8 kind(0 key, 1 delta) u8 flags(1 scene) u16 layers u32 tick u32 base_tick
              f64 sim_time f32 width height bbox[4] u32 meta_len  meta(JSON) pad
    layer     u8 mode(0 full, 1 delta by index, 2 delta by id) u8 cols(1 id, 2 heading,
              4 shade) u16 0 u32 n  [i32 id: first, then successive differences (not in mode 1)]
              u16 x[n] u16 y[n] [u16 heading[n]] [u8 shade[n]]   each padded to 4 bytes
    grid      u8 mode(0 none, 1 as base, 2 full, 3 minus base) u8 0 u16 0 u32 rows u32 cols
              [u8 levels[rows*cols]]

worldloop/web/frames.js is the browser's decoder; :func:`decode` is Python's (tests, clients).
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .frame import Scene, clip_box
from .snapshot import dumps

MAGIC = b"WL"
VERSION = 1
RAW, DEFLATED = 0, 1
KEY, DELTA = 0, 1
FULL, BY_INDEX, BY_ID = 0, 1, 2
COL_ID, COL_HEADING, COL_SHADE = 1, 2, 4
GRID_NONE, GRID_SAME, GRID_FULL, GRID_DIFF = 0, 1, 2, 3
Q = 65535
"""Positions are 0..Q across the world's width (x) and height (y)."""
TURN = 65536
"""Headings are 0..TURN-1 per full turn."""
DEFLATE_MIN = 256
"""Bodies shorter than this are sent raw: deflate's header would cost more than it saves."""
DEFLATE_LEVEL = 3
"""Deltas ~10% smaller than at level 1 for about as much time; level 6 costs 3-4 times more
(bench/frames_binary.py). Paid once per frame per viewport class, on a worker thread."""

_HEAD = struct.Struct("<BBHIId6fI")
_LAYER = struct.Struct("<BBHI")
_GRID = struct.Struct("<BBHII")
_ENVELOPE = struct.Struct("<2sBB")
U16 = NDArray[np.uint16]


@dataclass(frozen=True, slots=True, eq=False)
class LayerState:
    """One layer quantized: the columns a delta compares (strings stay in the meta)."""

    cols: int
    x: U16
    y: U16
    id: NDArray[np.int32] | None = None
    heading: U16 | None = None
    shade: NDArray[np.uint8] | None = None

    @property
    def n(self) -> int:
        return int(self.x.size)


@dataclass(frozen=True, slots=True, eq=False)
class FrameState:
    """One frame quantized for the wire: what a keyframe holds and what a delta compares."""

    tick: int
    sim_time: float
    meta: bytes
    """The JSON block: summary, stats, background, panel, per-layer strings, grid descriptor."""
    scene: bool = False
    bounds: tuple[float, float] = (0.0, 0.0)
    bbox: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    layers: tuple[LayerState, ...] = ()
    grid: NDArray[np.uint8] | None = None
    grid_shape: tuple[int, int] = (0, 0)
    grid_hash: int = 0


def _q(values: ArrayLike, span: float) -> U16:
    v = np.asarray(values, dtype=np.float64)
    scale = Q / span if span > 0 else 0.0
    return np.clip(np.rint(v * scale), 0, Q).astype("<u2")


def _ints32(values: ArrayLike) -> NDArray[np.int32]:
    arr = np.asarray(values, dtype=np.int64)
    if arr.size and (arr.min() < -(2**31) or arr.max() >= 2**31):
        raise ValueError("the binary frame sends entity ids as int32; these do not fit")
    return arr.astype("<i4")


def _layer_meta(layer: Any, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": layer.kind,
        "size": float(layer.size),
        "total_in_view": int(layer.total if layer.total is not None else n),
    }
    if layer.color is not None:
        out["color"] = layer.color if isinstance(layer.color, str) else list(layer.color)
    if layer.label is not None:
        out["label"] = list(layer.label)
    if layer.say is not None:
        out["say"] = list(layer.say)
    return out


def frame_state(
    tick: int,
    sim_time: float,
    summary: Mapping[str, Any],
    scene: Scene | None,
    stats: Mapping[str, Any] | None = None,
) -> FrameState:
    """Quantize one frame (the same content as the JSON frame of ``scene``), once per tick per
    viewport class; every keyframe and delta of that tick is written from it."""
    meta: dict[str, Any] = {"summary": dict(summary)}
    if stats is not None:
        meta["stats"] = dict(stats)
    if scene is None:
        return FrameState(int(tick), float(sim_time), dumps(meta))
    w, h = float(scene.width), float(scene.height)
    layers: list[LayerState] = []
    metas: list[dict[str, Any]] = []
    for layer in scene.layers:
        x, y = _q(layer.x, w), _q(layer.y, h)
        cols = 0
        ids = heading = shade = None
        if layer.id is not None:
            cols |= COL_ID
            ids = _ints32(layer.id)
        if layer.heading is not None:
            cols |= COL_HEADING
            turns = np.mod(np.asarray(layer.heading, dtype=np.float64), 2 * math.pi)
            heading = (np.rint(turns * (TURN / (2 * math.pi))).astype(np.int64) % TURN).astype(
                "<u2"
            )
        if layer.shade is not None:
            cols |= COL_SHADE
            s = np.clip(np.asarray(layer.shade, dtype=np.float64), 0.0, 1.0)
            shade = np.rint(s * 255).astype(np.uint8)
        layers.append(LayerState(cols, x, y, ids, heading, shade))
        metas.append(_layer_meta(layer, int(x.size)))
    meta.update(background=scene.background, layers=metas)
    if scene.panel is not None:
        p = scene.panel
        meta["panel"] = {
            "stats": dict(p.stats),
            "plots": [{"label": s.label, "value": s.value, "color": s.color} for s in p.plots],
            "plot_title": p.plot_title,
            "plot_unit": p.plot_unit,
        }
    grid = None
    shape = (0, 0)
    ghash = 0
    if scene.grid is not None:
        g = scene.grid
        levels = np.asarray(g.levels, dtype=np.uint8)
        shape = (int(levels.shape[0]), int(levels.shape[1]) if levels.ndim > 1 else 1)
        grid = np.ascontiguousarray(levels).reshape(-1)
        ghash = zlib.crc32(grid.data, zlib.crc32(struct.pack("<II", *shape)))
        meta["grid"] = {
            "kind": g.kind,
            "cell": float(g.cell),
            "x0": float(g.x0),
            "y0": float(g.y0),
            "low": g.low,
            "high": g.high,
        }
    box = clip_box(scene.bbox, w, h)
    return FrameState(
        int(tick),
        float(sim_time),
        dumps(meta),
        True,
        (w, h),
        box,
        tuple(layers),
        grid,
        shape,
        ghash,
    )


class _Writer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def put(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)
        pad = -self.size % 4
        if pad:
            self.parts.append(b"\0" * pad)
            self.size += pad

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def _match(cur: NDArray[np.int32], base: NDArray[np.int32]) -> NDArray[np.intp]:
    """For each current id, the index of the same id in ``base`` (-1 when new)."""
    if not base.size:
        return np.full(cur.size, -1, dtype=np.intp)
    order = np.argsort(base, kind="stable")
    where = np.searchsorted(base, cur, sorter=order)
    where = np.minimum(where, base.size - 1)
    at = order[where]
    return np.where(base[at] == cur, at, -1)


def _diff(cur: NDArray[Any], base: NDArray[Any] | None, at: NDArray[np.intp] | None) -> bytes:
    """``cur`` minus the base value (wrapping in its unsigned type); 0 where there is none."""
    if base is None:
        return cur.tobytes()
    if at is None:
        ref = base
    else:
        ref = np.where(at >= 0, base[np.maximum(at, 0)] if base.size else 0, 0).astype(cur.dtype)
    data: bytes = (cur - ref).astype(cur.dtype).tobytes()
    return data


def _id_column(ids: NDArray[np.int32]) -> bytes:
    d = np.diff(ids.astype(np.int64), prepend=0)
    data: bytes = d.astype("<u4").view("<i4").tobytes()  # wraps, as the decoder's sums do
    return data


def _layer(out: _Writer, cur: LayerState, base: LayerState | None) -> None:
    mode = FULL
    at = None
    if base is not None and base.cols == cur.cols:
        if cur.id is not None and base.id is not None:
            if cur.n == base.n and np.array_equal(cur.id, base.id):
                mode = BY_INDEX
            else:
                mode = BY_ID
                at = _match(cur.id, base.id)
        elif cur.n == base.n:
            mode = BY_INDEX
    out.put(_LAYER.pack(mode, cur.cols, 0, cur.n))
    ref = None if mode == FULL else base
    if cur.id is not None and mode != BY_INDEX:
        out.put(_id_column(cur.id))
    out.put(_diff(cur.x, None if ref is None else ref.x, at))
    out.put(_diff(cur.y, None if ref is None else ref.y, at))
    if cur.heading is not None:
        out.put(_diff(cur.heading, None if ref is None else ref.heading, at))
    if cur.shade is not None:
        out.put(_diff(cur.shade, None if ref is None else ref.shade, at))


def encode(state: FrameState, base: FrameState | None = None, *, deflate: bool = True) -> bytes:
    """The message for ``state``: a keyframe, or (``base`` given) a delta that a client holding
    exactly ``base`` turns into ``state``. Deflated when ``deflate`` and it pays."""
    if base is not None and (not base.scene or not state.scene or base.bounds != state.bounds):
        base = None
    out = _Writer()
    n = len(state.layers)
    kind = KEY if base is None else DELTA
    base_tick = state.tick if base is None else base.tick
    out.put(
        _HEAD.pack(
            kind,
            1 if state.scene else 0,
            n,
            state.tick,
            base_tick,
            state.sim_time,
            *state.bounds,
            *state.bbox,
            len(state.meta),
        )
        + state.meta
    )
    if state.scene:
        for i, layer in enumerate(state.layers):
            _layer(
                out, layer, base.layers[i] if base is not None and i < len(base.layers) else None
            )
        _grid(out, state, base)
    body = out.bytes()
    if deflate and len(body) >= DEFLATE_MIN:
        packer = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -15)
        packed = packer.compress(body) + packer.flush()
        if len(packed) < len(body):
            return _ENVELOPE.pack(MAGIC, VERSION, DEFLATED) + packed
    return _ENVELOPE.pack(MAGIC, VERSION, RAW) + body


def _grid(out: _Writer, state: FrameState, base: FrameState | None) -> None:
    rows, cols = state.grid_shape
    if state.grid is None:
        out.put(_GRID.pack(GRID_NONE, 0, 0, 0, 0))
        return
    if base is not None and base.grid is not None and base.grid_shape == state.grid_shape:
        if base.grid_hash == state.grid_hash and np.array_equal(base.grid, state.grid):
            out.put(_GRID.pack(GRID_SAME, 0, 0, rows, cols))
        else:
            out.put(_GRID.pack(GRID_DIFF, 0, 0, rows, cols))
            out.put((state.grid - base.grid).tobytes())  # wraps: uint8
        return
    out.put(_GRID.pack(GRID_FULL, 0, 0, rows, cols))
    out.put(state.grid.tobytes())


# -- decoding (what worldloop/web/frames.js does, in Python) ----------------------------------


@dataclass(slots=True)
class Decoded:
    """A decoded frame: its quantized state (the base of the next delta) and its JSON-shaped
    ``frame`` (the same fields as the JSON frame, positions dequantized)."""

    state: FrameState
    frame: dict[str, Any] = field(default_factory=dict)


class DeltaBaseError(ValueError):
    """A delta arrived for a base the decoder does not hold: ask for a keyframe."""


def body_of(message: bytes) -> bytes:
    """The message's body, inflated if it was deflated."""
    magic, version, encoding = _ENVELOPE.unpack_from(message)
    if magic != MAGIC or version != VERSION:
        raise ValueError(f"not a worldloop binary frame (magic {magic!r}, version {version})")
    body = message[_ENVELOPE.size :]
    return zlib.decompress(body, -15) if encoding == DEFLATED else body


class _Reader:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.at = 0

    def take(self, n: int) -> bytes:
        data = self.body[self.at : self.at + n]
        self.at += n + (-n % 4)
        return data

    def array(self, dtype: str, n: int) -> NDArray[Any]:
        size = np.dtype(dtype).itemsize * n
        return np.frombuffer(self.take(size), dtype=dtype).copy()


def _undiff(d: NDArray[Any], base: NDArray[Any] | None, at: NDArray[np.intp] | None) -> Any:
    if base is None:
        return d
    if at is None:
        return (d + base).astype(d.dtype)
    ref = np.where(at >= 0, base[np.maximum(at, 0)] if base.size else 0, 0).astype(d.dtype)
    return (d + ref).astype(d.dtype)


def decode(message: bytes, base: Decoded | None = None) -> Decoded:
    """Decode one message; a delta needs ``base``, the decoded frame of its base tick."""
    body = body_of(message)
    head = _HEAD.unpack_from(body)
    kind, flags, n, tick, base_tick, sim_time = head[:6]
    bounds, bbox, meta_len = head[6:8], head[8:12], head[12]
    rd = _Reader(body)
    rd.take(_HEAD.size + meta_len)
    meta_raw = body[_HEAD.size : _HEAD.size + meta_len]
    prev = None
    if kind == DELTA:
        if base is None or base.state.tick != base_tick:
            raise DeltaBaseError(f"delta of tick {tick} needs tick {base_tick}")
        prev = base.state
    layers: list[LayerState] = []
    for i in range(n):
        mode, cols, _, count = _LAYER.unpack_from(body, rd.at)
        rd.take(_LAYER.size)
        bl = prev.layers[i] if prev is not None and mode != FULL else None
        ids = at = None
        if cols & COL_ID:
            if mode == BY_INDEX:
                assert bl is not None and bl.id is not None
                ids = bl.id.copy()
            else:
                ids = np.cumsum(rd.array("<i4", count), dtype=np.int64).astype(np.int32)
                if mode == BY_ID:
                    assert bl is not None and bl.id is not None
                    at = _match(ids, bl.id)
        x = _undiff(rd.array("<u2", count), None if bl is None else bl.x, at)
        y = _undiff(rd.array("<u2", count), None if bl is None else bl.y, at)
        heading = shade = None
        if cols & COL_HEADING:
            heading = _undiff(rd.array("<u2", count), None if bl is None else bl.heading, at)
        if cols & COL_SHADE:
            shade = _undiff(rd.array("<u1", count), None if bl is None else bl.shade, at)
        layers.append(LayerState(cols, x, y, ids, heading, shade))
    grid = None
    shape = (0, 0)
    if flags & 1:
        gmode, _, _, rows, gcols = _GRID.unpack_from(body, rd.at)
        rd.take(_GRID.size)
        shape = (rows, gcols)
        if gmode == GRID_SAME:
            assert prev is not None
            grid = prev.grid
        elif gmode == GRID_DIFF:
            assert prev is not None and prev.grid is not None
            grid = (rd.array("<u1", rows * gcols) + prev.grid).astype(np.uint8)
        elif gmode == GRID_FULL:
            grid = rd.array("<u1", rows * gcols)
    ghash = 0
    if grid is not None:
        ghash = zlib.crc32(grid.data, zlib.crc32(struct.pack("<II", *shape)))
    state = FrameState(
        tick, sim_time, meta_raw, bool(flags & 1), bounds, bbox, tuple(layers), grid, shape, ghash
    )
    return Decoded(state, _frame(state))


def _frame(state: FrameState) -> dict[str, Any]:
    meta = json.loads(state.meta)
    out: dict[str, Any] = {"tick": state.tick, "sim_time": state.sim_time, **meta}
    if not state.scene:
        return out
    w, h = state.bounds
    out["world"] = {"width": w, "height": h}
    out["bbox"] = list(state.bbox)
    for lm, layer in zip(out["layers"], state.layers, strict=True):
        lm["x"] = layer.x * (w / Q)
        lm["y"] = layer.y * (h / Q)
        if layer.id is not None:
            lm["id"] = layer.id
        if layer.heading is not None:
            lm["heading"] = layer.heading * (2 * math.pi / TURN)
        if layer.shade is not None:
            lm["shade"] = layer.shade / 255.0
    if state.grid is not None and "grid" in out:
        rows, cols = state.grid_shape
        out["grid"].update(rows=rows, cols=cols, levels=state.grid)
    return out
