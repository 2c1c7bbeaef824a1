"""The clients of bench/gateway.py, each kept off the path it measures: the runner's feed (frame
ages, overruns), the paced API probe, the SSE viewers and the players with ``?wait=true``, the
last three in client processes of their own (spawned; the functions here are what they run).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import multiprocessing
import threading
import time
from typing import Any

import orjson
import zmq

from liveserver import wait_for


class Feed(threading.Thread):
    """The runner's feed: created_at of every tick, and the loop's overrun counter."""

    def __init__(self, feed: str) -> None:
        super().__init__(daemon=True)
        self.created: dict[int, float] = {}
        self.overruns = 0
        self.ticks = 0
        self.durations: list[float] = []
        self.stop = threading.Event()
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(feed)

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(200):
                continue
            msg = orjson.loads(self.sock.recv())
            if "tick" in msg:
                self.created[int(msg["tick"])] = float(msg["created_at"])
            ticker = (msg.get("stats") or {}).get("ticker") or {}
            self.overruns = int(ticker.get("overruns", self.overruns))
            duration = (msg.get("stats") or {}).get("last_tick_duration")
            if duration:
                self.durations.append(float(duration))
            self.ticks = int(ticker.get("ticks", self.ticks))


PROBE_PACE = 0.005
"""Seconds between two probe requests: a paced probe, not a load generator (about 200
requests a second, against the ~1,500 one web worker serves), yet a few thousand latencies per
window: the p99 of a few hundred rests on its few highest, and moved by 2x between runs."""


def api_latencies(port: int, seconds: float) -> list[float]:
    """Sequential GET /api/v1/world for ``seconds``: each latency in ms (run in a process of
    its own: see api_probe)."""
    out: list[float] = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        conn.request("GET", "/api/v1/world")
        resp = conn.getresponse()
        resp.read()
        out.append((time.perf_counter() - t0) * 1000.0)
        time.sleep(PROBE_PACE)
    conn.close()
    return out


class ApiProbe:
    """:func:`api_latencies` in a client process of its own, started once up front (so its
    start-up, imports included, never lands in a measured phase)."""

    def __init__(self) -> None:
        self.pool = multiprocessing.get_context("spawn").Pool(1)
        self.pool.apply(time.sleep, (0,))  # the process is up and has imported this module

    def start(self, port: int, seconds: float) -> Any:
        """Probe for ``seconds`` from now; ``.get()`` on the result waits for the latencies."""
        return self.pool.apply_async(api_latencies, (port, seconds))

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


class Viewer(asyncio.Protocol):
    """One SSE client on the gateway: counts frames and their ages as bytes arrive.

    A protocol, not a StreamReader loop: a ``readuntil`` under ``wait_for`` per frame made a
    task and a timer per frame, and at 10,000 frames a second the viewers' client processes
    spent more CPU than the gateway serving them, on the same two cores."""

    def __init__(self, request: bytes, ages: list[float], feed: Feed) -> None:
        self.request = request
        self.ages = ages
        self.feed = feed
        self.frames = 0
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        at = time.time()
        buf = self.buf + data
        start = 0
        while True:
            i = buf.find(b"\nid: ", start)
            if i < 0:
                break
            end = buf.find(b"\n", i + 5)
            if end < 0:
                break  # the id line is cut: the rest comes with the next read
            self.frames += 1
            created = self.feed.created.get(int(buf[i + 5 : end]))
            if created is not None:
                self.ages.append((at - created) * 1000.0)
            start = end
        self.buf = buf[max(start, len(buf) - 32) :]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def viewer(port: int, path: str, until: float, ages: list[float], feed: Feed) -> int:
    """One SSE client on the gateway until ``until``; frames received."""
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_connection(
        lambda: Viewer(request, ages, feed), "127.0.0.1", port
    )
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.shield(client.closed), max(0.0, until - time.monotonic())
            )
    finally:
        transport.close()
    return client.frames


async def viewers(
    port: int, path: str, n: int, seconds: float, feed: Feed
) -> tuple[int, list[float], float]:
    ages: list[float] = []
    until = time.monotonic() + seconds
    started = time.monotonic()
    counts = await asyncio.gather(*(viewer(port, path, until, ages, feed) for _ in range(n)))
    return sum(counts), ages, time.monotonic() - started


def viewer_process(args: tuple[int, str, int, float, str]) -> tuple[int, list[float], float]:
    """One client process's share of the viewers (its own feed subscription for frame ages)."""
    port, path, n, seconds, feed_address = args
    feed = Feed(feed_address)
    feed.start()
    wait_for(lambda: feed.ticks > 0, 30, "the feed")
    try:
        return asyncio.run(viewers(port, path, n, seconds, feed))
    finally:
        feed.stop.set()


def viewer_process_timed(
    args: tuple[int, str, int, float, str],
) -> tuple[int, list[float], float, float]:
    """:func:`viewer_process`, and the CPU seconds the client process spent on it."""
    cpu = time.process_time()
    frames, ages, elapsed = viewer_process(args)
    return frames, ages, elapsed, time.process_time() - cpu


def shares(n: int, procs: int) -> list[int]:
    return [n // procs + (1 if i < n % procs else 0) for i in range(procs)]


def viewers_in_processes(
    port: int, path: str, n: int, seconds: float, feed_address: str, procs: int
) -> tuple[int, list[float], float, list[float]]:
    """``n`` viewers spread over ``procs`` client processes (one Python process cannot parse a
    thousand streams at 10 Hz by itself); also each process's CPU seconds."""
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        parts = pool.map(
            viewer_process_timed, [(port, path, k, seconds, feed_address) for k in shares(n, procs)]
        )
    ages = [a for part in parts for a in part[1]]
    return sum(p[0] for p in parts), ages, max(p[2] for p in parts), [p[3] for p in parts]


async def players(
    base: str, tokens: list[str], seconds: float, hz: float, together: bool = False
) -> list[float]:
    """Each player sends ``move_to?wait=true`` at most ``hz`` times a second (the next one once
    the last is answered) for ``seconds``: acknowledgement latencies, ms. The players start at
    random moments over one period (people do not act in lockstep), or with ``together`` all
    at once, and then, their answers all coming with the same tick, keep sending in one burst
    a period (the worst case: every command of a period arrives in the same millisecond)."""
    import random

    import aiohttp

    lat: list[float] = []
    until = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=seconds + 30)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=timeout
    ) as session:

        async def play(token: str) -> None:
            headers = {"Authorization": f"Bearer {token}"}
            n = 0
            offset = 0.0 if together else random.Random(token).uniform(0.0, 1.0 / hz)
            next_at = time.monotonic() + offset
            while time.monotonic() < until and n < 10_000:
                n += 1
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at = time.monotonic() + 1.0 / hz
                t0 = time.perf_counter()
                async with session.post(
                    base + "/api/v1/commands?wait=true",
                    json={"type": "move_to", "x": float(n % 900), "y": 50.0},
                    headers=headers,
                ) as resp:
                    await resp.read()
                    if resp.status == 200:
                        lat.append((time.perf_counter() - t0) * 1000.0)

        await asyncio.gather(*(play(t) for t in tokens))
    return lat


def players_process(
    args: tuple[str, list[str], float, float, bool],
) -> tuple[list[float], float]:
    """One client process's share of the players: their latencies, and its CPU seconds."""
    base, tokens, seconds, hz, together = args
    cpu = time.process_time()
    lat = asyncio.run(players(base, tokens, seconds, hz, together))
    return lat, time.process_time() - cpu


def players_in_processes(
    base: str, tokens: list[str], seconds: float, hz: float, procs: int, together: bool = False
) -> tuple[list[float], list[float]]:
    """The players spread over ``procs`` client processes: all latencies, each one's CPU."""
    cut = shares(len(tokens), procs)
    groups = [tokens[sum(cut[:i]) : sum(cut[: i + 1])] for i in range(procs)]
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        parts = pool.map(players_process, [(base, g, seconds, hz, together) for g in groups if g])
    return [x for part in parts for x in part[0]], [part[1] for part in parts]


def join_players(port: int, n: int) -> list[str]:
    tokens = []
    for i in range(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request(
            "POST",
            "/api/v1/players",
            body=orjson.dumps({"name": f"p{i}"}),
            headers={"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        body = orjson.loads(resp.read())
        conn.close()
        tokens.append(body["token"])
    return tokens
