"""The runner's feed in one process: a RunnerServer over a real world runtime and ZeroMQ, and
two subscribers as the stream gateway and a web worker hold them (worldloop.bus.ipc.IpcBus).

A tick's command outcomes reach the gateway before the tick's snapshot file is written (its
command waits are not held up by a large world's file), while a web worker resolves its
tickets with the snapshot, so a read after its acknowledgement sees the command applied.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bare_world import Tally
from worldloop.bus.ipc import IpcBus
from worldloop.runner import shm

from .runner_support import ServedTally
from .support import wait_for


class Served(ServedTally):
    """The runner's world with its gateway-side and worker-side buses."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.gateway = self.open_bus(early_outcomes=True)
        self.worker = self.open_bus()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with Served(tmp_path) as s:
        s.wait_up()
        yield s


def test_outcomes_reach_the_gateway_before_the_snapshot_file_is_written(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    writing = threading.Event()
    release = threading.Event()
    write = shm.write

    def slow_write(*args: Any, **kwargs: Any) -> int:
        writing.set()
        release.wait(10)  # a large world's file, on a loaded host
        return write(*args, **kwargs)

    at_gateway = served.gateway.put("add", {"by": 2}, "p1")
    at_worker = served.worker.put("add", {"by": 3}, "p2")
    monkeypatch.setattr(shm, "write", slow_write)
    stepping = threading.Thread(target=served.runtime.step, args=(1,))
    stepping.start()
    try:
        assert writing.wait(10), "the tick's snapshot file was never written"
        assert at_gateway.wait(5), "the gateway's ticket waited for the snapshot file"
        assert at_gateway.outcome is not None and at_gateway.outcome.ok
        assert not at_worker.done  # the worker's resolves with its snapshot
    finally:
        release.set()
        stepping.join(10)
    assert at_worker.wait(5)
    snap = served.worker.latest
    assert snap is not None and at_worker.tick is not None and snap.tick >= at_worker.tick
    assert at_worker.outcome is not None and at_worker.outcome.ok
    assert snap.data["n"] >= at_worker.outcome.result["n"]


def test_outcomes_travel_without_a_snapshot_file_that_cannot_be_written(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> int:
        raise OSError("no space left on device")

    monkeypatch.setattr(shm, "write", broken)
    ticket = served.worker.put("add", {"by": 1}, "p1")
    served.runtime.step(1)
    assert ticket.wait(5), "a failed snapshot file held the outcome back"
    assert ticket.outcome is not None and ticket.outcome.ok


def test_an_outcome_that_comes_before_its_puts_answer_still_resolves_it(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tick ran, and the feed brought the outcome, before the put that sent the command
    had read the runner's answer (a descheduled worker): the ticket resolves all the same,
    instead of its wait running out."""
    bus = served.worker
    request = bus.request

    def late_answer(message: dict[str, Any], timeout: float = 5.0) -> Any:
        answer = request(message, timeout)
        before = bus.received_at
        served.runtime.step(1)  # the command's tick, journaled and published
        wait_for(lambda: bus.received_at > before and bus.latest is not None, 5, 0.01)
        wait_for(lambda: bus.latest is not None and bus.latest.tick >= served.runtime.tick, 5)
        return answer

    monkeypatch.setattr(bus, "request", late_answer)
    ticket = bus.put("add", {"by": 5}, "p1")
    assert ticket.wait(2), "the outcome that came first was lost"
    assert ticket.outcome is not None and ticket.outcome.ok


def test_a_worker_reports_the_runners_loop_counters_of_the_last_feed_message(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counters are decoded once per feed message, not per read: a read sees the latest
    message's values, and running False once the feed goes stale."""
    from worldloop.runner.remote import RemoteRuntime

    remote = RemoteRuntime(Tally(), served.worker, rate_hz=20)
    remote.start()
    wait_for(lambda: remote.stats().rate_hz == 20 and remote.stats().paused, 5, 0.01)
    first = remote.stats()
    assert first.running and first.ticks == served.runtime.stats().ticks
    served.runtime.set_rate(5)
    served.runtime.step(2)
    wait_for(lambda: remote.stats().rate_hz == 5, 5, 0.01, "the new rate in the feed")
    wait_for(lambda: remote.stats().ticks == served.runtime.stats().ticks, 5, 0.01)
    assert remote.stats() is remote.stats()  # one decoding per message, shared by reads
    monkeypatch.setattr(IpcBus, "runner_up", property(lambda self: False))
    stale = remote.stats()
    assert not stale.running and stale.rate_hz == 5 and stale.paused


def test_a_worker_whose_snapshot_file_went_serves_its_last_one_until_the_next(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner removes superseded files after KEEP_FILES seconds: a worker whose feed
    thread lagged longer finds the announced file gone, and serves the snapshot it mapped last
    (no error) until the next message's file maps."""
    served.runtime.step(1)
    tick = served.runtime.tick
    wait_for(lambda: (s := served.worker.latest) is not None and s.tick == tick, 5, 0.01)
    tried: list[Path] = []
    read = shm.read

    def gone(path: Path) -> dict[str, Any]:
        if path.name.endswith(f"-{tick + 1}"):  # pruned just before this worker maps it
            tried.append(path)
            path.unlink()
        return read(path)

    monkeypatch.setattr(shm, "read", gone)
    served.runtime.step(1)
    wait_for(lambda: served.worker.latest is not None and bool(tried), 5, 0.01, "a mapping")
    last = served.worker.latest
    assert last is not None and last.tick == tick
    served.runtime.step(1)
    wait_for(lambda: (s := served.worker.latest) is not None and s.tick == tick + 2, 5, 0.01)


def test_the_runner_removes_superseded_snapshot_files_but_never_the_newest(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worldloop.runner import server

    def files() -> list[Path]:
        return list(shm.shm_dir().glob(f"{served.endpoints.prefix}*"))

    served.runtime.step(3)
    wait_for(lambda: len(files()) >= 2, 5, 0.01, "the runner's snapshot files")
    monkeypatch.setattr(server, "KEEP_FILES", 0.0)
    served.runtime.step(1)
    tick = served.runtime.tick
    # the tick's file is written after the tick: until then the one left is the tick before's
    wait_for(
        lambda: [f.name[-len(f"-{tick}") :] for f in files()] == [f"-{tick}"],
        5,
        0.01,
        "the superseded files to go, the newest to stay",
    )
    wait_for(lambda: (s := served.worker.latest) is not None and s.tick == tick, 5, 0.01)
