"""Read throughput of ``GET /api/v1/world`` with 1 vs 2 gunicorn workers (issue 14), in the
embedded mode and in the Redis mode, beside a trivial Flask GET served the same way, all in ONE
run (bench/scaleout.py calls :func:`reads`; this module runs alone too):

- T1 / T2: bench/trivial_app.py, ``-w 1`` / ``-w 2`` (the baseline: Flask + gunicorn alone);
- E1 / E2: the demo meadow in the embedded mode (``WORLDLOOP_RUNNER=process``: the world ticks
  in a runner process, snapshots through shared memory; SQLite in a fresh instance folder);
- R1 / R2: the demo meadow in the Redis mode (``WORLDLOOP_REDIS_URL`` + PostgreSQL in a schema
  of its own; one of the workers runs the world, every worker serves it from the feed).

Each server is gunicorn gthread (8 threads a worker) on a free port, started, loaded by
keep-alive GET clients in separate processes (bench/loadgen.py) for a fixed window, stopped.
The clients share the 2 cores with the servers, as do the runner's ticks: "2 workers >= 1.4x
one" is asked of two cores less the runner's share and the clients' own.

    python bench/scaleout_reads.py [--creatures 10000] [--seconds 10] [--out FILE]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (HERE, ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import loadgen  # noqa: E402
from benchenv import emit, header, meadow_config  # noqa: E402
from liveserver import Server, free_port, gunicorn_argv, http_json, server_env  # noqa: E402

THREADS = 8
RATE_HZ = 20.0


@dataclass(frozen=True)
class Setup:
    key: str
    mode: str  # "trivial", "embedded" or "redis"
    workers: int


SETUPS = [
    Setup(f"{m[0].upper()}{w}", m, w) for m in ("trivial", "embedded", "redis") for w in (1, 2)
]
LABELS = {
    "trivial": "trivial Flask GET (baseline)",
    "embedded": "embedded: runner process, SQLite",
    "redis": "Redis mode: Redis Streams + PostgreSQL",
}


@dataclass(frozen=True)
class ReadOptions:
    """The read section's sizes (``--read-*`` on the command line)."""

    creatures: int = 10_000
    seconds: float = 10.0
    clients: int = 16
    procs: int = 2
    lead: float = 2.5
    rounds: int = 2


@dataclass
class Measured:
    setup: Setup
    load: loadgen.Load
    tick_hz: float = float("nan")
    rates: list[float] = field(default_factory=list)
    """req/s of each round (the load is the rounds' pooled)."""

    def add(self, other: Measured) -> None:
        """Pool another round of the same set-up into this one."""
        self.rates.append(other.load.rate)
        self.load.seconds += other.load.seconds
        self.load.latencies += other.load.latencies
        self.load.errors += other.load.errors
        n = len(self.rates)
        self.tick_hz = (self.tick_hz * (n - 1) + other.tick_hz) / n


def _tick(base: str) -> tuple[float, int]:
    status, body = http_json("GET", base, "/api/v1/world", timeout=10)
    if status != 200:
        raise RuntimeError(f"GET /api/v1/world: {status} {body}")
    return time.monotonic(), int(body["tick"])


def _ready(srv: Server, base: str, world: bool, timeout: float = 240.0) -> None:
    """/readyz 200 on 10 new connections in a row (so on every worker), and the world served."""
    srv.wait_ready(base, timeout)
    deadline = time.monotonic() + timeout
    streak = 0
    while streak < 10:
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready on every worker: {srv.tail()}")
        ok = http_json("GET", base, "/readyz", timeout=5)[0] == 200
        if ok and world:
            ok = http_json("GET", base, "/api/v1/world", timeout=5)[0] == 200
        streak = streak + 1 if ok else 0
        if not ok:
            time.sleep(0.1)


def run_setup(setup: Setup, args: ReadOptions, tmp: Path) -> Measured:
    # here, not at the top: the load processes import this module again (spawn), and need none
    from tests.redis_support import REDIS_URL, drop_prefix
    from tests.store_support import PG_URL, drop_pg_schema

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    instance = tmp / f"instance-{setup.key}"
    instance.mkdir(parents=True)
    env = server_env(
        instance,
        **meadow_config(args.creatures),
        WORLDLOOP_RATE_HZ=str(RATE_HZ),
        WORLDLOOP_RATE_LIMIT="1000000",  # the load is measured, not the per-client limits
        WORLDLOOP_RATE_BURST="1000000",
    )
    env["PYTHONPATH"] = f"{env['PYTHONPATH']}:{ROOT}"
    prefix = schema = None
    extra: list[str] = []
    app = "worldloop.demo:create_app"
    if setup.mode == "trivial":
        app, extra = "trivial_app:create_app", ["--pythonpath", str(HERE)]
    elif setup.mode == "embedded":
        env["WORLDLOOP_RUNNER"] = "process"
    else:
        prefix, schema = f"wlbench-{uuid.uuid4().hex[:8]}:", f"wl_bench_{uuid.uuid4().hex[:8]}"
        env.update(
            WORLDLOOP_REDIS_URL=REDIS_URL,
            WORLDLOOP_REDIS_PREFIX=prefix,
            WORLDLOOP_STORE_URL=PG_URL,
            WORLDLOOP_STORE_SCHEMA=schema,
        )
    argv = gunicorn_argv(port, THREADS, workers=setup.workers, app=app, extra=extra)
    srv = Server(argv, env, instance, tmp / f"gunicorn-{setup.key}.log")
    world = setup.mode != "trivial"
    try:
        t0 = time.monotonic()
        _ready(srv, base, world)
        print(f"[{setup.key}] ready in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
        before = _tick(base) if world else None
        load, _ = loadgen.run(
            "get",
            base,
            "/api/v1/world",
            procs=args.procs,
            threads=args.clients // args.procs,
            seconds=args.seconds,
            lead=args.lead,
        )
        measured = Measured(setup, load, rates=[load.rate])
        if before is not None:
            after = _tick(base)
            measured.tick_hz = (after[1] - before[1]) / (after[0] - before[0])
        return measured
    finally:
        srv.stop()
        if prefix is not None and schema is not None:
            drop_prefix(prefix)
            drop_pg_schema(schema)


def _ms(x: float) -> str:
    return f"{x * 1e3:.1f}"


def table(res: dict[str, Measured], args: ReadOptions) -> list[str]:
    lines = [
        f"## Read throughput: GET /api/v1/world, 1 vs 2 workers (demo meadow, "
        f"{args.creatures:,} creatures at {RATE_HZ:g} Hz)",
        "",
        f"gunicorn gthread, {THREADS} threads a worker; {args.clients} keep-alive GET clients in "
        f"{args.procs} processes for {args.seconds:g} s per set-up and round, on the same 2 cores; "
        f"{args.rounds} rounds of the six set-ups started one after the other (every other round "
        "reversed); req/s and quantiles pooled over the rounds, each round's req/s beside them. "
        "Tick rate: the world's ticks over the window.",
        "",
        "| set-up | mode | -w | req/s | per round | p50 ms | p99 ms | errors | "
        "vs trivial, same -w | tick Hz |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for s in SETUPS:
        m = res[s.key]
        trivial = res[f"T{s.workers}"].load.rate
        vs = f"{m.load.rate / trivial:.2f}" if trivial else "n/a"
        hz = "" if m.tick_hz != m.tick_hz else f"{m.tick_hz:.1f}"
        lines.append(
            f"| {s.key} | {LABELS[s.mode]} | {s.workers} | {m.load.rate:,.0f} | "
            f"{' / '.join(f'{r:,.0f}' for r in m.rates)} | "
            f"{_ms(m.load.quantile(0.5))} | {_ms(m.load.quantile(0.99))} | {m.load.errors} | "
            f"{vs} | {hz} |"
        )
    lines += [
        "",
        "| mode | 2 workers / 1 worker (goal ≥ 1.4) | that ratio / the trivial app's |",
        "|---|---:|---:|",
    ]

    def scaling(mode: str) -> float:
        one, two = res[f"{mode[0].upper()}1"].load.rate, res[f"{mode[0].upper()}2"].load.rate
        return two / one if one else float("nan")

    for mode in ("trivial", "embedded", "redis"):
        lines.append(
            f"| {LABELS[mode]} | {scaling(mode):.2f} | {scaling(mode) / scaling('trivial'):.2f} |"
        )
    lines += [
        "",
        "The trivial app's own ratio is what the two cores gave a second worker in this run "
        "(the load clients and other jobs on the box take their share); the last column is "
        "each mode's scaling against it.",
    ]
    return [*lines, ""]


def reads(args: ReadOptions) -> list[str]:
    """The six set-ups, measured one after the other in ``rounds`` rounds (every other one in
    the reverse order, so a drift of the machine's load falls on both ends); the section's
    markdown lines."""
    res: dict[str, Measured] = {}
    with tempfile.TemporaryDirectory(prefix="scaleout-reads-") as tmp:
        for n in range(args.rounds):
            for setup in SETUPS if n % 2 == 0 else SETUPS[::-1]:
                got = run_setup(setup, args, Path(tmp) / f"round-{n}")
                if setup.key in res:
                    res[setup.key].add(got)
                else:
                    res[setup.key] = got
    return table(res, args)


def reads_apart(opts: ReadOptions) -> list[str]:
    """:func:`reads` in a fresh interpreter running this module, for a caller whose own module
    is heavy: the load processes are spawned, and each spawned child imports the main module
    again (with bench/scaleout.py as main, a large import that made them miss the window)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--section-only"]
    for name, value in vars(opts).items():
        argv += [f"--read-{name}", str(value)]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=True, timeout=1800)
    return proc.stdout.splitlines()


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """``--read-creatures``, ``--read-seconds``, ``--read-clients``, ``--read-procs``,
    ``--read-lead``: :class:`ReadOptions`'s fields."""
    for name, value in vars(ReadOptions()).items():
        ap.add_argument(f"--read-{name}", type=type(value), default=value)


def options(args: argparse.Namespace) -> ReadOptions:
    return ReadOptions(**{k: getattr(args, f"read_{k}") for k in vars(ReadOptions())})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    add_arguments(ap)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--section-only", action="store_true", help="no header (for scaleout.py)")
    args = ap.parse_args()
    lines = [] if args.section_only else header("Scale-out reads: 1 vs 2 workers")
    lines += reads(options(args))
    emit(lines, args.out)


if __name__ == "__main__":
    main()
