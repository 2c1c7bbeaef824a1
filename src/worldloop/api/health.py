"""GET /healthz (the process answers), GET /readyz (the world can be served), GET /metrics.

Readiness is the truth about the loop: it is ticking recently (or deliberately paused), the
store (if any) is writable, the overrun rate over the recent window is under a bound, and the
last ticks did not fail. Anything that breaks a promise to clients makes it 503; softer
problems (contained system errors, failing listeners) are listed as degraded with a 200.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from flask import Blueprint, Response, current_app
from pydantic import BaseModel, Field

from ..config import Settings
from ..metrics import LoopObserver, render, render_jobs, render_tasks
from ..runtime import WorldRuntime
from .declare import Reply, operation

bp = Blueprint("worldloop_health", __name__)


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason the world is not (fully) ready; ``fatal`` ones make /readyz answer 503."""

    code: str
    message: str
    fatal: bool

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "fatal": self.fatal}


class StoreProbe:
    """Checks that the store accepts writes, at most once per ``ttl`` seconds.

    Stores may offer ``check_writable()`` (raise when writes would fail); without it the store
    is judged by the loop alone (a failing journal append fails the tick, which is reported).
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._at = -1e18
        self._result: str | None = None

    def check(self, rt: WorldRuntime) -> str | None:
        with self._lock:
            now = time.monotonic()
            if now - self._at < self.ttl:
                return self._result
            try:
                rt.check_writable()
                self._result = None
            except Exception as exc:
                self._result = f"{type(exc).__name__}: {exc}"
            self._at = now
            return self._result


def assess(
    rt: WorldRuntime, observer: LoopObserver | None, probe: StoreProbe, cfg: Settings
) -> list[Problem]:
    """Every current problem of ``rt`` (empty when all is well)."""
    problems: list[Problem] = []
    stats = rt.stats()
    if not rt.running:
        return [Problem(*rt.why_not_running(), True)]
    halted = rt.degraded  # set by durability when the journal failed
    if halted:
        problems.append(Problem("halted", f"the world halted: {halted}", True))
    max_age = cfg.ready_max_tick_age
    if max_age is None:
        max_age = max(2.0, 10.0 / stats.rate_hz)
    last = rt.last_tick_at
    snap = rt.latest
    if last is None and snap is not None:
        last = snap.created_at
    age = None if last is None else time.time() - last
    if not stats.paused and (age is None or age > float(max_age)):
        shown = "never" if age is None else f"{age:.1f}s ago"
        problems.append(Problem("loop_stalled", f"last tick {shown} (bound {max_age}s)", True))
    service_problems = getattr(rt, "service_problems", None)  # the scale-out mode's services
    if service_problems is not None:
        problems.extend(Problem(code, message, True) for code, message in service_problems())
    if rt.store is not None:
        err = probe.check(rt)
        if err is not None:
            problems.append(Problem("store_unwritable", f"the store refuses writes: {err}", True))
    if observer is not None:
        win = observer.window()
        min_window = cfg.ready_min_window
        bound = cfg.ready_max_overrun_ratio
        if win.ticks >= min_window and win.overruns / win.ticks > bound:
            problems.append(
                Problem(
                    "overrunning",
                    f"{win.overruns} overruns in the last {win.ticks} ticks (bound {bound:.0%})",
                    True,
                )
            )
        if win.tick_errors:
            problems.append(
                Problem("tick_errors", f"{win.tick_errors} failed ticks recently", True)
            )
        if win.system_errors:
            problems.append(
                Problem(
                    "system_errors", f"{win.system_errors} contained system errors recently", False
                )
            )
        if win.hook_errors:
            problems.append(
                Problem("hook_errors", f"{win.hook_errors} failing tick listeners recently", False)
            )
    return problems


class Liveness(BaseModel):
    status: Literal["alive"]
    pid: int


class ProblemInfo(BaseModel):
    """A reason the world is not fully ready. Fatal codes (503): not_running, runner_down, halted,
    loop_stalled, store_unwritable, overrunning, tick_errors, and in the Redis mode
    redis_unreachable, store_unreachable, lease_lost; soft codes (200, degraded): system_errors,
    hook_errors."""

    code: str
    message: str
    fatal: bool


class Readiness(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    ready: bool
    reasons: list[ProblemInfo]
    world: str
    tick: int | None
    paused: bool
    rate_hz: float
    role: str = Field(description="serve, gunicorn-worker, prefork-master, reloader-parent, ...")
    worlds: dict[str, list[ProblemInfo]] = Field(
        default_factory=dict,
        description="Problems of the server's other worlds, by name (worldloop.host): they "
        "make the status degraded, never the server unready for its healthy worlds.",
    )


@bp.after_request
def _no_store(resp: Response) -> Response:
    """Probes and metrics describe this instant of this process: never cached by a proxy."""
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/healthz")
@operation(
    "Liveness: the process answers (never touches the world)",
    tags=("health",),
    responses={200: Reply("Alive", Liveness)},
)
def healthz() -> dict[str, Any]:
    """Liveness: the process answers HTTP. Never touches the world."""
    return {"status": "alive", "pid": os.getpid()}


@bp.get("/readyz")
@operation(
    "Readiness: the world is served here, ticking (or paused), store writable",
    tags=("health",),
    responses={
        200: Reply("Ready: status ok, or degraded with soft reasons", Readiness),
        503: Reply("Not ready: status unavailable, fatal reasons listed", Readiness),
    },
)
def readyz() -> tuple[dict[str, Any], int]:
    ext = current_app.extensions["worldloop"]
    obs = current_app.extensions.get("worldloop_observe")
    rt: WorldRuntime = ext.runtime
    observer = obs.observer if obs is not None else None
    probe = obs.store_probe if obs is not None else StoreProbe(1.0)
    problems = assess(rt, observer, probe, ext.settings)
    fatal = any(p.fatal for p in problems)
    worlds = _other_worlds(ext, probe)
    stats = rt.stats()
    snap = rt.latest
    body = {
        "status": "unavailable" if fatal else ("degraded" if problems or worlds else "ok"),
        "ready": not fatal,
        "reasons": [p.to_dict() for p in problems],
        "world": rt.name,
        "tick": None if snap is None else snap.tick,
        "paused": stats.paused,
        "rate_hz": stats.rate_hz,
        "role": getattr(ext, "role", "unknown"),
        "worlds": worlds,
    }
    return body, 503 if fatal else 200


def _other_worlds(ext: Any, probe: StoreProbe) -> dict[str, list[dict[str, Any]]]:
    """The problems of each extra world this process hosts (none listed: all well)."""
    host = getattr(ext, "host", None)
    if host is None:
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for hosted in host.worlds()[1:]:
        if hosted.failed is not None:
            found = [Problem("failed", f"the world could not start: {hosted.failed}", True)]
        else:
            observer = ext.observers.get(hosted.name)
            found = assess(hosted.runtime, observer, probe, ext.settings)
        if found:
            out[hosted.name] = [p.to_dict() for p in found]
    return out


@bp.get("/metrics")
@operation(
    "Prometheus metrics (text exposition format)",
    tags=("health",),
    responses={
        200: Reply(
            "Loop, command, store, stream, job and HTTP metrics",
            media_type="text/plain",
            schema={"type": "string"},
        )
    },
)
def metrics() -> Response:
    obs = current_app.extensions.get("worldloop_observe")
    ext = current_app.extensions.get("worldloop")
    if obs is not None:
        obs.observer.refresh()
        for observer in list(getattr(ext, "observers", {}).values()):
            observer.refresh()
    payload, content_type = render()
    rt = getattr(ext, "runtime", None)
    if ext is not None and rt is not None and rt.running:  # jobs run where the world runs
        payload += render_jobs(ext.jobs)
        if ext.offload is not None:
            payload += render_tasks(ext.offload, rt.name)
    return Response(payload, content_type=content_type)
