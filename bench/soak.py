"""Soak: a real demo server under steady load for N minutes; is its memory flat after warm-up?

Starts the demo under gunicorn (gthread, one worker) on a fresh SQLite instance, opens 20
server-sent-event streams (``/api/v1/stream``) and has a few players send ``move_to`` commands
at a steady rate, and samples the worker's RSS and thread count from /proc every few seconds.
After the warm-up the RSS series is fitted with a line: the verdict is "flat" when the ratio of
the last samples to the first ones (after warm-up) is within ``--flat-pct`` percent. The
baseline is the same server's own RSS right after warm-up, measured in the same run.

The command history is bounded by bytes (``WORLDLOOP_COMMAND_HISTORY_BYTES``, set here with
``--history-mib`` so that the bound is reached inside the warm-up at this command rate; with
the default 32 MiB it is reached later and RSS grows until then, by design).

    python bench/soak.py [--minutes 10] [--streams 20] [--players 5] [--rate 8] [--out FILE]
"""

from __future__ import annotations

import argparse
import random
import shlex
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchenv import emit
from liveserver import (
    StreamReader,
    free_port,
    gunicorn_argv,
    http_json,
    join_player,
    proc_status,
    running,
    server_env,
    versions,
)


@dataclass
class Player:
    """One player sending ``rate`` commands a second on a fixed schedule until ``stop``."""

    base: str
    token: str
    rate: float
    stop: threading.Event
    seed: int
    statuses: dict[int, int] = field(default_factory=dict)

    def run(self) -> None:
        rng = random.Random(self.seed)
        headers = {"Authorization": f"Bearer {self.token}"}
        period = 1.0 / self.rate
        due = time.monotonic()
        while not self.stop.is_set():
            body = {"type": "move_to", "x": rng.uniform(0, 999), "y": rng.uniform(0, 999)}
            status, _ = http_json("POST", self.base, "/api/v1/commands", body, headers)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            due += period
            self.stop.wait(max(0.0, due - time.monotonic()))


@dataclass
class Sample:
    t: float
    rss_mib: float
    threads: int
    commands: int
    stream_mib: float


def fit(samples: list[Sample]) -> tuple[float, float]:
    """(slope in MiB/min, last/first ratio) of RSS over ``samples`` (means of 3 at each end)."""
    if len(samples) < 2:
        return 0.0, 1.0
    xs = [s.t / 60.0 for s in samples]
    ys = [s.rss_mib for s in samples]
    slope = statistics.linear_regression(xs, ys).slope
    k = min(3, len(samples) // 2) or 1
    first = statistics.fmean(ys[:k])
    last = statistics.fmean(ys[-k:])
    return slope, last / first


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, help="seconds (default: 25%% of the run, ≤ 150 s)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--streams", type=int, default=20)
    ap.add_argument("--stream-limit", type=int, default=500, help="entities per frame")
    ap.add_argument("--stream-hz", type=float, default=5.0, help="frames/s per stream")
    ap.add_argument("--players", type=int, default=5)
    ap.add_argument("--rate", type=float, default=8.0, help="commands/s per player")
    ap.add_argument("--history-mib", type=float, default=8.0)
    ap.add_argument("--flat-pct", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=40, help="gunicorn gthread threads")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    cmd = "python bench/soak.py " + shlex.join(sys.argv[1:])
    duration = args.minutes * 60.0
    warmup = args.warmup if args.warmup is not None else min(150.0, duration * 0.25)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = server_env(
            Path(tmp) / "instance",
            WORLDLOOP_COMMAND_HISTORY_BYTES=str(int(args.history_mib * 1024 * 1024)),
        )
        with running(gunicorn_argv(port, args.threads), env, Path(tmp), Path(tmp) / "s.log") as srv:
            srv.wait_ready(base)
            worker = srv.worker_pid()
            query = f"?limit={args.stream_limit}&hz={args.stream_hz:g}"
            readers = [StreamReader(base, stop, query) for _ in range(args.streams)]
            players = [
                Player(base, join_player(base, f"soak{i}"), args.rate, stop, seed=i)
                for i in range(args.players)
            ]
            threads = [r.start() for r in readers]
            for p in players:
                t = threading.Thread(target=p.run, name="player", daemon=True)
                t.start()
                threads.append(t)
            started = time.monotonic()
            try:
                while (now := time.monotonic() - started) <= duration:
                    st = proc_status(worker)
                    sent = sum(sum(p.statuses.values()) for p in players)
                    read = sum(r.bytes_read for r in readers) / 2**20
                    samples.append(Sample(now, st["rss_kib"] / 1024, st["threads"], sent, read))
                    print(
                        f"{now:7.1f}s rss {st['rss_kib'] / 1024:7.1f} MiB threads "
                        f"{st['threads']:3d} commands {sent} streamed {read:.1f} MiB",
                        flush=True,
                    )
                    stop.wait(min(args.interval, max(0.0, duration - now) + 0.001))
                    if now >= duration:
                        break
            finally:
                stop.set()
                for t in threads:
                    t.join(10)
            status = http_json("GET", base, "/readyz")[0]
            alive = srv.proc.poll() is None

    statuses: dict[int, int] = {}
    for p in players:
        for code, n in p.statuses.items():
            statuses[code] = statuses.get(code, 0) + n
    after = [s for s in samples if s.t >= warmup] or samples[-2:]
    slope, ratio = fit(after)
    flat = abs(ratio - 1.0) * 100 <= args.flat_pct
    fivexx = sum(n for code, n in statuses.items() if code >= 500 or code == 0)
    stream_errors = sum(len(r.errors) for r in readers)
    lines = [
        "# Soak: memory and threads of a live server under steady load",
        "",
        f"Command: `{cmd}`  ",
        f"Server: the demo under gunicorn gthread (1 worker, {args.threads} threads), SQLite "
        f"store, WORLDLOOP_COMMAND_HISTORY_BYTES = {args.history_mib:g} MiB, other settings "
        "default.  ",
        f"Load: {args.streams} open SSE streams (`/api/v1/stream{query}`), {args.players} "
        f"players x {args.rate:g} `move_to` commands/s, for {args.minutes:g} min; RSS and "
        f"threads of the worker from /proc every {args.interval:g} s.  ",
        f"Machine: {versions()}.",
        "",
        "## Verdict",
        "",
        "| warm-up | samples after | RSS first → last (MiB) | slope (MiB/min) | last/first "
        f"| threads min-max | flat (±{args.flat_pct:g}%) |",
        "|---|---|---|---|---|---|---|",
        f"| {warmup:.0f} s | {len(after)} | {after[0].rss_mib:.1f} → {after[-1].rss_mib:.1f} "
        f"| {slope:+.3f} | {ratio:.3f} | {min(s.threads for s in after)}-"
        f"{max(s.threads for s in after)} | {'yes' if flat else 'NO'} |",
        "",
        f"Commands sent: {sum(statuses.values())} by status "
        f"{dict(sorted(statuses.items()))} (0 = no answer); 5xx or no answer: {fivexx}. "
        f"Streams: {sum(r.bytes_read for r in readers) / 2**20:.1f} MiB read, "
        f"{sum(r.reconnects for r in readers)} reconnects, {stream_errors} errors. "
        f"After the load: /readyz {status}, server {'alive' if alive else 'DEAD'}.",
        "",
        "## Series",
        "",
        "| t (s) | RSS (MiB) | threads | commands sent | streamed (MiB) |",
        "|---|---|---|---|---|",
        *(
            f"| {s.t:.0f} | {s.rss_mib:.1f} | {s.threads} | {s.commands} | {s.stream_mib:.1f} |"
            for s in samples
        ),
        "",
    ]
    emit(lines, args.out)
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
