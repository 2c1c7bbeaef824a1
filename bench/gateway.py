"""1,000 SSE viewers at 10 Hz against the stream gateway: frames delivered, frame age, API cost.

Starts the demo under gunicorn (-w 2, gthread) with WORLDLOOP_GATEWAY set, so the runner starts
the gateway; measures ``GET /api/v1/world`` latency alone (baseline), then again while
``--viewers`` clients (raw asyncio sockets, one class: same bbox/limit) watch the gateway's
stream at ``--hz`` for ``--seconds``. Frame age is the arrival time minus the snapshot's
``created_at``, read from the runner's feed (the bench subscribes to it like a web worker).
Bounded: every phase has a deadline; results go to bench/results/gateway.md.

    python bench/gateway.py --viewers 1000 --hz 10 --seconds 20 --client-procs 2
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchenv import header, pct
from liveserver import SRC, free_port, running, server_env, wait_for

sys.path.insert(0, str(SRC))
from worldloop.runner.ipc import endpoints

RESULTS = Path(__file__).resolve().parent / "results" / "gateway.md"


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


def api_latencies(port: int, seconds: float) -> list[float]:
    """Sequential GET /api/v1/world for ``seconds``: each latency in ms."""
    out: list[float] = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        conn.request("GET", "/api/v1/world")
        resp = conn.getresponse()
        resp.read()
        out.append((time.perf_counter() - t0) * 1000.0)
        time.sleep(0.02)  # a paced probe, not a load generator
    conn.close()
    return out


async def viewer(port: int, path: str, until: float, ages: list[float], feed: Feed) -> int:
    """One SSE client on the gateway until ``until``; frames received."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    frames = 0
    try:
        while True:
            left = until - time.monotonic()
            if left <= 0:
                break
            try:
                block = await asyncio.wait_for(reader.readuntil(b"\n\n"), left)
            except TimeoutError:
                break
            at = time.time()
            i = block.find(b"\nid: ")
            if i < 0:
                continue
            tick = int(block[i + 5 : block.index(b"\n", i + 5)])
            frames += 1
            created = feed.created.get(tick)
            if created is not None:
                ages.append((at - created) * 1000.0)
    finally:
        writer.close()
    return frames


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


def viewers_in_processes(
    port: int, path: str, n: int, seconds: float, feed_address: str, procs: int
) -> tuple[int, list[float], float]:
    """``n`` viewers spread over ``procs`` client processes (one Python process cannot parse a
    thousand streams at 10 Hz by itself)."""
    import multiprocessing

    shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        parts = pool.map(viewer_process, [(port, path, k, seconds, feed_address) for k in shares])
    ages = [a for part in parts for a in part[1]]
    return sum(p[0] for p in parts), ages, max(p[2] for p in parts)


async def players(base: str, tokens: list[str], seconds: float, hz: float) -> list[float]:
    """Each player sends ``move_to?wait=true`` at most ``hz`` times a second (the next one once
    the last is answered) for ``seconds``: acknowledgement latencies, ms."""
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
            next_at = time.monotonic()
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--hz", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--players", type=int, default=200)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--player-hz", type=float, default=2.0)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="wl-gw-bench-"))
    port, gport = free_port(), free_port()
    env = server_env(
        tmp / "instance",
        WORLDLOOP_GATEWAY=f"127.0.0.1:{gport}",
        MEADOW_ENTITIES=str(args.entities),
        WORLDLOOP_JOIN_RATE_BURST="100000",
        WORLDLOOP_RATE_LIMIT="1000",
        WORLDLOOP_RATE_BURST="1000",
    )
    argv = [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "gthread", "--threads", "8"]
    argv += ["--bind", f"127.0.0.1:{port}", "worldloop.demo:create_app()"]
    with running(argv, env, tmp, tmp / "server.log") as srv:
        srv.wait_ready(f"http://127.0.0.1:{port}", 120)

        def gateway_up() -> bool:
            conn = http.client.HTTPConnection("127.0.0.1", gport, timeout=2)
            conn.request("GET", "/healthz")
            body = orjson.loads(conn.getresponse().read())
            conn.close()
            return bool(body["running"])

        wait_for(gateway_up, 120, "the gateway")
        feed_address = endpoints(tmp / "instance", "meadow").feed
        feed = Feed(feed_address)
        feed.start()
        wait_for(lambda: feed.ticks > 0, 30, "the feed")
        baseline = api_latencies(port, args.seconds / 2)
        path = f"/api/v1/stream?limit={args.limit}&hz={args.hz:g}"
        over0, ticks0 = feed.overruns, feed.ticks
        result: dict[str, Any] = {}

        def run_viewers() -> None:
            result["v"] = viewers_in_processes(
                gport, path, args.viewers, args.seconds, feed_address, args.client_procs
            )

        t = threading.Thread(target=run_viewers)
        t.start()
        time.sleep(min(3.0, args.seconds / 4))  # let the viewers connect before probing
        loaded = api_latencies(port, args.seconds / 2)
        t.join(args.seconds + 120)
        over1, ticks1 = feed.overruns, feed.ticks
        frames, ages, elapsed = result["v"]
        tokens = join_players(port, args.players)
        waits = {
            where: asyncio.run(
                players(f"http://127.0.0.1:{p}", tokens, args.seconds / 2, args.player_hz)
            )
            for where, p in (("web workers (gthread, 2 x 8 threads)", port), ("gateway", gport))
        }
        tick_ms = statistics.mean(feed.durations) * 1000.0 if feed.durations else float("nan")
        feed.stop.set()
    expected = args.viewers * min(args.hz, 20.0) * elapsed
    base99, load99 = pct(baseline, 0.99), pct(loaded, 0.99)
    rows = [
        ("viewers", f"{args.viewers} at {args.hz:g} Hz, limit={args.limit}, {elapsed:.1f} s"),
        ("frames delivered", f"{frames} of ~{expected:.0f} expected = {frames / expected:.3f}"),
        ("frame age p50 / p99", f"{pct(ages, 0.5):.1f} ms / {pct(ages, 0.99):.1f} ms"),
        (
            "API p99 without viewers",
            f"{base99:.1f} ms (median {statistics.median(baseline):.1f} ms, n={len(baseline)})",
        ),
        (
            "API p99 with viewers",
            f"{load99:.1f} ms (median {statistics.median(loaded):.1f} ms, n={len(loaded)})",
        ),
        ("API p99 ratio with/without", f"{load99 / base99:.2f}"),
        ("tick overruns during the viewers", f"{over1 - over0} in {ticks1 - ticks0} ticks"),
    ]
    bound = 50.0 + tick_ms + 5.0
    for where, lat in waits.items():
        rows.append(
            (
                f"{args.players} players at {args.player_hz:g} Hz, `?wait=true` via {where}: "
                "ack p50 / p99",
                f"{pct(lat, 0.5):.1f} ms / {pct(lat, 0.99):.1f} ms (n={len(lat)}; bound: period "
                f"+ tick duration + 5 ms = {bound:.1f} ms)",
            )
        )
    lines = header("Stream gateway: SSE viewers on the gateway process")
    lines += ["| figure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    lines += [
        "",
        f"Setup: demo world (meadow, {args.entities} creatures, 20 Hz), "
        "`gunicorn -w 2 -k gthread --threads 8` with "
        "`WORLDLOOP_GATEWAY` set; the runner starts the gateway; viewers and the API probe "
        "run in the bench process on the same 2-core machine (they compete for the CPU).",
        "",
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
