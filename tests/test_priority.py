"""CPU priority for the tick (worldloop.priority, WORLDLOOP_WEB_NICE): the web workers' request
threads and the gateway run at a raised nice value, the runner's threads never do — not the
first runner (forked from a web worker) nor one respawned after kill -9 — and 0 turns it off.
Nice values are read from /proc/<pid>/task/<tid>/stat (field 19), as the scheduler sees them."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest
from flask import Flask

from tests.support import free_port, runner_pids, running_server, wait_for
from tests.test_runner import gunicorn, worker_pids
from worldloop import priority
from worldloop.config import Settings
from worldloop.errors import ConfigError

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's"
)

STEP = 7


def base() -> int:
    """The nice value this test runs at (the servers it starts start from it)."""
    return os.getpriority(os.PRIO_PROCESS, 0)


def thread_nices(pid: int) -> dict[int, int]:
    """Each thread of ``pid``: its nice value (field 19 of its stat line)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        found[int(task.name)] = int(fields[16])  # fields[0] is field 3 (state)
    return found


def gateway_pids(master: int) -> list[int]:
    """The stream gateway processes of the server whose master is ``master``."""
    group = os.getpgid(master)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"worldloop.gateway" in argv and os.getpgid(int(entry.name)) == group:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_lower_thread_changes_only_the_calling_thread() -> None:
    start = base()
    got: list[int | None] = []
    seen: list[int] = []

    def worker() -> None:
        got.append(priority.lower_thread(STEP))
        seen.append(priority.nice_of(threading.get_native_id()))

    t = threading.Thread(target=worker)
    t.start()
    t.join(10)
    assert got == [min(19, start + STEP)] and seen == got
    assert priority.nice_of(threading.get_native_id()) == start  # this thread is untouched
    assert priority.lower_thread(0) is None


@pytest.mark.parametrize("step", [0, STEP])
def test_request_threads_lower_themselves_once(step: int) -> None:
    app = Flask(__name__)
    app.add_url_rule("/", "nice", lambda: {"nice": priority.nice_of(threading.get_native_id())})
    priority.lower_request_threads(app, step)
    start = base()
    answers: list[int] = []

    def client() -> None:
        with app.test_client() as c:
            answers.extend(c.get("/").json["nice"] for _ in range(3))

    t = threading.Thread(target=client)  # a thread of its own: this one keeps its priority
    t.start()
    t.join(10)
    assert answers == [min(19, start + step)] * 3  # once per thread, not once per request
    assert base() == start


def test_served_app_lowers_web_threads_and_gateway_not_the_runner(tmp_path: Path) -> None:
    start = base()
    env = {
        "WORLDLOOP_RUNNER": "process",
        "WORLDLOOP_WEB_NICE": str(STEP),
        "WORLDLOOP_GATEWAY": f"127.0.0.1:{free_port()}",
        "MEADOW_ENTITIES": "200",
    }
    argv = gunicorn("-w", "2", "-k", "gthread", "--threads", "4")
    with running_server(argv, tmp_path, env=env) as srv:
        master = srv.proc.pid
        wait_for(lambda: len(runner_pids(master)) == 1, 30, 0.1, "one runner")
        first = runner_pids(master)[0]
        for _ in range(40):  # a new connection each: the kernel spreads them over the workers
            assert srv.get("/api/v1/world")[0] == 200
        lowered = start + STEP
        served = 0
        for pid in worker_pids(master):
            nices = thread_nices(pid)
            assert nices[pid] == start, "the main thread (which forks the runner) keeps its own"
            assert set(nices.values()) <= {start, lowered}, nices
            assert list(nices.values()).count(start) >= 2, "feed and runner watch stay"
            served += lowered in nices.values()
        assert served >= 1, "no request thread was lowered"
        assert set(thread_nices(first).values()) == {start}, "the forked runner keeps its own"
        gateway = wait_for(lambda: gateway_pids(master), 30, 0.1, "the gateway")[0]
        wait_for(lambda: set(thread_nices(gateway).values()) == {lowered}, 30, 0.1, "gateway")
        os.kill(first, signal.SIGKILL)  # the next one is started from a worker's watch thread
        second = wait_for(
            lambda: [p for p in runner_pids(master) if p != first], 60, 0.1, "a new runner"
        )[0]
        wait_for(lambda: srv.get("/readyz")[0] == 200, 60, 0.1, "ready again")
        assert set(thread_nices(second).values()) == {start}, "a respawned runner keeps its own"


def test_web_nice_0_leaves_every_thread_alone(tmp_path: Path) -> None:
    start = base()
    env = {"WORLDLOOP_RUNNER": "process", "WORLDLOOP_WEB_NICE": "0", "MEADOW_ENTITIES": "200"}
    argv = gunicorn("-w", "2", "-k", "gthread", "--threads", "4")
    with running_server(argv, tmp_path, env=env) as srv:
        master = srv.proc.pid
        wait_for(lambda: len(runner_pids(master)) == 1, 30, 0.1, "one runner")
        for _ in range(40):
            assert srv.get("/api/v1/world")[0] == 200
        for pid in [*worker_pids(master), *runner_pids(master)]:
            assert set(thread_nices(pid).values()) == {start}, (pid, thread_nices(pid))


def test_web_nice_setting_is_a_nice_step() -> None:
    assert Settings.from_config({}).web_nice == 10
    assert Settings.from_config({"WORLDLOOP_WEB_NICE": "0"}).web_nice == 0
    for bad in ("-1", "20"):
        with pytest.raises(ConfigError, match="WORLDLOOP_WEB_NICE"):
            Settings.from_config({"WORLDLOOP_WEB_NICE": bad})
