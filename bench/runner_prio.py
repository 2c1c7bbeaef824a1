"""CPU priority for the tick (issue 11): set-up C (runner process + ``-w 2``) with the web side
at a lower priority (WORLDLOOP_WEB_NICE, worldloop.priority) against the same without it.

Each round serves, one after the other: the trivial Flask GET app with ``-w 2`` (T2, the
throughput baseline of that round), then set-up C once per WORLDLOOP_WEB_NICE value given;
rounds repeat, so the variants alternate (ABAB) through the minutes of one run and a change in
the shared machine's load shows up as a difference between rounds, not between variants. Every
C run has bench/runner_split.py's no-load window, its saturating ``GET /api/v1/world`` window
(tick rate, overruns/min, mean tick, /readyz) and its paused window (reader p99 ticking/paused).
Each run is reported, with the 1-min load average at its start, and the median per variant.

    python bench/runner_prio.py [--nice 0,10] [--rounds 2] [--seconds 15]
    python bench/runner_prio.py --quick     # a smoke run: small world, short windows

Measured 2026-11-25 on the shared 2-core box (load average 8-20 from other jobs), median per
variant of three runs of 2-3 rounds each (nice 0 -> nice 10): overruns/min under GET load 324 ->
50, 231 -> 75, 279 -> 32; tick rate 16.6 -> 20.2, 19.2 -> 19.9, 18.7 -> 20.0 Hz; mean tick 34.9
-> 11.6, 21.6 -> 12.9, 24.4 -> 10.5 ms; reader p99 ticking/paused 1.84 -> 1.00, 1.38 -> 1.40,
1.54 -> 1.37; throughput vs trivial -w 2 0.77 -> 1.05, 0.77 -> 0.68, 0.65 -> 0.60. Nice 5 (60/min)
and 19 (147/min), one run each, were not clearly better than 10. See docs/deploy.md, "CPU
priority for the tick".
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchenv import emit, header  # noqa: E402
from runner_split import THREADS, Result, Setup, ratio, run_setup  # noqa: E402


def load1() -> float:
    return os.getloadavg()[0]


def p99(result: Result, window: str) -> float:
    return result.windows[window].load.quantile(0.99)


def rows(runs: list[tuple[str, float, Result, float]]) -> list[str]:
    """One column per C run: (label, load average at its start, result, T2 rate that round)."""
    lines = [
        "| measure | goal | " + " | ".join(label for label, *_ in runs) + " |",
        "|---|---|" + "---:|" * len(runs),
    ]

    def row(name: str, goal: str, cells: list[str]) -> None:
        lines.append(f"| {name} | {goal} | " + " | ".join(cells) + " |")

    row("1-min load average at start", "", [f"{la:.1f}" for _, la, _, _ in runs])
    row("no load: mean tick ms", "", [f"{r.windows['idle'].tick_ms:.1f}" for _, _, r, _ in runs])
    row(
        "tick rate under GET load, Hz",
        "20.0",
        [f"{r.windows['get'].tick_hz:.1f}" for *_, r, _ in runs],
    )
    row(
        "overruns/min under GET load",
        "0",
        [f"{r.windows['get'].overruns_per_min:.0f}" for *_, r, _ in runs],
    )
    row("mean tick ms under GET load", "", [f"{r.windows['get'].tick_ms:.1f}" for *_, r, _ in runs])
    row("/readyz 200 fraction", "1.00", [f"{r.windows['get'].ready:.2f}" for *_, r, _ in runs])
    row("GET /world req/s", "", [f"{r.windows['get'].load.rate:,.0f}" for *_, r, _ in runs])
    row(
        "… vs trivial Flask GET -w 2 (same round)",
        "≥ 0.9",
        [ratio(r.windows["get"].load.rate, t2) for *_, r, t2 in runs],
    )
    row("GET p99 ms ticking", "", [f"{p99(r, 'get') * 1e3:.1f}" for *_, r, _ in runs])
    row("GET p99 ms paused", "", [f"{p99(r, 'paused') * 1e3:.1f}" for *_, r, _ in runs])
    row(
        "reader p99 ticking / paused",
        "≤ 1.2",
        [ratio(p99(r, "get"), p99(r, "paused")) for *_, r, _ in runs],
    )
    row("GET errors", "0", [str(r.windows["get"].load.errors) for *_, r, _ in runs])
    return lines


def summary(nices: list[int], runs: list[tuple[str, float, Result, float]]) -> list[str]:
    """The median of each measure per WORLDLOOP_WEB_NICE value over the rounds."""
    lines = ["", "Median per variant over the rounds:", ""]
    lines += [
        "| WORLDLOOP_WEB_NICE | overruns/min | tick Hz | mean tick ms | p99 ratio | vs trivial |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n in nices:
        mine = [(r, t2) for label, _, r, t2 in runs if label.endswith(f"nice {n}")]
        get = [r.windows["get"] for r, _ in mine]
        med = statistics.median
        lines.append(
            f"| {n} | {med(g.overruns_per_min for g in get):.0f} | "
            f"{med(g.tick_hz for g in get):.1f} | {med(g.tick_ms for g in get):.1f} | "
            f"{med(p99(r, 'get') / p99(r, 'paused') for r, _ in mine):.2f} | "
            f"{med(r.windows['get'].load.rate / t2 for r, t2 in mine):.2f} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nice", default="0,10", help="WORLDLOOP_WEB_NICE values, comma-separated")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--creatures", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=15.0, help="saturating GET window")
    ap.add_argument("--paused-seconds", type=float, default=6.0)
    ap.add_argument("--idle-seconds", type=float, default=4.0)
    ap.add_argument("--lead", type=float, default=1.5)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="a smoke run: small and short")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    args.get_only = True  # runner_split.run_setup: no snapshot pollers, no players
    if args.quick:
        args.creatures, args.seconds, args.paused_seconds = 2000, 0.5, 0.5
        args.idle_seconds, args.lead, args.clients, args.rounds = 0.3, 0.8, 4, 1
    nices = [int(x) for x in args.nice.split(",")]
    started = time.monotonic()
    runs: list[tuple[str, float, Result, float]] = []
    with tempfile.TemporaryDirectory(prefix="runner-prio-") as tmp:
        for rnd in range(1, args.rounds + 1):
            trivial = Setup(f"T2-{rnd}", "trivial Flask GET, -w 2", 2, None)
            t2 = run_setup(trivial, args, Path(tmp)).windows["get"].load.rate
            for n in nices:
                env = {"WORLDLOOP_WEB_NICE": str(n)}
                setup = Setup(f"C-{rnd}-n{n}", f"split, -w 2, nice {n}", 2, "process", env)
                la = load1()
                runs.append((f"r{rnd} nice {n}", la, run_setup(setup, args, Path(tmp)), t2))
    lines = [
        *header("CPU priority for the tick: set-up C with and without WORLDLOOP_WEB_NICE"),
        f"Servers: gunicorn gthread -w 2, {THREADS} threads per worker, demo meadow with "
        f"{args.creatures:,} creatures at 20 Hz, a fresh instance folder and SQLite store each. "
        f"Load: {args.clients} keep-alive GET clients in {args.procs} processes for "
        f"{args.seconds:g} s (paused: {args.paused_seconds:g} s). Rounds: {args.rounds}, each "
        f"T2 then nice {', '.join(map(str, nices))}.",
        "",
        *rows(runs),
        *summary(nices, runs),
        "",
        f"- Whole run: {time.monotonic() - started:.0f} s; load clients share the 2 cores.",
        "",
    ]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
