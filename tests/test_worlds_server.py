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


def start(
    tmp_path: Path, name: str, server: str = "flask", runner: str = "thread", **extra: str
) -> Server:
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
        WORLDLOOP_RUNNER=runner,
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


@pytest.mark.parametrize(
    ("server", "runner"), [("flask", "thread"), ("gunicorn", "thread"), ("gunicorn", "process")]
)
def test_worlds_created_through_the_api_come_back_after_kill9(
    tmp_path: Path, server: str, runner: str
) -> None:
    """In the runner-process mode too: the runner hosts the worlds, the web worker forwards
    the world API's writes to it and serves each world's reads and commands over IPC."""
    srv = start(tmp_path, "first", server, runner)
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

    again = start(tmp_path, "second", server, runner)
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


def samples(srv: Server, world: str) -> dict[str, float]:
    """The /metrics samples of ``world`` (the runner's, in the runner-process mode)."""
    status, _, raw = srv.get("/metrics")
    assert status == 200 and isinstance(raw, bytes)
    out = {}
    for line in raw.decode().splitlines():
        if f'world="{world}"' in line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@pytest.mark.parametrize("runner", ["thread", "process"])
def test_a_world_failing_every_tick_stops_no_other(tmp_path: Path, runner: str) -> None:
    srv = start(tmp_path, "faulty", runner=runner)
    try:
        create(srv, "broken", kind="faulty")
        create(srv, "healthy")
        start_ticks = {name: live(srv, name)["tick"] for name in ("broken", "healthy", "drift")}
        # at 50 Hz every world ticks on: the failing one too (its errors contained)
        for name in ("broken", "healthy", "drift"):
            wait_for(lambda n=name: live(srv, n)["tick"] >= start_ticks[n] + 100, 20, 0.1, name)
        # each failure counted, per world, where the world runs
        failed = 'worldloop_system_errors_total{system="explode",world="broken"}'
        assert samples(srv, "broken")[failed] >= 100
        healthy = samples(srv, "healthy")
        assert healthy['worldloop_ticks_total{world="healthy"}'] >= 100
        assert not [name for name in healthy if "system_errors" in name]
        listed = worlds(srv)
        assert {listed[n]["status"] for n in ("broken", "healthy", "drift")} == {"running"}
        # kicks are applied in the failing world as well as in the others
        for name in ("broken", "healthy"):
            status, _, body = srv.post(f"/test/worlds/{name}/kick", {"i": 0, "dv": 1.0})
            assert status == 200 and body["status"] == "applied", body
    finally:
        srv.stop()


def test_the_runner_process_hosts_worlds_created_and_deleted_through_a_worker(
    tmp_path: Path,
) -> None:
    srv = start(tmp_path, "runner", "gunicorn", "process")
    try:
        create(srv, "room", particles=5, seed=4)
        status, _, body = srv.post("/test/worlds/room/kick", {"i": 1, "dv": 2.0})
        assert status == 200 and body["status"] == "applied", body
        state = live(srv, "room")
        assert state["kicks"] == 1
        status, _, summary = srv.get("/api/v1/worlds/room")
        assert status == 200 and summary["world"] == "room" and summary["particles"] == 5
        status, _, paused = srv.post("/api/v1/worlds/room/admin/pause", headers=ADMIN)
        assert status == 200 and paused["paused"] and paused["world"] == "room"
        assert worlds(srv)["room"]["status"] == "paused"
        status, _, body = srv.post(
            "/api/v1/worlds", {"name": "room", "kind": "drift"}, headers=ADMIN
        )
        assert status == 409 and body["error"]["code"] == "world_exists"
        status, _, body = srv.get("/api/v1/worlds/nowhere/snapshot")
        assert status == 404 and body["error"]["code"] == "world_not_found"

        status, _, body = http_delete(srv, "/api/v1/worlds/room?journal=drop")
        assert status == 200 and body["journal"] == "drop", body
        assert "room" not in worlds(srv)
        # the worker's connection to the deleted world goes once its feed is silent
        wait_for(lambda: srv.get("/api/v1/worlds/room")[0] == 404, 15, 0.2, "a 404")
        create(srv, "room", particles=3)  # the name is free again, and the journal gone
        wait_for(lambda: live(srv, "room")["kicks"] == 0, 15, 0.2, "the new room")
        assert summary_of(srv, "room")["particles"] == 3
    finally:
        srv.stop()


def http_delete(srv: Server, path: str) -> tuple[int, dict[str, str], Any]:
    from tests.support import http

    return http("DELETE", srv.base + path, headers=ADMIN)


def summary_of(srv: Server, world: str) -> dict[str, Any]:
    status, _, body = srv.get(f"/api/v1/worlds/{world}")
    assert status == 200, body
    return body  # type: ignore[no-any-return]
