"""GET /api/v1/live (where the viewer gets its frames) and GET /api/v1/ws (binary frames).

Binary frames over WebSocket (worldloop.frame_binary) are served by the stream gateway
(worldloop.gateway), an asyncio process; a web worker is a WSGI thread and cannot hold a
WebSocket, so it answers ``/api/v1/ws`` with a 307 to the gateway, as it does the stream, or
404 ``not_supported`` when no gateway runs. Browsers do not follow redirects when opening a
WebSocket, so ``/api/v1/live`` tells the viewer the gateway's WebSocket URL outright.
Both are routed again under each world (``/api/v1/worlds/<name>/live|ws``, worldloop.api.worlds):
the answer then names that world's stream and WebSocket.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response
from pydantic import BaseModel, Field

from ..state import request_world
from .declare import Reply, operation
from .errors import Unsupported
from .params import ViewQuery
from .stream import gateway_base, gateway_url

bp = Blueprint("worldloop_live", __name__, url_prefix="/api/v1")


class Live(BaseModel):
    """Where live frames are served to a client of this server."""

    stream: str = Field(description="The server-sent events stream (JSON frames).")
    websocket: str | None = Field(
        None,
        description="ws:// or wss:// URL of binary frames (keyframes and deltas), or null when "
        "no gateway serves (WORLDLOOP_GATEWAY=off, or an auto gateway not listening yet): "
        "then the stream is the only way.",
    )


@bp.get("/live")
@operation(
    "Where the live frames are: the SSE stream, and the binary WebSocket when a gateway runs",
    tags=("viewer",),
    responses={200: Reply("The endpoints", Live)},
)
def live() -> dict[str, Any]:
    name = request_world()
    prefix = "/api/v1" if name is None else f"/api/v1/worlds/{name}"
    base = gateway_base()
    ws = None
    if base is not None:
        ws = "ws" + base.removeprefix("http") + prefix + "/ws"
    return {"stream": prefix + "/stream", "websocket": ws}


@bp.get("/ws")
@operation(
    "Live binary frames over WebSocket (served by the stream gateway)",
    tags=("viewer",),
    description=(
        "On the stream gateway: a WebSocket of binary frames (worldloop/frame_binary.py: a "
        "keyframe first, then deltas against the client's last frame; the text `keyframe` "
        'from the client asks for a keyframe), text `{"type":"stats"}` messages when idle '
        'and `{"type":"end"}` at the end. A web worker answers 307 to the gateway (a '
        "browser reads the URL from GET /api/v1/live instead), or 404 without a gateway."
    ),
    query=ViewQuery,
    responses={307: Reply("The gateway serves it", headers=("Location",))},
    errors=((400, "A malformed or out-of-range parameter"), (404, "No gateway runs here")),
)
def websocket(query: ViewQuery) -> Response:
    target = gateway_url()
    if target is None:
        raise Unsupported(
            "binary frames over WebSocket are served by the stream gateway "
            "(WORLDLOOP_GATEWAY), which does not run here; GET /api/v1/stream serves frames",
            details={"stream": "/api/v1/stream"},
        )
    return Response(status=307, headers={"Location": target, "Cache-Control": "no-store"})
