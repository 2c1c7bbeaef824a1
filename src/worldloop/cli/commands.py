"""The commands: info, verify, restore, snapshot. None takes the world's lease, so each runs
beside a live server: ``info``, ``verify`` and ``restore`` only read; ``snapshot`` adds one
snapshot row (a deterministic rebuild of the last durable tick, which the server would also
accept)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from flask.cli import ScriptInfo

from ..durability import ReplayResult, replay
from ..errors import WorldLoopError
from ..snapshot import dumps
from .loading import CliError, load_target, masked, open_store
from .output import emit, n, progress_bar, short, size, table, when

F = TypeVar("F", bound=Callable[..., Any])


def set_app(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--app``/``FLASK_APP`` into Flask's ScriptInfo (shared with ``flask --app``)."""
    if value is None:
        return None
    info = ctx.ensure_object(ScriptInfo)
    from_env = (
        ctx.get_parameter_source(param.name or "app") is click.core.ParameterSource.ENVIRONMENT
    )
    if info.app_import_path is None or not from_env:
        info.app_import_path = value
    return value


app_option = click.option(
    "-A",
    "--app",
    metavar="IMPORT",
    envvar="FLASK_APP",
    expose_value=False,
    is_eager=True,
    callback=set_app,
    help="The Flask app, as for 'flask --app': 'module:name', a factory 'module:create_app()' "
    "or a file path (default: $FLASK_APP). Its config names the store.",
)


def target_options(f: F) -> F:
    """--app / --world --store --schema, and --json, on every command."""
    f = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(f)
    f = click.option("--schema", metavar="NAME", help="PostgreSQL schema holding the tables.")(f)
    f = click.option("--store", metavar="URL", help="Store URL, e.g. sqlite:///instance/w.db.")(f)
    f = click.option(
        "--world", "world_factory", metavar="MODULE:FACTORY", help="World factory (with --store)."
    )(f)
    return app_option(f)


@click.command("info")
@target_options
@click.pass_context
def info(
    ctx: click.Context,
    world_factory: str | None,
    store: str | None,
    schema: str | None,
    as_json: bool,
) -> None:
    """Show the journal head and the snapshots."""
    t = load_target(ctx, world_factory, store, schema)
    name = t.world.name
    s = open_store(t, readonly=True)
    try:
        first, head, count = _run(lambda: s.journal_range(name))
        snaps = _run(lambda: s.snapshots(name))
    finally:
        s.close()
    data = {
        "world": name,
        "store": masked(t.url),
        "head": head,
        "first_journaled_tick": first,
        "journaled_commands": count,
        "snapshots": [dataclasses.asdict(x) for x in snaps],
    }
    lines: list[tuple[str, Any]] = [
        ("world", name),
        ("store", masked(t.url)),
        ("head", f"tick {n(head)}" if head is not None else "nothing journaled yet"),
        ("journal", f"{n(count)} commands" + (f", from tick {n(first)}" if count else "")),
        ("snapshots", len(snaps)),
    ]
    if snaps:
        rows = [["tick", "state hash", "size", "written"]]
        rows += [[n(x.tick), short(x.state_hash), size(x.size), when(x.created_at)] for x in snaps]
        lines += [("", line) for line in table(rows)]
    emit(data, as_json, lines)


@click.command("verify")
@target_options
@click.pass_context
def verify(
    ctx: click.Context,
    world_factory: str | None,
    store: str | None,
    schema: str | None,
    as_json: bool,
) -> None:
    """Replay the journal and check every recorded state hash.

    The replay starts from the oldest snapshot, so every later snapshot is checked too.
    """
    t = load_target(ctx, world_factory, store, schema)
    name = t.world.name
    s = open_store(t, readonly=True)
    try:
        snaps = _run(lambda: s.snapshots(name))
        if not snaps:
            raise CliError(f"no snapshot of world {name!r} in the store")
        rec = _run(lambda: s.load(name, snapshot_tick=snaps[0].tick))
    finally:
        s.close()
    checkpoints = {x.tick: x.state_hash for x in snaps[1:] if x.tick <= (rec.head_tick or 0)}
    rec = dataclasses.replace(rec, hashes={**rec.hashes, **checkpoints})
    try:
        with progress_bar(f"verifying {name}") as bar:
            result = replay(t.world, rec, progress=bar)
    except WorldLoopError as exc:
        data = {"world": name, "ok": False, "error": exc.message, **exc.details}
        emit(data, as_json, [("world", name), ("ok", "NO"), ("error", exc.message)])
        ctx.exit(1)
    data = {
        "world": name,
        "ok": True,
        **_replayed(result),
        "commands": result.commands,
        "hashes_checked": result.hashes_checked,
    }
    lines = [
        ("world", name),
        ("ok", "yes: the replay matches every recorded state hash"),
        ("hashes checked", n(result.hashes_checked)),
        *_replayed_lines(result),
        ("commands", n(result.commands)),
    ]
    emit(data, as_json, lines)


@click.command("restore")
@target_options
@click.option("--tick", type=int, default=None, help="The tick to rebuild (default: the last).")
@click.option("--out", type=click.Path(path_type=Path), help="Write the full state there (.npz).")
@click.option(
    "--view", type=click.Path(path_type=Path), help="Write the world's view there (JSON)."
)
@click.pass_context
def restore(
    ctx: click.Context,
    world_factory: str | None,
    store: str | None,
    schema: str | None,
    as_json: bool,
    tick: int | None,
    out: Path | None,
    view: Path | None,
) -> None:
    """Rebuild the state at a journaled tick (read only)."""
    from ..store.codec import encode_state

    t = load_target(ctx, world_factory, store, schema)
    w = t.world
    s = open_store(t, readonly=True)
    try:
        rec = _run(lambda: s.load(w.name, upto=tick))
    finally:
        s.close()
    with progress_bar(f"restoring {w.name}") as bar:
        result = _run(lambda: replay(w, rec, progress=bar))
    if out:
        out.write_bytes(encode_state(w.full_state()))
    if view:
        view.write_bytes(
            dumps({"world": w.name, "tick": w.tick, "summary": w.summary(), "data": w.view()})
        )
    lines = [("world", w.name), *_replayed_lines(result)]
    lines += [(label, str(p)) for label, p in (("state written", out), ("view written", view)) if p]
    emit({"world": w.name, **_replayed(result)}, as_json, lines)


@click.command("snapshot")
@target_options
@click.pass_context
def snapshot(
    ctx: click.Context,
    world_factory: str | None,
    store: str | None,
    schema: str | None,
    as_json: bool,
) -> None:
    """Store a snapshot of the last durable tick."""
    t = load_target(ctx, world_factory, store, schema)
    w = t.world
    s = open_store(t, readonly=False)
    try:
        rec = _run(lambda: s.load(w.name))
        with progress_bar(f"rebuilding {w.name}") as bar:
            result = _run(lambda: replay(w, rec, progress=bar))
        _run(lambda: s.save_snapshot(w.name, w.tick, w.full_state(), result.state_hash))
    finally:
        s.close()
    data = {"world": w.name, "snapshot_tick": result.tick, "state_hash": result.state_hash}
    lines = [("world", w.name), ("stored", f"a snapshot of tick {n(result.tick)}")]
    emit(data, as_json, [*lines, ("state hash", short(result.state_hash))])


COMMANDS = (info, verify, restore, snapshot)

T = TypeVar("T")


def _run(call: Callable[[], T]) -> T:
    """A store or replay call; its WorldLoopError becomes one line on stderr, exit status 2."""
    try:
        return call()
    except WorldLoopError as exc:
        raise CliError(exc.message) from None


def _replayed(result: ReplayResult) -> dict[str, Any]:
    return {
        "tick": result.tick,
        "state_hash": result.state_hash,
        "from_snapshot": result.snapshot_tick,
        "replayed_ticks": result.ticks,
        "seconds": round(result.seconds, 4),
    }


def _replayed_lines(result: ReplayResult) -> list[tuple[str, Any]]:
    return [
        ("tick", n(result.tick)),
        ("state hash", short(result.state_hash)),
        (
            "replayed",
            f"{n(result.ticks)} ticks from the snapshot of tick {n(result.snapshot_tick)}",
        ),
        ("time", f"{result.seconds:.3f} s"),
    ]
