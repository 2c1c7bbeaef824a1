"""Fan-out of frames to many SSE clients on one asyncio loop, built once per tick per class
(WebSocket clients of binary frames: see worldloop.gateway.binary, joined here too).

Clients that ask for the same region and cap (a *viewport class*: ``bbox``, ``limit``) share a
:class:`Channel`. When the feed reports a new tick, each channel with clients builds that tick's
``frame`` event once (worldloop.api.stream.frame_event, off the loop on a worker thread, since a
big world's frame takes milliseconds), frames it as one HTTP chunk once, and writes the same
bytes to each of its clients' sockets, a slice at a time (worldloop.gateway.pacing): one that
cannot keep up skips ticks and never holds up the channel or the others. A client's ``hz`` is
paced in ticks, not by the clock at fan-out: at 10 Hz on a 20 Hz world it takes every other
tick, however late the gateway fans a tick out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from ..api.stream import View, frame_event, loop_stats
from ..frame_binary import FrameState, frame_state
from ..runtime import WorldRuntime
from ..snapshot import Snapshot
from .binary import BinaryChannel, WsClient
from .pacing import fan_out

log = logging.getLogger("worldloop.gateway")

MAX_BUFFER = 64 * 1024
"""Bytes a client may have unsent in its socket buffer; past it, it skips frames until it reads."""
HZ_SLACK = 0.5
"""A WebSocket client capped at ``hz`` takes a frame once ``1 / hz`` s less this share of a tick
period passed since its last, so tick jitter does not make it skip every other frame it asked
for (worldloop.gateway.server)."""

ClassKey = tuple[object, int]


def per_tick(hz: float | None, rate: float) -> float | None:
    """The frames a tick earns a client capped at ``hz`` on a world ticking at ``rate`` a
    second; None (every tick) uncapped or capped at the rate or above it."""
    return hz / rate if hz is not None and 0 < hz < rate else None


def chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk: framed once per frame, written to every client as is."""
    return b"%x\r\n" % len(data) + data + b"\r\n"


@dataclass(eq=False)
class Client:
    """One SSE connection: its view, its socket, and what it has been sent.

    Frames are written straight to the connection's transport (no per-client queue, task or
    await per frame): fan-out costs one ``write`` per client per frame. A client whose socket
    buffer holds more than MAX_BUFFER bytes skips frames until it drains, so a slow reader never
    holds up the channel or the others."""

    view: View
    transport: asyncio.Transport
    last_tick: int = -1
    last_at: float = 0.0
    sent_at: float = field(default_factory=time.monotonic)
    skipped: int = 0
    """Frames skipped because this client was behind."""
    credit: float = 1.0
    """Frames its ``hz`` lets it take now: one at first (a first frame at once), and at most one
    more than a tick earns, so a missed tick is made up once, never in a burst."""
    seen: int = -1
    """The last tick offered to it (the ticks since then add to its credit)."""

    @property
    def gone(self) -> bool:
        return self.transport.is_closing()

    def send(self, data: bytes) -> None:
        """Write one pre-framed chunk (stats, end) unless the connection is gone."""
        if not self.gone:
            self.transport.write(data)
            self.sent_at = time.monotonic()

    def offer(self, tick: int, framed: bytes, now: float, per_tick: float | None = None) -> bool:
        """Write ``framed`` (tick ``tick``) unless the client's rate cap says not yet or it is
        behind; whether it wrote. ``per_tick``: the frames a tick earns it (its ``hz`` over the
        world's rate; None: every tick), so a channel that missed a tick (it was still building
        the last) lets it catch up on the next, and fan-out jitter never costs it a frame."""
        if tick <= self.last_tick or self.gone:
            return False
        if per_tick is not None:
            if self.seen >= 0:
                self.credit = min(1.0 + per_tick, self.credit + (tick - self.seen) * per_tick)
            self.seen = tick
            if self.credit < 1.0 - 1e-9:
                return False
        if self.transport.get_write_buffer_size() > MAX_BUFFER:
            self.skipped += 1
            return False
        self.transport.write(framed)
        if per_tick is not None:
            self.credit -= 1.0
        self.last_tick = tick
        self.last_at = self.sent_at = now
        return True


def _offer(tick: int, framed: bytes, rate: float, client: Client) -> bool:
    """Offer ``client`` tick ``tick``'s frame now (worldloop.gateway.pacing.fan_out's send)."""
    return client.offer(tick, framed, time.monotonic(), per_tick(client.view.hz, rate))


class Channel:
    """The clients of one viewport class and the task that builds their frames."""

    def __init__(self, hub: Hub, key: ClassKey, view: View) -> None:
        self.hub = hub
        self.key = key
        self.view = View(view.bbox, view.limit, None)
        self.clients: set[Client] = set()
        self.built = 0
        """Frames this channel built (one per tick it saw, whatever its client count)."""
        self.latest: tuple[int, bytes] | None = None
        """The last frame built (tick, event): what a client joining now gets first."""
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._task.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = -1
        while True:
            await self._wake.wait()
            self._wake.clear()
            snap = self.hub.snapshot()
            if snap is None or snap.tick <= last:
                continue
            try:
                event = await loop.run_in_executor(None, self.hub.build, snap, self.view)
            except Exception:  # contained: the next tick tries again
                log.exception("worldloop: gateway frame of tick %d failed", snap.tick)
                continue
            last = snap.tick
            self.built += 1
            framed = chunk(event)
            self.latest = (snap.tick, framed)
            rate = self.hub.runtime.stats().rate_hz
            send = partial(_offer, snap.tick, framed, rate)
            await fan_out(self.clients, send, self.hub.period())


class Hub:
    """Every channel of one gateway, woken by the runner's feed (from the feed thread)."""

    def __init__(
        self,
        runtime: WorldRuntime,
        snapshot: Callable[[], Snapshot | None],
        *,
        keyframe_every: int = 60,
    ) -> None:
        self.runtime = runtime
        self.snapshot = snapshot
        """The latest snapshot (mapped from the runner's shared memory on first read)."""
        self.channels: dict[ClassKey, Channel] = {}
        self.binary: dict[ClassKey, BinaryChannel] = {}
        """WebSocket (binary frame) channels, by the same viewport classes."""
        self.keyframe_every = keyframe_every
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tick = -1

    @property
    def clients(self) -> int:
        sse = sum(len(c.clients) for c in self.channels.values())
        return sse + sum(len(c.clients) for c in self.binary.values())

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def feed(self, tick: int) -> None:
        """From the feed thread: a message with snapshot ``tick`` arrived."""
        loop = self.loop
        if loop is not None and tick != self.tick and not loop.is_closed():
            self.tick = tick
            loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        for channel in self.channels.values():
            channel.wake()
        for binary in self.binary.values():
            binary.wake()

    def period(self) -> float | None:
        """The world's tick period, s (None: not ticking): what a fan-out's pauses are paced by."""
        rate = self.runtime.stats().rate_hz
        return 1.0 / rate if rate > 0 else None

    def slack(self) -> float:
        """How early a rate-capped client's next frame may come: half a tick period."""
        rate = self.runtime.stats().rate_hz
        return HZ_SLACK / rate if rate > 0 else 0.0

    def build(self, snap: Snapshot, view: View) -> bytes:
        return frame_event(self.runtime, snap, view)

    def build_state(self, snap: Snapshot, view: View) -> FrameState:
        """The binary frame of ``snap`` for ``view``'s class (worldloop.frame_binary)."""
        rt = self.runtime
        scene = rt.world.scene(snap, view.bbox, view.limit)
        return frame_state(snap.tick, snap.sim_time, snap.summary, scene, loop_stats(rt))

    def join_ws(self, view: View) -> tuple[WsClient, BinaryChannel]:
        """A new WebSocket client of ``view``'s class; its first frame is a keyframe."""
        key: ClassKey = (view.bbox, view.limit)
        channel = self.binary.get(key)
        if channel is None:
            channel = BinaryChannel(
                view, self.build_state, self.snapshot, self.keyframe_every, self.period
            )
            self.binary[key] = channel
        client = WsClient(view)
        channel.join(client)
        return client, channel

    def leave_ws(self, client: WsClient) -> None:
        key: ClassKey = (client.view.bbox, client.view.limit)
        channel = self.binary.get(key)
        if channel is None:
            return
        channel.clients.discard(client)
        if not channel.clients:
            channel.close()
            del self.binary[key]

    def join(self, view: View, transport: asyncio.Transport) -> Client:
        """A new client of ``view``'s class; it gets the latest frame at once."""
        key: ClassKey = (view.bbox, view.limit)
        channel = self.channels.get(key)
        if channel is None:
            channel = self.channels[key] = Channel(self, key, view)
        client = Client(view, transport)
        channel.clients.add(client)
        if channel.latest is not None:  # a first frame now, not one tick later
            rate = self.runtime.stats().rate_hz
            client.offer(*channel.latest, time.monotonic(), per_tick(view.hz, rate))
        else:
            channel.wake()
        return client

    def leave(self, client: Client) -> None:
        key: ClassKey = (client.view.bbox, client.view.limit)
        channel = self.channels.get(key)
        if channel is None:
            return
        channel.clients.discard(client)
        if not channel.clients:
            channel.close()
            del self.channels[key]

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
        self.channels.clear()
        for binary in self.binary.values():
            binary.close()
        self.binary.clear()
