"""The forecast's endpoints: ask for one (``POST /api/v1/forecast``), read the last one (GET).

Asking submits the internal ``forecast`` command and answers 202 once the request is durable in
the world (its id is the task's id); the work itself runs off the tick (demo/forecast.py). On a
slow clock (a tick every 100 s at 0.01 Hz) the answer is 202 ``queued`` after the command wait:
the request is recorded at the next tick, never dropped, so "not in time" is no failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel

from ..api.common import refuse_while_paused
from ..api.declare import Reply, operation
from ..api.errors import api_error
from ..errors import status_of
from ..state import current_settings, get_runtime
from .commands import Forecast

if TYPE_CHECKING:
    from ..api.openapi import DocContext

bp = Blueprint("meadow_forecast", __name__, url_prefix="/api/v1")


class ForecastAccepted(BaseModel):
    """A forecast request recorded in the world: the work runs off the tick."""

    task_id: str
    from_tick: int
    ticks: int
    command_id: str


class ForecastQueued(BaseModel):
    """A forecast request not recorded within the command wait (a slow clock): it is queued,
    recorded at the next tick, and GET /api/v1/forecast shows it once it has run."""

    command_id: str
    status: Literal["queued"]
    ticks: int


def _document_accepted(ctx: DocContext, op: dict[str, Any]) -> None:
    """202 is either the recorded request or, on a slow clock, the queued one."""
    either = {"anyOf": [ctx.ref(ForecastAccepted), ctx.ref(ForecastQueued)]}
    op["responses"]["202"]["content"]["application/json"]["schema"] = either


class ForecastView(BaseModel):
    """The last forecast: its outcome and, when it succeeded, sheep and grass over time."""

    task_id: str
    status: str
    from_tick: int
    ticks: int
    error: str | None = None
    series: dict[str, list[float]] | None = None


@bp.post("/forecast")
@operation(
    "Ask for a forecast of the meadow, computed off the tick (Celery or a worker thread)",
    tags=("world",),
    body=Forecast,
    amend=_document_accepted,
    responses={
        202: Reply(
            "The request is durable and the forecast runs, or (slow clock) it is queued",
            ForecastAccepted,
        )
    },
    errors=(400, (409, "A forecast is already running, or the world is paused"), 413, 422, 503),
)
def ask_forecast(body: Forecast) -> Response | tuple[Response, int]:
    rt = get_runtime()
    refuse_while_paused(rt, "ask for a forecast")
    ticket = rt.submit("forecast", body.model_dump(mode="json"))
    outcome = ticket.outcome if ticket.wait(current_settings().command_wait) else None
    if outcome is None:
        queued = {"command_id": ticket.id, "status": "queued", "ticks": body.ticks}
        return jsonify(queued), 202
    if not outcome.ok:
        code = outcome.error_code or "command_rejected"
        details = dict(outcome.error_details or {})
        return api_error(status_of(code, 409), code, outcome.error_message or "rejected", details)
    return jsonify({**outcome.result, "command_id": ticket.id}), 202


@bp.get("/forecast")
@operation(
    "The last forecast the world received",
    tags=("world",),
    responses={200: Reply("The last forecast", ForecastView)},
    errors=((404, "No forecast yet"),),
)
def get_forecast() -> Response:
    """The last forecast, from the latest snapshot's summary (it is world state: it survives
    restarts and replays)."""
    snap = get_runtime().latest
    done = None if snap is None else snap.summary.get("forecast")
    if done is None:
        return api_error(404, "not_found", "no forecast yet: POST /api/v1/forecast asks for one")
    view: dict[str, Any] = dict(done)
    return jsonify(view)
