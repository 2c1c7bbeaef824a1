"""The runner waits on the server it serves (worldloop.runner.child.Watched): through a pidfd
its server's exit is seen when it happens, not at the next look, and where there is no pidfd
it is still seen, a look later."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

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
