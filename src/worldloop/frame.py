"""The frame protocol: what a world shows in the viewer, as plain data.

A world says what to draw by returning a :class:`Scene` from ``World.scene`` (bounds, layers of
entities, an optional grid, the panel's stats and plots); the engine turns it into a frame for
the stream and ``GET /api/v1/frame``. The scene is a data model only: :func:`scene_json` is one
encoding of it (JSON, the default); another encoding can read the same scene. A world that
defines no scene still streams its tick, simulation time, summary and loop figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

Box = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class Layer:
    """Entities of one kind, as parallel columns (NumPy arrays or lists), drawn as markers.

    ``heading`` (radians, 0 = +x, y pointing down) turns the marker into an arrow; ``color``
    is one CSS colour for the layer or one per entity; ``shade`` (0..1 per entity) fades a
    marker from pale to full colour; ``label`` and ``say`` write a name under / a speech bubble
    over a marker; ``size`` is the marker radius in screen pixels; ``total`` is how many
    entities of this kind the region holds before a limit cut the columns (default: all).
    """

    kind: str
    x: ArrayLike
    y: ArrayLike
    id: ArrayLike | None = None
    label: Sequence[str | None] | None = None
    heading: ArrayLike | None = None
    color: str | Sequence[str] | None = None
    shade: ArrayLike | None = None
    say: Sequence[str | None] | None = None
    size: float = 3.0
    total: int | None = None


@dataclass(frozen=True, slots=True)
class Grid:
    """A field under the entities: ``levels`` 0..255 (rows x cols) of square cells of side
    ``cell`` from (x0, y0), shaded from the colour ``low`` (0) to ``high`` (255)."""

    levels: NDArray[np.uint8]
    cell: float
    x0: float = 0.0
    y0: float = 0.0
    low: str = "#3a2e1e"
    high: str = "#56aa48"
    kind: str = "grid"


@dataclass(frozen=True, slots=True)
class Series:
    """One line of the panel's plot: the viewer samples ``value`` over time."""

    label: str
    value: float
    color: str | None = None


@dataclass(frozen=True, slots=True)
class Panel:
    """What the viewer's side panel shows for this world: named figures and plotted series,
    with the plot's title and the unit of its vertical axis."""

    stats: Mapping[str, float | int | str] = field(default_factory=dict)
    plots: Sequence[Series] = ()
    plot_title: str = ""
    plot_unit: str = ""


@dataclass(frozen=True, slots=True)
class Scene:
    """A world's drawing of one snapshot: its bounds (width x height, origin at the top
    left), the region shown (``bbox``; None = everything), layers drawn in order, an optional
    grid under them, and the panel."""

    width: float
    height: float
    layers: Sequence[Layer] = ()
    grid: Grid | None = None
    panel: Panel | None = None
    bbox: Box | None = None
    background: str = "#1d2a1f"


def clip_box(bbox: Box | None, width: float, height: float) -> Box:
    """The asked region clipped to the world's bounds (the whole world when None)."""
    if bbox is None:
        return (0.0, 0.0, float(width), float(height))
    x0, y0, x1, y1 = bbox
    return (
        max(0.0, min(x0, width)),
        max(0.0, min(y0, height)),
        max(0.0, min(x1, width)),
        max(0.0, min(y1, height)),
    )


def pick(x: ArrayLike, y: ArrayLike, box: Box, limit: int) -> tuple[NDArray[np.intp], int]:
    """Rows whose (x, y) lie in ``box``, evenly thinned to at most ``limit``; and how many
    there were before thinning (a layer's ``total``)."""
    xs, ys = np.asarray(x), np.asarray(y)
    x0, y0, x1, y1 = box
    rows = np.flatnonzero((xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1))
    total = int(rows.size)
    limit = max(0, int(limit))
    if total > limit:
        rows = rows[np.linspace(0, total - 1, limit).astype(np.intp)] if limit else rows[:0]
    return rows, total


def _column(values: ArrayLike, digits: int | None = None) -> Any:
    arr = np.asarray(values)
    if digits is not None and arr.dtype.kind == "f":
        arr = np.round(arr, digits)
    return arr


def layer_json(layer: Layer) -> dict[str, Any]:
    """One layer as JSON-able columns (positions to 0.01, headings and shades to 0.001)."""
    x = _column(layer.x, 2)
    out: dict[str, Any] = {
        "kind": layer.kind,
        "x": x,
        "y": _column(layer.y, 2),
        "total_in_view": int(layer.total if layer.total is not None else len(x)),
        "size": float(layer.size),
    }
    if layer.id is not None:
        out["id"] = _column(layer.id)
    if layer.heading is not None:
        out["heading"] = _column(layer.heading, 3)
    if layer.shade is not None:
        out["shade"] = _column(layer.shade, 3)
    if layer.color is not None:
        out["color"] = layer.color if isinstance(layer.color, str) else list(layer.color)
    if layer.label is not None:
        out["label"] = list(layer.label)
    if layer.say is not None:
        out["say"] = list(layer.say)
    return out


def scene_json(scene: Scene | None) -> dict[str, Any]:
    """The JSON encoding of a scene: the frame fields after tick, sim_time and summary."""
    if scene is None:
        return {}
    out: dict[str, Any] = {
        "world": {"width": float(scene.width), "height": float(scene.height)},
        "bbox": list(clip_box(scene.bbox, scene.width, scene.height)),
        "background": scene.background,
        "layers": [layer_json(layer) for layer in scene.layers],
    }
    if scene.grid is not None:
        g = scene.grid
        levels = np.asarray(g.levels, dtype=np.uint8)
        out["grid"] = {
            "kind": g.kind,
            "rows": int(levels.shape[0]),
            "cols": int(levels.shape[1]) if levels.ndim > 1 else 1,
            "cell": float(g.cell),
            "x0": float(g.x0),
            "y0": float(g.y0),
            "low": g.low,
            "high": g.high,
            "levels": levels.reshape(-1),
        }
    if scene.panel is not None:
        p = scene.panel
        out["panel"] = {
            "stats": dict(p.stats),
            "plots": [{"label": s.label, "value": s.value, "color": s.color} for s in p.plots],
            "plot_title": p.plot_title,
            "plot_unit": p.plot_unit,
        }
    return out
