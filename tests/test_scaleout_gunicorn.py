"""The Redis mode in real servers (part 1 of issue 14): two gunicorn servers, two workers each,
on one world through the local Redis and PostgreSQL. Any worker accepts any command and
acknowledges it only once it is journaled; exactly one worker runs the world; kill -9 of that
worker hands the world to another within ttl + poll + recovery, and every acknowledged command
is in the journal exactly once, on contiguous ticks that replay to the recorded hashes."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest
import redis

from tests.durability_app import Drift
from tests.redis_support import REDIS_URL, scaleout_env
from tests.scaleout_oracles import check_journal
from tests.store_support import PG_DSN, PG_URL
from tests.support import (
    Server,
    free_port,
    gunicorn_argv,
    http,
    running_server,
    wait_for,
)
from worldloop.durability import replay
from worldloop.store.sql import SqlStore

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

TTL, POLL = 1.5, 0.2
RECOVERY_BOUND = 4.0
"""Seconds for recovery and the first publish on a loaded 2-core machine (a tiny world)."""


def owner_pid(client: redis.Redis, prefix: str) -> int | None:
    raw = client.get(f"{prefix}drift:lease")
    return None if raw is None else int(raw.decode().split(" pid ")[1].split()[0])


def epoch_now(schema: str) -> int:
    with psycopg.connect(PG_DSN) as conn:
        row = conn.execute(f'SELECT epoch FROM "{schema}".worldloop_epochs').fetchone()
    return 0 if row is None else int(row[0])


def test_two_servers_two_workers_one_runner_and_a_kill(
    tmp_path: Path, prefix: str, schema: str
) -> None:
    env = scaleout_env(prefix, schema, ttl=TTL, poll=POLL)
    argv = gunicorn_argv(
        "-w", "2", "-k", "gthread", "--threads", "4", app="tests.durability_app:create_app()"
    )
    client = redis.Redis.from_url(REDIS_URL)
    acked: list[str] = []
    stop = threading.Event()

    def load(servers: list[Server]) -> None:
        i = 0
        while not stop.is_set():
            srv = servers[i % len(servers)]
            body = {"type": "kick", "payload": {"i": i % 8, "dv": 0.01}}
            with contextlib.suppress(OSError):
                status, _, reply = http("POST", srv.base + "/test/commands", body, timeout=15)
                if status == 200 and reply["status"] == "applied":
                    acked.append(reply["command_id"])
            i += 1

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    with (
        running_server(argv, tmp_path / "a", env=env, name="a", port=free_port()) as a,
        running_server(argv, tmp_path / "b", env=env, name="b", port=free_port()) as b,
    ):
        pid = wait_for(lambda: owner_pid(client, prefix), 15, 0.05, "a runner")
        for srv in (a, b):  # every worker of both servers serves the world
            for _ in range(6):
                status, _, world = srv.get("/api/v1/world")
                assert status == 200 and world["world"] == "drift"
            status, _, ready = srv.get("/readyz")
            assert status == 200, ready
        threads = [threading.Thread(target=load, args=([a, b],)) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: len(acked) > 50, 30, 0.05, "acknowledged commands")
            before = epoch_now(schema)
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            wait_for(
                lambda: epoch_now(schema) > before, TTL + POLL + RECOVERY_BOUND, 0.02, "a takeover"
            )
            count = len(acked)
            wait_for(lambda: len(acked) > count + 50, 30, 0.05, "acknowledgements after it")
            took = time.monotonic() - killed_at
            new_pid = owner_pid(client, prefix)
            assert new_pid is not None and new_pid != pid
            print(f"kill -9 of the runner worker: commands acknowledged again after {took:.2f} s")
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert "gives the world up" not in a.log + b.log
    head = check_journal(schema, acked)
    store = SqlStore(PG_URL, schema=schema)
    try:
        rec = store.load("drift", snapshot_tick=store.snapshots("drift")[0].tick)
        result = replay(Drift(8, 7), rec)
        assert result.tick == head and result.hashes_checked >= result.ticks
    finally:
        store.close()
