"""What a process loads at start-up: only what it uses (issue 17, restart to ready).

Each check runs in a fresh interpreter, where ``sys.modules`` shows exactly what was imported:
a web worker never loads Celery, numba or the stream gateway's asyncio stack, and the meadow's
compiled kernels are loaded only by the process that runs the world, once it has recovered.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, child_env

HEAVY = ("celery", "kombu", "numba", "llvmlite", "aiohttp", "worldloop.gateway")
"""Optional and heavy: imported only by the processes that use them."""


def loaded(script: str, tmp_path: Path, **env: str) -> dict[str, object]:
    """Run ``script`` in a fresh interpreter; it prints one JSON object as its last line."""
    prelude = (
        "import json, sys, threading\n"
        f"HEAVY = {HEAVY!r}\n"
        "def heavy():\n"
        "    return sorted(m for m in sys.modules if m.startswith(HEAVY))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", prelude + script],
        env=child_env(
            WORLDLOOP_INSTANCE_PATH=str(tmp_path / "instance"),
            WORLDLOOP_ADMIN_TOKEN="startup-test-admin-token-0123456789",
            **env,
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_api_and_the_demo_app_import_nothing_heavy(tmp_path: Path) -> None:
    got = loaded(
        "import worldloop.api\n"
        "api = heavy()\n"
        "from worldloop.demo import create_app\n"
        "app = create_app({'WORLDLOOP_AUTOSTART': 'never'})\n"
        "import worldloop.runner.main\n"
        "print(json.dumps({'api': api, 'app': heavy()}))\n",
        tmp_path,
    )
    assert got == {"api": [], "app": []}


def test_a_world_that_never_steps_never_loads_the_compiled_kernels(tmp_path: Path) -> None:
    """A web worker builds the world only to validate commands: with MEADOW_KERNELS=numba it
    must not spend a CPU-second loading numba beside the runner's recovery."""
    got = loaded(
        "from worldloop.demo import create_app\n"
        "app = create_app({'WORLDLOOP_AUTOSTART': 'never', 'MEADOW_KERNELS': 'numba'})\n"
        "world = app.extensions['worldloop'].runtime.world\n"
        "names = [t.name for t in threading.enumerate()]\n"
        "print(json.dumps({'heavy': heavy(), 'loading': 'worldloop-kernels' in names,\n"
        "                  'kernels': world.kernels.name}))\n",
        tmp_path,
    )
    assert got == {"heavy": [], "loading": False, "kernels": "numpy"}


def test_the_first_publish_loads_the_compiled_kernels_in_the_background(tmp_path: Path) -> None:
    """Replaying the journal (steps, no publish) stays on NumPy without loading numba beside
    it; the first published snapshot, after the recovery, starts the load."""
    pytest.importorskip("numba")
    got = loaded(
        "import time\n"
        "from worldloop.demo.meadow import create_world\n"
        "world = create_world({'MEADOW_KERNELS': 'numba', 'MEADOW_ENTITIES': 50})\n"
        "for _ in range(3):\n"
        "    world.step([])\n"
        "names = [t.name for t in threading.enumerate()]\n"
        "replay = {'heavy': heavy(), 'loading': 'worldloop-kernels' in names}\n"
        "world.view()\n"
        "deadline = time.monotonic() + 150\n"
        "while world.kernels.name != 'numba' and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "print(json.dumps({'replay': replay, 'after': world.kernels.name}))\n",
        tmp_path,
    )
    assert got == {"replay": {"heavy": [], "loading": False}, "after": "numba"}


def test_a_server_on_sqlite_never_loads_the_postgresql_dialect(tmp_path: Path) -> None:
    """The default store is SQLite: its journal writes (group commit included) must not import
    SQLAlchemy's PostgreSQL dialect, tens of milliseconds of every restart of every process."""
    got = loaded(
        "from worldloop.demo import create_app\n"
        "app = create_app({'WORLDLOOP_AUTOSTART': 'never', 'WORLDLOOP_RUNNER': 'thread'})\n"
        "state = app.extensions['worldloop']\n"
        "state.start()\n"
        "state.runtime.ticker.wait_for_ticks(5, 60)\n"
        "state.stop()\n"
        "pg = sorted(m for m in sys.modules if m.startswith('sqlalchemy.dialects.postgresql'))\n"
        "print(json.dumps({'sqlite': 'sqlalchemy.dialects.sqlite' in sys.modules, 'pg': pg}))\n",
        tmp_path,
    )
    assert got == {"sqlite": True, "pg": []}
