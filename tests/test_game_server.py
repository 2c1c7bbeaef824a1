"""The demo game served by a real process: players join and act over real HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from .support import flask_argv, http, running_server, wait_for


@pytest.mark.slow
def test_real_server_join_move_snapshot(tmp_path: Path) -> None:
    env = {
        "WORLDLOOP_ADMIN_TOKEN": "proc-admin-token-0123",
        "MEADOW_ENTITIES": "500",
        "WORLDLOOP_RATE_HZ": "40",
    }
    with running_server(flask_argv(), tmp_path, env=env) as srv:
        status, _, player = srv.post("/api/v1/players", {"name": "ann"})
        assert status == 201, player
        auth = {"Authorization": f"Bearer {player['token']}"}
        status, _, body = srv.post(
            "/api/v1/commands?wait=true", {"type": "move_to", "x": 5, "y": 6}, headers=auth
        )
        assert status == 200 and body["status"] == "applied", body
        status, _, other = srv.post("/api/v1/players", {"name": "bob"})
        status, _, err = srv.post(
            "/api/v1/commands",
            {"type": "stop", "entity_id": other["entity_id"]},
            headers=auth,
        )
        assert status == 403 and err["error"]["code"] == "forbidden"

        def at_target() -> bool:
            e = srv.get(f"/api/v1/entities/{player['entity_id']}")[2]
            return bool(e["x"] == 5.0 and e["y"] == 6.0)

        wait_for(at_target, timeout=30, what="the avatar to arrive")
        status, headers, snap = srv.get("/api/v1/world/snapshot")
        assert status == 200 and headers["ETag"] == f'"meadow-{snap["tick"]}"'
        admin = {"Authorization": "Bearer proc-admin-token-0123"}
        assert srv.post("/api/v1/admin/pause", {}, headers=admin)[0] == 200
        tick = srv.get("/api/v1/world")[2]["tick"]
        status, headers, _ = srv.get(
            "/api/v1/world/snapshot", headers={"If-None-Match": f'"meadow-{tick}"'}
        )
        assert status == 304
        status, _, err = http("POST", srv.base + "/api/v1/players", "x" * 100_000)
        assert status == 413 and err["error"]["code"] == "request_entity_too_large"
        assert "Traceback" not in srv.log
