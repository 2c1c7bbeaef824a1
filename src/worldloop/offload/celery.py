"""Celery the Flask way, and the sender that puts a world's outbox on Celery workers.

:func:`celery_init_app` is Flask's own pattern: one Celery app per Flask app, configured from
``app.config["CELERY"]``, whose tasks run inside the Flask app context. worldloop adds the
settings its exactly-once guarantee relies on (each can be overridden in ``CELERY``): late
acknowledgement and rejection on a lost worker, so a task whose worker dies is delivered again,
one message prefetched at a time, and JSON only (no pickle). This module needs the ``celery``
extra; the core imports it only when ``CELERY`` is configured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery, Task, bootsteps
from celery.result import AsyncResult
from flask import Flask

from ..outbox import TaskRequest
from .plugin import TaskState

DEFAULTS: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "task_track_started": True,
    "broker_connection_retry_on_startup": True,
}
"""What worldloop sets unless ``app.config["CELERY"]`` says otherwise."""

_STATES = {
    "PENDING": "pending",
    "RECEIVED": "pending",
    "STARTED": "started",
    "RETRY": "retry",
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "REVOKED": "failed",
}


def celery_init_app(app: Flask) -> Celery:
    """A Celery app for ``app`` (kept in ``app.extensions["celery"]``): Flask's pattern."""
    existing = app.extensions.get("celery")
    if isinstance(existing, Celery):
        return existing

    class FlaskTask(Task):  # type: ignore[misc]  # celery ships no type hints
        """A task that runs inside ``app``'s context (config, extensions, current_app)."""

        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object({**DEFAULTS, **dict(app.config.get("CELERY") or {})})
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


WAKE_EVERY = 0.2
"""Seconds between wake-ups of a worker's event loop once :func:`prompt_shutdown` is on."""


class _WakeLoop(bootsteps.StartStopStep):  # type: ignore[misc]  # celery ships no type hints
    """A no-op timer on the worker's event loop, so the loop checks its stop flag often.

    A warm shutdown (SIGTERM) only sets a flag that the loop reads between polls, and on an
    AMQP broker an idle loop polls for up to 10 s: the worker would take 10 s to stop.
    """

    requires = ("celery.worker.components:Hub",)

    def register_with_event_loop(self, worker: Any, hub: Any) -> None:
        hub.call_repeatedly(WAKE_EVERY, _nothing)


def _nothing() -> None:
    """The wake-up itself: the loop re-checks its flags after any timer."""


def prompt_shutdown(celery_app: Celery) -> Celery:
    """Make ``celery_app``'s workers stop within ~WAKE_EVERY s of a SIGTERM instead of up to
    10 s (the idle poll of an AMQP worker); costs a few no-op wake-ups a second."""
    if _WakeLoop not in celery_app.steps["worker"]:
        celery_app.steps["worker"].add(_WakeLoop)
    return celery_app


class CeleryHandle:
    """A sent task, polled through the result backend."""

    def __init__(self, result: AsyncResult) -> None:
        self.result = result

    def poll(self) -> TaskState:
        state = _STATES.get(str(self.result.state), "started")
        if state == "succeeded":
            return TaskState(state, self.result.result)
        if state == "failed":
            exc = self.result.result
            return TaskState(state, error=f"{type(exc).__name__}: {exc}")
        return TaskState(state)


class CelerySender:
    """Sends each request as the Celery task it names, with the request id as the task id.

    ``queue`` routes the tasks (None: the app's default queue). Results are read from the
    configured result backend; use ``rpc://`` or a backend kept per deployment, since request
    ids restart with a new world.
    """

    def __init__(self, celery_app: Celery, queue: str | None = None) -> None:
        self.celery = celery_app
        self.queue = queue
        # Import the result backend and the broker transport now, not on the first send: those
        # imports hold the interpreter lock long enough to make the running world's ticks late.
        _ = celery_app.backend
        _ = celery_app.connection_for_write().transport

    def register(self, name: str, func: Callable[[dict[str, Any]], Any]) -> None:
        """Declare ``func`` as the Celery task ``name`` (in the server and in every worker that
        builds the same app); Celery keeps the first task declared under a name."""
        self.celery.task(name=name)(func)

    def send(self, request: TaskRequest) -> CeleryHandle:
        options: dict[str, Any] = {"task_id": request.id}
        if self.queue is not None:
            options["queue"] = self.queue
        result = self.celery.send_task(request.task, args=[request.params], **options)
        return CeleryHandle(result)

    def close(self) -> None:
        """Nothing to close: the Celery app's connection pool belongs to the Flask app."""
