"""The gateway's command waits (worldloop.gateway.commands) in one process: a small Flask app
stands in for the API's handler and a fake IPC bus for the runner's feed, so the properties
that bound an acknowledgement's latency are checked directly: the handler sees the request a
web worker would, a resolved command is answered even while every submission thread is busy,
and one feed message resolving many commands wakes the event loop once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from flask import Flask, jsonify, request

from worldloop.commands import Command, CommandTicket, Outcome
from worldloop.gateway.commands import POOL, CommandWaits


class FakeIpc:
    """What CommandWaits uses of a worker's IpcBus: its tickets and the resolution hook."""

    def __init__(self) -> None:
        self.tickets: dict[str, CommandTicket] = {}
        self.on_resolved: Callable[[CommandTicket], None] | None = None

    def ticket(self, command_id: str) -> CommandTicket | None:
        return self.tickets.get(command_id)

    def resolve(self, *ids: str) -> None:
        """As the feed thread does: resolve each ticket, then announce it."""
        for command_id in ids:
            ticket = self.tickets[command_id]
            ticket.resolve(Outcome(ticket.command, True, {"moved": command_id}), 7)
            assert self.on_resolved is not None
            self.on_resolved(ticket)


class FakeRuntime:
    def __init__(self) -> None:
        self.ipc = FakeIpc()


def _app(ipc: FakeIpc, seen: list[dict[str, Any]]) -> Flask:
    """A stand-in for the API's submit handler: records what it saw, queues a ticket."""
    app = Flask(__name__)

    @app.post("/api/v1/commands")
    def submit() -> Any:
        seen.append(
            {
                "args": request.args.to_dict(flat=False),
                "json": request.get_json(),
                "auth": request.headers.get("Authorization"),
                "key": request.headers.get("Idempotency-Key"),
                "forwarded": request.headers.get("X-Forwarded-For"),
                "remote": request.remote_addr,
                "host": request.host,
            }
        )
        command_id = f"c{len(seen)}"
        ipc.tickets[command_id] = CommandTicket(Command(command_id, len(seen), "move_to", {}, "p1"))
        resp = jsonify({"command_id": command_id, "status": "queued", "tick": 6})
        resp.status_code = 202
        return resp

    return app


Served = tuple[TestClient[Any, Any], CommandWaits, list[dict[str, Any]]]


@contextlib.asynccontextmanager
async def gateway() -> AsyncIterator[Served]:
    """CommandWaits served by aiohttp on 127.0.0.1, with the fake app and bus."""
    runtime = FakeRuntime()
    seen: list[dict[str, Any]] = []
    waits = CommandWaits(_app(runtime.ipc, seen), runtime, wait_seconds=10.0)  # type: ignore[arg-type]
    async with serve_waits(waits) as client:
        yield client, waits, seen


@contextlib.asynccontextmanager
async def serve_waits(waits: CommandWaits) -> AsyncIterator[TestClient[Any, Any]]:
    """``waits`` serving POST /api/v1/commands by aiohttp on 127.0.0.1 (closed after)."""
    waits.bind(asyncio.get_running_loop())
    app = web.Application()
    app.router.add_post("/api/v1/commands", waits.submit)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        waits.close()


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def test_the_handler_sees_the_request_a_web_worker_would() -> None:
    asyncio.run(_sees_the_request())


async def _sees_the_request() -> None:
    async with gateway() as (client, _waits, seen):
        await _post_and_check(client, seen)


async def _post_and_check(client: TestClient[Any, Any], seen: list[dict[str, Any]]) -> None:
    resp = await client.post(
        "/api/v1/commands?wait=false&tag=a&tag=b",
        json={"type": "move_to", "x": 1.5},
        headers={
            "Authorization": "Bearer tok",
            "Idempotency-Key": "k-1",
            "X-Forwarded-For": "203.0.113.7",
        },
    )
    assert resp.status == 202
    assert (await resp.json())["command_id"] == "c1"
    assert resp.headers["Content-Type"] == "application/json"
    (got,) = seen
    assert got["args"] == {"tag": ["a", "b"]}  # `wait` is the gateway's, not the handler's
    assert got["json"] == {"type": "move_to", "x": 1.5}
    assert got["auth"] == "Bearer tok"
    assert got["key"] == "k-1"
    assert got["forwarded"] == "203.0.113.7"
    assert got["remote"] == "127.0.0.1"
    assert got["host"] == f"127.0.0.1:{client.port}"


def test_a_resolved_wait_is_answered_while_every_submission_thread_is_busy() -> None:
    """The answer of a resolved command does not queue behind submissions on the pool."""
    asyncio.run(_answered_while_busy())


async def _answered_while_busy() -> None:
    async with gateway() as served:
        await _answer_while_busy(*served)


async def _answer_while_busy(
    client: TestClient[Any, Any], waits: CommandWaits, seen: list[dict[str, Any]]
) -> None:
    answer = asyncio.ensure_future(
        client.post("/api/v1/commands?wait=true", json={"type": "move_to"})
    )
    await _until(lambda: waits.waiting == 1)
    release = threading.Event()
    busy = [waits.pool.submit(release.wait, 30) for _ in range(POOL)]
    try:
        ipc(waits).resolve("c1")
        async with asyncio.timeout(5):
            resp = await answer
        assert resp.status == 200
        body = await resp.json()
        assert body["status"] == "applied" and body["result"] == {"moved": "c1"}
        assert not any(b.done() for b in busy)  # the pool was busy all along
        phases = waits.phases.summary()  # where its time went, as /healthz shows it
        assert {name: p["n"] for name, p in phases.items()} == {
            "submit": 1,
            "tick": 1,
            "answer": 1,
        }
        assert phases["tick"]["p50"] > 0
    finally:
        release.set()


def test_one_feed_message_wakes_the_loop_once_for_all_its_commands() -> None:
    asyncio.run(_wakes_once())


async def _wakes_once() -> None:
    async with gateway() as served:
        await _wake_once(*served)


async def _wake_once(
    client: TestClient[Any, Any], waits: CommandWaits, seen: list[dict[str, Any]]
) -> None:
    n = 50
    answers = [
        asyncio.ensure_future(client.post("/api/v1/commands?wait=true", json={"type": "move_to"}))
        for _ in range(n)
    ]
    await _until(lambda: waits.waiting == n)
    loop = asyncio.get_running_loop()
    calls: list[Any] = []
    original = loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(callback)
        return original(callback, *args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
    try:
        # The feed thread resolves a whole tick's commands in one go.
        feed = threading.Thread(target=ipc(waits).resolve, args=list(waits._waiters))
        feed.start()
        feed.join(10)
        statuses = [r.status for r in await asyncio.wait_for(asyncio.gather(*answers), 10)]
    finally:
        del loop.call_soon_threadsafe
    assert statuses == [200] * n
    assert len(calls) == 1, calls


def ipc(waits: CommandWaits) -> FakeIpc:
    bus = waits.runtime.ipc
    assert isinstance(bus, FakeIpc)
    return bus
