"""What a rate-limit check costs per request: the in-process limiter (the baseline) against the
deployment-wide Redis limiter (one Lua script per check), measured in the same run, beside a
bare Redis ``PING`` (the round trip no Redis-backed check can beat) and the fail-open path
(Redis unreachable, within the backoff).

Each row: ``hits`` checks spread over ``keys`` keys (a burst large enough that none is refused,
so every check does the full refill-and-take), from 1 thread and from ``--threads`` threads (each
with its own Redis connection, as the threads of gunicorn workers have).

Usage: python bench/ratelimit.py [--hits 20000] [--keys 1000] [--threads 4] [--redis URL]
[--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from benchenv import header  # noqa: E402
from worldloop.api.ratelimit import RateLimiter  # noqa: E402
from worldloop.api.ratelimit_redis import RedisLimiter  # noqa: E402


def timed(hit: Callable[[str], object], keys: list[str], hits: int) -> list[float]:
    """Seconds of each of ``hits`` calls, cycling through ``keys``."""
    out = []
    n = len(keys)
    for i in range(hits):
        t0 = time.perf_counter()
        hit(keys[i % n])
        out.append(time.perf_counter() - t0)
    return out


def run(
    make: Callable[[], Callable[[str], object]], keys: list[str], hits: int, threads: int
) -> tuple[float, float, float]:
    """(checks per second, median µs, p99 µs) of ``hits`` checks over ``threads`` threads."""
    each = max(1, hits // threads)
    calls = [make() for _ in range(threads)]
    for call in calls:  # warm: connections open, scripts loaded
        timed(call, keys, min(200, each))
    samples: list[list[float]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)

    def work(i: int) -> None:
        start.wait()
        samples[i] = timed(calls[i], keys[i::threads] or keys, each)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    wall = time.perf_counter() - t0
    flat = sorted(x for s in samples for x in s)
    p99 = flat[min(len(flat) - 1, int(len(flat) * 0.99))]
    return len(flat) / wall, statistics.median(flat) * 1e6, p99 * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hits", type=int, default=20_000)
    ap.add_argument("--keys", type=int, default=1_000)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    prefix = f"wlbench-{uuid.uuid4().hex[:8]}:"
    keys = [uuid.uuid4().hex for _ in range(args.keys)]
    burst = float(args.hits * 2)
    client = redis.Redis.from_url(args.redis)
    version = client.info("server")["redis_version"]
    memory = RateLimiter(1.0, burst)
    dead = "redis://127.0.0.1:1/0"  # nothing listens on port 1

    def redis_limiter() -> Callable[[str], object]:
        return RedisLimiter(
            redis.Redis.from_url(args.redis), "token", 1.0, burst, prefix=prefix
        ).hit

    def ping() -> Callable[[str], object]:
        conn = redis.Redis.from_url(args.redis)
        return lambda _key: conn.ping()

    def failing_open() -> Callable[[str], object]:
        gone = redis.Redis.from_url(dead, socket_connect_timeout=1.0)
        lim = RedisLimiter(gone, "token", 1.0, burst, prefix=prefix, backoff=3600.0)
        lim.hit("first")  # the one failed try; every later one is within the backoff
        return lim.hit

    cases: list[tuple[str, Callable[[], Callable[[str], object]]]] = [
        ("in-process token bucket (`memory://`, baseline)", lambda: memory.hit),
        ("Redis token bucket (`redis://`, one Lua script)", redis_limiter),
        ("bare Redis PING (the round-trip floor)", ping),
        ("Redis unreachable: fail open, within the backoff", failing_open),
    ]
    rows = []
    try:
        for threads in sorted({1, args.threads}):
            base = None
            for name, make in cases:
                rate, med, p99 = run(make, keys, args.hits, threads)
                base = base or med
                rows.append(
                    f"| {name} | {threads} | {rate:,.0f} | {med:,.1f} | {p99:,.1f} | "
                    f"{med / base:,.1f}x |"
                )
        stored = sum(1 for _ in client.scan_iter(match=f"{prefix}*", count=1000))
        mem = sum(int(client.memory_usage(k) or 0) for k in client.scan_iter(match=f"{prefix}*"))
    finally:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
    lines = [
        *header("Rate-limit checks: in-process against the deployment-wide Redis limiter"),
        f"Redis {version} on the same host (loopback); {args.hits:,} checks over "
        f"{args.keys:,} keys per row, none refused (every check refills and takes).",
        "",
        "| limiter | threads | checks/s | median µs | p99 µs | median vs baseline |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Redis keeps one hash per key still limiting someone: {stored:,} keys, "
        f"{mem / max(stored, 1):,.0f} bytes each (`MEMORY USAGE`); each expires once its "
        "bucket would be full again.",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
