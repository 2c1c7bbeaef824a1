"""Admin API for scheduled jobs: list them, pause, resume, run now (admin token required)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

from ..jobs import JobScheduler
from .auth import require_admin

bp = Blueprint("worldloop_jobs", __name__, url_prefix="/api/v1/admin/jobs")


def get_jobs() -> JobScheduler:
    """The job scheduler of the current app's world."""
    return current_app.extensions["worldloop"].jobs  # type: ignore[no-any-return]


@bp.get("")
@require_admin
def list_jobs() -> dict[str, Any]:
    """Every job with its schedule, next and last run, last result and counters."""
    return {"jobs": get_jobs().statuses()}


@bp.get("/<name>")
@require_admin
def show_job(name: str) -> dict[str, Any]:
    return {"job": get_jobs().status(name)}


@bp.post("/<name>/pause")
@require_admin
def pause_job(name: str) -> dict[str, Any]:
    return {"job": get_jobs().pause(name)}


@bp.post("/<name>/resume")
@require_admin
def resume_job(name: str) -> dict[str, Any]:
    return {"job": get_jobs().resume(name)}


@bp.post("/<name>/run")
@require_admin
def run_job(name: str) -> tuple[dict[str, Any], int]:
    """Run once now, off schedule: 202, the run happens at the next tick or in the pool."""
    jobs = get_jobs()
    run = jobs.run_now(name)
    return {"run": run, "job": jobs.status(name)}, 202
