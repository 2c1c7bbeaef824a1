"""Admin API for offloaded tasks: counts and the recent tasks with their states."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app
from pydantic import BaseModel, Field

from .auth import ADMIN
from .declare import Reply, operation

bp = Blueprint("worldloop_tasks", __name__, url_prefix="/api/v1/admin/tasks")


class Task(BaseModel):
    """One task request sent by this process (the most recent 200 are kept)."""

    id: str = Field(description="The request's id in the world, and the Celery task id.")
    task: str
    tick: int = Field(description="The tick that asked for it.")
    state: str = Field(description="sent, pending, started, retry, succeeded, failed or timed_out.")
    sent_at: float = Field(description="Unix time it was sent.")
    finished_at: float | None = None
    error: str | None = None


class TaskList(BaseModel):
    enabled: bool = Field(description="False when this world has no task sender.")
    counts: dict[str, int] = Field(
        description=(
            "sent, resent, succeeded, failed, timed_out, retried, send_errors, result_retries."
        )
    )
    tasks: list[Task]


@bp.get("")
@operation(
    "Offloaded tasks: counts, and the recent ones with their states",
    tags=("jobs",),
    security=ADMIN,
    responses={200: Reply("Counts and recent tasks", TaskList)},
    errors=(401, 403),
)
def list_tasks() -> dict[str, Any]:
    offload = current_app.extensions["worldloop"].offload
    if offload is None:
        return {"enabled": False, "counts": {}, "tasks": []}
    stats: dict[str, Any] = offload.stats()
    return {"enabled": True, **stats}
