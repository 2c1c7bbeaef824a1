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
and also once ``WORLDLOOP_RECOVERY_SECONDS`` of stepping has built up since the last snapshot),
and the defaults with a server that loads the numba kernels (``MEADOW_KERNELS=numba``, loaded
in the background while the world recovers on NumPy).

Run: python bench/recovery.py [--creatures 100000] [--commands 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from benchenv import header

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


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
        for _ in range(per_tick):
            seq += 1
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

AREA_PER_CREATURE = 250.0
"""World units² per creature, as in meadow_tick.py: a density at which the population lives on
(100,000 creatures on the default 1000 x 1000 meadow starve within a few hundred ticks)."""


def world_config(creatures: int) -> dict[str, str]:
    """The MEADOW_* settings of the benchmarked world (builder and server alike)."""
    side = f"{(creatures * AREA_PER_CREATURE) ** 0.5:.1f}"
    return {"MEADOW_ENTITIES": str(creatures), "MEADOW_WIDTH": side, "MEADOW_HEIGHT": side}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def restart(db: str, instance: Path, creatures: int, env_extra: dict[str, str]) -> dict[str, Any]:
    """Start the demo server on ``db``; seconds from spawn to /readyz 200, and its state."""
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(ROOT / "src"),
            "WORLDLOOP_STORE_URL": f"sqlite:///{db}",
            "WORLDLOOP_INSTANCE_PATH": str(instance),
            "WORLDLOOP_ADMIN_TOKEN": BENCH_TOKEN,
            "WORLDLOOP_START_PAUSED": "true",  # the state read below is the recovered one
            **world_config(creatures),
            **env_extra,
        }
    )
    log = instance / "server.log"
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flask",
                "--app",
                "worldloop.demo:create_app",
                "run",
                "--port",
                str(port),
                "--no-reload",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.01)
        ready = time.perf_counter() - t0
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
    }


def run_case(
    tmp: Path,
    label: str,
    every: int,
    budget: float,
    server_env: dict[str, str],
    creatures: int,
    per_tick: int,
) -> dict[str, Any]:
    case = tmp / re.sub(r"\W+", "_", label)
    case.mkdir()
    db = str(case / "worldloop.db")
    interim = 2 if budget else 1  # steady state: the crash comes after a snapshot of the policy
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--build",
            db,
            "--creatures",
            str(creatures),
            "--every",
            str(every),
            "--budget",
            str(budget),
            "--commands",
            str(per_tick),
            "--interim",
            str(interim),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != -signal.SIGKILL:
        raise RuntimeError(f"builder did not die by SIGKILL ({proc.returncode}): {proc.stderr}")
    built = json.loads(proc.stdout.strip().splitlines()[-1])
    env = {
        "WORLDLOOP_SNAPSHOT_EVERY": str(every),
        "WORLDLOOP_RECOVERY_SECONDS": str(budget),
        **server_env,
    }
    got = restart(db, case, creatures, env)
    size = sum(p.stat().st_size for p in case.glob("worldloop.db*"))
    return {"label": label, "built": built, "got": got, "db_mb": size / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--creatures", type=int, default=100_000)
    ap.add_argument("--commands", type=int, default=2, help="commands journaled per tick")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--build", help=argparse.SUPPRESS)
    ap.add_argument("--every", type=int, default=1000, help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--interim", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--cases", default="old,100,default,numba", help="old, 100, default, numba")
    args = ap.parse_args()
    if args.build:
        build(args.build, args.creatures, args.every, args.budget, args.commands, args.interim)
        return
    from worldloop.config import Settings

    default_budget = Settings().recovery_seconds
    cases = {
        "old": ("every 1,000 ticks (the old default)", 1000, 0.0, {}),
        "100": ("every 100 ticks", 100, 0.0, {}),
        "default": (
            f"default: every 1,000 ticks or {default_budget:g} s of stepping",
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
    rows = [run_case(tmp, *cases[c], args.creatures, args.commands) for c in names]
    base = rows[0]["got"]["ready_s"]

    lines = [
        *header("Restart to ready"),
        "Store: SQLite (WAL, synchronous=FULL).  ",
        f"World: demo meadow, {args.creatures:,} creatures at {AREA_PER_CREATURE:g} units² "
        f"each, {args.commands} commands journaled per tick. The builder is killed (SIGKILL) on "
        "the tick just before its next snapshot would start; the demo server is then spawned "
        "on the same store and polled for `/readyz` 200.",
        "",
        "| snapshot policy | step ms (median) | snapshot tick | ticks replayed | recovery s "
        "| spawn to /readyz 200 s | ratio | store MB | tick and hash match |",
        "|---|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        b, g = r["built"], r["got"]
        ok = g["tick"] == b["head"] and g["state_hash"] == b["state_hash"]
        lines.append(
            f"| {r['label']} | {b['step_ms']:.1f} | {g['snapshot_tick']} | {g['replayed']} "
            f"| {g['recover_s']:.2f} | {g['ready_s']:.2f} | {g['ready_s'] / base:.2f} "
            f"| {r['db_mb']:.0f} | {'yes' if ok else 'NO'} |"
        )
    lines += [
        "",
        "Recovery is what the server logs for loading the snapshot, replaying the journal and "
        "checking its hashes; the rest of spawn-to-ready is the interpreter, imports, the app "
        "and opening the store.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
