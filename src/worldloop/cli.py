"""The ``worldloop`` command: snapshot, restore and verify a world's store.

The world comes from an app factory (``--app worldloop.demo:create_app``: its config names the
store) or from a world factory plus a URL (``--world pkg.mod:create_world --store URL``). These
commands never take the world's lease, so they run beside a live server: ``restore``,
``verify`` and ``info`` only read; ``snapshot`` adds one snapshot row (a deterministic
rebuild of the last durable tick, which the server would also accept).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .durability import ReplayResult, replay
from .errors import WorldLoopError
from .snapshot import dumps
from .store import Store, open_store
from .store.codec import encode_state
from .world import World


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """A fresh world object (its state comes from the store) and where its store is."""

    world: World
    url: str
    schema: str | None


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        target = _target(args)
        return int(args.func(args, target))
    except WorldLoopError as exc:
        print(f"worldloop: {exc.message}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    src = common.add_argument_group("which world")
    src.add_argument("--app", help="Flask app factory MODULE:FACTORY (its config names the store)")
    src.add_argument("--world", help="world factory MODULE:FACTORY (with --store)")
    src.add_argument("--store", help="store URL, e.g. sqlite:///instance/worldloop.db")
    src.add_argument("--schema", help="PostgreSQL schema holding the tables")

    parser = argparse.ArgumentParser(prog="worldloop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("snapshot", parents=[common], help="store a snapshot of the last tick")
    p.set_defaults(func=_cmd_snapshot)

    p = sub.add_parser("restore", parents=[common], help="rebuild the state at a journaled tick")
    p.add_argument("--tick", type=int, help="the tick to rebuild (default: the last one)")
    p.add_argument("--out", type=Path, help="write the full state there (.npz)")
    p.add_argument("--json", type=Path, help="write the world's view there (JSON)")
    p.set_defaults(func=_cmd_restore)

    p = sub.add_parser("verify", parents=[common], help="replay the journal and check hashes")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("info", parents=[common], help="show the head, journal and snapshots")
    p.set_defaults(func=_cmd_info)
    return parser


def _target(args: argparse.Namespace) -> Target:
    from .extension import import_factory

    if args.app:
        os.environ["WORLDLOOP_AUTOSTART"] = "never"  # never take the lease from the CLI
        factory: Any = import_factory(args.app)
        return target_of_app(factory(), args.store, args.schema)
    if args.world and args.store:
        config = {k: _decode(v) for k, v in os.environ.items()}
        world = import_factory(args.world)(config)
        url, schema = args.store, args.schema
    else:
        raise WorldLoopError("give --app MODULE:FACTORY, or --world MODULE:FACTORY --store URL")
    if not isinstance(world, World):
        raise WorldLoopError("the world factory did not return a worldloop.World")
    return Target(world, url, schema)


def target_of_app(app: Any, store: str | None = None, schema: str | None = None) -> Target:
    """The app's own world object (jobs bound, never started) and its store."""
    from .state import state_of

    state = state_of(app)
    if state.runtime.running:
        raise WorldLoopError("the world is running in this process; run this from another one")
    url = store or state.store_url
    return Target(state.runtime.world, url, schema or state.settings.store_schema)


def _open(t: Target, *, readonly: bool = False) -> Store:
    """The target's store, by its URL (the SQL store loads only for a SQL URL)."""
    return open_store(t.url, schema=t.schema, readonly=readonly)


def _cmd_snapshot(args: argparse.Namespace, t: Target) -> int:
    store = _open(t)
    try:
        result = replay(t.world, store.load(t.world.name))
        store.save_snapshot(t.world.name, t.world.tick, t.world.full_state(), result.state_hash)
    finally:
        store.close()
    _emit({"world": t.world.name, "snapshot_tick": result.tick, "state_hash": result.state_hash})
    return 0


def _cmd_restore(args: argparse.Namespace, t: Target) -> int:
    store = _open(t, readonly=True)
    try:
        result = replay(t.world, store.load(t.world.name, upto=args.tick))
    finally:
        store.close()
    if args.out:
        args.out.write_bytes(encode_state(t.world.full_state()))
    if args.json:
        w = t.world
        args.json.write_bytes(
            dumps({"world": w.name, "tick": w.tick, "summary": w.summary(), "data": w.view()})
        )
    _emit({"world": t.world.name, **_replayed(result)})
    return 0


def _cmd_verify(args: argparse.Namespace, t: Target) -> int:
    name = t.world.name
    store = _open(t, readonly=True)
    try:
        snaps = store.snapshots(name)
        if not snaps:
            raise WorldLoopError(f"no snapshot of world {name!r} in the store")
        rec = store.load(name, snapshot_tick=snaps[0].tick)
    finally:
        store.close()
    checkpoints = {s.tick: s.state_hash for s in snaps[1:] if s.tick <= (rec.head_tick or 0)}
    rec = dataclasses.replace(rec, hashes={**rec.hashes, **checkpoints})
    try:
        result = replay(t.world, rec)
    except WorldLoopError as exc:
        _emit({"world": name, "ok": False, "error": exc.message, **exc.details})
        return 1
    _emit(
        {
            "world": name,
            "ok": True,
            **_replayed(result),
            "commands": result.commands,
            "hashes_checked": result.hashes_checked,
        }
    )
    return 0


def _cmd_info(args: argparse.Namespace, t: Target) -> int:
    name = t.world.name
    store = _open(t, readonly=True)
    try:
        first, head, count = store.journal_range(name)
        snaps = store.snapshots(name)
    finally:
        store.close()
    _emit(
        {
            "world": name,
            "head": head,
            "first_journaled_tick": first,
            "journaled_commands": count,
            "snapshots": [dataclasses.asdict(s) for s in snaps],
        }
    )
    return 0


COMMANDS = {
    "snapshot": _cmd_snapshot,
    "restore": _cmd_restore,
    "verify": _cmd_verify,
    "info": _cmd_info,
}


def flask_group() -> Any:
    """``flask world snapshot|restore|verify|info`` on the current app (registered by init_app)."""
    import click
    from flask import current_app
    from flask.cli import with_appcontext

    @click.group("world", help="Inspect, verify and snapshot the world's store.")
    def group() -> None:
        pass

    def run(name: str, **options: Any) -> None:
        args = argparse.Namespace(**{"tick": None, "out": None, "json": None, **options})
        try:
            code = COMMANDS[name](args, target_of_app(current_app))
        except WorldLoopError as exc:
            raise click.ClickException(exc.message) from exc
        if code:
            raise SystemExit(code)

    @group.command("snapshot", help="Store a snapshot of the last durable tick.")
    @with_appcontext
    def snapshot() -> None:
        run("snapshot")

    @group.command("restore", help="Rebuild the state at a journaled tick.")
    @click.option("--tick", type=int, default=None, help="The tick (default: the last one).")
    @click.option("--out", type=click.Path(path_type=Path), default=None, help="Write .npz here.")
    @click.option(
        "--json",
        "json_",
        type=click.Path(path_type=Path),
        default=None,
        help="Write the world's view here as JSON.",
    )
    @with_appcontext
    def restore(tick: int | None, out: Path | None, json_: Path | None) -> None:
        run("restore", tick=tick, out=out, json=json_)

    @group.command("verify", help="Replay the journal and compare state hashes.")
    @with_appcontext
    def verify() -> None:
        run("verify")

    @group.command("info", help="Show the journal head and the snapshots.")
    @with_appcontext
    def info() -> None:
        run("info")

    return group


def _replayed(result: ReplayResult) -> dict[str, Any]:
    return {
        "tick": result.tick,
        "state_hash": result.state_hash,
        "from_snapshot": result.snapshot_tick,
        "replayed_ticks": result.ticks,
        "seconds": round(result.seconds, 4),
    }


def _emit(data: dict[str, Any]) -> None:
    print(json.dumps(data, sort_keys=True))


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


if __name__ == "__main__":
    sys.exit(main())
