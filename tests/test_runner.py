"""The runner process with real servers: one world however many web workers, restarts that
lose nothing acknowledged, reads served throughout (issue 11)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support import BIN, Server, runner_pids, running_server, wait_for

ADMIN = "runner-test-admin-token-0123456789"


def worker_pids(master: int) -> list[int]:
    """The web workers of a gunicorn master (its children; runners are not among them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == master and int(entry.name) not in runner_pids(master):
            found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def _runner_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default a user gets: the runner process (tests/support.py defaults to thread)."""
    monkeypatch.setenv("WORLDLOOP_RUNNER", "process")


def gunicorn(*extra: str) -> list[str]:
    """Plain gunicorn, as a user types it: no config file, no hooks."""
    return [str(BIN / "gunicorn"), "-b", "127.0.0.1:{port}", *extra, "worldloop.demo:create_app()"]


def join(srv: Server, name: str) -> tuple[str, str]:
    status, _, body = srv.post("/api/v1/players", {"name": name})
    assert status == 201, body
    return body["player_id"], body["token"]


def send(srv: Server, token: str, x: float, key: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    status, _, body = srv.post(
        "/api/v1/commands?wait=true",
        {"type": "move_to", "x": x, "y": 10.0},
        headers=headers,
        timeout=15,
    )
    return status, body


def test_plain_gunicorn_with_three_workers_serves_one_world(tmp_path: Path) -> None:
    # Every default as a user gets it (the runner process, the gateway on the next port).
    env = {"WORLDLOOP_ADMIN_TOKEN": ADMIN, "WORLDLOOP_RUNNER": None, "WORLDLOOP_GATEWAY": None}
    with running_server(gunicorn("-w", "3"), tmp_path, env=env) as srv:
        wait_for(lambda: len(runner_pids(srv.proc.pid)) == 1, 30, 0.1, "one runner")
        player, token = join(srv, "ann")
        pids: Counter[int] = Counter()
        ticks: list[int] = []
        for _ in range(60):  # a new connection each: the kernel spreads them over the workers
            pids[srv.get("/healthz")[2]["pid"]] += 1
            status, _, world = srv.get("/api/v1/world")
            assert status == 200 and world["player_count"] == 1, world
            ticks.append(world["tick"])
            status, body = send(srv, token, 50.0)  # the token is known to every worker
            assert status == 200 and body["status"] == "applied", body
        assert len(pids) >= 2, f"requests reached one worker only: {pids}"
        assert len(runner_pids(srv.proc.pid)) == 1
        assert ticks == sorted(ticks), "one tick sequence: readers never go back"
        status, _, admin = srv.get(
            "/api/v1/admin/status", headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert status == 200 and admin["running"], admin
        assert srv.get("/readyz")[0] == 200
        # Forwarded whole to the runner, an encoded `?` stays in the path (found by fuzzing).
        status, _, body = srv.get(
            "/api/v1/admin/jobs/%3Fx%23y", headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert status == 404 and body["error"]["code"] == "job_not_found", body
        assert srv.get(f"/api/v1/entities/{world_entity(srv, player)}")[0] == 200


def world_entity(srv: Server, player: str) -> int:
    players = srv.get("/api/v1/world/snapshot")[2]["data"]["players"]
    return int(next(p["entity_id"] for p in players if p["player_id"] == player))


def test_memory_store_with_two_workers_never_makes_two_worlds(tmp_path: Path) -> None:
    env = {"WORLDLOOP_STORE_URL": "memory://"}
    with running_server(gunicorn("-w", "2"), tmp_path, env=env) as srv:
        wait_for(lambda: len(runner_pids(srv.proc.pid)) == 1, 30, 0.1, "one runner")
        tokens = [join(srv, f"p{i}")[1] for i in range(6)]
        seen = set()
        for _ in range(20):
            world = srv.get("/api/v1/world")[2]
            seen.add(world["player_count"])
            for token in tokens:
                status, body = send(srv, token, 20.0)
                assert status == 200, body
        assert seen == {6}, f"workers disagree on the players: {seen}"
        assert len(runner_pids(srv.proc.pid)) == 1


class Load:
    """Players sending commands (acknowledged ones recorded) and a reader, in threads."""

    def __init__(self, srv: Server, tokens: list[str]) -> None:
        self.srv = srv
        self.tokens = tokens
        self.acked: list[str] = []
        self.reads: Counter[int] = Counter()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._player, args=(t, i), daemon=True)
            for i, t in enumerate(tokens)
        ] + [threading.Thread(target=self._reader, daemon=True)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _player(self, token: str, i: int) -> None:
        n = 0
        while not self.stop.is_set() and n < 5000:
            n += 1
            try:
                status, body = send(self.srv, token, float(n % 500), key=f"runner-test-{i}-{n:08d}")
            except OSError:
                continue
            if status == 200 and body.get("status") == "applied":
                self.acked.append(body["command_id"])

    def _reader(self) -> None:
        while not self.stop.is_set():
            try:
                status = self.srv.get("/api/v1/world", timeout=5)[0]
            except OSError:
                status = 0
            self.reads[status] += 1
            time.sleep(0.01)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def all_journaled(db: Path, ids: list[str]) -> None:
    """Every acknowledged command is in the journal, applied (read through the store)."""
    from worldloop.store import open_store

    store = open_store(f"sqlite:///{db}")
    store.open()
    try:
        for command_id in ids:
            found = store.find_command("meadow", command_id)
            assert found is not None and found["status"] == "applied", command_id
    finally:
        store.close()


@pytest.mark.parametrize("victim", ["runner", "worker"])
def test_kill_9_under_command_load_loses_nothing_acknowledged(tmp_path: Path, victim: str) -> None:
    argv = gunicorn("-w", "2", "-k", "gthread", "--threads", "8")
    with running_server(argv, tmp_path) as srv:
        wait_for(lambda: len(runner_pids(srv.proc.pid)) == 1, 30, 0.1, "one runner")
        first = runner_pids(srv.proc.pid)[0]
        tokens = [join(srv, f"p{i}")[1] for i in range(4)]
        with Load(srv, tokens) as load:
            wait_for(lambda: len(load.acked) >= 50, 30, 0.05, "commands acknowledged")
            if victim == "runner":
                os.kill(first, signal.SIGKILL)
                wait_for(
                    lambda: [p for p in runner_pids(srv.proc.pid) if p != first],
                    60,
                    0.1,
                    "a new runner",
                )
            else:
                worker = next(p for p in children(srv.proc.pid) if p != first)
                os.kill(worker, signal.SIGKILL)
            before = len(load.acked)
            wait_for(lambda: len(load.acked) >= before + 50, 60, 0.05, "commands after the kill")
        assert load.reads[200] > 0
        if victim == "runner":
            # Reads went on while the runner was down: no read failed with a 5xx but 503.
            assert not [s for s in load.reads if s >= 500 and s != 503], load.reads
        else:
            assert runner_pids(srv.proc.pid) == [first], "a worker's death left the runner be"
        srv.stop()
        all_journaled(tmp_path / "instance" / "worldloop.db", load.acked)
        assert len(set(load.acked)) == len(load.acked)


def test_a_stopped_runner_is_reported_and_reads_go_on(tmp_path: Path) -> None:
    """SIGSTOP the runner: its feed goes silent, /readyz says runner_down (503) while reads
    keep being served from the last snapshot; SIGCONT: ready again, the same runner."""
    with running_server(gunicorn("-w", "2"), tmp_path) as srv:
        wait_for(lambda: len(runner_pids(srv.proc.pid)) == 1, 30, 0.1, "one runner")
        runner = runner_pids(srv.proc.pid)[0]
        wait_for(lambda: srv.get("/readyz")[0] == 200, 30, 0.1, "ready")
        os.kill(runner, signal.SIGSTOP)
        try:
            status, _, body = wait_for(
                lambda: (r := srv.get("/readyz", timeout=5))[0] == 503 and r, 15, 0.1, "503"
            )
            assert [r["code"] for r in body["reasons"]] == ["runner_down"], body
            status, _, world = srv.get("/api/v1/world")
            assert status == 200 and world["tick"] > 0, world
            # Workers that start now never hear the feed: they serve the last file on disk.
            old = set(worker_pids(srv.proc.pid))
            for pid in old:
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: len(set(worker_pids(srv.proc.pid)) - old) == 2, 30, 0.1, "new workers")
            for _ in range(10):
                status, _, again = srv.get("/api/v1/world", timeout=10)
                assert status == 200 and again["tick"] >= world["tick"], again
            assert runner_pids(srv.proc.pid) == [runner], "a stopped runner is not replaced"
        finally:
            os.kill(runner, signal.SIGCONT)
        wait_for(lambda: srv.get("/readyz")[0] == 200, 15, 0.1, "ready again")
        assert runner_pids(srv.proc.pid) == [runner]
