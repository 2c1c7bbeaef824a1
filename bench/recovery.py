"""Restart to ready: how long a killed 100k-creature server takes to answer /readyz 200 again.

For each snapshot policy, a builder process runs the demo world (``create_world``, as the demo
server makes it) with a real SQLite store and the runtime's own ``Durability`` (journal every
tick, commands every tick, snapshots written by the background writer as the policy asks),
and is killed with SIGKILL on the tick just before its next snapshot would start: the worst
case. Then the demo server (``flask --app worldloop.demo:create_app run``) is started on that
store, and the time from spawning it to the first ``/readyz`` 200 is measured; its recovered
tick and state hash must equal the builder's last journaled tick and hash (nothing lost).

Policies, paired in one run: ``every 1,000 ticks`` (what the defaults did before
``WORLDLOOP_RECOVERY_SECONDS``), ``every 100 ticks``, the current defaults (every 1,000 ticks,
and also once ``WORLDLOOP_RECOVERY_SECONDS`` of stepping has built up since the last snapshot,
and at least the last write's time / ``WORLDLOOP_SNAPSHOT_WRITE_SHARE``: 5 writes' worth),
and the defaults with a server that loads the numba kernels (``MEADOW_KERNELS=numba``, loaded
in the background while the world recovers on NumPy).

The server runs as ``make run`` starts it: the world in its runner process (the web worker
spawns it) and the stream gateway beside it (``WORLDLOOP_GATEWAY``); each restart is repeated
``--repeat`` times on a fresh copy of the killed builder's store (the median is shown), and a
trivial Flask app's spawn-to-200 under ``flask run``, measured just before each restart, is
the baseline that tells how much of a figure is the machine. The server's start-up log gives
the timeline: when the runner was spawned, when it had loaded the app, when it served the
recovered world.
Bytecode is compiled first (``compileall``), as it is on any server that ran once.
A last case (bench/recovery_load.py, skipped with ``--no-load``) restarts under load: players
send commands while the whole server is killed and spawned again on a store killed as the
default policy's worst case (the default case's own store when that case ran, ``--load-seconds``
of load before the kill and after ready); its time to ready, and every acknowledged command in
the journal.

Run: python bench/recovery.py [--creatures 100000] [--commands 2] [--repeat 3]
[--load-seconds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from benchenv import emit, header
from recovery_load import load_table, under_load
from spawn_ready import flask_run, free_port, spawn_to_ready, trivial_once

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from worldloop.config import Settings  # noqa: E402


def build(
    db: str,
    creatures: int,
    snapshot_every: int,
    recovery_seconds: float,
    per_tick: int,
    interim_before_crash: int,
) -> None:
    """Child process: journal ticks with ``Durability`` until the worst moment, then SIGKILL.

    Prints one JSON line (head tick, state hash, snapshots written) just before the kill.
    """
    import numpy as np

    from worldloop.commands import Command, CommandQueue
    from worldloop.demo.meadow import create_world
    from worldloop.durability import Durability
    from worldloop.store import SqlStore

    world = create_world(world_config(creatures))
    store = SqlStore(f"sqlite:///{db}")
    dur = Durability(store, snapshot_every=snapshot_every, recovery_seconds=recovery_seconds)
    dur.recover(world, CommandQueue(10))
    rng = random.Random(3)
    seq = 0
    written_at_start = dur.snapshots_written
    step_times: list[float] = []
    while True:
        cmds = []
        for _ in range(per_tick if len(world.ids) else 0):  # type: ignore[attr-defined]
            seq += 1  # (a meadow whose creatures all died takes no move command)
            eid = int(world.ids[rng.randrange(len(world.ids))])  # type: ignore[attr-defined]
            payload = world.validate(
                "move", {"entity_id": eid, "vx": rng.uniform(-5, 5), "vy": 1.0}, None
            )
            cmds.append(Command(id=uuid.uuid4().hex, seq=seq, type="move", payload=payload))
        t0 = time.perf_counter()
        outcomes = world.step(cmds)
        stepped = time.perf_counter() - t0
        step_times.append(stepped)
        dur.record(world, outcomes)
        due = dur.snapshot_due(world, stepped)
        enough = dur.snapshots_written - written_at_start >= interim_before_crash
        if due and enough and world.tick > 1:
            dur.drain()
            print(
                json.dumps(
                    {
                        "head": world.tick,
                        "alive": len(world.ids),  # type: ignore[attr-defined]
                        "state_hash": world.state_hash(),
                        "last_snapshot": dur.last_snapshot_tick,
                        "snapshots_written": dur.snapshots_written,
                        "step_ms": 1000 * float(np.median(step_times)),
                    }
                ),
                flush=True,
            )
            os.kill(os.getpid(), signal.SIGKILL)
        dur.after_tick(world, stepped)
        if due:
            dur.drain()  # the writer is free for the next one, as at 20 Hz


BENCH_TOKEN = secrets.token_urlsafe(24)
"""The admin token of the benchmarked server (it reads the recovered state through the API)."""

AREA_PER_CREATURE = 1250.0
"""World units² per creature: near the meadow's own equilibrium (its default 200 sheep on
1000 x 1000 settle near 640, ~1,560 units² each), so the killed world still has ~100,000
creatures after the 1,000 ticks the slowest policy runs (at 250 units² each, as before, it
starved to ~2,000 within 1,000 ticks, and that case replayed a small world)."""


def world_config(creatures: int) -> dict[str, str]:
    """The MEADOW_* settings of the benchmarked world (builder and server alike)."""
    side = f"{(creatures * AREA_PER_CREATURE) ** 0.5:.1f}"
    return {"MEADOW_ENTITIES": str(creatures), "MEADOW_WIDTH": side, "MEADOW_HEIGHT": side}


def server_env(
    db: str, instance: Path, creatures: int, env_extra: dict[str, str]
) -> dict[str, str]:
    """The environment of the benchmarked server: ``make run``'s defaults on the bench store."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a server that ran once has its bytecode
    env.update(
        {
            "PYTHONPATH": str(ROOT / "src"),
            "WORLDLOOP_STORE_URL": f"sqlite:///{db}",
            "WORLDLOOP_INSTANCE_PATH": str(instance),
            "WORLDLOOP_ADMIN_TOKEN": BENCH_TOKEN,
            "WORLDLOOP_START_PAUSED": "true",  # the state read below is the recovered one
            "WORLDLOOP_RUNNER": "process",
            "WORLDLOOP_GATEWAY": f"127.0.0.1:{free_port()}",
            **world_config(creatures),
            **env_extra,
        }
    )
    return env


TIMELINE = {
    "runner spawned": re.compile(r"worldloop: starting the runner"),
    "runner has the app": re.compile(r"runner pid \d+ loaded the app"),
    "world served": re.compile(r"runner pid \d+ serves world"),
}
"""Start-up log lines whose times (after the spawn) say where a restart's time goes."""
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z ")


def timeline(text: str, started_at: float) -> dict[str, float | None]:
    """Seconds from the spawn to each TIMELINE line of the server log (None: not logged)."""
    found: dict[str, float | None] = dict.fromkeys(TIMELINE)
    for line in text.splitlines():
        m = _STAMP.match(line)
        if m is None:
            continue
        for name, pattern in TIMELINE.items():
            if found[name] is None and pattern.search(line):
                at = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.UTC)
                found[name] = at.timestamp() - started_at
    return found


def restart(db: str, instance: Path, creatures: int, env_extra: dict[str, str]) -> dict[str, Any]:
    """Start the demo server on ``db``; seconds from spawn to /readyz 200, and its state."""
    port = free_port()
    env = server_env(db, instance, creatures, env_extra)
    log = instance / "server.log"
    argv = flask_run("worldloop.demo:create_app", port)
    started_at, ready, proc = spawn_to_ready(argv, env, log, port, ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        req = urllib.request.Request(
            base + "/api/v1/admin/snapshot",
            method="POST",
            headers={"Authorization": f"Bearer {BENCH_TOKEN}"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            state = json.loads(r.read())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    text = log.read_text()
    m = re.search(r"from the snapshot of tick (\d+) \+ (\d+) journaled ticks.* in ([\d.]+) s", text)
    return {
        "ready_s": ready,
        "tick": state["tick"],
        "state_hash": state["state_hash"],
        "snapshot_tick": int(m.group(1)) if m else None,
        "replayed": int(m.group(2)) if m else None,
        "recover_s": float(m.group(3)) if m else None,
        "timeline": timeline(text, started_at),
    }


def wait_runner_gone(instance: Path) -> None:
    """The killed server's runner (and its gateway) notice within a second and stop: wait
    until nobody holds the world's runner lock, so no run shares the machine with the last."""
    from worldloop.runner.ipc import endpoints
    from worldloop.runner.spawn import lock_free

    lock = endpoints(instance, "meadow").lock
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not lock_free(lock):
        time.sleep(0.05)


def restarts(
    db: str, case: Path, creatures: int, envs: list[dict[str, str]], repeat: int
) -> list[dict[str, Any]]:
    """``repeat`` restarts with each of ``envs`` (alternating, so that a load that moves
    touches each alike), each on a fresh copy of the killed builder's store; per env, the
    median run (by spawn-to-ready) with every run's spawn-to-ready."""
    pristine = case / "pristine"
    pristine.mkdir()
    files = sorted(Path(db).parent.glob(Path(db).name + "*"))
    for f in files:
        shutil.copy2(f, pristine / f.name)
    runs: list[list[dict[str, Any]]] = [[] for _ in envs]
    for i in range(repeat):
        for j, env in enumerate(envs):
            instance = case / f"run{i}-{j}"
            instance.mkdir()
            copy = instance / Path(db).name
            for f in files:
                shutil.copy2(pristine / f.name, instance / f.name)
            trivial = trivial_once(case.parent / "trivial")
            got = restart(str(copy), instance, creatures, env)
            runs[j].append({**got, "trivial_s": trivial})
            wait_runner_gone(instance)
            for f in instance.glob(copy.name + "*"):  # the logs stay, the copies go
                f.unlink()
    shutil.rmtree(pristine)
    found = []
    for of_env in runs:
        of_env.sort(key=lambda r: r["ready_s"])
        found.append(
            {
                **of_env[len(of_env) // 2],
                "all_ready_s": [r["ready_s"] for r in of_env],
                "all_trivial_s": [r["trivial_s"] for r in of_env],
                "all_states": [(r["tick"], r["state_hash"]) for r in of_env],
            }
        )
    return found


def build_store(case: Path, every: int, budget: float, creatures: int, per_tick: int) -> dict:
    """Run the builder (a child process) into ``case``/worldloop.db until it is killed at the
    policy's worst moment; what it printed just before (head tick, hash, alive count...)."""
    case.mkdir()
    db = str(case / "worldloop.db")
    interim = 2 if budget else 1  # steady state: the crash comes after a snapshot of the policy
    opts = {"every": every, "budget": budget, "commands": per_tick, "interim": interim}
    argv = [sys.executable, __file__, "--build", db, "--creatures", str(creatures)]
    argv += [str(a) for k, v in opts.items() for a in (f"--{k}", v)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != -signal.SIGKILL:
        raise RuntimeError(f"builder did not die by SIGKILL ({proc.returncode}): {proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def run_case(
    tmp: Path,
    label: str,
    every: int,
    budget: float,
    server_env: dict[str, str],
    creatures: int,
    per_tick: int,
    repeat: int,
    paired: list[tuple[str, dict[str, str]]] = [],  # noqa: B006 - never changed
) -> list[dict[str, Any]]:
    """One policy's store, restarted as ``server_env`` says and, alternating on the same
    store, as each of ``paired`` (label, more settings) says: a row each."""
    case = tmp / re.sub(r"\W+", "_", label)
    built = build_store(case, every, budget, creatures, per_tick)
    db = str(case / "worldloop.db")
    env = {
        "WORLDLOOP_SNAPSHOT_EVERY": str(every),
        "WORLDLOOP_RECOVERY_SECONDS": str(budget),
        **server_env,
    }
    size = sum(p.stat().st_size for p in case.glob("worldloop.db*"))
    envs = [env, *({**env, **more} for _, more in paired)]
    got = restarts(db, case, creatures, envs, repeat)
    labels = [label, *(name for name, _ in paired)]
    return [
        {"label": name, "built": built, "got": g, "db_mb": size / 1e6}
        for name, g in zip(labels, got, strict=True)
    ]


def run_under_load(
    tmp: Path, creatures: int, per_tick: int, repeat: int, seconds: float, built: Path | None
) -> list[str]:
    """The restart-under-load runs (bench/recovery_load.py), each on a fresh copy of a store
    killed as the default policy's worst case (``built``: the default case's, when this run
    built one), with its trivial-app baseline; ``seconds`` of load before the kill and after
    ready; their table."""
    case = tmp / "under_load"
    if built is None:
        build_store(case, 1000, Settings().recovery_seconds, creatures, per_tick)
    else:
        case.mkdir()
    files = sorted((built or case).glob("worldloop.db*"))
    runs = []
    for i in range(repeat):
        run = case / f"run{i}"
        run.mkdir()
        for f in files:
            shutil.copy2(f, run / f.name)
        trivial = trivial_once(tmp / "trivial")
        port = free_port()
        env = server_env(str(run / "worldloop.db"), run, creatures, {})
        argv = flask_run("worldloop.demo:create_app", port)
        db = str(run / "worldloop.db")
        got = under_load(run, db, argv, env, port, ROOT, before=seconds, after=seconds)
        runs.append((got, trivial))
        wait_runner_gone(run)
    return load_table(runs, seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--creatures", type=int, default=100_000)
    ap.add_argument("--commands", type=int, default=2, help="commands journaled per tick")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--build", help=argparse.SUPPRESS)
    ap.add_argument("--every", type=int, default=1000, help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--interim", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument(
        "--cases",
        default="old,100,default,fresh,numba",
        help="old, 100, default, fresh (paired with default), numba",
    )
    ap.add_argument("--repeat", type=int, default=3, help="restarts per case (median shown)")
    ap.add_argument("--no-load", action="store_true", help="skip the restart under load")
    ap.add_argument(
        "--load-seconds", type=float, default=3.0, help="load before the kill and after ready"
    )
    args = ap.parse_args()
    load_at_start = os.getloadavg()[0]
    if args.build:
        build(args.build, args.creatures, args.every, args.budget, args.commands, args.interim)
        return
    default_budget = Settings().recovery_seconds
    cases = {
        "old": ("every 1,000 ticks (the old default)", 1000, 0.0, {}),
        "100": ("every 100 ticks", 100, 0.0, {}),
        "default": (
            f"default: every 1,000 ticks or {default_budget:g} s of stepping (>= 5 writes)",
            1000,
            default_budget,
            {},
        ),
        "numba": (
            "default, server with MEADOW_KERNELS=numba",
            1000,
            default_budget,
            {"MEADOW_KERNELS": "numba"},
        ),
    }
    tmp = Path(tempfile.mkdtemp(prefix="wl-recovery-"))
    from worldloop.demo.kernels import numba_available

    names = [c for c in args.cases.split(",") if c != "numba" or numba_available()]
    compileall.compile_dir(ROOT / "src" / "worldloop", quiet=1)  # as a server that ran once
    repeat = max(1, args.repeat)
    fresh = (
        "default, runner a fresh interpreter (WORLDLOOP_RUNNER_FORK=false, as before; same "
        "store, runs alternating with the row above)",
        {"WORLDLOOP_RUNNER_FORK": "false"},
    )
    rows = [
        row
        for c in names
        if c != "fresh"
        for row in run_case(
            tmp,
            *cases[c],
            args.creatures,
            args.commands,
            repeat,
            paired=[fresh] if c == "default" and "fresh" in names else [],
        )
    ]
    default_case = tmp / re.sub(r"\W+", "_", cases["default"][0])  # the same policy's store
    built = default_case if "default" in names else None
    loaded = (
        []
        if args.no_load
        else run_under_load(tmp, args.creatures, args.commands, repeat, args.load_seconds, built)
    )
    trivial = sorted(t for r in rows for t in r["got"]["all_trivial_s"])
    trivial_s = trivial[len(trivial) // 2]
    base = rows[0]["got"]["ready_s"]

    def runs(values: list[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    lines = [
        *header("Restart to ready"),
        f"1-min load average at the start of the run {load_at_start:.1f} (the header's is at "
        "its end).  ",
        "Store: SQLite (WAL, synchronous=FULL).  ",
        f"World: demo meadow, {args.creatures:,} creatures at {AREA_PER_CREATURE:g} units² "
        f"each, {args.commands} commands journaled per tick. The builder is killed (SIGKILL) on "
        "the tick just before its next snapshot would start; the demo server is then spawned "
        "on the same store as `make run` starts it (`flask run`, the world in its runner "
        "process, the stream gateway beside it) and polled for `/readyz` 200, "
        f"{repeat} times per case on fresh copies of the store (the median run is shown).",
        "",
        "| snapshot policy | step ms (median) | snapshot tick | ticks replayed | recovery s "
        "| spawn to /readyz 200 s | all runs s | vs trivial Flask app | ratio | store MB "
        "| creatures at the kill | tick and hash match |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|:---:|",
        f"| baseline: a trivial Flask app (one route, `flask run`) | | | | | {trivial_s:.2f} "
        f"| {runs(trivial)} | 1.00 | | | | |",
    ]
    for r in rows:
        b, g = r["built"], r["got"]
        ok = all(seen == (b["head"], b["state_hash"]) for seen in g["all_states"])
        lines.append(
            f"| {r['label']} | {b['step_ms']:.1f} | {g['snapshot_tick']} | {g['replayed']} "
            f"| {g['recover_s']:.2f} | {g['ready_s']:.2f} | {runs(g['all_ready_s'])} "
            f"| {g['ready_s'] / g['trivial_s']:.2f} | {g['ready_s'] / base:.2f} "
            f"| {r['db_mb']:.0f} | {b['alive']:,} | {'yes' if ok else 'NO'} |"
        )
    lines += [
        "",
        "Recovery is what the server logs for loading the snapshot, replaying the journal and "
        "checking its hashes; the ratio is to the first case. A trivial Flask app's "
        "spawn-to-200 is measured just before every restart (the baseline row lists them all): "
        "it shows what the machine gives any Flask server at that moment, and each case's "
        "`vs trivial Flask app` divides its median run by the trivial app's figure measured "
        "just before that run.",
        "",
        "Where the time goes (the median run's start-up log, seconds after the spawn):",
        "",
        "| snapshot policy | runner spawned | runner has the app | recovered world served "
        "| /readyz 200 |",
        "|---|---:|---:|---:|---:|",
    ]

    def at(value: float | None) -> str:
        return "?" if value is None else f"{value:.2f}"

    for r in rows:
        g = r["got"]
        t = g["timeline"]
        lines.append(
            f"| {r['label']} | {at(t['runner spawned'])} | {at(t['runner has the app'])} "
            f"| {at(t['world served'])} | {g['ready_s']:.2f} |"
        )
    lines.append("")
    lines += loaded
    emit(lines, args.out)


if __name__ == "__main__":
    main()
