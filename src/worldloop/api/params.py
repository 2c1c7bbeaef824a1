"""Query parameters: one field type per meaning, one model per operation that takes any.

``bbox`` means the same on /entities, /frame and /stream, so one type parses it everywhere;
likewise a cursor, a wait flag, a long-poll timeout and a frame rate. An empty value is the same
as an absent one (``?wait`` alone means true), and the document says so (``allowEmptyValue``).
Bounds that come from settings are checked against the app's ``Settings``, passed as the
validation context by ``declare.parse_query``, and shown in the document as the serving app's
values. Each parameter accepts exactly what its schema allows: a client (or a fuzzer) that
follows /openapi.json is never refused.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    GetJsonSchemaHandler,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticUseDefault, core_schema

from ..config import Settings

Box = tuple[float, float, float, float]
MAX_ID = 2**63 - 1
MAX_BBOX = 1e9


EMPTY_KEY = "x-worldloop-empty"
"""Marks a parameter whose empty value means absent (the document turns it into
``allowEmptyValue: true`` on the parameter)."""
SETTING_KEY = "x-worldloop-maximum-setting"
"""Marks a bound read from a setting (the document turns it into ``maximum``: the value of that
setting in the app it describes)."""

NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
"""A decimal number as a bbox value is written (no inf, nan, spaces or ``_``)."""
BBOX_PATTERN = f"^(?:{NUMBER},{NUMBER},{NUMBER},{NUMBER})?$"
_BBOX = re.compile(BBOX_PATTERN.removesuffix("$") + r"\Z")  # JSON Schema's $: the very end
CURSOR_PATTERN = "^[0-9]{0,32}$"
_CURSOR = re.compile(CURSOR_PATTERN.removesuffix("$") + r"\Z")


class _BlankIsAbsent:
    """An empty value is the field's default, and the document allows an empty value."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(_blank_is_absent, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out[EMPTY_KEY] = True
        return out


def _blank_is_absent(value: Any) -> Any:
    if value == "":
        raise PydanticUseDefault()
    return value


Blank = _BlankIsAbsent()


def parse_bbox(value: Any) -> Any:
    """``x0,y0,x1,y1``: two opposite corners in any order (normalized to lower-left, upper-right),
    each value clamped to ±1e9 (a box that large covers any world)."""
    if not isinstance(value, str):
        return value
    if not _BBOX.match(value):
        raise ValueError("bbox must be four numbers x0,y0,x1,y1")
    a, b, c, d = (min(MAX_BBOX, max(-MAX_BBOX, float(p))) for p in value.split(","))
    return (min(a, c), min(b, d), max(a, c), max(b, d))


def parse_cursor(value: Any) -> Any:
    """The last id of the previous page, as decimal digits (beyond every id: an empty page)."""
    if isinstance(value, str):
        if not _CURSOR.match(value):
            raise ValueError("cursor must be decimal digits (next_cursor of the previous page)")
        return min(int(value), MAX_ID)
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


class _AtMostSetting:
    """Refuse values above the app's setting ``field`` (``Settings`` in the context); the
    document shows that setting's value as the ``maximum``."""

    def __init__(self, field: str) -> None:
        self.field = field

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        key = Settings.key(self.field)

        def check(value: Any, info: ValidationInfo) -> Any:
            settings = (info.context or {}).get("settings") or Settings()
            bound = float(getattr(settings, self.field))
            if value is not None and value > bound:
                raise ValueError(f"must be at most {bound:g} ({key})")
            return value

        return core_schema.with_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out[SETTING_KEY] = self.field
        return out


def at_most_setting(field: str) -> _AtMostSetting:
    """Refuse values above the app's setting ``field``; document it as the maximum."""
    return _AtMostSetting(field)


Bbox = Annotated[
    Box | None,
    BeforeValidator(parse_bbox),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": BBOX_PATTERN,
            "description": (
                "Two opposite corners x0,y0,x1,y1 in world units, in any order (the box is "
                "normalized); values beyond ±1e9 count as ±1e9; empty or absent: the whole world."
            ),
        }
    ),
    Blank,  # before-validators run last to first: this one first
]
Cursor = Annotated[
    int,
    BeforeValidator(parse_cursor),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": CURSOR_PATTERN,
            "description": "next_cursor of the previous page (decimal digits).",
        }
    ),
    Blank,
]
Flag = Annotated[
    bool,
    BeforeValidator(parse_flag),
    WithJsonSchema({"type": "boolean", EMPTY_KEY: True}),
]
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
