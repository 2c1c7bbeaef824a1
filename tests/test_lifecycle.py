"""Exactly one loop per world under real servers, and bounded shutdown on signals.

Each test runs a real server process (flask's reloader, gunicorn with and without --preload)
and reads what the processes report: the log line each loop writes when it starts names its pid.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from .support import flask_argv, gunicorn_argv, running_server, wait_for

pytestmark = pytest.mark.slow

STARTED = re.compile(r"world 'meadow' started at tick \d+, [\d.]+ Hz, in pid (\d+)")
STOPPED = re.compile(r"world 'meadow' stopped at tick \d+ in pid (\d+)")


def started_pids(log: str) -> list[int]:
    return [int(p) for p in STARTED.findall(log)]


def ticks_advance(srv) -> None:
    first = srv.get("/api/v1/world")[2]["tick"]
    wait_for(lambda: srv.get("/api/v1/world")[2]["tick"] > first, 10, what="the world to tick")


def test_flask_debug_reloader_runs_one_loop_and_hands_it_over_on_reload(tmp_path):
    trigger = tmp_path / "trigger.txt"
    trigger.write_text("0")
    with running_server(flask_argv("--debug", "--extra-files", str(trigger)), tmp_path) as srv:
        ticks_advance(srv)
        log = srv.log
        assert len(started_pids(log)) == 1, log
        assert "not starting in the reloader's watcher process" in log
        assert started_pids(log)[0] != srv.proc.pid  # the child serves, the watcher does not
        # a code change restarts the child: the old loop stops, exactly one new loop starts
        bumps = iter(range(1, 100))

        def touched_and_reloaded() -> bool:
            stamp = time.time() + next(bumps)  # a new mtime every poll, seen by the stat reloader
            os.utime(trigger, (stamp, stamp))
            return len(started_pids(srv.log)) >= 2

        wait_for(touched_and_reloaded, 30, interval=0.5, what="the reloaded child's loop")
        ticks_advance(srv)
        log = srv.log
        pids = started_pids(log)
        stopped = [int(p) for p in STOPPED.findall(log)]
        assert len(set(pids)) == len(pids)  # every loop ran in its own child
        assert stopped == pids[: len(stopped)] and len(stopped) >= len(pids) - 1
        assert srv.proc.pid not in pids


@pytest.mark.parametrize("preload", [False, True], ids=["plain", "preload"])
def test_gunicorn_runs_exactly_one_loop_in_the_worker(tmp_path, preload):
    extra = ["--preload"] if preload else []
    with running_server(gunicorn_argv("--workers", "1", "--threads", "4", *extra), tmp_path) as srv:
        ticks_advance(srv)
        log = srv.log
        pids = started_pids(log)
        assert len(pids) == 1, log
        assert pids[0] != srv.proc.pid, "the loop must not run in the gunicorn master"
        if preload:
            assert "pre-fork master" in log
        srv.signal_group(signal.SIGTERM)
        assert srv.proc.wait(10) == 0
        assert [int(p) for p in STOPPED.findall(srv.log)] == pids


def test_gunicorn_with_two_workers_on_one_embedded_store_is_refused(tmp_path):
    with running_server(
        gunicorn_argv("--workers", "2"), tmp_path, ready=False, env={"WORLDLOOP_LEASE_WAIT": "0.5"}
    ) as srv:
        code = srv.proc.wait(30)
        assert code != 0
        # Refused before either worker builds a world, in one line naming the way out.
        assert srv.log.count("cannot serve: gunicorn -w 2 on the embedded (SQLite) store") == 1
        assert "gunicorn -w 1 -k gthread --threads" in srv.log


def test_a_second_server_on_the_same_store_is_refused_with_a_clear_message(tmp_path):
    with running_server(flask_argv(), tmp_path, name="first") as first:
        with running_server(flask_argv(), tmp_path, ready=False, name="second") as second:
            assert second.proc.wait(30) != 0
            assert "already running in another process" in second.log
            assert f"pid {first.proc.pid}" in second.log
        ticks_advance(first)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_loop_within_two_seconds(tmp_path, sig):
    with running_server(flask_argv(), tmp_path) as srv:
        ticks_advance(srv)
        srv.proc.send_signal(sig)
        try:
            srv.proc.wait(2.0 + 1.0)  # the 2 s bound plus interpreter teardown
        except subprocess.TimeoutExpired:
            pytest.fail(f"server still running 3 s after {sig.name}:\n{srv.log}")
        assert STOPPED.search(srv.log), srv.log
