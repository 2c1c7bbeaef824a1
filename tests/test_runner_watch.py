"""The runner and the server it serves stop together. The runner waits on its server
(worldloop.runner.child.Watched): through a pidfd the server's exit is seen when it happens,
not at the next look, and where there is no pidfd it is still seen, a look later. Under the
shipped gunicorn config the master stops its runner and waits for it before it exits
(worldloop.runner.registry), so the server is gone only once the final snapshot is written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import group_members, gunicorn_argv, running_server
from worldloop.runner import registry
from worldloop.runner.child import Watched


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfd on this platform")
def test_an_exit_is_seen_when_it_happens() -> None:
    proc = sleeper()
    watched = Watched(proc.pid)
    try:
        assert not watched.wait(0.05)
        proc.kill()  # a zombie until reaped below: a pidfd reports the exit all the same
        started = time.monotonic()
        assert watched.wait(30.0)
        assert time.monotonic() - started < 15.0  # woken by the exit, not by the timeout
        assert watched.wait(0.0)  # and it stays gone
    finally:
        proc.kill()
        proc.wait()
        watched.close()


def test_without_a_pidfd_an_exit_is_seen_a_look_later(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    proc = sleeper()
    watched = Watched(proc.pid)
    try:
        assert not watched.wait(0.05)
        proc.kill()
        proc.wait()  # reaped: os.kill(pid, 0) no longer finds it
        assert watched.wait(0.05)
    finally:
        watched.close()


def test_a_process_gone_before_the_watch_began_is_gone() -> None:
    proc = sleeper()
    proc.kill()
    proc.wait()
    watched = Watched(proc.pid)
    assert watched.wait(0.0)
    watched.close()


def test_the_master_exits_only_after_its_runner_wrote_the_final_snapshot(tmp_path: Path) -> None:
    argv = gunicorn_argv("-c", "python:worldloop.gunicorn_conf")
    with running_server(argv, tmp_path, env={"WORLDLOOP_RUNNER": "process"}) as srv:
        listed = registry.folder(srv.proc.pid)
        (entry,) = list(listed.iterdir())  # the runner listed itself under this master
        runner = int(entry.name)
        assert runner in group_members(srv.proc.pid)
        os.kill(srv.proc.pid, signal.SIGTERM)
        srv.proc.wait(30)
        still = group_members(srv.proc.pid)  # the moment the master is gone
        log = srv.log
    assert runner not in still, log
    assert "final snapshot at tick" in log, log
    assert not listed.exists()


def test_a_stale_entry_of_a_dead_runner_is_not_signalled(tmp_path: Path) -> None:
    """A runner killed with -9 leaves its entry; its pid may be another process's by now."""
    server = os.getpid() + 1_000_000  # no such process: a folder of our own to play with
    where = registry.folder(server)
    where.mkdir(mode=0o700)
    bystander = sleeper()  # started after the entry below was written: not the runner
    try:
        entry = where / str(bystander.pid)
        entry.touch()
        os.utime(entry, (time.time() - 3600, time.time() - 3600))
        assert registry.stop_all(server, 1.0) == 0
        assert bystander.poll() is None  # never signalled
        assert not where.exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_a_runner_that_stops_by_itself_takes_its_list_away() -> None:
    """Under ``flask run`` or gunicorn without the shipped config, no hook removes the list."""
    server = os.getpid() + 2_000_000  # no such process: a folder of our own
    entry = registry.add(server)
    assert entry is not None and entry.exists()
    registry.remove(entry)
    assert not registry.folder(server).exists()
