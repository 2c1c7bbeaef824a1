"""Find the world a CLI command works on: from a Flask app, or from a world factory + a store URL.

Apps load the way ``flask --app`` loads them (Flask's own ``ScriptInfo``: ``module:name``, a
factory call or a file path, the current folder on ``sys.path``, ``FLASK_APP``), always inside
:func:`worldloop._loading.inspecting`, so the extension builds the world but never starts it
nor takes its lease. The CLI reads the app's world through ``app.extensions`` and never imports
the extension.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import sys
from typing import Any

import click
from flask import Flask
from flask.cli import NoAppException, ScriptInfo

from .._loading import inspecting
from ..errors import WorldLoopError
from ..state import WorldLoopState
from ..world import World


class CliError(click.ClickException):
    """One line on stderr (``Error: ...``), no traceback, exit status 2."""

    exit_code = 2


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """A fresh world object (its state comes from the store) and where its store is."""

    world: World
    url: str
    schema: str | None


def load_target(
    ctx: click.Context, world: str | None, store: str | None, schema: str | None
) -> Target:
    """The world of ``--world`` + ``--store``, or else of the app (``--app``/``FLASK_APP``)."""
    if world is not None:
        if store is None:
            raise CliError("--world needs --store URL (or give --app instead)")
        return Target(load_world(world), store, schema)
    app = load_app(ctx)
    return target_of_app(app, store, schema, where=ctx.ensure_object(ScriptInfo).app_import_path)


def load_app(ctx: click.Context) -> Flask:
    """The app of ``--app`` (or ``FLASK_APP``), loaded as ``flask`` loads it, never started."""
    info = ctx.ensure_object(ScriptInfo)
    where = info.app_import_path
    try:
        with inspecting():
            return info.load_app()
    except NoAppException as exc:
        if where is None and info.create_app is None:
            raise CliError(
                "no app: give --app MODULE:APP (or set FLASK_APP), "
                "or --world MODULE:FACTORY --store URL"
            ) from None
        raise CliError(
            f"cannot load the app {where!r}: {_one_line(exc.format_message())}"
        ) from None
    except WorldLoopError as exc:
        raise CliError(f"the app {where!r} cannot set up its world: {exc.message}") from None
    except Exception as exc:
        name = type(exc).__name__
        raise CliError(f"cannot load the app {where!r}: {name}: {_one_line(str(exc))}") from None


def load_world(spec: str) -> World:
    """``MODULE:FACTORY`` (current folder on the path), called with the environment as config."""
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        factory = getattr(importlib.import_module(module_name), attr or "create_world")
    except (ImportError, AttributeError) as exc:
        raise CliError(f"cannot import the world factory {spec!r}: {exc}") from None
    config = {k: _decode(v) for k, v in os.environ.items()}
    try:
        with inspecting():
            built = factory(config)
    except WorldLoopError as exc:
        raise CliError(f"the world factory {spec!r} failed: {exc.message}") from None
    if not isinstance(built, World):
        raise CliError(f"the world factory {spec!r} did not return a worldloop.World")
    return built


def target_of_app(
    app: Flask, store: str | None = None, schema: str | None = None, *, where: str | None = None
) -> Target:
    """The app's own world object (jobs bound, never started) and its store.

    The one place that reads the app's worldloop state (``app.extensions["worldloop"]``).
    """
    state = app.extensions.get("worldloop")
    if not isinstance(state, WorldLoopState):
        raise CliError(
            f"the app {where or app.import_name!r} does not use worldloop "
            "(no WorldLoop(app) or loop.init_app(app) when it is created)"
        )
    if state.runtime.running:
        raise CliError("the world is running in this process; run this from another one")
    url = store or state.store_url
    return Target(state.runtime.world, url, schema or state.settings.store_schema)


def open_store(t: Target, *, readonly: bool) -> Any:
    """The target's store, opened by URL (SQLAlchemy loads only for a SQL URL). A memory
    store lives in its server's process: another process has nothing to read there."""
    if t.url.startswith("memory://") or t.url in ("sqlite://", "sqlite:///:memory:"):
        raise CliError(
            f"world {t.world.name!r} keeps no store another process can read ({t.url}). "
            "Set WORLDLOOP_STORE_URL, or pass --store URL."
        )
    from ..store import open_store as open_by_url

    try:
        return open_by_url(t.url, schema=t.schema, readonly=readonly)
    except WorldLoopError as exc:
        raise CliError(exc.message) from None


def masked(url: str) -> str:
    """A store URL fit to print: any password replaced by ``***``."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)


def _one_line(message: str) -> str:
    """Flask's import errors carry a traceback: keep the first line and the exception."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    if len(lines) == 1:
        return lines[0]
    return f"{lines[0].rstrip(':.')}: {lines[-1]}"


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value
