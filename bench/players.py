"""Players under load, through worldloop.client: round trips against the real demo server.

A real `gunicorn -w 1 --threads 8` serves the demo on a temporary SQLite store; P players join
with ``worldloop.client.Client`` and each sends ``move_to`` commands with ``?wait=true`` (applied,
journaled) for a bounded time and count. The baseline, measured in the same run, is the same
load of plain ``GET /api/v1/world`` reads (no command, no tick to wait for): the ratio shows
what a command's wait for its tick costs. Usage: python bench/players.py [--players 8]
[--seconds 5] [--rate 50] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench.benchenv import emit, machine  # noqa: E402
from tests.support import free_port, wait_for  # noqa: E402

from worldloop.client import ApiError, Client  # noqa: E402

MAX_PER_PLAYER = 2000


def load(clients: list[Client], seconds: float, op: Callable[[Client, int], None]) -> list[float]:
    """Each client runs ``op`` back to back for ``seconds`` (at most MAX_PER_PLAYER times)."""
    times: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run(c: Client) -> None:
        mine: list[float] = []
        for i in range(MAX_PER_PLAYER):
            if time.monotonic() >= stop:
                break
            t0 = time.perf_counter()
            op(c, i)
            mine.append(time.perf_counter() - t0)
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    return times


def row(name: str, times: list[float], seconds: float, base: float | None) -> str:
    q = statistics.quantiles(times, n=100)
    rate = len(times) / seconds
    ratio = f"{statistics.median(times) / base:.1f}x" if base else "1.0x (baseline)"
    return (
        f"| {name} | {len(times):,} | {rate:,.0f}/s | {statistics.median(times) * 1e3:.2f} ms"
        f" | {q[98] * 1e3:.2f} ms | {ratio} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--players", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "src"),
            "WORLDLOOP_INSTANCE_PATH": tmp,
            "WORLDLOOP_RATE_HZ": str(args.rate),
            "WORLDLOOP_ADMIN_TOKEN": "bench-admin-token-0123",
            "WORLDLOOP_RATE_LIMIT": "10000",  # the load, not the per-player limit, is measured
            "WORLDLOOP_RATE_BURST": "10000",
        }
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        argv = [gunicorn, "-w", "1", "--threads", str(args.players), "-b", f"127.0.0.1:{port}"]
        proc = subprocess.Popen(
            [*argv, "worldloop.demo:create_app()"],
            env=env,
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_for(lambda: Client(base_url).world(), 30, 0.1, "the demo server")
            clients = [Client(base_url) for _ in range(args.players)]
            for n, c in enumerate(clients):
                c.join(f"bench{n}")
            reads = load(clients, args.seconds, lambda c, i: c.world() and None)

            def move(c: Client, i: int) -> None:
                try:
                    c.send("move_to", wait=True, x=float(i % 500), y=float((7 * i) % 500))
                except ApiError as exc:  # 429s are retried by the client; anything else counts
                    raise SystemExit(f"command refused: {exc}") from None

            moves = load(clients, args.seconds, move)
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(15)
    base = statistics.median(reads)
    lines = [
        "# Players through worldloop.client",
        "",
        f"Command: `python {shlex.join(['bench/players.py', *sys.argv[1:]])}`  ",
        f"{machine()}  ",
        f"Server: gunicorn -w 1 --threads {args.players}, demo world at {args.rate:g} Hz, "
        f"SQLite journal; {args.players} players, {args.seconds:g} s per row",
        "",
        "| operation | requests | throughput | median | p99 | median vs baseline |",
        "|---|---|---|---|---|---|",
        row("GET /api/v1/world (baseline)", reads, args.seconds, None),
        row("move_to ?wait=true (applied)", moves, args.seconds, base),
        "",
        f"A command waits for the next tick (one period is {1000 / args.rate:.0f} ms at "
        f"{args.rate:g} Hz) and its journal write before it is answered.",
        "",
    ]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
