"""Crash recovery with real processes: kill -9 a loaded server again and again, lose nothing.

A test server (tests/durability_app.py) runs the Drift world on a real store. Client threads
submit commands and record each acknowledgement (the command was applied, and only reported so
after its journal write committed). The server is killed with SIGKILL at random moments,
restarted on the same store, and loaded again. At the end every acknowledged command must be
in the journal at the tick it was acknowledged with, the restarted world must be at or past
the last acknowledged tick, and its state hash must equal an independent replay of the whole
journal from the first snapshot in this test process.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from http.client import HTTPException
from pathlib import Path
from typing import Any

import pytest

from tests.durability_app import Drift
from tests.store_support import PG_URL, drop_pg_schema, require_postgres
from tests.support import ROOT, SRC, Background, Server, child_env, free_port, http, wait_for
from worldloop.durability import replay
from worldloop.store import SqlStore

pytestmark = pytest.mark.slow


def server_argv() -> list[str]:
    return [
        sys.executable,
        "-m",
        "flask",
        "--app",
        "tests.durability_app:create_app",
        "run",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--no-reload",
    ]


def server_env(tmp_path: Path, url: str, schema: str | None, **extra: str) -> dict[str, str]:
    env = {
        "PYTHONPATH": os.pathsep.join([str(SRC), str(ROOT)]),
        "WORLDLOOP_INSTANCE_PATH": str(tmp_path / "instance"),
        "WORLDLOOP_STORE_URL": url,
        "WORLDLOOP_RATE_HZ": "50",
        "WORLDLOOP_SNAPSHOT_EVERY": "15",
        "WORLDLOOP_HASH_EVERY": "7",
        "WORLDLOOP_JOURNAL_RETENTION": "1000000",
        "WORLDLOOP_HANDLE_SIGNALS": "true",
    }
    if schema:
        env["WORLDLOOP_STORE_SCHEMA"] = schema
    env.update(extra)
    return env


def start_server(tmp_path: Path, env: dict[str, str], name: str) -> Server:
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in server_argv()]
    srv = Server(
        argv, port=port, env=child_env(**env), cwd=tmp_path, log_path=tmp_path / f"{name}.log"
    )
    try:
        srv.wait_ready(60)
    except BaseException:
        srv.stop()
        raise
    return srv


class Load(Background):
    """Client threads submitting kicks and recording what the server acknowledged."""

    def __init__(self, srv: Server, seed: int, threads: int = 3) -> None:
        super().__init__(seed, threads)
        self.srv = srv
        self.acked: dict[str, tuple[int, dict[str, Any], str]] = {}
        self.errors = 0
        self._lock = threading.Lock()

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        sent = 0
        while not self._stop.is_set() and sent < 5000:
            sent += 1
            payload = {"i": rng.randrange(70), "dv": round(rng.uniform(-1, 1), 3)}  # some reject
            try:
                status, _, body = http(
                    "POST",
                    self.srv.base + "/test/commands",
                    {"type": "kick", "payload": payload},
                    timeout=5,
                )
            except (OSError, HTTPException):  # the server died mid-request
                with self._lock:
                    self.errors += 1
                if self.srv.proc.poll() is not None:
                    return
                continue
            if (
                status == 200
                and isinstance(body, dict)
                and body.get("status") in ("applied", "rejected")
            ):
                with self._lock:
                    self.acked[body["command_id"]] = (body["tick"], payload, body["status"])


def kill_cycles(tmp_path: Path, url: str, schema: str | None, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    env = server_env(tmp_path, url, schema)
    acked: dict[str, tuple[int, dict[str, Any], str]] = {}
    for n in range(rounds):
        srv = start_server(tmp_path, env, f"server-{n}")
        try:
            target = rng.randint(3, 60)
            with Load(srv, seed=seed + n) as load:
                wait_for(lambda t=target: load.count() >= t, 30, what=f"{target} acknowledgements")
                # a random moment while the load runs (commands in flight, snapshots writing)
                extra = rng.randint(0, 40)
                wait_for(lambda t=target + extra: load.count() >= t, 30, what="more load")
                srv.signal_group(signal.SIGKILL)
                srv.proc.wait(10)
            assert srv.proc.returncode == -signal.SIGKILL
            acked.update(load.acked)
        finally:
            srv.stop()
        if n > 0:
            assert "recovered at tick" in srv.log, srv.log

    final = start_server(tmp_path, {**env, "WORLDLOOP_START_PAUSED": "true"}, "server-final")
    try:
        status, _, state = final.get("/test/state")
        assert status == 200, state
        status, _, summary = final.get("/api/v1/world")
        assert status == 200 and summary["tick"] == state["tick"]
    finally:
        final.stop()

    # Independent replay of the whole journal, from the very first snapshot, in this process.
    store = SqlStore(url, schema=schema, readonly=True)
    try:
        snaps = store.snapshots("drift")
        assert snaps[0].tick == 0 and len(snaps) > 2
        rec = store.load("drift", snapshot_tick=0)
        world = Drift()
        result = replay(world, rec)
        journal = {
            rec_["id"]: (tick, rec_) for tick, records in rec.commands.items() for rec_ in records
        }
        checked = {s.tick: s.state_hash for s in snaps}
    finally:
        store.close()

    assert acked, "the load produced no acknowledged commands"
    max_acked_tick = max(t for t, _, _ in acked.values())
    assert state["tick"] >= max_acked_tick
    assert result.tick == state["tick"]
    assert result.state_hash == state["hash"]
    for cid, (tick, payload, status) in acked.items():
        assert cid in journal, f"acknowledged command {cid} (tick {tick}) was lost"
        jtick, record = journal[cid]
        assert jtick == tick and record["payload"] == payload
        assert record["ok"] == (status == "applied")
    # snapshots written by the killed servers agree with the replay at their ticks
    world = Drift()
    store = SqlStore(url, schema=schema, readonly=True)
    try:
        for tick in sorted(checked)[1 :: max(1, len(checked) // 5)]:
            w = Drift()
            replay(w, store.load("drift", upto=tick, snapshot_tick=0))
            assert w.state_hash() == checked[tick]
    finally:
        store.close()


def test_kill9_under_load_loses_nothing_sqlite(tmp_path: Path) -> None:
    kill_cycles(tmp_path, f"sqlite:///{tmp_path / 'instance' / 'worldloop.db'}", None, 8, 11)


@pytest.mark.postgres
def test_kill9_under_load_loses_nothing_postgres(tmp_path: Path) -> None:
    require_postgres()
    schema = f"wl_test_{uuid.uuid4().hex[:12]}"
    try:
        kill_cycles(tmp_path, PG_URL, schema, 5, 23)
    finally:
        drop_pg_schema(schema)


def test_sigterm_writes_a_final_snapshot(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'instance' / 'worldloop.db'}"
    env = server_env(
        tmp_path, url, None, WORLDLOOP_SNAPSHOT_EVERY="100000", WORLDLOOP_RECOVERY_SECONDS="0"
    )
    srv = start_server(tmp_path, env, "server")
    try:
        with Load(srv, seed=5) as load:
            wait_for(lambda: load.count() >= 20, 30, what="20 acknowledgements")
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(15) is not None
    finally:
        srv.stop()
    store = SqlStore(url, readonly=True)
    try:
        head = store.head("drift")
        snaps = store.snapshots("drift")
    finally:
        store.close()
    assert head is not None and head > 0
    assert [s.tick for s in snaps] == [0, head], srv.log
    assert "final snapshot at tick" in srv.log


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worldloop", *args, "--json"],
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_restore_verify_snapshot_beside_a_running_server(tmp_path: Path) -> None:
    import json

    url = f"sqlite:///{tmp_path / 'instance' / 'worldloop.db'}"
    env = server_env(tmp_path, url, None, WORLDLOOP_SNAPSHOT_EVERY="40")
    srv = start_server(tmp_path, env, "server")
    try:
        with Load(srv, seed=9) as load:
            wait_for(lambda: load.count() >= 30, 30, what="30 acknowledgements")
        wait_for(lambda: srv.get("/api/v1/world")[2]["tick"] > 90, 30, what="tick 90")
        by_world = ("--world", "tests.durability_app:create_world", "--store", url)
        cp = run_cli("verify", *by_world, env=env)  # beside the live server: no lease fight
        assert cp.returncode == 0, cp.stderr
        verified = json.loads(cp.stdout)
        assert verified["ok"] and verified["hashes_checked"] >= 3
        assert srv.proc.poll() is None

        out = tmp_path / "state.npz"
        view = tmp_path / "view.json"
        cp = run_cli(
            "restore", *by_world, "--tick", "50", "--out", str(out), "--view", str(view), env=env
        )
        assert cp.returncode == 0, cp.stderr
        restored = json.loads(cp.stdout)
        assert restored["tick"] == 50 and out.stat().st_size > 0
        assert json.loads(view.read_text())["tick"] == 50
        store = SqlStore(url, readonly=True)
        try:
            w = Drift()
            replay(w, store.load("drift", upto=50, snapshot_tick=0))
        finally:
            store.close()
        assert restored["state_hash"] == w.state_hash()

        cp = run_cli("snapshot", "--app", "tests.durability_app:create_app", env=env)
        assert cp.returncode == 0, cp.stderr
        snap_tick = json.loads(cp.stdout)["snapshot_tick"]
        cp = run_cli("info", *by_world, env=env)
        assert snap_tick in [s["tick"] for s in json.loads(cp.stdout)["snapshots"]]

        cp = run_cli("restore", *by_world, "--tick", "999999999", env=env)
        assert cp.returncode == 2 and "after the last journaled tick" in cp.stderr
        assert srv.proc.poll() is None
    finally:
        srv.stop()


def test_second_server_on_the_same_store_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'instance' / 'worldloop.db'}"
    env = server_env(tmp_path, url, None)
    srv = start_server(tmp_path, env, "first")
    try:
        port = free_port()
        argv = [a.replace("{port}", str(port)) for a in server_argv()]
        second = Server(
            argv, port=port, env=child_env(**env), cwd=tmp_path, log_path=tmp_path / "second.log"
        )
        try:
            wait_for(lambda: second.proc.poll() is not None or "already running" in second.log, 30)
            assert "already running in another process" in second.log
            assert (tmp_path / "instance" / "worldloop.db.lock").exists()
        finally:
            second.stop()
    finally:
        srv.stop()
