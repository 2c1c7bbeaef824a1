"""Query parameters: one field type per meaning, one model per operation that takes any.

``bbox`` means the same on /entities, /frame and /stream, so one type parses it everywhere;
likewise a cursor, a wait flag, a long-poll timeout and a frame rate. An empty value is the same
as an absent one (``?wait`` alone means true). Bounds that come from settings are checked
against the app's ``Settings``, passed as the validation context by ``declare.parse_query``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic_core import PydanticUseDefault

from ..config import Settings

Box = tuple[float, float, float, float]
MAX_ID = 2**63 - 1
MAX_BBOX = 1e9


def _blank_is_absent(value: Any) -> Any:
    if value == "":
        raise PydanticUseDefault()
    return value


Blank = BeforeValidator(_blank_is_absent)


def parse_bbox(value: Any) -> Any:
    """``x0,y0,x1,y1``: finite numbers within ±1e9 with x0 < x1 and y0 < y1."""
    if not isinstance(value, str):
        return value
    parts = value.split(",")
    try:
        if len(parts) != 4:
            raise ValueError
        box = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError("bbox must be four numbers x0,y0,x1,y1") from None
    if not all(math.isfinite(v) and abs(v) <= MAX_BBOX for v in box):
        raise ValueError("bbox values must be finite and within ±1e9")
    x0, y0, x1, y1 = box
    if not (x0 < x1 and y0 < y1):
        raise ValueError("bbox needs x0 < x1 and y0 < y1")
    return box


def parse_cursor(value: Any) -> Any:
    """Cursors are opaque to clients: the last id of the previous page, as decimal digits."""
    if isinstance(value, str):
        if not value.isascii() or not value.isdigit() or len(value) > 19 or int(value) > MAX_ID:
            raise ValueError("cursor is not one this API issued")
        return int(value)
    return value


def parse_flag(value: Any) -> Any:
    """``1/true/yes`` (or the name alone) is true, ``0/false/no`` false; anything else fails."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("1", "true", "yes", ""):
            return True
        if word in ("0", "false", "no"):
            return False
        raise ValueError("must be true or false")
    return value


def at_most_setting(field: str) -> AfterValidator:
    """Refuse values above the app's setting ``field`` (``Settings`` in the context)."""
    key = Settings.key(field)

    def check(value: Any, info: ValidationInfo) -> Any:
        settings = (info.context or {}).get("settings") or Settings()
        bound = float(getattr(settings, field))
        if value is not None and value > bound:
            raise ValueError(f"must be at most {bound:g} ({key})")
        return value

    return AfterValidator(check)


Bbox = Annotated[
    Box | None,
    BeforeValidator(parse_bbox),
    WithJsonSchema(
        {
            "type": "string",
            "description": (
                "x0,y0,x1,y1 in world units (x0<x1, y0<y1, each within ±1e9); empty or absent: "
                "the whole world."
            ),
        }
    ),
    Blank,  # before-validators run last to first: this one first
]
Cursor = Annotated[
    int,
    BeforeValidator(parse_cursor),
    WithJsonSchema({"type": "string", "description": "next_cursor of the previous page."}),
    Blank,
]
Flag = Annotated[bool, BeforeValidator(parse_flag), WithJsonSchema({"type": "boolean"})]
PageLimit = Annotated[int, Field(ge=1, le=1000, description="Items per page."), Blank]
FrameLimit = Annotated[
    Annotated[int, Field(ge=0), at_most_setting("stream_max_limit")] | None,
    Field(
        description=(
            "At most this many creatures (a deterministic subsample; creatures.total_in_view says "
            "how many are in view). Default WORLDLOOP_STREAM_DEFAULT_LIMIT (2000), at most "
            "WORLDLOOP_STREAM_MAX_LIMIT (20000)."
        ),
    ),
    Blank,
]
Hz = Annotated[
    Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)] | None,
    Field(description="At most this many frames a second (default: every published tick)."),
    Blank,
]
Seconds = Annotated[
    Annotated[float, Field(ge=0, allow_inf_nan=False), at_most_setting("long_poll_max")] | None,
    Field(description="Longest wait in seconds, at most WORLDLOOP_LONG_POLL_MAX (30 by default)."),
    Blank,
]
Tick = Annotated[
    int, Field(ge=-1, le=2**62, description="Wait for a snapshot newer than this tick."), Blank
]


class EntitiesQuery(BaseModel):
    bbox: Bbox = None
    limit: PageLimit = 100
    cursor: Cursor = 0


class ViewQuery(BaseModel):
    """What one client asked to see: a region (None: everything), a cap, and a frame rate."""

    bbox: Bbox = None
    limit: FrameLimit = None
    hz: Hz = None


class SnapshotQuery(BaseModel):
    after_tick: Tick = -1
    timeout: Seconds = None


class WaitQuery(BaseModel):
    wait: Annotated[
        Flag, Field(description="Wait until applied: 200 with the result, or the 4xx refusal.")
    ] = False
