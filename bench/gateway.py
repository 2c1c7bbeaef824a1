"""1,000 SSE viewers at 10 Hz against the stream gateway: frames delivered, frame age, API cost.

Starts the demo under gunicorn (-w 2, gthread) with WORLDLOOP_GATEWAY set, so the runner starts
the gateway; measures ``GET /api/v1/world`` latency alone (baseline), then again while
``--viewers`` clients (raw asyncio sockets, one class: same bbox/limit) watch the gateway's
stream at ``--hz`` for ``--seconds``. Frame age is the arrival time minus the snapshot's
``created_at``, read from the runner's feed (the bench subscribes to it like a web worker).
Then ``--players`` players send ``move_to?wait=true`` at ``--player-hz``, first to the web
workers, then to the gateway (the same tokens, one after the other in the same run).

The clients (bench/gateway_clients.py) are kept off the path they measure: the viewers and
the players run in ``--client-procs`` client processes of their own (asyncio), the API probe
in a process of its own (a paced, sequential client), so no figure waits on the bench's own
interpreter lock. The
CPU seconds each client and server process used in each phase are reported (from /proc), so a
saturated client or server shows. ``--phases`` runs only some phases (``players`` alone to
look at acknowledgements), ``--via`` only some of the players' targets (``gateway`` alone for
A/B runs of the gateway, with ``--src`` for the baseline). Bounded: every phase has a deadline;
results go to bench/results/gateway.md.

    python bench/gateway.py --viewers 1000 --hz 10 --seconds 20 --client-procs 2
    python bench/gateway.py --phases players --players 200 --out /tmp/players.md
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchenv import header, meadow_config, pct, ratio_ci
from gateway_clients import (
    PROBE_PACE,
    ApiProbe,
    Feed,
    join_players,
    players_in_processes,
    viewers_in_processes,
)
from liveserver import SRC, creature_count, free_port, running, server_env, wait_for

sys.path.insert(0, str(SRC))
from worldloop.runner.fork import COMM
from worldloop.runner.ipc import endpoints

FORKED_RUNNER = COMM.encode()
"""The process name of a runner forked from a web worker (its command line is the worker's)."""

RESULTS = Path(__file__).resolve().parent / "results" / "gateway.md"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_processes(instance: Path) -> dict[int, str]:
    """The server's processes (found by the instance folder in their environment: ours only),
    by role: runner, gateway, gunicorn (the master and its web workers). A runner forked from a
    web worker is told apart by its process name (it was counted as gunicorn before)."""
    found: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if str(instance).encode() not in f.read():
                    continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{name}/comm", "rb") as f:
                comm = f.read().strip()
        except OSError:
            continue
        role = next((r for r in ("runner", "gateway") if f"worldloop.{r}" in cmd), "gunicorn")
        if comm == FORKED_RUNNER:  # a runner forked from a web worker keeps its command line
            role = "runner"
        found[int(name)] = role
    return found


SETTLED = 0.6
"""CPU seconds per second, over all the server's processes, below which it counts as quiet
(the runner's tick alone takes about a quarter of a core)."""


def settle(instance: Path, timeout: float = 30.0) -> None:
    """Wait (at most ``timeout`` s) until the server is quiet: a phase starts once the last
    one's requests are all served (200 players' waits queued on the web workers take seconds
    to drain after their clients stop, and would land in the next phase's figures)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pids = list(server_processes(instance))
        before = sum(cpu_seconds(p) for p in pids)
        time.sleep(1.0)
        if sum(cpu_seconds(p) for p in pids) - before < SETTLED:
            return


class CpuMeter:
    """CPU seconds per server role between :meth:`start` and :meth:`stop`."""

    def __init__(self, instance: Path) -> None:
        self.instance = instance
        self.before: dict[int, float] = {}
        self.roles: dict[int, str] = {}
        self.used: dict[str, float] = {}
        self.wall = 0.0

    def start(self) -> None:
        self.roles = server_processes(self.instance)
        self.before = {pid: cpu_seconds(pid) for pid in self.roles}
        self.wall = time.monotonic()

    def stop(self) -> dict[str, float]:
        self.wall = time.monotonic() - self.wall
        used: dict[str, float] = {}
        for pid, role in self.roles.items():
            used[role] = used.get(role, 0.0) + cpu_seconds(pid) - self.before[pid]
        self.used = used
        return used

    def text(self) -> str:
        parts = [f"{role} {sec:.1f} s" for role, sec in sorted(self.used.items())]
        return ", ".join(parts) + f" in {self.wall:.1f} s"


def creatures(base: str) -> str:
    """The world's creature count now, as the table shows it."""
    count = creature_count(base)
    return "?" if count is None else f"{count:,}"


def gateway_health(gport: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", gport, timeout=10)
    try:
        conn.request("GET", "/healthz")
        body = orjson.loads(conn.getresponse().read())
    finally:
        conn.close()
    return dict(body)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--hz", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--players", type=int, default=200)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--player-hz", type=float, default=2.0)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument(
        "--gateway-processes",
        type=int,
        default=1,
        help="WORLDLOOP_GATEWAY_PROCESSES: gateway processes on the one address",
    )
    parser.add_argument(
        "--phases", default="viewers,players", help="comma-separated: viewers, players"
    )
    parser.add_argument(
        "--src",
        type=Path,
        help="serve from this source tree instead (a baseline: e.g. `git archive main src`)",
    )
    parser.add_argument(
        "--via",
        default="workers,gateway",
        help="where the players send, comma-separated: workers, gateway (both by default)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}

    tmp = Path(tempfile.mkdtemp(prefix="wl-gw-bench-"))
    instance = tmp / "instance"
    port, gport = free_port(), free_port()
    env = server_env(
        instance,
        WORLDLOOP_GATEWAY=f"127.0.0.1:{gport}",
        WORLDLOOP_RUNNER="process",  # the split it measures, whatever the caller's setting
        WORLDLOOP_GATEWAY_PROCESSES=str(args.gateway_processes),
        **meadow_config(args.entities),
        WORLDLOOP_JOIN_RATE_BURST="100000",
        WORLDLOOP_RATE_LIMIT="1000",
        WORLDLOOP_RATE_BURST="1000",
    )
    if args.src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(args.src.resolve()), env["PYTHONPATH"]])
    argv = [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "gthread", "--threads", "8"]
    argv += ["--bind", f"127.0.0.1:{port}", "worldloop.demo:create_app()"]
    rows: list[tuple[str, str]] = []
    loads: list[str] = []
    with running(argv, env, tmp, tmp / "server.log") as srv:
        srv.wait_ready(f"http://127.0.0.1:{port}", 120)

        def gateways_up() -> bool:
            """Every gateway process serves: as many pids answered 16 fresh connections (the
            kernel picks a gateway per connection) as there are processes."""
            healths = [gateway_health(gport) for _ in range(16)]
            pids = {h["pid"] for h in healths if h["running"]}
            return len(pids) >= args.gateway_processes

        wait_for(gateways_up, 120, "the gateway")
        feed_address = endpoints(instance, "meadow").feed
        feed = Feed(feed_address)
        feed.start()
        wait_for(lambda: feed.ticks > 0, 30, "the feed")
        base = f"http://127.0.0.1:{port}"
        seen = [creatures(base)]
        if "viewers" in phases:
            loads.append(f"viewers {os.getloadavg()[0]:.1f}")
            rows += viewers_phase(args, port, gport, feed, feed_address, instance)
            seen.append(creatures(base))
        if "players" in phases:
            loads.append(f"players {os.getloadavg()[0]:.1f}")
            rows += players_phase(args, port, gport, feed, instance)
            seen.append(creatures(base))
        feed.stop.set()
        rows.append(("creatures in the world before the phases, after each", ", ".join(seen)))
    lines = header("Stream gateway: SSE viewers and command waits on the gateway process")
    lines += [f"1-min load average at the start of each phase: {', '.join(loads)}.", ""]
    if args.src is not None:
        lines += [f"Server code from `{args.src}` (a baseline), not this checkout.", ""]
    lines += ["| figure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    lines += [
        "",
        f"Setup: demo world (meadow, {args.entities} creatures, 20 Hz), "
        "`gunicorn -w 2 -k gthread --threads 8` with `WORLDLOOP_GATEWAY` set; the runner starts "
        f"the gateway ({args.gateway_processes} process"
        f"{'es' if args.gateway_processes > 1 else ''}: WORLDLOOP_GATEWAY_PROCESSES). Viewers "
        f"and players run in {args.client_procs} client processes "
        "(asyncio), "
        f"the API probe (sequential, paced by {PROBE_PACE * 1000:g} ms; its windows without "
        "viewers are one before and one after them) in a process of its own; all on "
        "the same 2-core machine as the server, so they share its CPU with it (their CPU "
        "seconds are in the table). The players' phases run one after the other, web workers "
        "first, with the same tokens, each once the server is quiet again (below "
        f"{SETTLED:g} CPU seconds per second: the last phase's queued waits served). Each "
        "player sends its next command one period after its "
        "last (or once that is answered, if later); the players start at random moments over "
        "one period, as people do, except in the *all players in step* phase, where they start "
        "together and, their answers coming with the same tick, stay in step: every command of "
        "a period arrives in the same burst (the worst case).",
        "",
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


def viewers_phase(
    args: argparse.Namespace, port: int, gport: int, feed: Feed, feed_address: str, instance: Path
) -> list[tuple[str, str]]:
    """The API probe alone, then with the viewers watching, then alone again: the viewers'
    rows. The probe's windows without viewers, one before and one after, are pooled, so the
    ratio does not lean on whatever the machine did just before the viewers came."""
    probe = ApiProbe()
    half = args.seconds / 2
    baseline = list(probe.start(port, half / 2).get(half + 60))
    path = f"/api/v1/stream?limit={args.limit}&hz={args.hz:g}"
    over0, ticks0 = feed.overruns, feed.ticks
    result: dict[str, Any] = {}
    meter = CpuMeter(instance)

    def run_viewers() -> None:
        result["v"] = viewers_in_processes(
            gport, path, args.viewers, args.seconds, feed_address, args.client_procs
        )

    t = threading.Thread(target=run_viewers)
    meter.start()
    t.start()
    time.sleep(min(3.0, args.seconds / 4))  # let the viewers connect before probing
    loaded = list(probe.start(port, half).get(half + 60))
    t.join(args.seconds + 120)
    meter.stop()
    over1, ticks1 = feed.overruns, feed.ticks
    settle(instance)
    baseline += probe.start(port, half / 2).get(half + 60)
    probe.close()
    frames, ages, elapsed, client_cpu = result["v"]
    expected = args.viewers * min(args.hz, 20.0) * elapsed
    base99, load99 = pct(baseline, 0.99), pct(loaded, 0.99)
    return [
        ("viewers", f"{args.viewers} at {args.hz:g} Hz, limit={args.limit}, {elapsed:.1f} s"),
        ("frames delivered", f"{frames} of ~{expected:.0f} expected = {frames / expected:.3f}"),
        ("frame age p50 / p99", f"{pct(ages, 0.5):.1f} ms / {pct(ages, 0.99):.1f} ms"),
        (
            "API p99 without viewers",
            f"{base99:.1f} ms (median {statistics.median(baseline):.1f} ms, n={len(baseline)})",
        ),
        (
            "API p99 with viewers",
            f"{load99:.1f} ms (median {statistics.median(loaded):.1f} ms, n={len(loaded)})",
        ),
        (
            "API p99 ratio with/without (90% bootstrap interval)",
            "{:.2f} ({:.2f} to {:.2f})".format(load99 / base99, *ratio_ci(loaded, baseline, 0.99)),
        ),
        ("tick overruns during the viewers", f"{over1 - over0} in {ticks1 - ticks0} ticks"),
        (
            "CPU during the viewers: server / viewer client processes",
            f"{meter.text()} / " + ", ".join(f"{c:.1f} s" for c in client_cpu),
        ),
    ]


def players_phase(
    args: argparse.Namespace, port: int, gport: int, feed: Feed, instance: Path
) -> list[tuple[str, str]]:
    """The players on the web workers, then the same players on the gateway."""
    tokens = join_players(port, args.players)
    durations0 = len(feed.durations)
    rows = []
    via = {v.strip() for v in args.via.split(",")}
    workers = "web workers (gthread, 2 x 8 threads)"
    targets = [(workers, port, False)] if "workers" in via else []
    if "gateway" in via:  # and the worst case: every player's command in the same burst
        targets += [("gateway", gport, False), ("gateway, all players in step", gport, True)]
    for where, p, together in targets:
        settle(instance)
        meter = CpuMeter(instance)
        meter.start()
        lat, client_cpu = players_in_processes(
            f"http://127.0.0.1:{p}",
            tokens,
            args.seconds / 2,
            args.player_hz,
            args.client_procs,
            together,
        )
        meter.stop()
        durations = feed.durations[durations0:] or [float("nan")]
        tick_ms = statistics.mean(durations) * 1000.0
        bound = 1000.0 / 20.0 + tick_ms + 5.0
        rows.append(
            (
                f"{args.players} players at {args.player_hz:g} Hz, `?wait=true` via {where}: "
                "ack p50 / p99",
                f"{pct(lat, 0.5):.1f} ms / {pct(lat, 0.99):.1f} ms (n={len(lat)}; bound: period "
                f"+ mean tick duration + 5 ms = {bound:.1f} ms)",
            )
        )
        if p == gport and not together:
            phases = gateway_health(gport).get("command_phases_ms")
            if phases:  # a baseline's gateway (--src) may not report them
                rows.append(
                    (
                        "where the gateway's waits spent their time, ms (p50 / p99; its /healthz)",
                        ", ".join(
                            f"{name} {v['p50']:.1f} / {v['p99']:.1f}" for name, v in phases.items()
                        ),
                    )
                )
        per = {role: sec / max(1, len(lat)) * 1000.0 for role, sec in meter.used.items()}
        rows.append(
            (
                f"CPU during the players via {where}: server / player client processes",
                f"{meter.text()} ("
                + ", ".join(f"{role} {ms:.2f} ms" for role, ms in sorted(per.items()))
                + " per acknowledged command) / "
                + ", ".join(f"{c:.1f} s" for c in client_cpu),
            )
        )
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
