"""Start-up and recovery log lines appear even when the host set up no logging before the
extension (a fresh interpreter: the first thing it does is build the app)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, child_env

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
