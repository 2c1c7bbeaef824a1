"""In-process task sending: a bounded thread pool running registered functions.

For tests, tiny apps and as the baseline the Celery sender is measured against: the work shares
the interpreter (and its lock) with the tick and dies with the process; a restart sends the
pending requests again, so nothing is lost, but the work is done again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..outbox import TaskRequest
from .plugin import TaskState

TaskFunc = Callable[[dict[str, Any]], Any]
"""A task: its JSON parameters in, a JSON-able result out (an exception fails it)."""


class _FutureHandle:
    def __init__(self, future: Future[Any]) -> None:
        self.future = future

    def poll(self) -> TaskState:
        if not self.future.done():
            return TaskState("started" if self.future.running() else "pending")
        exc = self.future.exception()
        if exc is not None:
            return TaskState("failed", error=f"{type(exc).__name__}: {exc}")
        return TaskState("succeeded", self.future.result())


class ThreadSender:
    """Runs ``tasks[name](params)`` in a pool of ``workers`` threads."""

    def __init__(self, tasks: Mapping[str, TaskFunc], workers: int = 2) -> None:
        self.tasks = dict(tasks)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="worldloop-task")

    def register(self, name: str, func: TaskFunc) -> None:
        """Run ``func`` for the task ``name`` (a scheduled job on Celery, run here instead)."""
        self.tasks[name] = func

    def send(self, request: TaskRequest) -> _FutureHandle:
        func = self.tasks.get(request.task)
        if func is None:
            raise LookupError(f"no task named {request.task!r}")
        return _FutureHandle(self.pool.submit(func, dict(request.params)))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
