"""The first runner is a fork of the web process loading the app (issue 17, restart to ready):
started before the web worker's own store and routes, named ``wl-runner``, holding none of the
server's sockets; a fresh interpreter wherever a fork is not safe or not wanted."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, child_env, flask_argv, gunicorn_argv, running_server, wait_for
from worldloop.runner.fork import COMM
from worldloop.runner.ipc import endpoints

ENV = {"WORLDLOOP_RUNNER": "process", "WORLDLOOP_ADMIN_TOKEN": "fork-test-admin-token-0123456789"}


def runner_pid(tmp_path: Path) -> int:
    """The pid written in the runner lock by the runner that holds it."""
    lock = endpoints(str(tmp_path / "instance"), "meadow").lock
    text = wait_for(lambda: lock.exists() and lock.read_text().strip(), 30, 0.05, "runner lock")
    return int(text)


def parent_of(pid: int) -> int:
    return int((Path(f"/proc/{pid}/stat")).read_text().rsplit(")", 1)[1].split()[1])


def sockets_of(pid: int) -> set[str]:
    """The socket inodes among ``pid``'s open descriptors (``socket:[123]``)."""
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


def test_flask_run_forks_its_runner_before_its_own_start_up(tmp_path: Path) -> None:
    """``make run``'s set-up: the runner is a fork of the ``flask run`` process, logged before
    that process serves, named wl-runner, and it serves the world (/readyz 200)."""
    with running_server(flask_argv(), tmp_path, env=ENV) as srv:
        wait_for(lambda: srv.get("/readyz")[0] == 200, 30, 0.1, "ready")
        runner = runner_pid(tmp_path)
        log = srv.log
        assert Path(f"/proc/{runner}/comm").read_text().strip() == COMM
        assert parent_of(runner) == srv.proc.pid
        forked = re.search(rf"starting the runner: a fork of pid {srv.proc.pid}\b", log)
        served = re.search(rf"web worker pid {srv.proc.pid} serves world 'meadow'", log)
        assert forked and served and forked.start() < served.start(), log
        assert re.search(rf"runner pid {runner} serves world 'meadow'", log), log
        status, _, body = srv.get("/api/v1/world")
        assert status == 200 and body["tick"] >= 0, body


def test_a_runner_forked_from_a_gunicorn_worker_holds_none_of_its_sockets(
    tmp_path: Path,
) -> None:
    """A gunicorn worker's listening socket is inherited by a fork: the runner must not keep
    it (it would hold the port after the server is gone), nor any other socket of the worker."""
    with running_server(gunicorn_argv("-w", "1", "-k", "gthread"), tmp_path, env=ENV) as srv:
        wait_for(lambda: srv.get("/readyz")[0] == 200, 30, 0.1, "ready")
        runner = runner_pid(tmp_path)
        worker = parent_of(runner)
        assert parent_of(worker) == srv.proc.pid, "forked from the worker"
        assert Path(f"/proc/{runner}/comm").read_text().strip() == COMM
        assert f"a fork of pid {worker}" in srv.log, srv.log
        listeners = sockets_of(srv.proc.pid) & sockets_of(worker)
        assert listeners, "the worker shares its listener with the master"
        assert not sockets_of(runner) & (sockets_of(worker) | sockets_of(srv.proc.pid))


def test_runner_fork_false_starts_a_fresh_interpreter(tmp_path: Path) -> None:
    env = {**ENV, "WORLDLOOP_RUNNER_FORK": "false"}
    with running_server(flask_argv(), tmp_path, env=env) as srv:
        wait_for(lambda: srv.get("/readyz")[0] == 200, 30, 0.1, "ready")
        runner = runner_pid(tmp_path)
        argv = Path(f"/proc/{runner}/cmdline").read_bytes().split(b"\0")
        assert b"worldloop.runner" in argv and str(srv.proc.pid).encode() in argv
        assert "a fork of pid" not in srv.log


WHY_NOT = """
import json, sys, threading
sys.path.insert(0, sys.argv[1])
from worldloop.runner.fork import why_not
import worldloop.demo
found = {"imported": why_not("worldloop.demo:create_app"),
         "call": why_not("worldloop.demo:create_app()"),
         "missing": why_not("not_imported_anywhere:app"),
         "path": why_not("app.py"),
         "discovery": why_not("")}
import half  # calls why_not on itself while it is being imported
found["importing"] = half.SEEN
stop = threading.Event()
thread = threading.Thread(target=stop.wait)
thread.start()
found["thread"] = why_not("worldloop.demo:create_app")
stop.set()
thread.join()
print(json.dumps(found))
"""


def test_a_fork_is_refused_where_it_is_not_safe(tmp_path: Path) -> None:
    """Fresh interpreter: the app's module fully imported and one thread is the only case
    that forks; a module still being imported (an app built at import), a file path, Flask's
    own discovery, a module not imported, and a running thread all say why not."""
    (tmp_path / "half.py").write_text(
        "from worldloop.runner.fork import why_not\nSEEN = why_not('half:app')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", WHY_NOT, str(tmp_path)],
        env=child_env(PYTHONPATH=str(ROOT / "src")),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["imported"] is None and found["call"] is None, found
    assert "is not imported" in found["missing"], found
    assert "names no importable module" in found["path"], found
    assert "names no importable module" in found["discovery"], found
    assert "still being imported" in found["importing"], found
    assert found["thread"] == "threads are running", found


FORKED = """
import os, subprocess, sys, time
from worldloop.runner.fork import fork_runner
gone = subprocess.Popen(["true"])
gone.wait()  # a server that is gone: the runner does not wait for the lock it cannot take
child = fork_runner(["--app", "worldloop.demo:create_app", "--watch", str(gone.pid)], os.getcwd())
first = child.poll()
deadline = time.monotonic() + 60
while child.poll() is None and time.monotonic() < deadline:
    time.sleep(0.05)
print(first, child.poll())
"""


def test_a_forked_runner_is_reaped_and_its_exit_code_read(tmp_path: Path) -> None:
    """``ForkedRunner.poll`` answers as a Popen's: None while the child runs, then its exit
    code; a runner whose lock another runner holds, once its server is gone, exits 0."""
    instance = tmp_path / "instance"
    lock = endpoints(str(instance), "meadow").lock
    with open(lock, "w") as held:  # a live runner holds the lock
        fcntl.flock(held, fcntl.LOCK_EX)
        done = subprocess.run(
            [sys.executable, "-c", FORKED],
            env=child_env(
                PYTHONPATH=str(ROOT / "src"),
                WORLDLOOP_INSTANCE_PATH=str(instance),
                WORLDLOOP_ADMIN_TOKEN=ENV["WORLDLOOP_ADMIN_TOKEN"],
            ),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "0"], done.stdout + done.stderr
    assert "another runner serves world 'meadow'; exiting" in done.stderr, done.stderr
