"""Many worlds in one real server (issue 13): worlds created through the API survive a kill -9
(catalog + each world's own snapshot and journal), and a world whose system raises every tick
stops no other. The server is tests/worlds_app.py under ``flask run`` in the single-process
mode (WORLDLOOP_RUNNER=thread)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import BIN, ROOT, SRC, Server, child_env, free_port, wait_for

pytestmark = pytest.mark.slow

TOKEN = "worlds-admin-token-0123"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def start(tmp_path: Path, name: str, server: str = "flask", **extra: str) -> Server:
    port = free_port()
    if server == "gunicorn":
        argv = [
            str(BIN / "gunicorn"),
            "--bind",
            f"127.0.0.1:{port}",
            "-w",
            "1",
            "--threads",
            "4",
            "tests.worlds_app:create_app()",
        ]
    else:
        argv = [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "tests.worlds_app:create_app",
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-reload",
        ]
    env = child_env(
        PYTHONPATH=os.pathsep.join([str(SRC), str(ROOT)]),
        WORLDLOOP_INSTANCE_PATH=str(tmp_path / "instance"),
        WORLDLOOP_RUNNER="thread",
        WORLDLOOP_RATE_HZ="50",
        WORLDLOOP_SNAPSHOT_EVERY="20",
        WORLDLOOP_HASH_EVERY="7",
        WORLDLOOP_ADMIN_TOKEN=TOKEN,
        **extra,
    )
    srv = Server(argv, port=port, env=env, cwd=tmp_path, log_path=tmp_path / f"{name}.log")
    try:
        srv.wait_ready(60)
    except BaseException:
        srv.stop()
        raise
    return srv


def create(srv: Server, name: str, kind: str = "drift", **config: Any) -> None:
    status, _, body = srv.post(
        "/api/v1/worlds", {"name": name, "kind": kind, "config": config}, headers=ADMIN
    )
    assert status == 201, body


def worlds(srv: Server) -> dict[str, dict[str, Any]]:
    status, _, body = srv.get("/api/v1/worlds")
    assert status == 200, body
    return {w["name"]: w for w in body["worlds"]}


def live(srv: Server, world: str) -> dict[str, Any]:
    status, _, body = srv.get(f"/test/worlds/{world}/state")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize("server", ["flask", "gunicorn"])
def test_worlds_created_through_the_api_come_back_after_kill9(tmp_path: Path, server: str) -> None:
    srv = start(tmp_path, "first", server)
    acked: dict[str, list[int]] = {"drift": [], "north": [], "south": [], "still": []}
    try:
        create(srv, "north", particles=8, seed=1)
        create(srv, "south", particles=12, seed=2)
        create(srv, "still", particles=4, seed=3)
        for round_ in range(6):
            for world in acked:
                status, _, body = srv.post(
                    f"/test/worlds/{world}/kick", {"i": round_ % 4, "dv": 0.25}
                )
                assert status == 200 and body["status"] == "applied", body
                acked[world].append(int(body["tick"]))
        status, _, body = srv.post("/api/v1/worlds/still/admin/pause", headers=ADMIN)
        assert status == 200 and body["paused"], body
        paused_at = live(srv, "still")["tick"]
        before = {name: live(srv, name) for name in acked}
        srv.signal_group(signal.SIGKILL)
        srv.proc.wait(10)
    finally:
        srv.stop()

    again = start(tmp_path, "second", server)
    try:
        listed = worlds(again)
        assert set(listed) == {"drift", "north", "south", "still"}
        assert listed["still"]["status"] == "paused"
        assert [listed[n]["kind"] for n in ("north", "south")] == ["drift", "drift"]
        for world, ticks in acked.items():
            state = live(again, world)
            assert state["kicks"] == len(ticks), (world, state)  # every acknowledged kick
            assert state["tick"] >= max(ticks), (world, state)
        assert live(again, "still")["tick"] == paused_at  # paused: exactly where it was
        # the running worlds tick on after the restart
        wait_for(lambda: live(again, "north")["tick"] > before["north"]["tick"] + 10, 15)
        assert "replay diverged" not in again.log
    finally:
        again.stop()


def test_a_world_failing_every_tick_stops_no_other(tmp_path: Path) -> None:
    srv = start(tmp_path, "faulty")
    try:
        create(srv, "broken", kind="faulty")
        create(srv, "healthy")
        start_ticks = {name: live(srv, name)["tick"] for name in ("broken", "healthy", "drift")}
        # at 50 Hz every world ticks on: the failing one too (its errors contained)
        for name in ("broken", "healthy", "drift"):
            wait_for(lambda n=name: live(srv, n)["tick"] >= start_ticks[n] + 100, 20, 0.1, name)
        errors = live(srv, "broken")["system_errors"]
        assert errors.get("explode", 0) >= 100
        assert live(srv, "healthy")["system_errors"] == {}
        listed = worlds(srv)
        assert {listed[n]["status"] for n in ("broken", "healthy", "drift")} == {"running"}
        # kicks are applied in the failing world as well as in the others
        for name in ("broken", "healthy"):
            status, _, body = srv.post(f"/test/worlds/{name}/kick", {"i": 0, "dv": 1.0})
            assert status == 200 and body["status"] == "applied", body
    finally:
        srv.stop()
