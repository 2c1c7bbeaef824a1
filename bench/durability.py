"""Durability costs: journal cost per tick, snapshot stall, and recovery time.

Runs the demo world with N creatures (default 100,000) on SQLite and PostgreSQL and prints a
markdown table. Baselines are measured in the same run: the same ticks without a store, and
the same replay without loading anything. Usage:

    python bench/durability.py [--creatures 100000] [--ticks 2000] [--journal-ticks 300]
        [--commands 20] [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test] [--out FILE]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from benchenv import header, meadow_config  # noqa: E402
from worldloop.commands import Command, CommandQueue  # noqa: E402
from worldloop.demo.meadow import create_world  # noqa: E402
from worldloop.durability import Durability, copy_state  # noqa: E402
from worldloop.store import SqlStore  # noqa: E402
from worldloop.store.codec import encode_state  # noqa: E402
from worldloop.world import World  # noqa: E402


def make_world(creatures: int) -> World:
    return create_world({**meadow_config(creatures), "MEADOW_SEED": "1"})


def commands_for(world: World, tick: int, n: int, rng: random.Random) -> list[Command]:
    """``n`` valid commands through the world's own validation (move creatures around)."""
    out = []
    for j in range(n):
        payload = world.validate(
            "move",
            {"entity_id": rng.randint(1, 1000), "vx": rng.uniform(-5, 5), "vy": 1.0},
            None,
        )
        out.append(Command(id=uuid.uuid4().hex, seq=tick * 1000 + j, type="move", payload=payload))
    return out


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ms(xs: list[float]) -> str:
    xs = sorted(xs)
    p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
    return f"{statistics.mean(xs) * 1e3:.2f} / {p99 * 1e3:.2f}"


def journal_cost(
    store: SqlStore | None, creatures: int, ticks: int, per_tick: int
) -> tuple[list[float], int]:
    """Per-tick time of step (+ journal write when a store is given), hash every 100 ticks."""
    world = make_world(creatures)
    rng = random.Random(5)
    dur = None
    if store is not None:
        dur = Durability(store, snapshot_every=0, hash_every=100)
        dur.recover(world, CommandQueue(10))
    times = []
    for t in range(ticks):
        cmds = commands_for(world, t, per_tick, rng)
        t0 = time.perf_counter()
        outcomes = world.step(cmds)
        if dur is not None:
            dur.record(world, outcomes)
        times.append(time.perf_counter() - t0)
    return times, world.tick


def build_journal(store: SqlStore, creatures: int, ticks: int, per_tick: int) -> str:
    world = make_world(creatures)
    rng = random.Random(9)
    dur = Durability(store, snapshot_every=0, hash_every=100)
    dur.recover(world, CommandQueue(10))
    for t in range(ticks):
        dur.record(world, world.step(commands_for(world, t, per_tick, rng)))
    return world.state_hash()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--creatures", type=int, default=100_000)
    ap.add_argument("--ticks", type=int, default=2_000, help="journaled ticks to recover")
    ap.add_argument("--journal-ticks", type=int, default=300, help="ticks for the per-tick cost")
    ap.add_argument("--commands", type=int, default=20, help="commands per tick")
    ap.add_argument("--recovery-commands", type=int, default=2, help="commands per tick")
    ap.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="wl-bench-"))
    backends: list[tuple[str, Callable[[], SqlStore], Callable[[], None]]] = []
    backends.append(
        ("SQLite (WAL, synchronous=FULL)", lambda: SqlStore(f"sqlite:///{tmp}/b.db"), lambda: None)
    )
    schema = f"wl_bench_{uuid.uuid4().hex[:8]}"
    pg_ok = True
    try:
        SqlStore(args.pg, schema=schema).open()
    except Exception as exc:
        pg_ok = False
        print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
    if pg_ok:

        def drop() -> None:
            s = SqlStore(args.pg, schema=schema)
            s.drop_schema()
            s.close()

        backends.append(("PostgreSQL", lambda: SqlStore(args.pg, schema=schema), drop))

    n = args.creatures
    lines = [
        *header("Durability benchmark"),
        f"World: demo meadow, {n:,} creatures; state hash recorded every 100 ticks.  ",
        "",
        f"## Journal cost per tick ({args.journal_ticks} ticks, {args.commands} commands/tick)",
        "",
        "| store | ms/tick mean / p99 | journal ms/tick (mean) | ratio to no store |",
        "|---|---|---|---|",
    ]
    base, _ = journal_cost(None, n, args.journal_ticks, args.commands)
    lines.append(f"| none (baseline: step only) | {ms(base)} | 0 | 1.00 |")
    for label, make, drop in backends:
        store = make()
        times, _ = journal_cost(store, n, args.journal_ticks, args.commands)
        store.close()
        drop()
        extra = (statistics.mean(times) - statistics.mean(base)) * 1e3
        ratio = statistics.mean(times) / statistics.mean(base)
        lines.append(f"| {label} | {ms(times)} | {extra:.2f} | {ratio:.2f} |")

    world = make_world(n)
    world.step([])
    copy_s = statistics.median([timed(lambda: copy_state(world)) for _ in range(5)])
    state = copy_state(world)
    enc_s = statistics.median([timed(lambda: encode_state(state)) for _ in range(3)])
    size = len(encode_state(state))
    lines += [
        "",
        "## Snapshot: loop-thread stall vs background work",
        "",
        "| part | where | ms |",
        "|---|---|---|",
        f"| copy the state (arrays) | loop thread | {copy_s * 1e3:.1f} |",
        f"| encode ({size / 1e6:.1f} MB) | writer thread | {enc_s * 1e3:.1f} |",
    ]
    for label, make, drop in backends:
        store = make()
        store.open()
        st = statistics.median(
            [timed(lambda t=t, s=store: s.save_snapshot("snap", t, state, "x")) for t in range(3)]
        )
        store.close()
        drop()
        lines.append(f"| encode + write, {label} | writer thread | {st * 1e3:.1f} |")

    lines += [
        "",
        f"## Recovery: snapshot at tick 0 + {args.ticks:,} journaled ticks "
        f"({args.recovery_commands} commands/tick)",
        "",
        "| store | recovery s | replay-only baseline s | ratio | hash matches |",
        "|---|---|---|---|---|",
    ]
    w0 = make_world(n)
    rng = random.Random(9)
    cmds = [commands_for(w0, t, args.recovery_commands, rng) for t in range(args.ticks)]
    replay_s = timed(lambda: [w0.step(c) for c in cmds])
    for label, make, drop in backends:
        store = make()
        expected = build_journal(store, n, args.ticks, args.recovery_commands)
        store.close()
        store = make()
        world = make_world(n)
        rec_s = timed(lambda s=store, w=world: Durability(s).recover(w, CommandQueue(10)))
        ok = world.state_hash() == expected
        store.close()
        drop()
        lines.append(f"| {label} | {rec_s:.2f} | {replay_s:.2f} | {rec_s / replay_s:.2f} | {ok} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or ROOT / "bench" / "results" / "durability.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
