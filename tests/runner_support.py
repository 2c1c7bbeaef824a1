"""A runner in one test process: a paused Tally world behind a RunnerServer on a thread, and
the IpcBus clients a test opens on it (as the stream gateway or a web worker holds them).

One fixture class for the tests that talk to a real runner over ZeroMQ without spawning one,
so the setup and, above all, the teardown order (buses, server, its thread, the runtime) live
in one place.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType
from typing import Self

from flask import Flask

from tests.bare_world import Tally
from worldloop.bus.ipc import IpcBus
from worldloop.runner import ipc
from worldloop.runner.server import RunnerServer
from worldloop.runtime import WorldRuntime

from .support import wait_for


class ServedTally:
    """A paused Tally world (ticks only by `runtime.step`) served by a RunnerServer thread.

    `open_bus` opens a client of it; `wait_up` waits until every client opened sees the
    runner's feed; `close` (or leaving the `with` block) closes them all, then the server."""

    def __init__(self, tmp: Path, *, queue_size: int = 10_000) -> None:
        self.runtime = WorldRuntime(Tally(), rate_hz=20, start_paused=True, queue_size=queue_size)
        self.runtime.start()
        self.endpoints = ipc.endpoints(tmp, "tally")
        self.server = RunnerServer(Flask(__name__), self.runtime, self.endpoints)
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()
        self.buses: list[IpcBus] = []

    def open_bus(self, *, early_outcomes: bool = False) -> IpcBus:
        """A client of the runner: `early_outcomes=True` as the gateway holds it (outcomes
        before the snapshot file), False as a web worker does (outcomes with the snapshot)."""
        bus = IpcBus(self.endpoints, "tally", early_outcomes=early_outcomes)
        self.buses.append(bus)
        return bus

    def wait_up(self, timeout: float = 10.0) -> None:
        """Wait until every bus opened so far has the runner's feed."""
        wait_for(lambda: all(b.runner_up for b in self.buses), timeout, 0.02, "the feed")

    def close(self) -> None:
        for bus in self.buses:
            bus.close()
        self.server.stop()
        self.thread.join(5)
        self.runtime.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
