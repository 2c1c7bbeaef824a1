"""The gateway's deferred puts (worldloop.bus.deferred, worldloop.gateway.runner_link) against a
real RunnerServer over ZeroMQ: a submission holds no thread while the runner answers, and the
gateway answers exactly what the same handler answers on a web worker, whose put is a
blocking round trip: a fresh command's 202 (under the id the gateway chose, the one the runner
queued), a full queue's refusal, a reused Idempotency-Key's first command, a key reused with a
different request's 422; a waited command's 200 once its tick ran; a silent runner's 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from flask import Flask, Response, jsonify, request

from tests.bare_world import Tally
from worldloop.api.errors import register_error_handlers
from worldloop.bus import deferred
from worldloop.bus.ipc import IpcBus, RunnerUnavailable
from worldloop.commands import IdempotencyKey
from worldloop.errors import QueueFull, status_of
from worldloop.gateway import commands as gateway_commands
from worldloop.gateway.commands import CommandWaits
from worldloop.runner import ipc
from worldloop.runner.remote import RemoteRuntime

from .runner_support import ServedTally
from .support import wait_for
from .test_gateway_commands import serve_waits

CAPACITY = 3


def handler_app(rt: RemoteRuntime) -> Flask:
    """The API's submit handler in small: a key from Idempotency-Key, the runtime's submit,
    a 202 with Location; the API's error envelope for refusals."""
    app = Flask(__name__)
    register_error_handlers(app)

    @app.post("/api/v1/commands")
    def submit() -> Response:
        body = request.get_json()
        header = request.headers.get("Idempotency-Key")
        key = None
        if header:
            fingerprint = hashlib.sha256(orjson.dumps(body)).hexdigest()
            key = IdempotencyKey(f"cmd:p1:{header}", fingerprint)
        ticket = rt.submit("add", {"by": body["by"]}, actor="p1", key=key)
        tick = ticket.tick if ticket.tick is not None else 0
        resp = jsonify({"command_id": ticket.id, "status": ticket.status.value, "tick": tick})
        resp.status_code = 202
        resp.headers["Location"] = f"/api/v1/commands/{ticket.id}"
        return resp

    @app.after_request
    def host_hook(resp: Response) -> Response:
        resp.headers["X-Host-Header"] = f"seen {resp.status_code}"  # a host app's own hook
        return resp

    return app


class Runner(ServedTally):
    """The runner's world with a small queue, and a gateway's bus and runtime of it."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, queue_size=CAPACITY)
        self.bus = self.open_bus(early_outcomes=True)
        self.remote = RemoteRuntime(Tally(), self.bus, rate_hz=20)
        self.remote.start()
        self.app = handler_app(self.remote)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    with Runner(tmp_path) as r:
        r.wait_up()
        yield r


@contextlib.asynccontextmanager
async def gateway(r: Runner) -> AsyncIterator[tuple[TestClient[Any, Any], CommandWaits]]:
    waits = CommandWaits(r.app, r.remote, wait_seconds=10.0)
    async with serve_waits(waits) as client:
        yield client, waits


Answer = tuple[int, dict[str, str], Any]


async def via_gateway(
    client: TestClient[Any, Any], by: int, key: str = "", wait: str = ""
) -> Answer:
    headers = {"Idempotency-Key": key} if key else {}
    resp = await client.post(f"/api/v1/commands{wait}", json={"by": by}, headers=headers)
    return resp.status, dict(resp.headers), await resp.json()


def via_worker(r: Runner, by: int, key: str = "") -> Answer:
    """The same handler as a web worker runs it: its put a blocking round trip."""
    headers = {"Idempotency-Key": key} if key else {}
    resp = r.app.test_client().post("/api/v1/commands", json={"by": by}, headers=headers)
    return resp.status_code, dict(resp.headers), resp.get_json()


def same_headers(gateway: dict[str, str], worker: dict[str, str]) -> None:
    skip = {"content-length", "date", "server"}
    assert {k.lower(): v for k, v in gateway.items() if k.lower() not in skip} == {
        k.lower(): v for k, v in worker.items() if k.lower() not in skip
    }


def test_the_gateway_answers_what_a_web_worker_answers(runner: Runner) -> None:
    asyncio.run(_answers_as_a_worker(runner))


async def _answers_as_a_worker(r: Runner) -> None:
    async with gateway(r) as (client, waits):
        # a fresh command: queued under the id the gateway chose, the id the runner queued
        status, headers, body = await via_gateway(client, 1, key="k1")
        assert status == 202 and body["status"] == "queued", body
        assert headers["Location"] == f"/api/v1/commands/{body['command_id']}"
        assert headers["X-Host-Header"] == "seen 202"
        queued = r.runtime.bus.ticket(body["command_id"])
        assert queued is not None and queued.command.payload == {"by": 1}

        # the same key again: the first command comes back, nothing new is queued
        again = await via_gateway(client, 1, key="k1")
        assert again[0] == 202 and again[2] == body, again
        same_headers(again[1], headers)
        assert r.runtime.queue_depth == 1
        worker = await asyncio.to_thread(via_worker, r, 1, "k1")
        assert worker[0] == 202 and worker[2] == body
        same_headers(again[1], worker[1])

        # the key with another request: the worker's 422, envelope and headers
        reused = await via_gateway(client, 2, key="k1")
        worker = await asyncio.to_thread(via_worker, r, 2, "k1")
        assert reused[0] == worker[0] == 422 and reused[2] == worker[2], (reused, worker)
        same_headers(reused[1], worker[1])

        # a full queue: the worker's refusal with Retry-After, and nothing queued
        while r.runtime.queue_depth < CAPACITY:
            assert (await via_gateway(client, 1))[0] == 202
        full = await via_gateway(client, 1)
        worker = await asyncio.to_thread(via_worker, r, 1)
        assert full[0] == worker[0] == status_of(QueueFull.code) and full[2] == worker[2], (
            full,
            worker,
        )
        assert full[1]["Retry-After"] == worker[1]["Retry-After"]
        same_headers(full[1], worker[1])
        assert r.runtime.queue_depth == CAPACITY
        assert waits.pool._work_queue.qsize() == 0


def test_a_waited_command_is_answered_once_its_tick_ran(runner: Runner) -> None:
    asyncio.run(_waited(runner))


async def _waited(r: Runner) -> None:
    async with gateway(r) as (client, waits):
        answers = [
            asyncio.ensure_future(via_gateway(client, by, wait="?wait=true")) for by in (2, 3)
        ]
        wait_until = asyncio.get_running_loop().time() + 10
        while waits.waiting < 2:  # both submitted and waiting on their futures
            assert asyncio.get_running_loop().time() < wait_until, "never waited"
            await asyncio.sleep(0.01)
        await asyncio.to_thread(r.runtime.step, 1)
        done = await asyncio.wait_for(asyncio.gather(*answers), 10)
        assert [a[0] for a in done] == [200, 200], done
        assert {a[2]["status"] for a in done} == {"applied"}
        assert r.runtime.world.n == 1 + 2 + 3  # each applied once (and the tick's count)


def test_a_silent_runner_is_a_503_and_its_socket_is_replaced(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway_commands, "REQUEST_TIMEOUT", 0.3)
    asyncio.run(_silent(runner))


async def _silent(r: Runner) -> None:
    async with gateway(r) as (client, waits):
        assert (await via_gateway(client, 1))[0] == 202
        link = waits.links.of(r.bus)
        assert link.sockets == 1
        answer = r.server._answer

        def silent(identity: bytes, body: bytes) -> bytes | None:
            return None  # received, never answered: a runner stuck in a tick

        r.server._answer = silent  # type: ignore[method-assign]
        try:
            status, headers, body = await via_gateway(client, 1)
        finally:
            r.server._answer = answer  # type: ignore[method-assign]
        assert status == 503 and body["error"]["details"]["reason"] == "runner_unavailable"
        assert headers["Retry-After"] == "1"
        await asyncio.to_thread(wait_for, lambda: link.sockets == 2, 5, 0.01, "a new socket")
        status, _, body = await via_gateway(client, 1)  # a fresh socket: served again
        assert status == 202, body

        # one request lost while the runner answers the others: only that one fails, and
        # the socket (with the others' answers on it) stays

        def loses_one(identity: bytes, body: bytes) -> bytes | None:
            lost = ipc.unpack(body).get("payload", {}).get("by") == 99
            return None if lost else answer(identity, body)

        r.server._answer = loses_one  # type: ignore[method-assign]
        try:
            lost = asyncio.ensure_future(via_gateway(client, 99))
            served = []
            while not lost.done():
                served.append((await via_gateway(client, 1, key="again"))[0])  # queued once
        finally:
            r.server._answer = answer  # type: ignore[method-assign]
        assert (await lost)[0] == 503
        assert served and set(served) == {202}, served
        assert link.sockets == 2


def test_a_burst_of_puts_is_each_answered_by_the_runner(runner: Runner) -> None:
    """Puts handed to the runner link together (one wake of its thread for the lot) all reach
    the runner: the first CAPACITY are queued, each under its own id with its own payload, the
    rest refused as the queue is full."""
    asyncio.run(_burst(runner))


async def _burst(r: Runner) -> None:
    async with gateway(r) as (client, _waits):
        sent = list(range(1, 11))
        answers = await asyncio.gather(*(via_gateway(client, by) for by in sent))
        statuses = [a[0] for a in answers]
        assert statuses.count(202) == CAPACITY, statuses
        assert statuses.count(status_of(QueueFull.code)) == len(sent) - CAPACITY, statuses
        for by, (status, _headers, body) in zip(sent, answers, strict=True):
            if status == 202:
                ticket = r.runtime.bus.ticket(body["command_id"])
                assert ticket is not None and ticket.command.payload == {"by": by}
        assert r.runtime.queue_depth == CAPACITY


def test_an_inline_put_never_waits_for_a_silent_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the gateway's event loop a put to a runner whose feed is silent is refused at once
    (the 503 a web worker gives after its short waits), never waited out there."""
    bus = IpcBus(ipc.endpoints(tmp_path, "tally"), "tally", early_outcomes=True)
    try:

        def no_wait(*_args: Any) -> bool:
            raise AssertionError("an inline put waited for the runner")

        monkeypatch.setattr(bus._heard, "wait", no_wait)
        monkeypatch.setattr(bus._cv, "wait_for", no_wait)
        with deferred.deferring(inline=True) as later, pytest.raises(RunnerUnavailable):
            bus.put("add", {"by": 1}, actor="p1")
        assert later.message is None  # nothing recorded to send
    finally:
        bus.close()
