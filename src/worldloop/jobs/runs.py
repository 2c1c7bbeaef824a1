"""What this process knows of its jobs' runs: how each run ended (JobResult), the runs in flight,
and each job's counters, and how they are shown in the admin API and to metrics.

This is in-memory bookkeeping only; which slot a job last ran is world state
(``World.job_slots``), journaled with the world.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from .schedules import Basis
from .spec import JobContext, JobSpec


@dataclass(frozen=True, slots=True)
class JobResult:
    """How one run ended."""

    status: Literal["ok", "error", "timeout", "rejected"]
    slot: float | None
    finished_at: float
    duration: float
    value: Any = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "slot": self.slot,
            "finished_at": iso(self.finished_at),
            "duration": round(self.duration, 6),
            "value": self.value,
            "error": self.error,
        }


@dataclass(slots=True)
class Run:
    """A background run in flight, timed on the scheduler's monotonic clock."""

    ctx: JobContext
    started: float
    timed_out: bool = False


@dataclass(slots=True)
class JobState:
    """Mutable bookkeeping of one job in this process (counters are read without locks)."""

    spec: JobSpec
    paused: bool = False
    floor: float | None = None
    """Slots at or before this are not considered (set at first evaluation and on resume)."""
    pending: str | None = None
    """Command id of the scheduled claim or world run still waiting for its tick."""
    pending_ctx: JobContext | None = None
    next_run: float | None = None
    next_base: float | None = None
    runs: int = 0
    errors: int = 0
    skipped: int = 0
    timeouts: int = 0
    last_slot: float | None = None
    last_result: JobResult | None = None
    active: list[Run] = field(default_factory=list)
    offloaded: int = 0
    """Runs on Celery still pending in the world's outbox (counted on the loop thread)."""
    resume_requested: bool = False

    def first_slot(self, t: float, recorded: float | None) -> float:
        """The first slot to consider at clock reading ``t``, given the world's ``recorded``
        last slot: after it, and after anything this process skipped."""
        schedule = self.spec.schedule
        if self.floor is None or self.resume_requested:
            # First look in this process (or after resume): nothing before now counts as missed,
            # unless the world's state says when the job last ran (restart, failover).
            self.floor = t - (1.0 if schedule.basis == "tick" else 1e-3)
            if self.resume_requested:
                self.resume_requested = False
            elif recorded is not None:
                self.floor = recorded
        if recorded is not None:
            self.last_slot = recorded
        base = self.floor if recorded is None else max(self.floor, recorded)
        if base != self.next_base or self.next_run is None:  # cron look-ups are not free: cache
            self.next_base, self.next_run = base, schedule.next_after(base)
        return self.next_run

    def record(self, result: JobResult) -> None:
        """Count a finished run and keep it as the last result."""
        self.runs += 1
        if result.status in ("error", "timeout"):
            self.errors += 1
        if result.status == "timeout":
            self.timeouts += 1
        if result.slot is not None:
            self.last_slot = result.slot
        self.last_result = result

    def status(self) -> dict[str, Any]:
        """JSON-able status: schedule, next and last run, last result, counters."""
        spec = self.spec
        basis = spec.schedule.basis
        last = self.last_result
        return {
            "name": spec.name,
            "kind": spec.kind.value,
            "schedule": spec.schedule.describe(),
            "basis": basis,
            "misfire": spec.misfire.value,
            "max_concurrent": spec.max_concurrent,
            "timeout": spec.timeout,
            "paused": self.paused,
            "on": spec.on,
            "running": len(self.active) + self.offloaded,
            "next_run": None if self.paused else slot_out(self.next_run, basis),
            "last_slot": slot_out(self.last_slot, basis),
            "last_run": None if last is None else iso(last.finished_at),
            "last_result": None if last is None else last.to_dict(),
            "runs": self.runs,
            "errors": self.errors,
            "skipped": self.skipped,
            "timeouts": self.timeouts,
        }

    def counters(self) -> dict[str, float]:
        """{runs, errors, skipped, timeouts, running, paused}, for metrics."""
        return {
            "runs": self.runs,
            "errors": self.errors,
            "skipped": self.skipped,
            "timeouts": self.timeouts,
            "running": len(self.active) + self.offloaded,
            "paused": 1.0 if self.paused else 0.0,
        }


# -- how runs are shown -----------------------------------------------------------------------


def iso(t: float) -> str:
    """Unix seconds as an ISO 8601 UTC time ending in ``Z``."""
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def slot_out(slot: float | None, basis: Basis) -> Any:
    """A slot as the API shows it: ``{"tick": n}`` or ``{"at": iso, "ts": seconds}``."""
    if slot is None:
        return None
    return {"tick": int(slot)} if basis == "tick" else {"at": iso(slot), "ts": slot}


def describe(exc: BaseException) -> str:
    """An exception in one short line (the traceback goes to the log, not the status)."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[:500]


def jsonable(value: Any) -> Any:
    """Keep small JSON values as the last result; describe anything else."""
    if value is None or isinstance(value, bool | int | float | str):
        return value if not isinstance(value, str) else value[:500]
    if isinstance(value, Mapping | list | tuple):
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            return repr(value)[:500]
        return value if len(text) <= 2000 else text[:500]
    return repr(value)[:500]
