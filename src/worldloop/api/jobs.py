"""Admin API for scheduled jobs: list them, pause, resume, run now (admin token required)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from flask import Blueprint, current_app
from pydantic import BaseModel, Field, WithJsonSchema

from ..jobs import JobScheduler
from .auth import ADMIN
from .declare import Reply, operation

if TYPE_CHECKING:
    from .openapi import DocContext

bp = Blueprint("worldloop_jobs", __name__, url_prefix="/api/v1/admin/jobs")

DateTime = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]


class TickSlot(BaseModel):
    """A slot of a tick schedule."""

    tick: int


class TimeSlot(BaseModel):
    """A slot of a wall-clock schedule (UTC)."""

    at: DateTime
    ts: float


JobSlot = TickSlot | TimeSlot


class JobResult(BaseModel):
    status: Literal["ok", "error", "timeout", "rejected"]
    slot: float | None
    finished_at: DateTime
    duration: float
    value: Any = Field(description="What the job returned (small JSON, or a description).")
    error: str | None


class Job(BaseModel):
    name: str
    kind: Literal["world", "background"]
    schedule: str = Field(description="e.g. every 60s, cron '0 4 * * *' UTC")
    basis: Literal["wall", "tick"]
    misfire: Literal["run_late", "skip", "coalesce"]
    max_concurrent: Annotated[int, Field(ge=1)]
    timeout: float | None
    paused: bool
    on: Literal["pool", "celery"] = Field(
        description="Background jobs: this server's worker threads, or Celery workers."
    )
    running: Annotated[int, Field(ge=0)]
    next_run: JobSlot | None = Field(description="null while paused")
    last_slot: JobSlot | None
    last_run: DateTime | None
    last_result: JobResult | None
    runs: int
    errors: int
    skipped: int
    timeouts: int


class JobList(BaseModel):
    jobs: list[Job]


class JobEnvelope(BaseModel):
    job: Job


class RunQueued(BaseModel):
    job: str
    queued: bool
    command_id: str | None = Field(
        description="World jobs and jobs on Celery: the journaled command; else null."
    )


class JobRun(BaseModel):
    run: RunQueued
    job: Job


class JobName(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="The job's name.")


def get_jobs() -> JobScheduler:
    """The job scheduler of the request's world (named in the URL, else the default)."""
    from ..state import request_world

    name = request_world()
    state = current_app.extensions["worldloop"]
    jobs = state.jobs if name is None else state.host.get(name).jobs
    return jobs  # type: ignore[no-any-return]


def job_examples(ctx: DocContext, op: dict[str, Any]) -> None:
    """The serving app's job names as examples of the path parameter (so a fuzzer finds them)."""
    if not ctx.jobs:
        return
    for param in op.get("parameters", ()):
        if param["name"] == "name" and param["in"] == "path":
            param["examples"] = {name: {"value": name} for name in ctx.jobs}


_NO_JOB = (404, "No job of that name")
_TAGS = ("jobs",)


@bp.get("")
@operation(
    "Every job: schedule, next and last run, last result, counters",
    tags=_TAGS,
    security=ADMIN,
    responses={200: Reply("The jobs in registration order", JobList)},
    errors=(401, 403),
)
def list_jobs() -> dict[str, Any]:
    return {"jobs": get_jobs().statuses()}


@bp.get("/<name>")
@operation(
    "One job",
    tags=_TAGS,
    security=ADMIN,
    path=JobName,
    amend=job_examples,
    responses={200: Reply("The job", JobEnvelope)},
    errors=(401, 403, _NO_JOB),
)
def show_job(name: str) -> dict[str, Any]:
    return {"job": get_jobs().status(name)}


@bp.post("/<name>/pause")
@operation(
    "Stop scheduling a job (runs in flight finish; missed slots are skipped)",
    tags=_TAGS,
    security=ADMIN,
    path=JobName,
    amend=job_examples,
    responses={200: Reply("The job, paused", JobEnvelope)},
    errors=(401, 403, _NO_JOB),
)
def pause_job(name: str) -> dict[str, Any]:
    return {"job": get_jobs().pause(name)}


@bp.post("/<name>/resume")
@operation(
    "Schedule a job again from now on",
    tags=_TAGS,
    security=ADMIN,
    path=JobName,
    amend=job_examples,
    responses={200: Reply("The job, resumed", JobEnvelope)},
    errors=(401, 403, _NO_JOB),
)
def resume_job(name: str) -> dict[str, Any]:
    return {"job": get_jobs().resume(name)}


@bp.post("/<name>/run")
@operation(
    "Run a job once now, off schedule (world jobs at the next tick)",
    tags=_TAGS,
    security=ADMIN,
    path=JobName,
    amend=job_examples,
    responses={202: Reply("Accepted: the run and the job's status", JobRun)},
    errors=(
        401,
        403,
        _NO_JOB,
        (409, "The job already runs max_concurrent times (job_busy)"),
        (503, "The world is not running in this process, or the command queue is full"),
    ),
)
def run_job(name: str) -> tuple[dict[str, Any], int]:
    """Run once now, off schedule: 202, the run happens at the next tick or in the pool."""
    jobs = get_jobs()
    run = jobs.run_now(name)
    return {"run": run, "job": jobs.status(name)}, 202
