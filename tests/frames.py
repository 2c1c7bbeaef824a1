"""Reading frames of the frame protocol (worldloop.frame) in tests: layers by kind, rows."""

from __future__ import annotations

from typing import Any

PER_ENTITY = ("id", "x", "y", "label", "heading", "shade", "say")


def layer(frame: dict[str, Any], kind: str) -> dict[str, Any]:
    """The frame's layer of ``kind`` (fails the test when it has none)."""
    found = [lay for lay in frame.get("layers", []) if lay["kind"] == kind]
    kinds = [lay["kind"] for lay in frame.get("layers", [])]
    assert len(found) == 1, f"expected one {kind!r} layer in {kinds}"
    return found[0]


def rows(frame: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The layer's entities as one dict per entity (its per-entity columns zipped)."""
    lay = layer(frame, kind)
    cols = {k: lay[k] for k in PER_ENTITY if k in lay}
    return [{k: v[i] for k, v in cols.items()} for i in range(len(lay["x"]))]
