"""The offload plug-in: sends durable outbox requests, watches them, and returns their results.

Every tick after the journal write (``after_tick``) the loop thread copies the requests it has not
sent yet into a hand-off queue; one sender thread (started with the first request, so a world
that never offloads holds none) sends them (with the request id as the task id) and polls the
handles of those in flight. A finished task becomes one ``task:result`` command,
queued through the world's own command path, so it is journaled and replayed like any other; a
result the command queue refuses (full) is offered again with a bounded backoff until it is taken
or its request is no longer pending. The plug-in remembers nothing across restarts: a new one
sends every pending request again, which is why results are applied only while pending
(worldloop.outbox).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from ..outbox import TASK_RESULT, TaskRequest
from ..plugins import RuntimePlugin

if TYPE_CHECKING:
    from ..runtime import TickReport, WorldRuntime

log = logging.getLogger("worldloop.offload")


@dataclass(frozen=True, slots=True)
class TaskState:
    """What a handle knows now: ``state`` is pending, started, retry, succeeded or failed."""

    state: str
    result: Any = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed")


@dataclass(slots=True)
class _Delivery:
    """A result waiting for room in the command queue (sender thread only)."""

    task_id: str
    payload: dict[str, Any]
    due: float
    attempts: int = 0


class TaskHandle(Protocol):
    """One sent task, polled by the sender thread (never blocks)."""

    def poll(self) -> TaskState: ...


class TaskSender(Protocol):
    """Where tasks run: sends one request under its own id; ``close`` at the world's stop;
    ``register`` teaches it a task by name (the jobs that run on Celery)."""

    def send(self, request: TaskRequest) -> TaskHandle: ...

    def register(self, name: str, func: Callable[[dict[str, Any]], Any]) -> None: ...

    def close(self) -> None: ...


class OffloadPlugin(RuntimePlugin):
    """Sends a world's durable task requests through ``sender`` and feeds the results back.

    ``timeout`` (seconds from sending; ``timeouts`` holds others by task name) turns a task that
    has not finished into a ``timed_out`` result; a later real result is then ignored by the world.
    A result the world's command queue refuses is offered again after ``retry_base`` seconds,
    doubling up to ``retry_max``, while its request is pending. ``clock`` is injectable.
    """

    def __init__(
        self,
        sender: TaskSender,
        *,
        timeout: float = 60.0,
        poll_interval: float = 0.02,
        retry_base: float = 0.05,
        retry_max: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sender = sender
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.clock = clock
        self.timeouts: dict[str, float] = {}
        """Time-outs of particular tasks by name (a job's ``timeout``), else ``timeout``."""
        self.counts: Counter[str] = Counter()
        """sent, resent (after a restart), succeeded, failed, timed_out, retried, send_errors,
        result_retries (a result refused by a full command queue and offered again)."""
        self.tasks: dict[str, dict[str, Any]] = {}
        """Recent tasks by id: task, state, sent/finished times, error (the admin API's view)."""
        self._handoff: queue.SimpleQueue[TaskRequest | None] = queue.SimpleQueue()
        self._handed: set[str] = set()
        self._pending_ids: frozenset[str] = frozenset()
        """The outbox's pending ids as of the last tick (swapped whole: read by the sender)."""
        self._deliveries: list[_Delivery] = []
        self._version = -1
        self._start_tick = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._rt: WorldRuntime | None = None
        self._lock = threading.Lock()

    # -- hooks -----------------------------------------------------------------------------

    def started(self, rt: WorldRuntime) -> None:
        if self._rt is not None:
            return
        self._rt = rt
        self._start_tick = rt.tick

    def _ensure_sender(self, rt: WorldRuntime) -> None:
        """Start the sender thread with the first request handed over (loop thread): a world
        that never offloads holds no thread, so a thousand worlds are not a thousand senders."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"worldloop-offload-{rt.name}", daemon=True
            )
            self._thread.start()

    def after_tick(self, rt: WorldRuntime, report: TickReport) -> None:
        """Loop thread, tick durable: hand over the requests not handed over yet."""
        outbox = rt.world.outbox
        if outbox.version == self._version:
            return
        self._version = outbox.version
        self._pending_ids = frozenset(outbox.pending)
        for task_id, request in outbox.pending.items():
            if task_id not in self._handed:
                self._handed.add(task_id)
                self._handoff.put(request)
                self._ensure_sender(rt)
        self._handed.intersection_update(outbox.pending)

    def stopping(self, rt: WorldRuntime) -> None:
        self._stop.set()
        self._handoff.put(None)
        if self._thread is not None:
            self._thread.join(max(0.0, rt.stop_time_left() / 2))
        self.sender.close()

    # -- the sender thread ------------------------------------------------------------------

    def _run(self) -> None:
        inflight: dict[str, tuple[TaskRequest, TaskHandle, float]] = {}
        while not self._stop.is_set():
            wait = self.poll_interval if inflight else 0.5
            if self._deliveries:
                wait = min(wait, max(0.0, min(d.due for d in self._deliveries) - self.clock()))
            try:
                item = self._handoff.get(timeout=wait)
            except queue.Empty:
                item = None
            while item is not None:
                self._send(item, inflight)
                try:
                    item = self._handoff.get_nowait()
                except queue.Empty:
                    item = None
            if self._deliveries:
                self._deliver_due()
            for task_id, (request, handle, sent_at) in list(inflight.items()):
                try:
                    state = handle.poll()
                except Exception as exc:  # a broker or backend hiccup: try again next round
                    log.warning("task %s: polling failed: %s", task_id, exc)
                    continue
                self._note(task_id, state.state)
                if state.done:
                    del inflight[task_id]
                    status = "succeeded" if state.state == "succeeded" else "failed"
                    self._finish(request, status, state.result, state.error)
                else:
                    limit = self.timeouts.get(request.task, self.timeout)
                    if self.clock() - sent_at > limit:
                        del inflight[task_id]
                        self._finish(request, "timed_out", None, f"no result after {limit:g} s")

    def _send(
        self, request: TaskRequest, inflight: dict[str, tuple[TaskRequest, TaskHandle, float]]
    ) -> None:
        try:
            handle = self.sender.send(self._with_snapshot(request))
        except Exception as exc:
            self.counts["send_errors"] += 1
            log.error("task %s (%s): sending failed: %s", request.id, request.task, exc)
            self._finish(request, "failed", None, f"could not be sent: {exc}")
            return
        self.counts["resent" if self._is_resend(request) else "sent"] += 1
        inflight[request.id] = (request, handle, self.clock())
        with self._lock:
            self.tasks[request.id] = {
                "id": request.id,
                "task": request.task,
                "tick": request.tick,
                "state": "sent",
                "sent_at": time.time(),
            }
            while len(self.tasks) > 200:
                del self.tasks[next(iter(self.tasks))]

    def _with_snapshot(self, request: TaskRequest) -> TaskRequest:
        """The request as sent: with the latest published snapshot (JSON) when it asks for one."""
        rt = self._rt
        snap = None if rt is None else rt.latest
        if not request.snapshot or snap is None:
            return request
        return replace(request, params={**request.params, "snapshot": snap.to_json().decode()})

    def _is_resend(self, request: TaskRequest) -> bool:
        """A request from before this plug-in started (a restart or failover sends it again)."""
        return request.tick < self._start_tick

    def _note(self, task_id: str, state: str) -> None:
        with self._lock:
            entry = self.tasks.get(task_id)
            if entry is not None and entry["state"] != state:
                if state == "retry":
                    self.counts["retried"] += 1
                entry["state"] = state

    def _finish(self, request: TaskRequest, status: str, result: Any, error: str | None) -> None:
        self.counts[status] += 1
        with self._lock:
            entry = self.tasks.get(request.id)
            if entry is not None:
                entry.update(state=status, finished_at=time.time(), error=error)
        if status != "succeeded":
            log.warning("task %s (%s) %s: %s", request.id, request.task, status, error)
        payload = {"task_id": request.id, "status": status, "result": result, "error": error}
        self._deliveries.append(_Delivery(request.id, payload, self.clock()))
        self._deliver_due()

    def _deliver_due(self) -> None:
        """Queue the results that are due as ``task:result`` commands; one refused (queue full,
        a bus hiccup) is offered again later, with a doubling delay up to ``retry_max``, until
        it is taken or its request is no longer pending (settled, or the world stopping: then
        the request stays pending and a restart sends it again)."""
        rt = self._rt
        now = self.clock()
        keep: list[_Delivery] = []
        for d in self._deliveries:
            if d.due > now:
                keep.append(d)
                continue
            if rt is None or self._stop.is_set():
                log.warning("task %s: result dropped at stop; it stays pending", d.task_id)
                continue
            if d.attempts and d.task_id not in self._pending_ids:
                log.info("task %s: no longer pending; its result is not offered again", d.task_id)
                continue
            try:
                rt.enqueue(TASK_RESULT, d.payload)
            except Exception as exc:  # queue full, a bus hiccup: offered again later
                d.attempts += 1
                d.due = now + min(self.retry_max, self.retry_base * 2 ** (d.attempts - 1))
                self.counts["result_retries"] += 1
                if d.attempts == 1:
                    log.warning("task %s: result not queued (%s); retrying", d.task_id, exc)
                keep.append(d)
                continue
            if d.attempts:
                log.info("task %s: result queued after %d retries", d.task_id, d.attempts)
        self._deliveries = keep

    def stats(self) -> dict[str, Any]:
        """Counts and recent tasks, for the admin API and metrics."""
        with self._lock:
            return {"counts": dict(self.counts), "tasks": [dict(t) for t in self.tasks.values()]}
