"""The gateway's HTTP side (aiohttp): the stream, the binary WebSocket, command waits and
``GET /healthz``; the stream and the WebSocket of every world of the runner too, under
``/api/v1/worlds/<name>/`` as on the web workers (worldloop.gateway.worlds; 404 JSON for a
world the runner does not host).

The stream speaks exactly what a web worker's does (worldloop.api.stream): the same query
(``bbox``, ``limit``, ``hz``, checked by the same ViewQuery model against the app's settings;
a bad one is the API's 400 JSON error), ``retry: 1000`` first, a ``frame`` event per new tick
(id = tick), a ``stats`` event when nothing new came for ``stream_stats_every`` s, ``end``
when the world stops or the gateway shuts down. Each connection is a coroutine, not a thread.

The WebSocket takes the same query and sends binary frames (worldloop.frame_binary; keyframes
and deltas, see worldloop.gateway.binary), a text ``{"type":"stats",...}`` when nothing new
came for ``stream_stats_every`` s, and ``{"type":"end"}`` before it closes. The client may send
the text ``keyframe`` (it cannot apply a delta): its next frame is then a keyframe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from typing import Any

from aiohttp import WSMsgType, web
from pydantic import ValidationError

from ..api.params import ViewQuery
from ..api.stream import View, loop_stats
from ..config import Settings
from ..errors import WorldLoopError
from ..models import error_details, error_message
from ..runtime import WorldRuntime
from .binary import BinaryChannel, WsClient
from .commands import CommandWaits
from .hub import Hub, chunk
from .worlds import WorldHubs

log = logging.getLogger("worldloop.gateway")

CORS = {"Access-Control-Allow-Origin": "*"}
WS_WRITE_TIMEOUT = 10.0
"""Seconds one WebSocket send may wait on a client that reads nothing; then it is dropped."""


def _error(status: int, code: str, message: str, details: dict[str, Any]) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details}}
    headers = {**CORS, "Retry-After": "1"} if status in (429, 503) else CORS
    return web.json_response(body, status=status, headers=headers)


def _event(name: str, data: bytes) -> bytes:
    return f"event: {name}\n".encode() + b"data: " + data + b"\n\n"


class Gateway:
    """The aiohttp application of one gateway process."""

    def __init__(
        self,
        runtime: WorldRuntime,
        settings: Settings,
        hub: Hub,
        commands: CommandWaits,
        *,
        worlds: WorldHubs | None = None,
    ) -> None:
        self.runtime = runtime
        self.commands = commands
        self.settings = settings
        self.hub = hub
        self.worlds = worlds
        """The other worlds' hubs (None: this gateway serves the default world only)."""
        self.closing = asyncio.Event()
        self.served = 0
        """Streams opened since the start."""
        self.dropped = 0
        """Streams that skipped frames because their client read too slowly."""
        self.sockets = 0
        """WebSockets opened since the start."""
        self.sockets_stalled = 0
        """WebSockets closed because a send stalled for WS_WRITE_TIMEOUT."""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v1/stream", self.stream)
        app.router.add_get("/api/v1/ws", self.websocket)
        app.router.add_get("/api/v1/worlds/{world}/stream", self.stream)
        app.router.add_get("/api/v1/worlds/{world}/ws", self.websocket)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_post("/api/v1/commands", self.commands.submit)
        app.on_startup.append(self._startup)
        app.on_shutdown.append(self._shutdown)
        return app

    async def _startup(self, app: web.Application) -> None:
        self.hub.bind(asyncio.get_running_loop())
        self.commands.bind(asyncio.get_running_loop())

    async def _shutdown(self, app: web.Application) -> None:
        self.closing.set()  # every stream sends `end` and returns
        self.commands.close()

    async def healthz(self, request: web.Request) -> web.Response:
        rt = self.runtime
        body = {
            "status": "ok",
            "pid": os.getpid(),
            "world": rt.name,
            "running": rt.running,
            "tick": self.hub.tick,
            "clients": sum(h.clients for h in self._hubs()),
            "worlds": len(self._hubs()),
            "classes": len(self.hub.channels),
            "frames_built": sum(c.built for c in self.hub.channels.values()),
            "streams_served": self.served,
            "websockets_served": self.sockets,
            "websockets_stalled": self.sockets_stalled,
            "binary_classes": len(self.hub.binary),
            "binary_frames_built": sum(c.built for c in self.hub.binary.values()),
            "clients_dropped": self.dropped,
            "commands_waiting": self.commands.waiting,
            "commands_waiting_peak": self.commands.waiting_peak,
            "commands_moved_to_pool": self.commands.inline_moved,
            "command_phases_ms": self.commands.phases.summary(),
        }
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    def _hubs(self) -> list[Hub]:
        return self.worlds.hubs if self.worlds is not None else [self.hub]

    async def _hub(self, request: web.Request) -> Hub | web.Response:
        """The hub of the world the path names (the default world's without a name)."""
        name = request.match_info.get("world")
        if name is None or name == self.runtime.name:
            return self.hub
        if self.worlds is None:
            return _error(404, "world_not_found", f"no world named {name!r} here", {"world": name})
        try:
            return await self.worlds.find(name)
        except WorldLoopError as exc:  # 404 no such world, 503 the runner is down
            return _error(exc.status, exc.code, exc.message, exc.details)
        except Exception:  # contained: this request fails, the gateway serves on
            log.exception("worldloop: the gateway cannot serve world %r", name)
            return _error(503, "world_unavailable", f"world {name!r} cannot be served now", {})

    def _release(self, hub: Hub) -> None:
        if self.worlds is not None:
            self.worlds.release(hub)

    def _view(self, request: web.Request) -> View | web.Response:
        try:
            query = ViewQuery.model_validate(
                {k: request.query.getone(k) for k in request.query},
                context={"settings": self.settings},
            )
        except ValidationError as exc:
            return _error(400, "bad_request", error_message(exc), error_details(exc, "param"))
        limit = query.limit
        if limit is None:
            limit = self.settings.stream_default_limit
        return View(query.bbox, limit, query.hz)

    def _not_running(self, rt: WorldRuntime) -> web.Response | None:
        if rt.running:
            return None
        return _error(
            503,
            "world_not_running",
            f"world {rt.name!r} is not running (its runner is starting or down)",
            {"reason": "runner_unavailable"},
        )

    async def stream(self, request: web.Request) -> web.StreamResponse:
        view = self._view(request)
        if isinstance(view, web.Response):
            return view
        hub = await self._hub(request)
        if isinstance(hub, web.Response):
            return hub
        rt = hub.runtime
        refused = self._not_running(rt)
        if refused is not None:
            return refused
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
                **CORS,
            }
        )
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        transport = request.transport
        if transport is None:
            return resp
        self.served += 1
        client = hub.join(view, transport)
        client.send(chunk(b"retry: 1000\n\n"))
        every = self.settings.stream_stats_every
        try:
            # Frames reach the socket from the hub; this coroutine only beats and ends.
            while rt.running and not self.closing.is_set() and not client.gone:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.closing.wait(), every)
                if time.monotonic() - client.sent_at >= every and not client.gone:
                    stats = json.dumps(loop_stats(rt), separators=(",", ":")).encode()
                    client.send(chunk(_event("stats", stats)))
            client.send(chunk(b"event: end\ndata: {}\n\n"))  # aiohttp ends the chunks
        finally:
            self.dropped += client.skipped > 0
            hub.leave(client)
            self._release(hub)
        return resp

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        view = self._view(request)
        if isinstance(view, web.Response):
            return view
        hub = await self._hub(request)
        if isinstance(hub, web.Response):
            return hub
        refused = self._not_running(hub.runtime)
        if refused is not None:
            return refused
        # Frames are deflated once per class by the encoder, not once per socket.
        ws = web.WebSocketResponse(compress=False, heartbeat=30.0, max_msg_size=4096)
        await ws.prepare(request)
        self.sockets += 1
        client, channel = hub.join_ws(view)
        reader = asyncio.ensure_future(self._read(ws, client))
        closing = asyncio.ensure_future(self.closing.wait())
        try:
            await self._send_frames(ws, hub, client, channel, reader, closing)
            if not ws.closed:
                await ws.send_str('{"type":"end"}')
        except (ConnectionError, TimeoutError):
            pass  # gone or stalled: the others never waited on it
        finally:
            closing.cancel()
            reader.cancel()
            hub.leave_ws(client)
            self._release(hub)
            await ws.close()
        return ws

    async def _send_frames(
        self,
        ws: web.WebSocketResponse,
        hub: Hub,
        client: WsClient,
        channel: BinaryChannel,
        reader: asyncio.Future[None],
        closing: asyncio.Future[Any],
    ) -> None:
        rt = hub.runtime
        every = self.settings.stream_stats_every
        hz = client.view.hz
        while rt.running and not ws.closed:
            ready = asyncio.ensure_future(client.ready.wait())
            done, _ = await asyncio.wait(
                (ready, reader, closing), timeout=every, return_when=asyncio.FIRST_COMPLETED
            )
            ready.cancel()
            if reader in done or closing in done:
                return
            if ready not in done:
                stats = {"type": "stats", "stats": loop_stats(rt)}
                await self._send(ws.send_str(json.dumps(stats, separators=(",", ":"))))
                continue
            client.ready.clear()
            if hz is not None:  # a rate cap: wait out the interval, then take the newest
                due = client.last_at + 1.0 / hz - hub.slack()
                if due > time.monotonic():
                    await asyncio.sleep(due - time.monotonic())
            state = channel.latest
            if state is None or (client.base is not None and state.tick <= client.base):
                continue
            base = channel.base_for(state, client)
            data = await channel.message(state, base)
            await self._send(ws.send_bytes(data))
            client.base = state.tick
            client.last_at = time.monotonic()
            if base is None:
                client.keyframes += 1
            else:
                client.deltas += 1

    async def _read(self, ws: web.WebSocketResponse, client: WsClient) -> None:
        """Until the client closes: ``keyframe`` asks for one next."""
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and msg.data.strip() == "keyframe":
                client.base = None
                client.ready.set()

    async def _send(self, sending: Any) -> None:
        try:
            await asyncio.wait_for(sending, WS_WRITE_TIMEOUT)
        except TimeoutError:
            self.sockets_stalled += 1
            raise
