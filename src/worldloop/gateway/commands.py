"""Command waits on the gateway: ``POST /api/v1/commands?wait=true`` without a thread per wait.

A waiting command spends almost all of its time waiting for its tick to be journaled; on a web
worker that wait holds a request thread (gthread) or the whole worker (sync). Here the request
runs through the same Flask app, on a small thread pool, *without* the wait — authentication,
validation, rate limits, idempotency keys and the submission to the runner are exactly the web
workers' — and the wait itself is a future resolved by the runner's feed when the command's
outcome arrives, so a thousand waiting players cost a thousand futures, not a thousand
threads. The answer is the one a web worker gives: 200 with the result, the refusal's own
status, or 202 when ``WORLDLOOP_COMMAND_WAIT`` runs out first.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from ..commands import CommandTicket

if TYPE_CHECKING:
    from flask import Flask

    from ..runner.remote import RemoteRuntime

log = logging.getLogger("worldloop.gateway")

FLAGS_TRUE = frozenset({"1", "true", "yes", "on"})
POOL = 4
"""Threads that run the Flask side of submissions (each a few milliseconds)."""


class CommandWaits:
    """``POST /api/v1/commands`` on the gateway, waits as futures."""

    def __init__(self, app: Flask, runtime: RemoteRuntime, wait_seconds: float) -> None:
        self.app = app
        self.runtime = runtime
        self.wait_seconds = wait_seconds
        self.pool = ThreadPoolExecutor(POOL, thread_name_prefix="worldloop-gateway-api")
        self.loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.waiting_peak = 0
        runtime.ipc.on_resolved = self._resolved_elsewhere

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    # -- the feed thread's side ------------------------------------------------------------

    def _resolved_elsewhere(self, ticket: CommandTicket) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake, ticket.id)

    def _wake(self, command_id: str) -> None:
        for fut in self._waiters.pop(command_id, ()):
            if not fut.done():
                fut.set_result(None)

    # -- the request -----------------------------------------------------------------------

    async def submit(self, request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        wait = request.query.get("wait", "").lower() in FLAGS_TRUE
        query = [(k, v) for k, v in request.query.items() if k != "wait"]
        body = await request.read()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() != "content-length"]
        remote = request.remote or ""
        status, out_headers, data = await loop.run_in_executor(
            self.pool, self._flask, request.path, query, headers, body, remote
        )
        ticket = None
        if wait and status == 202:
            command_id = orjson.loads(data).get("command_id")
            ticket = self.runtime.ipc.ticket(str(command_id))
        if ticket is not None:
            if not ticket.done:
                fut: asyncio.Future[None] = loop.create_future()
                self._waiters.setdefault(ticket.id, []).append(fut)
                self.waiting_peak = max(self.waiting_peak, self.waiting)
                if ticket.done:  # resolved between the look and the registration
                    self._wake(ticket.id)
                try:
                    await asyncio.wait_for(fut, self.wait_seconds)
                except TimeoutError:
                    self._forget(ticket.id, fut)
            if ticket.done:
                status, out_headers, data = await loop.run_in_executor(
                    self.pool, self._render, ticket
                )
        return web.Response(body=data, status=status, headers=out_headers)

    def _forget(self, command_id: str, fut: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(command_id)
        if waiters is not None and fut in waiters:
            waiters.remove(fut)
            if not waiters:
                del self._waiters[command_id]

    def _flask(
        self,
        path: str,
        query: list[tuple[str, str]],
        headers: list[tuple[str, str]],
        body: bytes,
        remote: str,
    ) -> tuple[int, dict[str, str], bytes]:
        """The web workers' handler, run here without the wait (on the pool)."""
        with self.app.test_client() as client:
            resp = client.post(
                path,
                query_string=query,
                headers=headers,
                data=body,
                environ_base={"REMOTE_ADDR": remote},
            )
            return resp.status_code, _headers(resp.headers.items()), resp.get_data()

    def _render(self, ticket: CommandTicket) -> tuple[int, dict[str, str], bytes]:
        """The answer a web worker gives for a resolved command."""
        from ..api.commands import resolved_response

        with self.app.test_request_context():
            resp = resolved_response(ticket)
            return resp.status_code, _headers(resp.headers.items()), resp.get_data()


def _headers(items: Any) -> dict[str, str]:
    skip = {"content-length", "transfer-encoding", "connection"}
    return {str(k): str(v) for k, v in items if str(k).lower() not in skip}
