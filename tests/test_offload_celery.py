"""Offloading on real Celery workers: a real broker (RabbitMQ, and Redis once), a real
``celery worker`` process per test on its own queue, and the exactly-once guarantee under
kill -9 of the worker and of the server.

Each test checks the world's own record (results applied once, by task id), what really ran
(pids in a marker file), and that replaying the journal reproduces the state hash. Under
CI=true a missing broker fails the tests; elsewhere they skip.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask

from tests.offload_app import Asker, create_app
from tests.support import BIN, ROOT, SRC, Server, child_env, free_port, service_required, wait_for
from worldloop.durability import replay
from worldloop.store import open_store

pytestmark = pytest.mark.slow

AMQP = "amqp://guest:guest@127.0.0.1:5672//"
REDIS = "redis://127.0.0.1:6379/0"
RATE_HZ = 20.0


def require_broker(url: str) -> None:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), 2).close()
    except OSError:
        if service_required("celery broker"):
            pytest.fail(f"a broker is required under CI=true but {url} is unreachable")
        pytest.skip(f"broker not reachable at {url}")


def broker_env(broker: str, backend: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:12]
    return {
        "OFFLOAD_BROKER": broker,
        "OFFLOAD_BACKEND": backend,
        "OFFLOAD_QUEUE": f"offload-{tag}",
        "OFFLOAD_PREFIX": f"wl-test-{tag}:" if broker.startswith("redis") else "",
        "PYTHONPATH": f"{SRC}:{ROOT}",
    }


def start_worker(
    tmp_path: Path, env: dict[str, str], name: str, app_module: str = "tests.offload_worker"
) -> Server:
    """A real ``celery worker`` (solo pool, one task at a time) on the test's own queue."""
    argv = [
        str(BIN / "celery"),
        "-A",
        app_module,
        "worker",
        "--pool=solo",
        "-c",
        "1",
        "-Q",
        env["OFFLOAD_QUEUE"],
        "-n",
        f"{name}-{uuid.uuid4().hex[:6]}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=INFO",
    ]
    defaults = {"WORLDLOOP_INSTANCE_PATH": str(tmp_path / "worker"), "PYTHONPATH": f"{SRC}:{ROOT}"}
    worker_env = child_env(**{**defaults, **env})
    worker = Server(argv, port=0, env=worker_env, cwd=tmp_path, log_path=tmp_path / f"{name}.log")

    def ready() -> bool:
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker exited:\n{worker.log}")
        return " ready." in worker.log

    try:
        wait_for(ready, 60, 0.1, "the celery worker to be ready")
    except BaseException:
        worker.stop()
        raise
    return worker


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for w in started:
        w.stop()


def in_process_app(tmp_path: Path, env: dict[str, str], **config: Any) -> Flask:
    conf = {
        "CELERY": {
            "broker_url": env["OFFLOAD_BROKER"],
            "result_backend": env["OFFLOAD_BACKEND"],
            "task_default_queue": env["OFFLOAD_QUEUE"],
            **(
                {
                    "result_backend_transport_options": {"global_keyprefix": env["OFFLOAD_PREFIX"]},
                    "broker_transport_options": {"global_keyprefix": env["OFFLOAD_PREFIX"]},
                }
                if env["OFFLOAD_PREFIX"]
                else {}
            ),
        },
        "WORLDLOOP_STORE_URL": f"sqlite:///{tmp_path / 'world.db'}",
        "WORLDLOOP_HANDLE_SIGNALS": False,
        "WORLDLOOP_RATE_HZ": RATE_HZ,
        "WORLDLOOP_HASH_EVERY": 5,
        "WORLDLOOP_AUTOSTART": "never",
        **config,
    }
    app = create_app(conf)
    app.extensions["worldloop"].start()
    return app


def summary(app: Flask) -> dict[str, Any]:
    snap = app.extensions["worldloop"].runtime.latest
    return dict(snap.summary) if snap is not None else {}


def ask(app: Flask, body: dict[str, Any]) -> str:
    rt = app.extensions["worldloop"].runtime
    ticket = rt.submit("ask", body)
    assert ticket.wait(5) and ticket.outcome is not None and ticket.outcome.ok
    task_id: str = ticket.outcome.result["task_id"]
    return task_id


def stop_and_replay(app: Flask, tmp_path: Path) -> Asker:
    """Stop the world; replay its whole journal into a fresh world; the hashes must agree."""
    state = app.extensions["worldloop"]
    assert state.stop()
    world = state.runtime.world
    store = open_store(f"sqlite:///{tmp_path / 'world.db'}", readonly=True)
    try:
        copy = Asker()
        result = replay(copy, store.load("asker", snapshot_tick=0))
    finally:
        store.close()
    assert (result.tick, result.state_hash) == (world.tick, world.state_hash())
    return copy


class OnTime:
    """The world's ticks over a stretch of wall time go on while tasks are offloaded (measured
    from the tenth tick, once the process has settled after the start). A loop that waited on
    the broker or a worker would skip ticks by the second; the margins are for scheduling on a
    loaded machine (the suite's other tests run beside this one), not for such a wait."""

    def __init__(self, app: Flask) -> None:
        self.rt = app.extensions["worldloop"].runtime
        wait_for(lambda: self.rt.tick >= 10, 10, what="the world to settle")
        self.t0, self.stats0 = time.monotonic(), self.rt.stats()

    def check(self) -> None:
        stats = self.rt.stats()
        elapsed = time.monotonic() - self.t0
        due = elapsed * RATE_HZ
        assert stats.skipped - self.stats0.skipped <= max(2, int(0.05 * due)), stats
        assert stats.ticks - self.stats0.ticks >= int(0.85 * due) - 2, stats


@pytest.mark.parametrize(
    ("broker", "backend"), [(AMQP, "rpc://"), (REDIS, REDIS)], ids=["rabbitmq", "redis"]
)
def test_a_result_is_applied_once_inside_the_app_context(
    tmp_path: Path, workers: list[Server], broker: str, backend: str
) -> None:
    require_broker(broker)
    env = broker_env(broker, backend)
    workers.append(start_worker(tmp_path, env, "worker"))
    app = in_process_app(tmp_path, env)
    on_time = OnTime(app)
    try:
        task_id = ask(app, {"task": "t.work", "value": 21, "sleep": 0.2})
        assert task_id == f"asker.{app.extensions['worldloop'].runtime.world.outbox.nonce}.1"
        wait_for(lambda: summary(app)["applied"] == 1, 30, what="the result applied")
        assert summary(app)["results"][task_id] == {
            "status": "succeeded",
            "result": {"value": 42, "app": "offload_app"},  # ran in the Flask app context
            "error": None,
        }
        assert f"Task t.work[{task_id}] succeeded" in workers[0].log  # the world's id on Celery
        on_time.check()
    finally:
        copy = stop_and_replay(app, tmp_path)
    assert copy.applied == 1


def test_worker_killed_mid_task_the_task_is_redelivered_and_applied_once(
    tmp_path: Path, workers: list[Server]
) -> None:
    require_broker(AMQP)
    env = broker_env(AMQP, "rpc://")
    workers.append(start_worker(tmp_path, env, "worker-1"))
    app = in_process_app(tmp_path, env)
    marker = tmp_path / "runs"
    on_time = OnTime(app)
    try:
        task_id = ask(app, {"task": "t.work", "value": 4, "sleep": 60, "marker": str(marker)})
        wait_for(marker.exists, 30, what="the task to start")
        workers[0].signal_group(signal.SIGKILL)
        workers[0].proc.wait(10)
        assert summary(app)["pending"] == [task_id]
        workers.append(start_worker(tmp_path, env, "worker-2"))  # acks_late: redelivered
        wait_for(lambda: summary(app)["applied"] == 1, 30, what="the redelivered result")
        runs = marker.read_text().split()
        assert len(runs) == 2 and runs[0] != runs[1], runs  # ran twice, in two workers
        assert summary(app)["results"][task_id]["result"]["value"] == 8
        on_time.check()
    finally:
        copy = stop_and_replay(app, tmp_path)
    assert copy.applied == 1 and copy.results[task_id]["status"] == "succeeded"


def test_a_failing_and_a_timed_out_task_are_reported(tmp_path: Path, workers: list[Server]) -> None:
    require_broker(AMQP)
    env = broker_env(AMQP, "rpc://")
    workers.append(start_worker(tmp_path, env, "worker"))
    app = in_process_app(tmp_path, env, WORLDLOOP_TASK_TIMEOUT=1.5)
    on_time = OnTime(app)
    try:
        failing = ask(app, {"task": "t.fail", "value": 3})
        wait_for(lambda: failing in summary(app)["results"], 30, what="the failure")
        assert summary(app)["results"][failing] == {
            "status": "failed",
            "result": None,
            "error": "ValueError: no good: 3",
        }
        slow = ask(app, {"task": "t.work", "value": 1, "sleep": 4})
        wait_for(lambda: slow in summary(app)["results"], 30, what="the time-out")
        assert summary(app)["results"][slow]["status"] == "timed_out"
        wait_for(lambda: f"Task t.work[{slow}] succeeded" in workers[0].log, 30)
        offload = app.extensions["worldloop"].offload
        counts = offload.stats()["counts"]
        assert (counts["sent"], counts["failed"], counts["timed_out"]) == (2, 1, 1)
        assert summary(app)["applied"] == 2  # the late success changed nothing
        on_time.check()
    finally:
        stop_and_replay(app, tmp_path)


def server_argv() -> list[str]:
    app = "tests.offload_app:create_app"
    return [sys.executable, "-m", "flask", "--app", app, "run", "--port", "{port}", "--no-reload"]


def start_server(tmp_path: Path, env: dict[str, str], name: str) -> Server:
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in server_argv()]
    argv[argv.index("--port") : argv.index("--port")] = ["--host", "127.0.0.1"]
    srv = Server(argv, port=port, env=child_env(**env), cwd=tmp_path, log_path=tmp_path / name)
    try:
        srv.wait_ready(60)
    except BaseException:
        srv.stop()
        raise
    return srv


def test_server_killed_after_the_request_is_durable_sends_it_after_recovery(
    tmp_path: Path, workers: list[Server]
) -> None:
    require_broker(AMQP)
    env = broker_env(AMQP, "rpc://")
    server_env = {
        "PYTHONPATH": env["PYTHONPATH"],
        "WORLDLOOP_INSTANCE_PATH": str(tmp_path / "instance"),
        "WORLDLOOP_STORE_URL": f"sqlite:///{tmp_path / 'world.db'}",
        "WORLDLOOP_RATE_HZ": str(RATE_HZ),
        "WORLDLOOP_HASH_EVERY": "5",
    }
    marker = tmp_path / "runs"
    # No broker configured: the request becomes durable and is never sent; then kill -9.
    srv = start_server(tmp_path, server_env, "server-1.log")
    try:
        status, _, body = srv.post(
            "/test/ask", {"task": "t.work", "value": 9, "marker": str(marker)}
        )
        assert status == 200, body
        task_id = body["task_id"]
        srv.signal_group(signal.SIGKILL)
        srv.proc.wait(10)
    finally:
        srv.stop()
    assert not marker.exists()

    workers.append(start_worker(tmp_path, env, "worker"))
    srv = start_server(tmp_path, {**server_env, **env}, "server-2.log")
    try:
        wait_for(lambda: srv.get("/test/state")[2]["applied"] == 1, 30, what="the resent task")
        assert "recovered at tick" in srv.log
    finally:
        srv.stop()
    assert len(marker.read_text().split()) == 1  # sent once after recovery, run once

    final = start_server(tmp_path, {**server_env, "WORLDLOOP_START_PAUSED": "true"}, "final.log")
    try:
        state = final.get("/test/state")[2]
    finally:
        final.stop()
    store = open_store(server_env["WORLDLOOP_STORE_URL"], readonly=True)
    try:
        copy = Asker()
        result = replay(copy, store.load("asker", snapshot_tick=0))
    finally:
        store.close()
    assert (result.tick, result.state_hash) == (state["tick"], state["hash"])
    assert copy.applied == 1 and copy.results[task_id]["result"]["value"] == 18


def test_an_idle_worker_stops_on_sigterm_at_once(tmp_path: Path) -> None:
    """prompt_shutdown (tests/offload_worker.py): an idle AMQP worker reads its warm-shutdown
    flag between polls of up to 10 s; woken every WAKE_EVERY s it stops well before that."""
    require_broker(AMQP)
    worker = start_worker(tmp_path, broker_env(AMQP, "rpc://"), "worker")
    try:
        worker.signal_group(signal.SIGTERM)
        assert worker.proc.wait(5) == 0, worker.log  # 10 s and more without the wake-ups
        assert "Warm shutdown" in worker.log
    finally:
        worker.stop()


def test_prompt_shutdown_adds_its_worker_step_once() -> None:
    from celery import Celery

    from worldloop.offload.celery import prompt_shutdown

    app = Celery("prompt")
    assert prompt_shutdown(prompt_shutdown(app)) is app
    assert [s.__name__ for s in app.steps["worker"]] == ["_WakeLoop"]
