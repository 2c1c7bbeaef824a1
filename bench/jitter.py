"""Tick-start jitter and drift: worldloop's Ticker vs the naive re-arming Timer (same run).

For every tick we record when it started and compare with the ideal schedule t0 + k * period:
- lateness  = start_k - (t0 + k * period): its value at the end is the cumulative drift;
- interval error = (start_k - start_{k-1}) - period: the tick-to-tick jitter.
Both loops do the same simulated work per tick (a busy loop of --work-ms milliseconds).

    python bench/jitter.py                 # 30 s per case, 20 Hz and 60 Hz
    python bench/jitter.py --seconds 5     # quicker
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import itertools

from benchenv import header, pct
from naive_timer import NaiveLoop
from worldloop.clock import Ticker, TickInfo


def busy(ms: float) -> None:
    end = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < end:
        pass


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    rate_hz: float
    seconds: float
    ticks: int
    expected: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    drift_ms: float
    trend_ms_per_min: float

    def row(self) -> str:
        return (
            f"| {self.name} | {self.rate_hz:g} | {self.ticks} | {self.expected} | "
            f"{self.p50_ms:.3f} | {self.p99_ms:.3f} | {self.max_ms:.3f} | {self.drift_ms:+.1f} | "
            f"{self.trend_ms_per_min:+.2f} |"
        )


def summarize(name: str, rate: float, seconds: float, starts: list[float], t0: float) -> Result:
    period = 1.0 / rate
    intervals = [abs((b - a) - period) * 1000 for a, b in itertools.pairwise(starts)]
    # naive ticks have no slot of their own: the k-th start is compared with the k-th ideal time
    lateness = [(s - (t0 + k * period)) * 1000 for k, s in enumerate(starts)]
    times = [s - t0 for s in starts]
    trend = statistics.linear_regression(times, lateness).slope * 60  # ms of drift per minute
    return Result(
        name,
        rate,
        seconds,
        len(starts),
        int(seconds * rate) + 1,
        statistics.median(intervals),
        pct(intervals, 0.99),
        max(intervals),
        lateness[-1],
        trend,
    )


def run_worldloop(rate: float, seconds: float, work_ms: float) -> Result:
    starts: list[float] = []
    t0_box: list[float] = []

    def on_tick(info: TickInfo) -> None:
        if not t0_box:
            t0_box.append(info.scheduled)
        starts.append(time.monotonic())
        busy(work_ms)

    ticker = Ticker(on_tick, rate)
    ticker.start()
    time.sleep(seconds)
    ticker.stop(2.0)
    return summarize("worldloop Ticker", rate, seconds, starts, t0_box[0])


def run_naive(rate: float, seconds: float, work_ms: float) -> Result:
    loop = NaiveLoop(rate, lambda: busy(work_ms))
    loop.start()
    time.sleep(seconds)
    loop.stop()
    return summarize("naive re-armed Timer", rate, seconds, loop.starts, loop.starts[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rates", type=float, nargs="+", default=[20.0, 60.0])
    parser.add_argument("--work-ms", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args()

    results: list[Result] = []
    for rate in args.rates:
        results.append(run_naive(rate, args.seconds, args.work_ms))
        results.append(run_worldloop(rate, args.seconds, args.work_ms))

    lines = [
        *header("Tick-start jitter and drift"),
        f"{args.seconds:g} s per case, {args.work_ms:g} ms of work per tick.",
        "",
        "Jitter is |interval - period|. Drift at end is the last tick's start minus its ideal time "
        "t0 + k*period; the trend is the least-squares slope of that lateness over the run "
        "(a loop without drift has a trend of ~0).",
        "",
        "| loop | Hz | ticks | ideal ticks | jitter p50 ms | jitter p99 ms | jitter max ms "
        "| drift at end ms | drift trend ms/min |",
        "|---|---|---|---|---|---|---|---|---|",
        *[r.row() for r in results],
        "",
        "| Hz | naive drift / worldloop drift | ticks lost by naive |",
        "|---|---|---|",
    ]
    for naive, ours in zip(results[::2], results[1::2], strict=True):
        ratio = abs(naive.drift_ms) / max(abs(ours.drift_ms), 1e-3)
        lines.append(f"| {naive.rate_hz:g} | {ratio:,.0f}x | {ours.ticks - naive.ticks} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)


if __name__ == "__main__":
    main()
