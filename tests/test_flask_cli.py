"""`flask world ...` and other flask commands run beside a live server without taking its world."""

from __future__ import annotations

import json
import subprocess

import pytest

from .support import BIN, child_env, flask_argv, running_server, wait_for

pytestmark = pytest.mark.slow


def flask_cmd(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "flask"), "--app", "worldloop.demo:create_app", *args],
        cwd=tmp_path,
        env=child_env(WORLDLOOP_INSTANCE_PATH=str(tmp_path / "instance")),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_flask_world_commands_read_the_store_of_a_running_server(tmp_path):
    with running_server(flask_argv(), tmp_path) as srv:
        wait_for(lambda: srv.get("/api/v1/world")[2]["tick"] > 10, 10, what="some ticks")
        info = flask_cmd(tmp_path, "world", "info", "--json")
        assert info.returncode == 0, info.stderr
        head = json.loads(info.stdout)["head"]
        assert head >= 10
        verify = flask_cmd(tmp_path, "world", "verify", "--json")
        assert verify.returncode == 0, verify.stderr
        assert json.loads(verify.stdout)["ok"] is True
        restore = flask_cmd(tmp_path, "world", "restore", "--tick", "5", "--json")
        assert restore.returncode == 0, restore.stderr
        assert json.loads(restore.stdout)["tick"] == 5
        routes = flask_cmd(tmp_path, "routes")
        assert routes.returncode == 0 and "/api/v1/world" in routes.stdout
        # none of them started a world of their own: the server still holds its lease and ticks
        for done in (info, verify, restore, routes):
            assert "started at tick" not in done.stderr
        tick = srv.get("/api/v1/world")[2]["tick"]
        wait_for(lambda: srv.get("/api/v1/world")[2]["tick"] > tick, 10, what="ticking on")


def test_flask_world_restore_of_a_tick_not_journaled_is_a_clear_error(tmp_path):
    with running_server(flask_argv(), tmp_path) as srv:
        tick = srv.get("/api/v1/world")[2]["tick"]
        bad = flask_cmd(tmp_path, "world", "restore", "--tick", str(tick + 10_000))
        assert bad.returncode != 0
        assert "Error:" in bad.stderr and "Traceback" not in bad.stderr
