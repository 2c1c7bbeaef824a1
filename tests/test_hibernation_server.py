"""Hibernation in a real server (issue 13): gunicorn with the world in a runner process. An
idle world falls asleep in the runner, a request at a web worker wakes it there (the worker
hears the world is gone from its endpoints and asks again), and after a kill -9 the world
comes back asleep, not loaded, until a request wakes it with every acknowledged command."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.support import wait_for
from tests.test_worlds_server import create, live, start, worlds

pytestmark = pytest.mark.slow

IDLE = {"WORLDLOOP_HIBERNATE_AFTER": "0.5"}


def kick(srv: object, world: str) -> None:
    status, _, body = srv.post(f"/test/worlds/{world}/kick", {"i": 0, "dv": 0.5})  # type: ignore[attr-defined]
    assert status == 200 and body["status"] == "applied", body


def test_a_world_sleeps_in_the_runner_wakes_on_a_request_and_survives_kill9_asleep(
    tmp_path: Path,
) -> None:
    srv = start(tmp_path, "first", "gunicorn", "process", **IDLE)
    try:
        create(srv, "room", particles=6, seed=5)
        kick(srv, "room")
        kick(srv, "room")
        wait_for(lambda: worlds(srv)["room"]["status"] == "hibernated", 20, 0.1, "asleep")
        assert worlds(srv)["drift"]["status"] == "running"  # the default world never sleeps
        # a request at the worker wakes it in the runner, recovered with both kicks
        state = live(srv, "room")
        assert state["kicks"] == 2 and state["pid"] != srv.proc.pid
        kick(srv, "room")
        wait_for(lambda: srv.log.count("world 'room' hibernates") == 2, 20, 0.1, "asleep again")
        slept_tick = worlds(srv)["room"]["tick"]  # final: its final snapshot's
        srv.signal_group(signal.SIGKILL)
        srv.proc.wait(10)
    finally:
        srv.stop()

    again = start(tmp_path, "second", "gunicorn", "process", **IDLE)
    try:
        listed = worlds(again)["room"]
        assert listed["status"] == "hibernated" and listed["tick"] == slept_tick
        assert "world 'room' started" not in again.log  # asleep: not loaded in the runner
        state = live(again, "room")  # wakes it
        assert state["kicks"] == 3 and state["tick"] >= slept_tick
        kick(again, "room")
        assert live(again, "room")["kicks"] == 4
        assert "world 'room' started" in again.log
        assert "replay diverged" not in again.log
    finally:
        again.stop()
