"""What interim snapshots cost a busy world's ticks: WORLDLOOP_SNAPSHOT_WRITE_SHARE 1 vs 0.2.

An interim snapshot is due once WORLDLOOP_RECOVERY_SECONDS (0.25 s) of stepping has built up
since the last one, and no sooner than the last one's write time / the share. At share 1 (as
it was: "never cost more than the ticks they save replaying") a 100,000-creature meadow with
200 players wrote a 7 MB snapshot about every 0.75 s, each taking 0.15-0.2 s: the writer busy a
quarter of the time, its copy and its IO on the loop's process and disk. The default share 0.2
spaces them five write times apart.

Each round starts the split server (gunicorn -w 2 gthread, the runner, the gateway) on a fresh
SQLite store, once per share, the shares taking turns round by round; 200 players join and send
`move_to` with `?wait=true` through the gateway at 2 Hz each for ``--seconds``. Measured over
that window: the snapshots written (the server's log), every tick's duration (the runner's
feed), the runner's CPU seconds, overruns, and the players' acknowledgement latency. A restart
replays more at share 0.2: bench/results/recovery.md measures that.

Run: python bench/snapshot_share.py [--rounds 2] [--seconds 12]
        [--out bench/results/snapshot_share.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from benchenv import emit, header, meadow_config, pct  # noqa: E402
from gateway import CpuMeter, gateway_health  # noqa: E402
from gateway_clients import Feed, join_players, players_in_processes  # noqa: E402
from liveserver import free_port, running, server_env, wait_for  # noqa: E402
from worldloop.runner.ipc import endpoints  # noqa: E402

SHARES = ("1", "0.2")
SAVED = "snapshot of tick"
"""What the server logs for every snapshot it wrote (worldloop.durability)."""


def one_round(share: str, args: argparse.Namespace) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="wl-share-bench-"))
    instance, log = tmp / "instance", tmp / "server.log"
    port, gport = free_port(), free_port()
    env = server_env(
        instance,
        WORLDLOOP_GATEWAY=f"127.0.0.1:{gport}",
        WORLDLOOP_RUNNER="process",
        WORLDLOOP_SNAPSHOT_WRITE_SHARE=share,
        **meadow_config(args.entities),
        WORLDLOOP_JOIN_RATE_BURST="100000",
        WORLDLOOP_RATE_LIMIT="1000",
        WORLDLOOP_RATE_BURST="1000",
    )
    argv = [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "gthread", "--threads", "8"]
    argv += ["--bind", f"127.0.0.1:{port}", "worldloop.demo:create_app()"]
    with running(argv, env, tmp, log) as srv:
        srv.wait_ready(f"http://127.0.0.1:{port}", 120)
        wait_for(lambda: gateway_health(gport).get("running"), 120, "the gateway")
        feed = Feed(endpoints(instance, "meadow").feed)
        feed.start()
        wait_for(lambda: feed.ticks > 0, 30, "the feed")
        tokens = join_players(port, args.players)
        time.sleep(5.0)  # past the joins' own snapshots: the steady state
        saved0, durations0, over0 = log.read_text().count(SAVED), len(feed.durations), feed.overruns
        meter = CpuMeter(instance)
        meter.start()
        lat, _cpu = players_in_processes(
            f"http://127.0.0.1:{gport}", tokens, args.seconds, 2.0, args.client_procs
        )
        meter.stop()
        saved = log.read_text().count(SAVED) - saved0
        ticks = [d * 1000.0 for d in feed.durations[durations0:]]
        overruns = feed.overruns - over0
        feed.stop.set()
    return {
        "snapshots_per_min": saved / meter.wall * 60.0,
        "tick_mean": statistics.mean(ticks),
        "tick_p50": pct(ticks, 0.5),
        "tick_p90": pct(ticks, 0.9),
        "tick_p99": pct(ticks, 0.99),
        "overruns": overruns,
        "runner_cpu": meter.used.get("runner", 0.0) / meter.wall,
        "ack_p50": pct(lat, 0.5),
        "ack_p99": pct(lat, 0.99),
        "acks": len(lat),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--entities", type=int, default=100_000)
    ap.add_argument("--players", type=int, default=200)
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in SHARES}
    for r in range(args.rounds):
        for share in SHARES if r % 2 == 0 else SHARES[::-1]:
            runs[share].append(one_round(share, args))
    lines = header("Interim snapshots and a busy world's ticks")
    lines += [
        f"Demo meadow of {args.entities:,} creatures at 20 Hz (benchenv.meadow_config), SQLite "
        f"store; {args.players} players at 2 Hz with `?wait=true` via the gateway for "
        f"{args.seconds:g} s per run; {args.rounds} run(s) per share, the shares taking turns "
        "(a fresh server each). Figures: each run's, then the median of the runs per share. "
        f"1-min load average at the end: {os.getloadavg()[0]:.1f}. The players and their "
        "client processes share the server's 2 cores.",
        "",
        "| WORLDLOOP_SNAPSHOT_WRITE_SHARE | interim + periodic snapshots per min | tick mean ms "
        "| tick p50 / p90 / p99 ms | overruns | runner CPU s/s | ack p50 / p99 ms | acks |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def row(label: str, r: dict[str, float]) -> str:
        return (
            f"| {label} | {r['snapshots_per_min']:.0f} | {r['tick_mean']:.1f} | "
            f"{r['tick_p50']:.1f} / {r['tick_p90']:.1f} / {r['tick_p99']:.1f} | "
            f"{r['overruns']:.0f} | {r['runner_cpu']:.2f} | "
            f"{r['ack_p50']:.1f} / {r['ack_p99']:.1f} | {r['acks']:.0f} |"
        )

    for share in SHARES:
        for i, r in enumerate(runs[share], 1):
            lines.append(row(f"{share} (run {i})", r))
    medians = {s: {k: statistics.median(r[k] for r in runs[s]) for k in runs[s][0]} for s in SHARES}
    for share in SHARES:
        lines.append(row(f"**{share}, median**", medians[share]))
    base, new = medians[SHARES[0]], medians[SHARES[1]]
    ratios = {
        "snapshots": "snapshots_per_min",
        "tick mean": "tick_mean",
        "tick p90": "tick_p90",
        "tick p99": "tick_p99",
        "runner CPU": "runner_cpu",
        "ack p50": "ack_p50",
        "ack p99": "ack_p99",
    }
    said = ", ".join(f"{k} {new[v] / base[v]:.2f}x" for k, v in ratios.items())
    lines += ["", f"Share 0.2 vs 1 (medians): {said}."]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
