"""Exactly-once and the owner check across real restarts (issue 10): a real server, kill -9
after the acknowledgement, a new server on the same store; the journal is the oracle."""

from __future__ import annotations

import signal
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from .support import flask_argv, running_server

ENV = {"WORLDLOOP_RATE_HZ": "40", "MEADOW_ENTITIES": "200"}


def keyed_rows(db: Path, key: str) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM worldloop_commands WHERE idem_key LIKE ?", ("%:" + key,)
        ).fetchone()
    return int(row[0])


@pytest.mark.slow
def test_a_retry_after_kill_9_and_restart_gets_the_first_outcome(tmp_path: Path) -> None:
    join_key, cmd_key = str(uuid.uuid4()), str(uuid.uuid4())
    body = {"type": "move_to", "x": 12, "y": 34}
    with running_server(flask_argv(), tmp_path, env=ENV, name="first") as srv:
        status, _, player = srv.post(
            "/api/v1/players", {"name": "ann"}, headers={"Idempotency-Key": join_key}
        )
        assert status == 201, player
        auth = {"Authorization": f"Bearer {player['token']}", "Idempotency-Key": cmd_key}
        status, _, first = srv.post("/api/v1/commands?wait=true", body, headers=auth)
        assert status == 200 and first["status"] == "applied", first
        srv.signal_group(signal.SIGKILL)  # after the acknowledgement, no goodbye
        srv.proc.wait(10)
    with running_server(flask_argv(), tmp_path, env=ENV, name="second") as srv:
        status, _, again = srv.post(
            "/api/v1/players", {"name": "ann"}, headers={"Idempotency-Key": join_key}
        )
        assert status == 201 and again == player  # same player, same token
        status, _, retry = srv.post("/api/v1/commands?wait=true", body, headers=auth)
        assert status == 200 and retry == first, (retry, first)
        status, _, queued = srv.post("/api/v1/commands", body, headers=auth)
        assert status == 202 and queued["command_id"] == first["command_id"]
        status, _, err = srv.post("/api/v1/commands", {**body, "x": 1}, headers=auth)
        assert status == 422 and err["error"]["code"] == "idempotency_key_reused"
        assert "Traceback" not in srv.log
    db = tmp_path / "instance" / "worldloop.db"
    assert keyed_rows(db, cmd_key) == 1 and keyed_rows(db, join_key) == 1


@pytest.mark.slow
def test_another_players_journaled_command_is_not_found_after_a_restart(tmp_path: Path) -> None:
    # issue 10 finding 3: after a restart the command comes from the journal, which had no
    # owner check; any player could read it
    with running_server(flask_argv(), tmp_path, env=ENV, name="first") as srv:
        players: dict[str, Any] = {}
        for name in ("ann", "bob"):
            status, _, players[name] = srv.post("/api/v1/players", {"name": name})
            assert status == 201
        bob = {"Authorization": f"Bearer {players['bob']['token']}"}
        status, _, cmd = srv.post("/api/v1/commands?wait=true", {"type": "stop"}, headers=bob)
        assert status == 200
    ann = {"Authorization": f"Bearer {players['ann']['token']}"}
    with running_server(flask_argv(), tmp_path, env=ENV, name="second") as srv:
        url = f"/api/v1/commands/{cmd['command_id']}"
        status, _, mine = srv.get(url, headers=bob)
        assert status == 200 and mine["status"] == "applied" and "actor" not in mine
        status, _, err = srv.get(url, headers=ann)
        assert status == 404 and err["error"]["code"] == "not_found"
        # the engine's own commands (a join) belong to no player
        assert srv.get(f"/api/v1/commands/{'0' * 32}", headers=ann)[0] == 404
