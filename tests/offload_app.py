"""A tiny world that asks for tasks, its Flask app and its Celery tasks (tests of offloading).

The server (in the test process or under ``flask --app tests.offload_app:create_app run``) and the
worker (``celery -A tests.offload_worker worker``) build the same app; the broker,
result backend and queue come from ``OFFLOAD_BROKER``, ``OFFLOAD_BACKEND``, ``OFFLOAD_QUEUE``.
Without ``OFFLOAD_BROKER`` the app has no Celery: requests stay pending (durable, unsent).
With ``OFFLOAD_JOB_EVERY`` (ticks) the world has a scheduled job on Celery, ``census``: each run
notes its slot and pid in ``OFFLOAD_JOB_MARKER``, and the very first run sleeps
``OFFLOAD_JOB_SLEEP`` seconds.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from flask import Flask, current_app, jsonify, request
from pydantic import BaseModel

from worldloop import WorldLoop
from worldloop.commands import Command
from worldloop.config import env_config
from worldloop.jobs import JobContext
from worldloop.outbox import TaskRequest
from worldloop.snapshot import Snapshot
from worldloop.world import State, System, World


class Ask(BaseModel):
    task: str
    value: int = 0
    sleep: float = 0.0
    marker: str | None = None


class Asker(World):
    """Counts ticks; ``ask`` requests a task; results are kept by task id, applied once each."""

    name = "asker"
    commands = {"ask": Ask}

    def __init__(self) -> None:
        super().__init__()
        self.counter = 0
        self.applied = 0
        self.results: dict[str, dict[str, Any]] = {}

    def apply(self, command: Command) -> Any:
        p = command.payload
        params = {"value": p["value"], "sleep": p["sleep"], "marker": p.get("marker")}
        return {"task_id": self.request_task(str(p["task"]), params)}

    def on_task_result(
        self, request: TaskRequest, status: str, result: Any, error: str | None
    ) -> Any:
        self.applied += 1
        self.results[request.id] = {"status": status, "result": result, "error": error}
        return self.applied

    def systems(self) -> Sequence[System]:
        return [System("count", self._count)]

    def _count(self) -> None:
        self.counter += 1

    def get_state(self) -> State:
        return {
            "counter": self.counter,
            "applied": self.applied,
            "results": json.dumps(self.results, sort_keys=True),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.counter = int(state["counter"])
        self.applied = int(state["applied"])
        self.results = json.loads(str(state["results"]))

    def view(self) -> dict[str, Any]:
        return {}

    def summary(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "results": self.results,
            "pending": sorted(self.outbox.pending),
        }


def work(params: dict[str, Any]) -> dict[str, Any]:
    """Sleep and return a value. With a marker file: note each run's pid in it (the test sees
    the task started, and how often it ran), and sleep only on the first run."""
    first = True
    if params.get("marker"):
        marker = str(params["marker"])
        first = not os.path.exists(marker)
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")
    if first:
        time.sleep(float(params["sleep"]))
    return {"value": 2 * int(params["value"]), "app": current_app.name}


def census(snapshot: Snapshot, ctx: JobContext) -> dict[str, Any]:
    """The scheduled job: note ``<slot> <pid>`` in the marker file (sleeping on the first run)."""
    marker = os.environ.get("OFFLOAD_JOB_MARKER") or current_app.config.get("OFFLOAD_JOB_MARKER")
    first = True
    if marker:
        first = not os.path.exists(marker)
        with open(marker, "a") as f:
            f.write(f"{ctx.slot:g} {os.getpid()}\n")
    if first:
        time.sleep(float(os.environ.get("OFFLOAD_JOB_SLEEP") or 0))
    return {"slot": ctx.slot, "tick": snapshot.tick, "app": current_app.name}


def fail(params: dict[str, Any]) -> None:
    raise ValueError(f"no good: {params['value']}")


def celery_config(environ: Mapping[str, str]) -> dict[str, Any] | None:
    broker = environ.get("OFFLOAD_BROKER")
    if not broker:
        return None
    prefix = environ.get("OFFLOAD_PREFIX", "")
    conf: dict[str, Any] = {
        "broker_url": broker,
        "result_backend": environ.get("OFFLOAD_BACKEND") or "rpc://",
        "task_default_queue": environ.get("OFFLOAD_QUEUE") or "offload-test",
    }
    if prefix:
        conf["result_backend_transport_options"] = {"global_keyprefix": prefix}
        conf["broker_transport_options"] = {"global_keyprefix": prefix}
    return conf


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask("offload_app", instance_path=os.environ.get("WORLDLOOP_INSTANCE_PATH"))
    app.config.update(env_config(os.environ, ("WORLDLOOP_",)))
    celery = celery_config(os.environ)
    if celery:
        app.config["CELERY"] = celery
    app.config.update(config or {})
    ext = WorldLoop(world=lambda _config: Asker())
    every = app.config.get("OFFLOAD_JOB_EVERY") or os.environ.get("OFFLOAD_JOB_EVERY")
    if every:  # declared before init_app: the world knows the job before any replay
        ext.job("census", every_ticks=int(every), on="celery")(census)
    ext.init_app(app)
    if "celery" in app.extensions:
        app.extensions["celery"].task(name="t.work")(work)
        app.extensions["celery"].task(name="t.fail")(fail)

    @app.post("/test/ask")
    def ask() -> Any:
        rt = app.extensions["worldloop"].runtime
        ticket = rt.submit("ask", request.get_json())
        assert ticket.wait(5) and ticket.outcome is not None
        return jsonify(ticket.outcome.result)

    @app.get("/test/state")
    def state() -> Any:
        rt = app.extensions["worldloop"].runtime
        world = rt.world
        done = rt.call(
            lambda: (
                world.tick,
                world.state_hash(),
                world.applied,
                dict(world.job_slots),
                sorted(world.outbox.pending),
            )
        )
        tick, digest, applied, slots, pending = done.result(5)
        return jsonify(
            {
                "tick": tick,
                "hash": digest,
                "applied": applied,
                "job_slots": slots,
                "pending": pending,
            }
        )

    return app


def celery_worker_app() -> Any:
    """The Celery app of a worker: the same Flask app, its world never started."""
    app = create_app({"WORLDLOOP_AUTOSTART": "never"})
    return app.extensions["celery"]
