"""Many worlds over many runners in the Redis mode (issue 14, part 4): what a runner joining,
leaving and dying costs the worlds.

Real gunicorn servers of tests/fleet_app.py (one worker each: one runner each) on the local
Redis and PostgreSQL, 30 worlds of kind ``drift`` plus the default world. Events, in order:
a third runner **joins** (it takes its share, handed over gracefully), it **leaves** with
SIGTERM (graceful hand-over of its worlds), it joins again, and it is **killed** with -9 (its
worlds fail over once its lease expires). For each event: how many worlds moved (and the least
that could: the runner's share), the time until every world runs where the placement wants
it, and each moved world's **pause**: the gap between the last tick its old owner published
and the first of its new owner, read from the Redis stream ids of its feed (milliseconds on
the Redis clock). The kill is the baseline: the graceful events should pause a world for a
fraction of a failover.

    python bench/scaleout_placement.py --out bench/results/scaleout_placement.md

``--baseline DIR`` runs the same events on another worldloop's ``src`` (e.g. main's, from
``git archive``) too, alternating with this one for ``--rounds`` rounds, so a change is
compared at the same load on this shared box.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from bench.benchenv import emit, header  # noqa: E402
from bench.liveserver import (  # noqa: E402
    Server,
    free_port,
    gunicorn_argv,
    http_json,
    server_env,
    wait_for,
)
from tests.redis_support import REDIS_URL, drop_prefix  # noqa: E402
from tests.scaleout_oracles import balanced, holders  # noqa: E402
from tests.store_support import PG_URL, drop_pg_schema  # noqa: E402

TOKEN = "bench-admin-0123456789"
APP = "tests.fleet_app:create_app"


def pause_ms(client: redis.Redis, prefix: str, world: str, since_ms: int) -> float | None:
    """The gap (ms, Redis clock) between the last feed entry of the epoch that ran ``world`` at
    ``since_ms`` and the first entry of a newer epoch."""
    key = f"{prefix}{{{world}}}:feed"
    before = client.xrevrange(key, max=f"{since_ms}-0", count=1)
    if not before:
        return None
    old = int(before[0][1][b"epoch"])
    last_old = int(before[0][0].decode().split("-")[0])
    for entry_id, fields in client.xrange(key, min=f"{since_ms}-0", max="+"):
        ms = int(entry_id.decode().split("-")[0])
        if int(fields[b"epoch"]) == old:
            last_old = ms
        else:
            return float(ms - last_old)
    return None


def redis_ms(client: redis.Redis) -> int:
    """Now on the Redis clock, in milliseconds (the clock of the feed's stream ids)."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def runners(client: redis.Redis, prefix: str) -> int:
    """How many runners are registered (worldloop.registry)."""
    return int(client.zcard(f"{prefix}runners"))


class Fleet:
    """The servers of one run, their Redis prefix and PostgreSQL schema."""

    def __init__(self, tmp: Path, ttl: float, poll: float, rate: float, src: Path) -> None:
        self.tmp = tmp
        self.prefix = f"wlbench-{uuid.uuid4().hex[:8]}:"
        self.schema = f"wl_bench_{uuid.uuid4().hex[:8]}"
        self.env = {
            "PYTHONPATH": f"{src}:{ROOT}",
            "WORLDLOOP_REDIS_URL": REDIS_URL,
            "WORLDLOOP_REDIS_PREFIX": self.prefix,
            "WORLDLOOP_STORE_URL": PG_URL,
            "WORLDLOOP_STORE_SCHEMA": self.schema,
            "WORLDLOOP_LEASE_TTL": str(ttl),
            "WORLDLOOP_STANDBY_POLL": str(poll),
            "WORLDLOOP_RATE_HZ": str(rate),
            "WORLDLOOP_ADMIN_TOKEN": TOKEN,
            "WORLDLOOP_WORLD_CREATE_RATE": "1000",
            "DRIFT_PARTICLES": "4",
        }
        self.servers: list[tuple[Server, str]] = []

    def start(self, name: str) -> tuple[Server, str]:
        port = free_port()
        cwd = self.tmp / f"{name}-{len(self.servers)}"
        cwd.mkdir()
        argv = gunicorn_argv(port, 8, app=APP)
        srv = Server(argv, server_env(cwd / "instance", **self.env), cwd, cwd / "server.log")
        base = f"http://127.0.0.1:{port}"
        srv.wait_ready(base, 90)
        self.servers.append((srv, base))
        return srv, base

    def close(self) -> None:
        for srv, _ in self.servers:
            srv.stop()
        drop_prefix(self.prefix)
        drop_pg_schema(self.schema)


@contextlib.contextmanager
def fleet(ttl: float, poll: float, rate: float, src: Path) -> Iterator[Fleet]:
    with tempfile.TemporaryDirectory(prefix="wl-placement-") as tmp:
        run = Fleet(Path(tmp), ttl, poll, rate, src)
        try:
            yield run
        finally:
            run.close()


Row = tuple[str, int, int, float, list[float]]
"""One event of one run: what, worlds moved, least possible, seconds until placed, pauses."""


def event(
    client: redis.Redis,
    run: Fleet,
    names: list[str],
    before: dict[str, int],
    count: int,
    what: str,
    act: object,
) -> tuple[Row, dict[str, int]]:
    """Run ``act()``, wait until the worlds settle on ``count`` runners; one row. The
    time counts from the moment the registry lists a joining runner (the joining
    server's own start-up is not the placement's)."""
    runners_now = runners(client, run.prefix)
    since_ms = redis_ms(client)
    started = time.monotonic()
    act()  # type: ignore[operator]
    if what.startswith("join"):
        wait_for(lambda: runners(client, run.prefix) == runners_now + 1, 90, "the new runner")
        started = time.monotonic()
        since_ms = redis_ms(client)  # the feed is capped: not from before the boot
    after = wait_for(lambda: balanced(holders(client, run.prefix, names), count), 90, what)
    took = time.monotonic() - started
    moved = [w for w in names if after[w] != before.get(w)]
    share = min(Counter(after.values()).values()) if what.startswith("join") else len(moved)
    time.sleep(0.5)  # the new owners' first entries are in the feed
    gaps = [g for g in (pause_ms(client, run.prefix, w, since_ms) for w in moved) if g is not None]
    return (what, len(moved), share, took, gaps), after


def sequence(client: redis.Redis, args: argparse.Namespace, src: Path) -> list[Row]:
    """Two runners with the worlds, then a third joins, leaves (SIGTERM), joins again and is
    killed (-9); the servers run the worldloop of ``src``."""
    worlds = [f"w{i:03d}" for i in range(args.worlds)]
    names = ["drift", *worlds]
    rows: list[Row] = []
    with fleet(args.ttl, args.poll, args.rate, src) as run:
        _, base = run.start("a")
        run.start("b")
        for name in worlds:
            status, body = http_json(
                "POST",
                base,
                "/api/v1/worlds",
                {"name": name, "kind": "drift", "config": {"particles": 4}},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert status == 201, body
        two = wait_for(lambda: balanced(holders(client, run.prefix, names), 2), 90, "2 runners")
        third: list[Server] = []

        def join() -> None:
            third.append(run.start("c")[0])

        row, three = event(client, run, names, two, 3, "join (graceful hand-over)", join)
        rows.append(row)
        row, two = event(
            client,
            run,
            names,
            three,
            2,
            "leave: SIGTERM (graceful hand-over)",
            lambda: third.pop().signal_group(signal.SIGTERM),
        )
        rows.append(row)
        row, three = event(client, run, names, two, 3, "join again", join)
        rows.append(row)
        row, _ = event(
            client,
            run,
            names,
            three,
            2,
            "kill -9 (failover: the baseline)",
            lambda: third.pop().signal_group(signal.SIGKILL),
        )
        rows.append(row)
    return rows


def table(label: str, runs: list[list[Row]]) -> list[str]:
    """The rows of ``runs`` (same events, in order) merged: pauses pooled over the runs."""
    lines = []
    for same in zip(*runs, strict=True):
        gaps = sorted(g for r in same for g in r[4])
        med = statistics.median(gaps) if gaps else float("nan")
        top = max(gaps) if gaps else float("nan")
        lines.append(
            f"| {same[0][0]} | {label} | {sum(r[1] for r in same)} | {sum(r[2] for r in same)} | "
            f"{statistics.median(r[3] for r in same):.2f} | {med:.0f} | {top:.0f} | {len(gaps)} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worlds", type=int, default=30)
    parser.add_argument("--ttl", type=float, default=1.5)
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="the src directory of another worldloop (e.g. main's, from git archive): "
        "each round runs it too, alternating, so both are measured at the same load",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    client = redis.Redis.from_url(REDIS_URL)
    codes = [("this", ROOT / "src")]
    if args.baseline is not None:
        codes.append(("baseline", args.baseline.resolve()))
    runs: dict[str, list[list[Row]]] = {label: [] for label, _ in codes}
    loads = [os.getloadavg()[0]]
    for n in range(max(1, args.rounds)):
        for label, src in codes if n % 2 == 0 else list(reversed(codes)):
            runs[label].append(sequence(client, args, src))
            loads.append(os.getloadavg()[0])
    lines = header("Many worlds over many runners: join, leave, kill")
    baseline = "" if args.baseline is None else f" (baseline: {args.baseline})"
    lines += [
        f"{args.worlds + 1} worlds (tests/fleet_app.py: the default Drift world and "
        f"{args.worlds} of kind drift) at {args.rate:g} Hz over one-worker gunicorn servers, "
        f"Redis + PostgreSQL; lease ttl {args.ttl} s, standby poll {args.poll} s. "
        f"{args.rounds} round(s) of each code{baseline}, alternating. 1-min load average "
        f"at the start and after each run: {', '.join(f'{x:.1f}' for x in loads)}.",
        "",
        "| event | code | worlds moved | least possible | s until all placed (median) | "
        "pause median ms | pause max ms | pauses measured |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    tables = [table(label, runs[label]) for label, _ in codes]
    for same_event in zip(*tables, strict=True):
        lines += same_event
    lines += [
        "",
        "*Pause*: from the last tick a moved world's old owner published to the first of its new "
        "owner (Redis stream ids of the world's feed), pooled over the rounds; at 10 Hz a world "
        "that does not move shows 100 ms between entries. *Least possible*: a joining runner's "
        "share, or the worlds of the runner that left. The kill's pause includes the lease "
        "expiring (up to ttl after the last renewal) and recovery; a graceful hand-over "
        "writes a final snapshot, releases the lease and tells the next owner, which takes it "
        "at once.",
    ]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
