"""Requests to a runner from the gateway's event loop: many in flight, no thread waiting.

A web worker's request to its runner (worldloop.bus.ipc) holds its thread until the answer, one
request at a time per socket. The gateway sends its deferred command puts (worldloop.bus.
deferred) here instead: one asyncio ZeroMQ DEALER socket per runner, each request tagged with a
``ref`` the runner carries back, and a reader task that hands each answer to the future
waiting for it. A request unanswered in time fails as a web worker's does (503, runner
unavailable) and, as there, the socket is replaced, dropping whatever it still queued: a
request the gateway gave up on is never delivered to a runner later (a restarted one). The
socket is replaced only when it heard no answer at all meanwhile (the runner is silent, so the
requests still waiting on it fail too); an answer that is only late, the runner answering the
others, is dropped by its ref instead, and the other requests keep waiting for theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import Any

import zmq
import zmq.asyncio

from ..bus.ipc import IpcBus
from ..runner import ipc

log = logging.getLogger("worldloop.gateway")


class RunnerLink:
    """One runner's request socket, on the running event loop."""

    def __init__(self, bus: IpcBus) -> None:
        self.bus = bus
        self._ctx = zmq.asyncio.Context.instance()
        self._refs = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._sock: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._heard_at = 0.0
        """time.monotonic() of the last answer read on the socket."""

    def _socket(self) -> zmq.asyncio.Socket:
        if self._sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)  # queue only on a live connection
            sock.connect(self.bus.endpoints.requests)
            self._sock = sock
            self._reader = asyncio.get_running_loop().create_task(self._read(sock))
        return self._sock

    async def request(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """The runner's answer to ``message`` (``{"value": ...}`` or ``{"error": ...}``);
        RunnerUnavailable if none comes in ``timeout`` seconds."""
        ref = next(self._refs)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ref] = fut
        sock = self._socket()
        sent_at = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                await sock.send(ipc.pack({**message, "ref": ref}))
                return await fut
        except TimeoutError:
            if self._heard_at < sent_at:  # silent all along: not one answer since
                self._reset(sock)
            raise self.bus.no_answer(timeout) from None
        finally:
            self._waiting.pop(ref, None)

    async def _read(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            try:
                data = await sock.recv()
            except (zmq.ZMQError, asyncio.CancelledError):
                return  # closed (reset or shut down)
            self._heard_at = time.monotonic()
            try:
                answer = ipc.unpack(data)
                fut = self._waiting.pop(int(answer.get("ref") or 0), None)
            except Exception:  # a bad answer must not end the reader
                log.exception("worldloop: runner answer dropped")
                continue
            if fut is not None and not fut.done():
                fut.set_result(answer)

    def _reset(self, sock: zmq.asyncio.Socket) -> None:
        """Replace ``sock`` (a request on it timed out): what it still queued is dropped, and
        the requests still waiting on it fail as unanswered."""
        if self._sock is not sock:
            return
        self._sock = None
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        sock.close(0)
        waiting, self._waiting = self._waiting, {}
        for fut in waiting.values():
            if not fut.done():
                fut.set_exception(TimeoutError())

    def close(self) -> None:
        if self._sock is not None:
            self._reset(self._sock)


class RunnerLinks:
    """The gateway's :class:`RunnerLink` of each runner (world) it sent a command to."""

    def __init__(self) -> None:
        self._links: dict[int, RunnerLink] = {}

    def of(self, bus: IpcBus) -> RunnerLink:
        link = self._links.get(id(bus))
        if link is None or link.bus is not bus:
            link = self._links[id(bus)] = RunnerLink(bus)
        return link

    def close(self) -> None:
        for link in self._links.values():
            with contextlib.suppress(Exception):
                link.close()
        self._links.clear()
