"""Journal group commit (issue 13): many worlds ticking with commands on one SQLite file, their
journal writes group-committed vs one transaction per world per tick, measured in the same run.

N small worlds (default 50, then 200), each a whole WorldRuntime on its own loop thread at
--rate Hz (default 10), share one SQLite store in WAL mode with ``synchronous=FULL`` (the
default store). A load thread submits one command per world per tick. Each configuration runs
in a child process of its own (a fresh file, a fresh interpreter); after a warm-up, --seconds
are measured: commits and fsyncs per second (a SQLAlchemy commit event; ``perf stat`` on the
fsync syscall tracepoints, which stops nothing), ticks run / due, ms per tick (the whole tick:
commands, journal write, publish) and the acknowledgement latency (submit to the tick's
publication, which resolves the ticket) at p50 and p99, and the process's CPU.

    python bench/group_commit.py                          # 50 and 200 worlds at 10 Hz
    python bench/group_commit.py --worlds 4 --seconds 1   # a small run (the smoke test)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from benchenv import emit, header, pct  # noqa: E402
from worldloop import Command, System, World  # noqa: E402
from worldloop.errors import WorldLoopError  # noqa: E402
from worldloop.names import name_world  # noqa: E402
from worldloop.plugins import RuntimePlugin  # noqa: E402
from worldloop.runtime import TickReport, WorldRuntime  # noqa: E402
from worldloop.store import SqlStore  # noqa: E402

MODES = {"single": "one transaction per world (baseline)", "group": "group commit"}


class Add(BaseModel):
    by: int


class Tally(World):
    """A world that costs next to nothing to step: the journal is what is measured."""

    name = "tally"
    commands = {"add": Add}

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.values = np.zeros(8)

    def apply(self, command: Command) -> Any:
        self.total += int(command.payload["by"])
        return {"total": self.total}

    def systems(self) -> Sequence[System]:
        return (System("spin", self._spin),)

    def _spin(self) -> None:
        self.values += 1.0

    def get_state(self) -> dict[str, Any]:
        return {"total": self.total, "values": self.values}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.total = int(state["total"])
        self.values = np.array(state["values"], dtype=float)

    def view(self) -> dict[str, Any]:
        return {"total": self.total}


class Probe(RuntimePlugin):
    """Per tick (while on): the tick's duration and each command's submit-to-publish time."""

    def __init__(self) -> None:
        self.on = False
        self.ticks: list[float] = []
        self.acks: list[float] = []

    def after_tick(self, rt: WorldRuntime, report: TickReport) -> None:
        if not self.on:
            return
        now = time.time()
        self.ticks.append(report.duration)
        self.acks.extend(now - o.command.submitted_at for o in report.outcomes if o.ok)


def child(mode: str, worlds: int, rate: float, seconds: float, warmup: float) -> dict[str, Any]:
    """One configuration in this process: start the worlds, load them, measure, stop."""
    from sqlalchemy import Engine, event

    tmp = Path(tempfile.mkdtemp(prefix="wl-group-"))
    url = f"sqlite:///{tmp / 'worldloop.db'}"
    commits = [0]
    counting = [False]

    def on_commit(_conn: Any) -> None:
        if counting[0]:
            commits[0] += 1

    event.listen(Engine, "commit", on_commit)
    logging.getLogger("worldloop").setLevel(logging.CRITICAL + 1)  # halts are counted instead
    runtimes, probes = [], []
    for i in range(worlds):
        rt = WorldRuntime(
            name_world(Tally(), f"w{i}"),
            rate_hz=rate,
            store=SqlStore(url, group_commit=mode == "group"),
            snapshot_every=0,  # the journal only: snapshots are another benchmark
            recovery_seconds=0,
            shutdown_timeout=10.0,
            start_paused=True,
        )
        probes.append(rt.add_plugin(Probe()))
        rt.start()
        runtimes.append(rt)
    phase0 = time.perf_counter()
    for i, rt in enumerate(runtimes):  # tick phases spread evenly over one period
        time.sleep(max(0.0, phase0 + i / (rate * worlds) - time.perf_counter()))
        rt.resume()
    stop = threading.Event()
    submitted = [0, 0]  # taken, refused

    def load() -> None:
        period = 1.0 / rate
        t0 = time.monotonic()
        k = 0
        while not stop.is_set():
            for rt in runtimes:
                try:
                    rt.submit("add", {"by": 1})
                    submitted[0] += 1
                except WorldLoopError:
                    submitted[1] += 1
            k += 1
            stop.wait(max(0.0, t0 + k * period - time.monotonic()))

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    time.sleep(warmup)
    for p in probes:
        p.on = True
    counting[0] = True
    print("WINDOW", flush=True)  # the parent counts this process's fsyncs from now on
    before = submitted[0]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start_wall, start = time.time(), time.perf_counter()
    time.sleep(seconds)
    window = time.perf_counter() - start
    end_wall = time.time()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    halted = sum(1 for rt in runtimes if rt.degraded)
    counting[0] = False
    for p in probes:
        p.on = False
    taken = submitted[0] - before
    stop.set()
    loader.join(5)
    stats = None
    if mode == "group":
        group = SqlStore(url).group
        stats = None if group is None else group.stats()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda r: r.stop(), runtimes))
    shutil.rmtree(tmp, ignore_errors=True)
    ticks = [t for p in probes for t in p.ticks]
    acks = [a for p in probes for a in p.acks]
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "mode": mode,
        "window": [start_wall, end_wall],
        "seconds": window,
        "commits": commits[0],
        "ticks": len(ticks),
        "due": window * rate * worlds,
        "tick_p50": pct(ticks, 0.5),
        "tick_p99": pct(ticks, 0.99),
        "ack_p50": pct(acks, 0.5),
        "ack_p99": pct(acks, 0.99),
        "submitted": taken,
        "refused": submitted[1],
        "cpu": cpu / window,
        "largest": None if stats is None else stats.largest,
        "halted": halted,
    }


FSYNC_EVENTS = "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync"
"""Kernel tracepoints counted by ``perf stat``: no ptrace stop, so the timing is untouched."""


def run_child(args: argparse.Namespace, worlds: int, mode: str, perf: bool) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter; with ``perf``, count its fsyncs during
    the measured window (``perf stat -p`` on every thread, started when the child says so)."""
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--json", out]
    argv += ["--worlds", str(worlds), "--rate", str(args.rate)]
    argv += ["--seconds", str(args.seconds), "--warmup", str(args.warmup)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    fsyncs: int | None = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "WINDOW" and perf:
                perf_argv = ["perf", "stat", "-x,", "-e", FSYNC_EVENTS, "-p", str(proc.pid)]
                counted = subprocess.run(
                    [*perf_argv, "--", "sleep", str(args.seconds)], capture_output=True, text=True
                )
                fsyncs = sum(
                    int(row.split(",")[0])
                    for row in counted.stderr.splitlines()
                    if "sys_enter_f" in row and row.split(",")[0].isdigit()
                )
        if proc.wait() != 0:
            raise SystemExit(f"{mode} with {worlds} worlds failed (exit {proc.returncode})")
        result: dict[str, Any] = json.loads(Path(out).read_text())
        result["fsyncs"] = fsyncs
        return result
    finally:
        if proc.poll() is None:
            proc.kill()
        os.unlink(out)


def perf_works() -> bool:
    """Whether ``perf stat`` may count the fsync tracepoints here (root or a low paranoia)."""
    if shutil.which("perf") is None:
        return False
    probe = ["perf", "stat", "-x,", "-e", FSYNC_EVENTS, "--", "true"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def rows(worlds: int, timed: dict[str, Any]) -> list[str]:
    """The table rows of one size: each configuration, with ratios to the baseline's."""
    base = timed["single"]
    base_cpu_tick = base["cpu"] * base["seconds"] / max(1, base["ticks"])
    base_commit_tick = base["commits"] / max(1, base["ticks"])
    out = []
    for mode, title in MODES.items():
        r = timed[mode]
        per_s = r["commits"] / r["seconds"]
        cpu_tick = r["cpu"] * r["seconds"] / max(1, r["ticks"])
        fsyncs = per_commit = "n/a"
        if r["fsyncs"] is not None:
            fsyncs = f"{r['fsyncs'] / r['seconds']:.0f}"
            per_commit = f"{r['fsyncs'] / max(1, r['commits']):.2f}"
        out.append(
            f"| {worlds} | {title} | {r['halted']} | {r['ticks'] / r['due']:.0%} | {per_s:.0f} | "
            f"{r['ticks'] / max(1, r['commits']):.1f} | {fsyncs} | {per_commit} | "
            f"{r['tick_p50'] * 1e3:.2f} | {r['tick_p99'] * 1e3:.2f} | {r['ack_p50'] * 1e3:.1f} | "
            f"{r['ack_p99'] * 1e3:.1f} | {cpu_tick * 1e3:.2f} | {r['largest'] or 1} | "
            f"{r['commits'] / max(1, r['ticks']) / max(1e-9, base_commit_tick):.2f} | "
            f"{cpu_tick / base_cpu_tick:.2f} | {r['tick_p99'] / base['tick_p99']:.2f} |"
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", default="50,200", help="comma-separated world counts")
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window per run")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child", choices=sorted(MODES), help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        result = child(args.child, int(args.worlds), args.rate, args.seconds, args.warmup)
        args.json.write_text(json.dumps(result))
        return 0

    sizes = [int(n) for n in args.worlds.split(",")]
    perf = perf_works()
    table = []
    for n in sizes:
        table += rows(n, {mode: run_child(args, n, mode, perf) for mode in MODES})
    lines = header("Journal group commit: many worlds on one SQLite file")
    lines += [
        f"{' and '.join(map(str, sizes))} worlds at {args.rate:g} Hz, each a WorldRuntime on its "
        "own loop thread, one SQLite file (WAL, synchronous=FULL: the default store), one "
        "command per world per tick from a load thread; each configuration in a fresh process, "
        f"{args.warmup:g} s warm-up, {args.seconds:g} s measured. Baseline (same run, same "
        "size): one transaction per world per tick (WORLDLOOP_GROUP_COMMIT=false).",
        "",
        "| worlds | journal writes | worlds halted | ticks run / due | commits/s | "
        "worlds per commit | fsyncs/s | fsyncs per commit | "
        "tick ms p50 | tick ms p99 | ack ms p50 | ack ms p99 | CPU ms per tick | "
        "largest group | commits per tick vs baseline | CPU per tick vs baseline | "
        "tick p99 vs baseline |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *table,
        "",
        "Worlds halted: worlds whose journal write still failed after "
        "WORLDLOOP_STORE_RETRY_SECONDS (5 s; e.g. SQLite's `database is locked` after its 10 s "
        "busy timeout) by the end of the window: they refuse every command from then on. "
        "Commits/s: journal transactions committed per second (a SQLAlchemy commit event; "
        "snapshots are off). Fsyncs/s: fsync + fdatasync calls of the process in the window, "
        "counted by `perf stat` on the kernel's syscall tracepoints (no ptrace stop; n/a: perf "
        "unavailable); in WAL mode with synchronous=FULL each commit syncs the WAL once, and "
        "checkpoints add a few. CPU ms per tick: "
        "the process's user + system CPU in the window over the ticks run. Worlds per commit: "
        "ticks journaled per commit; largest group: the most worlds one transaction held. "
        "Tick ms: the whole tick (take commands, step, journal write until durable, publish). "
        "Ack ms: submit to the publication that resolves the ticket (commands wait for the "
        f"next tick: up to one period, {1e3 / args.rate:.0f} ms, is the clock, not the store).",
    ]
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
