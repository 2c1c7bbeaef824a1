"""A web worker's runtime: the world runs in the runner process, this one only reads and asks.

:class:`RemoteRuntime` is a :class:`~worldloop.runtime.WorldRuntime` whose bus is the one-host
IPC bus (worldloop.bus.ipc): the API's handlers call it exactly as they call the in-process one.
Commands are validated here, against this worker's copy of the world's declarations, and the
runner queues them; reads are served from the snapshots the runner publishes; the loop's
counters (running, paused, rate, overruns, halted) are the ones the runner's feed last
reported. The clock controls and whatever needs the live world run in the runner: the admin
routes are forwarded to it whole (worldloop.runner.forward).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import replace
from typing import Any, TypeVar

from ..bus.ipc import IpcBus, RunnerUnavailable
from ..clock import TickerStats
from ..errors import WorldNotRunning
from ..runtime import WorldRuntime
from ..snapshot import Snapshot
from ..world import World

T = TypeVar("T")

FIRST_FEED_WAIT = 2.0
"""Seconds a request waits for a new worker's first feed message (sent every 0.25 s)."""


class RemoteRuntime(WorldRuntime):
    """The world of a runner process, as a web worker serves it."""

    def __init__(self, world: World, bus: IpcBus, *, rate_hz: float) -> None:
        super().__init__(world, rate_hz=rate_hz, bus=bus)
        self.ipc = bus
        self._remote: dict[str, Any] = {}
        self._stats: tuple[TickerStats, TickerStats] | None = None
        """The loop's counters of the last feed message, decoded once, and the same with
        ``running`` False (what :meth:`stats` says while the feed is stale); one attribute, so
        a reader never sees halves of two messages."""
        self.gone = False
        """The runner said it no longer serves this world (deleted, or hibernated)."""
        bus.on_feed = self._on_feed

    def __repr__(self) -> str:
        return f"RemoteRuntime({self.name!r}, {self.ipc.endpoints.folder})"

    def _on_feed(self, message: Mapping[str, Any]) -> None:
        if message.get("gone"):
            self.gone = True
        stats = message.get("stats") or {}
        ticker = stats.get("ticker")
        decoded = TickerStats(**ticker) if ticker else None
        self._stats = None if decoded is None else (decoded, replace(decoded, running=False))
        self._remote = dict(stats)
        self.last_tick_duration = float(stats.get("last_tick_duration") or 0.0)
        last_at = stats.get("last_tick_at")
        self.last_tick_at = None if last_at is None else float(last_at)
        self.hook_errors = int(stats.get("hook_errors") or 0)

    # -- what the runner reports -----------------------------------------------------------

    @property
    def runner_up(self) -> bool:
        """True while the runner's feed is fresh (it beats while paused too)."""
        return self.ipc.runner_up

    @property
    def runner_pid(self) -> int | None:
        pid = self._remote.get("pid")
        return None if pid is None else int(pid)

    @property
    def running(self) -> bool:
        return self._running and self.runner_up and bool(self._remote.get("running"))

    def why_not_running(self) -> tuple[str, str]:
        if not self.runner_up:
            return (
                "runner_down",
                "the runner process is not answering (starting, or restarting after it "
                "died); reads serve the last snapshot meanwhile",
            )
        return "not_running", "the world loop is not running in the runner process"

    @property
    def degraded(self) -> str | None:
        value = self._remote.get("degraded")
        return None if value is None else str(value)

    def stats(self) -> TickerStats:
        """The counters of the runner's last feed message, decoded when it came (every read
        asks for them: decoding per request was a cost per request); not running while the
        feed is stale."""
        pair = self._stats
        if pair is None:
            return TickerStats(0, 0, 0, 0, self.ticker.rate_hz, False, False, 0.0, 0.0)
        return pair[0] if self.runner_up else pair[1]

    @property
    def snapshot(self) -> Snapshot:
        """The latest snapshot; a worker that just started waits (briefly) for its first."""
        snap = self.ipc.latest or self.ipc.wait_after(-1, FIRST_FEED_WAIT)
        if snap is None:
            raise RunnerUnavailable(
                f"world {self.name!r}: no snapshot from the runner yet (starting?); retry shortly"
            )
        return snap

    # -- lifecycle: this worker's connection only ------------------------------------------

    def start(self) -> None:
        self._running = True

    def stop(self, timeout: float | None = None) -> bool:
        self._running = False
        self.ipc.close()
        return True

    def stop_time_left(self) -> float:
        return 0.0

    # -- what needs the runner -------------------------------------------------------------

    def command_status(self, command_id: str) -> dict[str, Any] | None:
        ticket = self.ipc.ticket(command_id)
        if ticket is not None:
            return {**ticket.to_dict(), "actor": ticket.command.actor}
        found: dict[str, Any] | None = self.ipc.request({"op": "status", "id": command_id})
        return found

    def check_writable(self) -> None:
        self.ipc.request({"op": "writable"}, timeout=2.0)

    def call(self, fn: Callable[[], T]) -> Future[T]:
        raise WorldNotRunning("the world runs in the runner process: nothing runs on its loop here")

    def _elsewhere(self, *args: Any, **kwargs: Any) -> Any:
        raise RunnerUnavailable(
            "clock controls run in the runner process (the admin API forwards them there)"
        )

    pause = resume = set_rate = _elsewhere
    step = checkpoint = _elsewhere
