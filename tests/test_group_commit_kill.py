"""Group commit under a kill -9 (issue 13): a real server with eight worlds on one SQLite file,
every world kicked continuously by its own client, is killed mid-load while its journal writes
are group-committed. Afterwards every command a client saw acknowledged is in the journal
exactly once, under its world, and a restart recovers each world with every journaled kick
(replay hash-checked). The server is tests/worlds_app.py under ``flask run``
(WORLDLOOP_RUNNER=thread)."""

from __future__ import annotations

import signal
import sqlite3
import threading
from pathlib import Path

import pytest

from tests.support import Server, wait_for
from tests.test_worlds_server import create, live, start

pytestmark = pytest.mark.slow

WORLDS = ["drift", "w1", "w2", "w3", "w4", "w5", "w6", "w7"]


class Kicker(threading.Thread):
    """Kicks one world over and over, keeping the ids of the kicks acknowledged as applied."""

    def __init__(self, srv: Server, world: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.srv, self.world, self.stop = srv, world, stop
        self.acked: list[str] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                status, _, body = self.srv.post(
                    f"/test/worlds/{self.world}/kick", {"i": n % 8, "dv": 0.25}, timeout=5
                )
            except OSError:  # the server is gone: whatever was in flight was never acknowledged
                return
            if status == 200 and body["status"] == "applied":
                self.acked.append(body["command_id"])


def journal(db: Path) -> list[tuple[str, str]]:
    """Every journaled (world, command id), read from the file the killed server left."""
    con = sqlite3.connect(db)
    try:
        return [(w, c) for w, c in con.execute("SELECT world, command_id FROM worldloop_commands")]
    finally:
        con.close()


def test_every_acknowledged_command_survives_a_kill9_exactly_once(tmp_path: Path) -> None:
    extra = {"WORLDLOOP_JOURNAL_RETENTION": "1000000", "WORLDLOOP_GROUP_COMMIT": "true"}
    srv = start(tmp_path, "first", **extra)
    stop = threading.Event()
    kickers = [Kicker(srv, w, stop) for w in WORLDS]
    try:
        for i, name in enumerate(WORLDS[1:], 1):
            create(srv, name, particles=8, seed=i)
        for k in kickers:
            k.start()

        def loaded() -> bool:
            status, _, group = srv.get("/test/group")
            assert status == 200, group
            return sum(len(k.acked) for k in kickers) >= 160 and group["largest"] >= 2

        wait_for(loaded, 90, 0.1, "acknowledged kicks while worlds share transactions")
        srv.signal_group(signal.SIGKILL)  # mid-load: every client has a kick in flight
        srv.proc.wait(10)
    finally:
        stop.set()
        srv.stop()
    for k in kickers:
        k.join(10)

    rows = journal(tmp_path / "instance" / "worldloop.db")
    assert len(rows) == len(set(rows)), "a command journaled twice"
    where = {cid: world for world, cid in rows}
    assert len(where) == len(rows), "a command id journaled under two worlds"
    for k in kickers:
        assert k.acked, k.world
        missing = [cid for cid in k.acked if where.get(cid) != k.world]
        assert not missing, (k.world, missing[:5])
    journaled = {w: sum(1 for world, _ in rows if world == w) for w in WORLDS}

    again = start(tmp_path, "second", **extra)
    try:
        for world in WORLDS:
            state = live(again, world)
            assert state["kicks"] == journaled[world], (world, state, journaled[world])
        assert "replay diverged" not in again.log
    finally:
        again.stop()
