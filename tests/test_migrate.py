"""docs/migrate-from-timer.md: both versions run under real gunicorn; the migrated one keeps
its world across a restart (journal + snapshots), which the Timer recipe cannot."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, SRC, Server, gunicorn_argv, running_server, wait_for

pytestmark = pytest.mark.slow


def serve(app: str, tmp_path: Path, name: str) -> Any:
    argv = gunicorn_argv("-w", "1", "--threads", "4")
    argv[-1] = app
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(SRC)])}
    return running_server(argv, tmp_path, env=env, name=name, ready=False)


def ready(srv: Server) -> None:
    def up() -> bool:
        if srv.proc.poll() is not None:
            raise AssertionError(srv.log)
        return srv.get("/robots", timeout=2)[0] == 200

    wait_for(up, 30, 0.1, "the server")


def robot(srv: Server, name: str) -> dict[str, Any]:
    status, _, body = srv.get("/robots")
    assert status == 200, body
    return dict(body["robots"].get(name) or {})


def test_the_timer_recipe_runs(tmp_path: Path) -> None:
    with serve("examples.timer_recipe:app", tmp_path, "recipe") as srv:
        ready(srv)
        status, _, body = srv.post("/robots/r2", {"vx": 10.0, "vy": 0.0})
        assert status == 200 and body["vx"] == 10.0
        wait_for(lambda: robot(srv, "r2")["x"] > 1.0, 10, what="the robot to move")


def test_the_migrated_app_runs_and_keeps_its_world_across_a_restart(tmp_path: Path) -> None:
    with serve("examples.timer_migrated:create_app()", tmp_path, "migrated") as srv:
        ready(srv)
        status, _, body = srv.post("/robots/r2", {"vx": 10.0, "vy": 0.0})
        assert status == 200 and body["status"] == "applied", body
        wait_for(lambda: robot(srv, "r2")["x"] > 1.0, 10, what="the robot to move")
        status, _, bad = srv.post("/robots/r2", {"vx": 1e9, "vy": 0.0})
        assert status == 422 and bad["error"]["code"] == "invalid_command"
        srv.stop()  # SIGTERM: a bounded stop with a final snapshot (what atexit never did)
        assert srv.proc.returncode == 0, srv.log
        assert "Traceback" not in srv.log
    assert (tmp_path / "instance" / "worldloop.db").exists()
    with serve("examples.timer_migrated:create_app()", tmp_path, "again") as again:
        ready(again)
        back = robot(again, "r2")
        assert back["vx"] == 10.0 and back["x"] > 1.0  # the world came back
        wait_for(lambda: robot(again, "r2")["x"] > back["x"], 10, what="it to go on moving")


def test_the_guides_code_is_the_examples_code() -> None:
    """Every python block of docs/migrate-from-timer.md is taken verbatim from examples/."""
    doc = (ROOT / "docs" / "migrate-from-timer.md").read_text()
    sources = "".join(
        (ROOT / "examples" / f).read_text() for f in ("timer_recipe.py", "timer_migrated.py")
    )
    blocks = re.findall(r"^```python\n(.*?)^```", doc, re.S | re.M)
    assert len(blocks) >= 4
    for block in blocks:
        assert block in sources, block
