"""The runner split (issue 11): the tick on its own core, against the single-process mode.

Real gunicorn servers (gthread, 8 threads) on free ports, each with a fresh instance folder and
its SQLite store, serve the demo meadow (100k creatures at 20 Hz) in three set-ups, measured in
ONE run so every ratio has its baseline from the same minutes on the same machine:

- A: the single-process mode of before (``WORLDLOOP_RUNNER=thread``, ``-w 1``): baseline;
- B: the split (runner process + ``-w 1``); C: the split with ``-w 2``;
- T1 / T2: a trivial Flask GET app (bench/trivial_app.py) served the same way, -w 1 and -w 2.

For each world set-up: saturating ``GET /api/v1/world`` load (keep-alive clients in separate
processes, bench/loadgen.py) while ``/readyz`` is polled and ``/metrics`` scraped around the
window (achieved tick rate, overruns per minute, /readyz 200 fraction, throughput, p99); the
same load with the clock paused through the admin API (reader p99 ticking/paused), the two
alternating over ``--windows`` rounds (on a shared 2-core box one window's throughput moved by
up to 20% from the next, for the trivial app as for the world); 4 clients
polling ``GET /api/v1/world/snapshot`` (tick rate); 200 players who join and send ``move_to``
with ``?wait=true`` (acknowledgement p50/p99 against one period + tick duration + 5 ms).

    python bench/runner_split.py [--creatures 100000] [--seconds 15] [--out FILE]
    python bench/runner_split.py --quick     # a smoke run: small world, short windows
"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
from benchenv import emit, header, meadow_config  # noqa: E402
from liveserver import (  # noqa: E402
    Server,
    creature_count,
    free_port,
    gunicorn_argv,
    http_json,
    server_env,
)

ADMIN = "bench-admin-token-0123456789"
THREADS = 8
RATE_HZ = 20.0


@dataclass
class Setup:
    key: str
    label: str
    workers: int
    runner: str | None  # None: the trivial app
    env: dict[str, str] = field(default_factory=dict)  # more settings (bench/runner_prio.py)


SETUPS = [
    Setup("T1", "trivial Flask GET, -w 1", 1, None),
    Setup("A", "single-process (WORLDLOOP_RUNNER=thread), -w 1", 1, "thread"),
    Setup("B", "split (runner process), -w 1", 1, "process"),
    Setup("C", "split (runner process), -w 2", 2, "process"),
    Setup("T2", "trivial Flask GET, -w 2", 2, None),
]


@dataclass
class Window:
    """One measured window: the load, the loop's counters around it, /readyz meanwhile."""

    load: loadgen.Load
    tick_hz: float = float("nan")
    overruns_per_min: float = float("nan")
    tick_ms: float = float("nan")
    ready: float = float("nan")
    probe_p99: float = float("nan")
    joined: int = 0
    rates: list[float] = field(default_factory=list)
    """Throughput of each window merged into this one (:func:`merged`), req/s."""


def merged(windows: list[Window]) -> Window:
    """Windows of one kind, alternated with another through a set-up's minutes, as one: the
    latencies pooled, the loop's figures weighted by each window's length, and each window's
    throughput kept (its spread is the noise of one window)."""
    load = loadgen.Load(sum(w.load.seconds for w in windows))
    for w in windows:
        load.latencies.extend(w.load.latencies)
        load.errors += w.load.errors
        for k, v in w.load.statuses.items():
            load.statuses[k] = load.statuses.get(k, 0) + v

    def mean(key: str) -> float:
        return sum(getattr(w, key) * w.load.seconds for w in windows) / load.seconds

    return Window(
        load,
        tick_hz=mean("tick_hz"),
        overruns_per_min=mean("overruns_per_min"),
        tick_ms=mean("tick_ms"),
        ready=mean("ready"),
        probe_p99=max(w.probe_p99 for w in windows),
        joined=max(w.joined for w in windows),
        rates=[w.load.rate for w in windows],
    )


@dataclass
class Result:
    setup: Setup
    windows: dict[str, Window] = field(default_factory=dict)
    creatures: list[int] = field(default_factory=list)
    """The world's creature count after each of its windows (benchenv.meadow_config keeps it)."""

    def count(self, base: str) -> None:
        """Note the world's creature count now."""
        count = creature_count(base)
        if count is not None:
            self.creatures.append(count)


def metric(text: str, name: str) -> float:
    """The sum over labels of one sample name in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def scrape(base: str) -> tuple[float, dict[str, float]]:
    """The loop's counters now: (monotonic mid-time of the scrape, values)."""
    t0 = time.monotonic()
    host, _, port = base.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    at = (t0 + time.monotonic()) / 2
    names = (
        "worldloop_world_tick",
        "worldloop_overruns_total",
        "worldloop_tick_duration_seconds_sum",
        "worldloop_tick_duration_seconds_count",
    )
    return at, {n: metric(text, n) for n in names}


class Probe:
    """Polls one path every ``every`` s on its own connection: status counts and latencies."""

    def __init__(self, base: str, path: str, every: float = 0.25) -> None:
        self.base, self.path, self.every = base, path, every
        self.ok = 0
        self.total = 0
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            status, _ = http_json("GET", self.base, self.path, timeout=5)
            self.total += 1
            if status == 200:
                self.ok += 1
                self.latencies.append(time.perf_counter() - t0)
            self._stop.wait(self.every)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    @property
    def fraction(self) -> float:
        return self.ok / self.total if self.total else float("nan")

    @property
    def p99(self) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(0.99 * len(xs)))] if xs else float("nan")


def measure(base: str, kind: str, what: str, world: bool, **load: Any) -> Window:
    """One load window; with ``world``, the loop's counters and /readyz around it."""
    if not world:
        got, _ = loadgen.run(kind, base, what, **load)
        return Window(got)
    probe_path = "/api/v1/world" if kind == "players" else "/readyz"
    with Probe(base, "/readyz") as ready, Probe(base, probe_path, 0.1) as probe:
        lead = load["lead"]
        t_start = threading.Timer(lead, lambda: box.append(scrape(base)))
        box: list[tuple[float, dict[str, float]]] = []
        t_start.start()
        got, joined = loadgen.run(kind, base, what, **load)
        t_start.join()
        t1, after = scrape(base)
    t0, before = box[0]
    dt = t1 - t0
    count = (
        after["worldloop_tick_duration_seconds_count"]
        - before["worldloop_tick_duration_seconds_count"]
    )
    dur = (
        after["worldloop_tick_duration_seconds_sum"] - before["worldloop_tick_duration_seconds_sum"]
    )
    return Window(
        got,
        tick_hz=(after["worldloop_world_tick"] - before["worldloop_world_tick"]) / dt,
        overruns_per_min=(after["worldloop_overruns_total"] - before["worldloop_overruns_total"])
        * 60
        / dt,
        tick_ms=dur / count * 1e3 if count else float("nan"),
        ready=ready.fraction,
        probe_p99=probe.p99,
        joined=joined,
    )


def idle(base: str, seconds: float) -> Window:
    """The loop with no load at all: what this machine gives the tick right now."""
    with Probe(base, "/readyz") as ready:
        t0, before = scrape(base)
        time.sleep(seconds)
        t1, after = scrape(base)
    dt = t1 - t0
    count = (
        after["worldloop_tick_duration_seconds_count"]
        - before["worldloop_tick_duration_seconds_count"]
    )
    dur = (
        after["worldloop_tick_duration_seconds_sum"] - before["worldloop_tick_duration_seconds_sum"]
    )
    return Window(
        loadgen.Load(seconds),
        tick_hz=(after["worldloop_world_tick"] - before["worldloop_world_tick"]) / dt,
        overruns_per_min=(after["worldloop_overruns_total"] - before["worldloop_overruns_total"])
        * 60
        / dt,
        tick_ms=dur / count * 1e3 if count else float("nan"),
        ready=ready.fraction,
    )


def admin(base: str, action: str) -> None:
    status, body = http_json(
        "POST", base, f"/api/v1/admin/{action}", {}, {"Authorization": f"Bearer {ADMIN}"}, 30
    )
    if status != 200:
        raise RuntimeError(f"admin {action}: {status} {body}")


def run_setup(setup: Setup, args: argparse.Namespace, tmp: Path) -> Result:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    instance = tmp / f"instance-{setup.key}"
    instance.mkdir()
    env = server_env(
        instance,
        **meadow_config(args.creatures),
        WORLDLOOP_RATE_HZ=str(RATE_HZ),
        WORLDLOOP_ADMIN_TOKEN=ADMIN,
        WORLDLOOP_RATE_LIMIT="100000",  # the load is measured, not the per-client limits
        WORLDLOOP_RATE_BURST="100000",
        WORLDLOOP_JOIN_RATE_LIMIT="100000",
        WORLDLOOP_JOIN_RATE_BURST="100000",
    )
    env.update(setup.env)
    if setup.runner is None:
        argv = gunicorn_argv(
            port,
            THREADS,
            workers=setup.workers,
            app="trivial_app:create_app",
            extra=["--pythonpath", str(HERE)],
        )
    else:
        env["WORLDLOOP_RUNNER"] = setup.runner
        argv = gunicorn_argv(port, THREADS, workers=setup.workers)
    reader = {"procs": args.procs, "threads": args.clients // args.procs, "lead": args.lead}
    result = Result(setup)
    srv = Server(argv, env, instance, tmp / f"gunicorn-{setup.key}.log")
    world = setup.runner is not None
    try:
        t0 = time.monotonic()
        srv.wait_ready(base, timeout=240)
        print(f"[{setup.key}] up in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        if world:
            result.windows["idle"] = idle(base, args.idle_seconds)
            result.count(base)
        n = max(1, getattr(args, "windows", 1))
        print(f"[{setup.key}] ready; GET load {n} x {args.seconds:g} s", file=sys.stderr)
        ticking: list[Window] = []
        paused: list[Window] = []
        for _ in range(n):  # ticking and paused alternate: drift of the box hits both alike
            ticking.append(
                measure(base, "get", "/api/v1/world", world, seconds=args.seconds, **reader)
            )
            if world:
                result.count(base)
                admin(base, "pause")
                paused.append(
                    measure(
                        base, "get", "/api/v1/world", False, seconds=args.paused_seconds, **reader
                    )
                )
                admin(base, "resume")
        result.windows["get"] = merged(ticking)
        if not world:
            return result
        result.windows["paused"] = merged(paused)
        if getattr(args, "get_only", False):  # bench/runner_prio.py: the GET windows only
            return result
        print(f"[{setup.key}] snapshot pollers, players", file=sys.stderr, flush=True)
        result.windows["snapshot"] = measure(
            base,
            "get",
            "/api/v1/world/snapshot",
            True,
            procs=2,
            threads=2,
            seconds=args.snapshot_seconds,
            lead=args.lead,
        )
        result.count(base)
        procs = max(1, args.players // 50)
        result.windows["players"] = measure(
            base,
            "players",
            f"p{setup.key}-",
            True,
            procs=procs,
            threads=args.players // procs,
            seconds=args.player_seconds,
            lead=args.join_seconds,
        )
        result.count(base)
    finally:
        t0 = time.monotonic()
        srv.stop()
        print(f"[{setup.key}] stopped in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return result


def ms(x: float) -> str:
    return f"{x * 1e3:,.1f}"


def spread(x: Window) -> str:
    return f"{min(x.rates):,.0f} to {max(x.rates):,.0f}" if x.rates else "n/a"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def table(res: dict[str, Result], args: argparse.Namespace) -> list[str]:
    worlds = [res[k] for k in ("A", "B", "C")]
    trivial = {1: res["T1"].windows["get"].load.rate, 2: res["T2"].windows["get"].load.rate}
    head = "| measure | goal | " + " | ".join(r.setup.key for r in worlds) + " |"
    lines = [head, "|---|---|" + "---:|" * len(worlds)]

    def row(name: str, goal: str, cells: list[str]) -> None:
        lines.append(f"| {name} | {goal} | " + " | ".join(cells) + " |")

    def w(key: str) -> list[Window]:
        return [r.windows[key] for r in worlds]

    row(
        "creatures after each window, lowest to highest",
        "",
        [f"{min(r.creatures):,} to {max(r.creatures):,}" if r.creatures else "?" for r in worlds],
    )
    row("no load: tick rate, Hz", "20.0", [f"{x.tick_hz:.1f}" for x in w("idle")])
    row("no load: mean tick ms", "", [f"{x.tick_ms:.1f}" for x in w("idle")])
    row("no load: overruns/min", "0", [f"{x.overruns_per_min:.0f}" for x in w("idle")])
    row("GET /world throughput, req/s", "", [f"{x.load.rate:,.0f}" for x in w("get")])
    row("… per window, lowest to highest", "", [spread(x) for x in w("get")])
    row(
        "… vs trivial Flask GET, same -w",
        "≥ 0.9",
        [
            ratio(x.load.rate, trivial[r.setup.workers])
            for r, x in zip(worlds, w("get"), strict=True)
        ],
    )
    row(
        "… vs A (single-process)", "", [ratio(x.load.rate, w("get")[0].load.rate) for x in w("get")]
    )
    row("GET /world p50 ms (ticking)", "", [ms(x.load.quantile(0.5)) for x in w("get")])
    row("GET /world p99 ms (ticking)", "", [ms(x.load.quantile(0.99)) for x in w("get")])
    row("GET /world p99 ms (paused)", "", [ms(x.load.quantile(0.99)) for x in w("paused")])
    row(
        "reader p99 ticking / paused",
        "≤ 1.2",
        [
            ratio(a.load.quantile(0.99), b.load.quantile(0.99))
            for a, b in zip(w("get"), w("paused"), strict=True)
        ],
    )
    row("GET errors (ticking)", "0", [str(x.load.errors) for x in w("get")])
    row("tick rate under GET load, Hz", "20.0", [f"{x.tick_hz:.1f}" for x in w("get")])
    row("overruns/min under GET load", "0", [f"{x.overruns_per_min:.0f}" for x in w("get")])
    row("mean tick ms under GET load", "", [f"{x.tick_ms:.1f}" for x in w("get")])
    row("/readyz 200 fraction under GET load", "1.00", [f"{x.ready:.2f}" for x in w("get")])
    row("4 snapshot pollers: tick rate, Hz", "20.0", [f"{x.tick_hz:.1f}" for x in w("snapshot")])
    row(
        "4 snapshot pollers: overruns/min",
        "0",
        [f"{x.overruns_per_min:.0f}" for x in w("snapshot")],
    )
    row("4 snapshot pollers: snapshots/s", "", [f"{x.load.rate:,.1f}" for x in w("snapshot")])
    pl = w("players")
    row("players joined", str(args.players), [str(x.joined) for x in pl])
    row("acks (?wait=true answered 200)", "", [f"{len(x.load.latencies):,}" for x in pl])
    row("ack errors / timeouts", "0", [str(x.load.errors) for x in pl])
    row(
        "ack answers other than 200",
        "none",
        [
            ", ".join(f"{k}: {v}" for k, v in sorted(x.load.statuses.items()) if k != 200) or "none"
            for x in pl
        ],
    )
    row("ack p50 ms", "", [ms(x.load.quantile(0.5)) for x in pl])
    row("ack p99 ms", "≤ bound", [ms(x.load.quantile(0.99)) for x in pl])
    bounds = [1e3 / RATE_HZ + x.tick_ms + 5 for x in pl]
    row("bound: period + mean tick + 5 ms", "", [f"{b:.1f}" for b in bounds])
    row(
        "ack p99 within bound",
        "yes",
        [
            "yes" if x.load.quantile(0.99) * 1e3 <= b else "no"
            for x, b in zip(pl, bounds, strict=True)
        ],
    )
    row("tick rate with players, Hz", "20.0", [f"{x.tick_hz:.1f}" for x in pl])
    row("GET /world p99 ms with players (probe)", "", [ms(x.probe_p99) for x in pl])
    c_b = ratio(res["C"].windows["get"].load.rate, res["B"].windows["get"].load.rate)
    t_ratio = ratio(trivial[2], trivial[1])
    return [
        *lines,
        "",
        f"- C vs B throughput (2 web workers vs 1): **{c_b}** (goal ≥ 1.4); the trivial app's "
        f"-w 2 vs -w 1 in the same run: {t_ratio}.",
        f"- Trivial Flask GET (bench/trivial_app.py) throughput: -w 1 {trivial[1]:,.0f} req/s "
        f"(windows {spread(res['T1'].windows['get'])}), -w 2 {trivial[2]:,.0f} req/s "
        f"(windows {spread(res['T2'].windows['get'])}).",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--creatures", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=6.0, help="one saturating GET window")
    ap.add_argument("--paused-seconds", type=float, default=6.0)
    ap.add_argument(
        "--windows",
        type=int,
        default=3,
        help="GET windows per set-up (world set-ups: ticking and paused alternate)",
    )
    ap.add_argument("--snapshot-seconds", type=float, default=8.0)
    ap.add_argument("--player-seconds", type=float, default=10.0)
    ap.add_argument("--join-seconds", type=float, default=10.0, help="lead for the joins")
    ap.add_argument("--idle-seconds", type=float, default=4.0, help="no-load window")
    ap.add_argument("--lead", type=float, default=1.5, help="s for the load processes to start")
    ap.add_argument("--players", type=int, default=200)
    ap.add_argument("--clients", type=int, default=16, help="GET load connections")
    ap.add_argument("--procs", type=int, default=2, help="GET load processes")
    ap.add_argument("--quick", action="store_true", help="a smoke run: small and short")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.quick:
        args.creatures, args.seconds, args.paused_seconds, args.windows = 2000, 0.5, 0.5, 1
        args.snapshot_seconds, args.player_seconds, args.join_seconds = 0.5, 0.5, 1.5
        args.idle_seconds, args.lead = 0.3, 0.8
        args.players, args.clients = 20, 4
    started = time.monotonic()
    res: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="runner-split-") as tmp:
        for setup in SETUPS:
            res[setup.key] = run_setup(setup, args, Path(tmp))
    lines = [
        *header("The runner split: tick on its own core vs the single-process mode"),
        f"Servers: gunicorn gthread, {THREADS} threads per worker, demo meadow with "
        f"{args.creatures:,} creatures at {RATE_HZ:g} Hz, a fresh instance folder and SQLite "
        "store each, started one after the other in this run.  ",
        f"Load: {args.clients} keep-alive GET clients in {args.procs} processes, "
        f"{args.windows} window(s) of {args.seconds:g} s per set-up (world set-ups: each followed "
        f"by one of {args.paused_seconds:g} s with the clock paused; figures pool the windows); "
        "4 snapshot pollers for "
        f"{args.snapshot_seconds:g} s; {args.players} players with `?wait=true` for "
        f"{args.player_seconds:g} s (after up to {args.join_seconds:g} s to join); no load: "
        f"{args.idle_seconds:g} s right after start. Tick rate "
        "and overruns from /metrics scraped around each window; /readyz polled every 0.25 s.  ",
        "Set-ups: " + "; ".join(f"**{s.key}** {s.label}" for s in SETUPS) + ".",
        "",
        *table(res, args),
        f"- Whole run: {time.monotonic() - started:.0f} s. The load clients run on the same "
        "2 cores as the servers: every figure here includes that competition.",
        "",
    ]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
