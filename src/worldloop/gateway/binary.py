"""Binary frames over WebSocket: one quantized frame per tick per viewport class, deltas shared.

A :class:`BinaryChannel` holds the WebSocket clients of one class (``bbox``, ``limit``). On each
new tick it builds that tick's :class:`~worldloop.frame_binary.FrameState` once (on a worker
thread) and keeps the last :data:`HISTORY` of them. Each client is sent the newest frame as a
delta against the last frame written to it (the transport is ordered and reliable, so a frame
written is a frame the client decodes next; a client that cannot apply one asks for a keyframe),
and the message for a given (tick, base) is encoded once, so every client of a class at the same
base gets the same bytes. A client that joins, or whose base fell out of the history (it is
behind), gets a keyframe; every ``keyframe_every`` built frames everyone does. A slow client is
never queued stale frames: it takes the newest frame when its previous write finished. The
clients are woken a slice at a time (worldloop.gateway.pacing), as SSE clients are written.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ..api.stream import View
from ..frame_binary import FrameState, encode
from ..snapshot import Snapshot
from .pacing import fan_out

log = logging.getLogger("worldloop.gateway")

HISTORY = 16
"""Frames a channel keeps as delta bases; a client further behind gets a keyframe."""

Base = int | None
"""The tick a delta is against (None: a keyframe)."""


@dataclass(eq=False)
class WsClient:
    """One WebSocket viewer: its view, the tick its decoder holds, and its wake-up."""

    view: View
    base: Base = None
    """The tick of the last frame written to it (None: it needs a keyframe)."""
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    last_at: float = 0.0
    keyframes: int = 0
    deltas: int = 0


def _wake(client: WsClient) -> bool:
    """Let ``client``'s task write the newest frame (worldloop.gateway.pacing.fan_out's send)."""
    client.ready.set()
    return True


class BinaryChannel:
    """The WebSocket clients of one viewport class and the task that builds their frames."""

    def __init__(
        self,
        view: View,
        build: Callable[[Snapshot, View], FrameState],
        snapshot: Callable[[], Snapshot | None],
        keyframe_every: int,
        period: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.view = View(view.bbox, view.limit, None)
        self.clients: set[WsClient] = set()
        self.built = 0
        self.latest: FrameState | None = None
        self.keyframe_every = max(1, keyframe_every)
        self._build = build
        self._snapshot = snapshot
        self._period = period
        """The world's tick period (worldloop.gateway.pacing paces the wake-ups by it)."""
        self._states: OrderedDict[int, FrameState] = OrderedDict()
        self._keyed: set[int] = set()
        """Ticks every client gets as a keyframe (the periodic ones)."""
        self._messages: dict[tuple[int, Base], asyncio.Future[bytes]] = {}
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._task.cancel()

    def join(self, client: WsClient) -> None:
        self.clients.add(client)
        if self.latest is not None:
            client.ready.set()  # the latest frame now, not one tick later
        else:
            self.wake()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = -1
        while True:
            await self._wake.wait()
            self._wake.clear()
            snap = self._snapshot()
            if snap is None or snap.tick <= last:
                continue
            try:
                state = await loop.run_in_executor(None, self._build, snap, self.view)
            except Exception:  # contained: the next tick tries again
                log.exception("worldloop: gateway binary frame of tick %d failed", snap.tick)
                continue
            last = snap.tick
            if self.built % self.keyframe_every == 0:
                self._keyed.add(state.tick)
            self.built += 1
            self._states[state.tick] = state
            while len(self._states) > HISTORY:
                old, _ = self._states.popitem(last=False)
                self._keyed.discard(old)
            self.latest = state
            for key in [k for k in self._messages if k[0] < state.tick]:
                del self._messages[key]
            await fan_out(self.clients, _wake, self._period())

    def base_for(self, state: FrameState, client: WsClient) -> Base:
        """What ``client`` gets ``state`` against: its last frame if still held, else nothing."""
        if state.tick in self._keyed or client.base not in self._states:
            return None
        return client.base

    async def message(self, state: FrameState, base: Base) -> bytes:
        """The bytes of ``state`` against ``base``, encoded once (off the loop) per pair."""
        key = (state.tick, base)
        fut = self._messages.get(key)
        if fut is None:
            loop = asyncio.get_running_loop()
            ref = None if base is None else self._states[base]
            fut = self._messages[key] = loop.run_in_executor(None, encode, state, ref)
        return await asyncio.shield(fut)
