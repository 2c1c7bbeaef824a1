"""Start-up and recovery log lines appear even when the host set up no logging before the
extension (a fresh interpreter: the first thing it does is build the app)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, child_env, flask_argv, running_server, wait_for

SCRIPT = """
import sys
from examples.boids import create_app
app = create_app({"WORLDLOOP_STORE_URL": "sqlite:///" + sys.argv[1]})
rt = app.extensions["worldloop"].runtime
rt.ticker.wait_for_ticks(3, 10)
app.extensions["worldloop"].stop()
"""


def run(db: Path) -> str:
    env = child_env(PYTHONPATH=str(ROOT / "src") + ":" + str(ROOT))
    env.pop("WORLDLOOP_LOG_JSON", None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(db)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stderr


def test_start_up_and_recovery_lines_without_any_logging_setup(tmp_path: Path) -> None:
    first = run(tmp_path / "w.db")
    assert "world 'boids' started at tick 0" in first, first
    assert "new store, initial snapshot at tick 0" in first, first
    second = run(tmp_path / "w.db")
    assert "recovered at tick" in second, second
    assert "world 'boids' started at tick" in second, second


def test_a_restarted_server_logs_its_start_up_and_recovery_step_by_step(tmp_path: Path) -> None:
    """The demo server as `make run` starts it (the world in its runner process), killed with
    kill -9 and started again: its log says, in order, that the runner was started, loaded the
    app, is recovering, how many ticks it replays, what it recovered, and when it served; and
    /readyz turns 200 only with the recovered world (its tick, or later)."""
    env = {
        "WORLDLOOP_RUNNER": "process",
        "WORLDLOOP_SNAPSHOT_EVERY": "100000",  # only the initial snapshot: a restart replays
        "WORLDLOOP_RECOVERY_SECONDS": "0",
        "WORLDLOOP_ADMIN_TOKEN": "startup-logs-admin-token-0123456789",
    }
    with running_server(flask_argv(), tmp_path, env=env, name="first") as first:
        wait_for(lambda: first.get("/api/v1/world")[2]["tick"] >= 20, 60, 0.1, "20 ticks")
        first.signal_group(signal.SIGKILL)  # worker and runner alike: no final snapshot
        first.proc.wait(10)
        wait_for(lambda: not first.group_alive(), 10, 0.05, "the first server to die")
    with running_server(flask_argv(), tmp_path, env=env, ready=False, name="second") as second:
        ready = wait_for(lambda: second.get("/readyz", timeout=2)[0] == 200 and second, 60, 0.05)
        status, _, body = ready.get("/readyz")
        log = second.log
    steps = [
        r"worldloop: starting the runner",
        r"worldloop: runner pid \d+ loaded the app in [\d.]+ s since its start",
        r"worldloop: runner recovering world 'meadow'",
        r"world 'meadow': loading its last snapshot and journal from the store",
        r"world 'meadow': snapshot of tick 0 loaded in [\d.]+ s, replaying [\d,]+ journaled ticks",
        r"world 'meadow' recovered at tick (\d+) from the snapshot of tick 0 \+ [1-9]\d* journaled",
        r"worldloop: runner pid \d+ serves world 'meadow' \(tick \d+\) to web workers, [\d.]+ s",
    ]
    found = [re.search(step, log) for step in steps]
    assert all(found), f"missing {[s for s, m in zip(steps, found, strict=True) if not m]}:\n{log}"
    starts = [m.start() for m in found if m]
    assert starts == sorted(starts), log
    recovered = found[5]
    assert recovered is not None
    assert status == 200 and body["tick"] >= int(recovered.group(1)), body
