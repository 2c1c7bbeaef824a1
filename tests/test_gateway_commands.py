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
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from flask import Flask, jsonify, request

from worldloop.bus import deferred
from worldloop.bus.ipc import RunnerUnavailable
from worldloop.commands import Command, CommandTicket, Outcome
from worldloop.gateway.commands import POOL, CommandWaits, Taken


class FakeIpc:
    """What CommandWaits uses of a worker's IpcBus: its tickets, the resolution hook, and
    whether the runner's feed is fresh and brought a snapshot."""

    def __init__(self) -> None:
        self.tickets: dict[str, CommandTicket] = {}
        self.on_resolved: Callable[[CommandTicket], None] | None = None
        self.runner_up = True
        self.latest: object | None = object()  # a snapshot heard

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
        later = deferred.current()
        if request.args.get("block") and later is not None and later.inline:
            raise deferred.WouldBlock  # as the API's auth does for a token it must wait for
        seen.append(
            {
                "thread": threading.current_thread().name,
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
async def gateway(wait_seconds: float = 10.0) -> AsyncIterator[Served]:
    """CommandWaits served by aiohttp on 127.0.0.1, with the fake app and bus."""
    runtime = FakeRuntime()
    seen: list[dict[str, Any]] = []
    waits = CommandWaits(_app(runtime.ipc, seen), runtime, wait_seconds=wait_seconds)  # type: ignore[arg-type]
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
    with threadsafe_calls() as calls:
        # The feed thread resolves a whole tick's commands in one go.
        feed = threading.Thread(target=ipc(waits).resolve, args=list(waits._waiters))
        feed.start()
        feed.join(10)
        statuses = [r.status for r in await asyncio.wait_for(asyncio.gather(*answers), 10)]
    assert statuses == [200] * n
    assert len(calls) == 1, calls


@contextlib.contextmanager
def threadsafe_calls() -> Iterator[list[Any]]:
    """The callbacks other threads hand the running loop (``call_soon_threadsafe``) meanwhile:
    each is one wake-up of the loop."""
    loop = asyncio.get_running_loop()
    calls: list[Any] = []
    original = loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(callback)
        return original(callback, *args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
    try:
        yield calls
    finally:
        del loop.call_soon_threadsafe


def ipc(waits: CommandWaits) -> FakeIpc:
    bus = waits.runtime.ipc
    assert isinstance(bus, FakeIpc)
    return bus


def test_a_submission_runs_on_the_event_loop_while_the_runner_is_up() -> None:
    """No hand-off to a thread per command while the runner's feed is fresh; the pool serves
    while it is not (a put then waits for the runner to come back), or before its first
    snapshot (the handler would wait for it)."""
    asyncio.run(_runs_inline())


async def _runs_inline() -> None:
    async with gateway() as (client, waits, seen):
        loop_thread = threading.current_thread().name
        resp = await client.post("/api/v1/commands", json={"type": "move_to"})
        assert resp.status == 202
        assert seen[-1]["thread"] == loop_thread
        ipc(waits).runner_up = False
        resp = await client.post("/api/v1/commands", json={"type": "move_to"})
        assert resp.status == 202
        assert seen[-1]["thread"].startswith("worldloop-gateway-api")
        ipc(waits).runner_up, ipc(waits).latest = True, None  # no snapshot yet: it would wait
        resp = await client.post("/api/v1/commands", json={"type": "move_to"})
        assert resp.status == 202
        assert seen[-1]["thread"].startswith("worldloop-gateway-api")
        assert waits.inline_moved == 0


def test_a_handler_that_would_wait_is_run_again_on_the_pool() -> None:
    """A handler that raises WouldBlock on the loop (it would wait there) is run again from
    the start on a pool thread, with the same request, and answered as usual."""
    asyncio.run(_moves_to_the_pool())


async def _moves_to_the_pool() -> None:
    async with gateway(wait_seconds=0.2) as (client, waits, seen):  # nobody resolves it: 202
        resp = await client.post(
            "/api/v1/commands?block=1&wait=true",
            json={"type": "move_to", "x": 2.5},
            headers={"Authorization": "Bearer tok"},
        )
        assert resp.status == 202
        assert len(seen) == 1  # run once to the end: on the pool
        assert seen[0]["thread"].startswith("worldloop-gateway-api")
        assert seen[0]["json"] == {"type": "move_to", "x": 2.5}
        assert seen[0]["args"] == {"block": ["1"]} and seen[0]["auth"] == "Bearer tok"
        assert waits.inline_moved == 1


def test_the_runners_answers_read_together_wake_the_loop_once() -> None:
    asyncio.run(_answers_wake_once())


async def _answers_wake_once() -> None:
    async with gateway() as (_client, waits, _seen):
        loop = asyncio.get_running_loop()
        answers: list[asyncio.Future[Taken]] = [loop.create_future() for _ in range(20)]
        with threadsafe_calls() as calls:
            # As the link's thread does for the answers it reads in one go (the loop is held
            # meanwhile: this coroutine does not yield until the thread is done).
            def read_together() -> None:
                for i, answer in enumerate(answers):
                    waits._taken_elsewhere(answer, RunnerUnavailable(str(i)))

            link = threading.Thread(target=read_together)
            link.start()
            link.join(10)
            taken = await asyncio.wait_for(asyncio.gather(*answers), 10)
        assert [t.message for t in taken if isinstance(t, RunnerUnavailable)] == [
            str(i) for i in range(20)
        ]
        assert len(calls) == 1, calls


def test_a_wait_that_runs_out_is_the_queued_answer_and_is_forgotten() -> None:
    """WORLDLOOP_COMMAND_WAIT ran out before the tick: the 202 a web worker gives, and the
    wait is no longer held; the command's later resolution finds nobody waiting."""
    asyncio.run(_runs_out())


async def _runs_out() -> None:
    async with gateway(wait_seconds=0.2) as (client, waits, _seen):
        resp = await client.post("/api/v1/commands?wait=true", json={"type": "move_to"})
        assert resp.status == 202
        assert (await resp.json())["status"] == "queued"
        assert waits.waiting == 0 and not waits._waiters
        ipc(waits).resolve("c1")  # late: nothing to wake
        assert waits.waiting == 0
