"""One command group: ``worldloop ...``, ``python -m worldloop ...`` and ``flask world ...``.

It inspects, verifies, restores and snapshots a world's store. The world comes from a Flask app
(``--app``, loaded as ``flask --app`` loads it, never started) or from a world factory plus a
store URL (``--world pkg.mod:create_world --store URL``). Human-readable output by default,
``--json`` for scripts. ``flask world`` is registered through the ``flask.commands`` entry point.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Sequence

import click

from .commands import COMMANDS, app_option
from .loading import Target, load_app, target_of_app
from .runner import runner_command

__all__ = ["Target", "load_app", "main", "target_of_app", "world"]


def _version() -> str:
    try:
        return importlib.metadata.version("worldloop")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout
        return "unknown"


HELP = """Inspect, verify, restore and snapshot a world's store, beside a live server; run
worlds of the Redis mode in a process of their own (runner).

The world comes from a Flask app (--app, loaded as 'flask --app' loads it; its world is never
started and its lease never taken) or from --world MODULE:FACTORY --store URL. Output is for a
person; --json prints one JSON object for scripts.
"""


@click.group("world", help=HELP)
@app_option
@click.version_option(_version(), "--version", package_name="worldloop", prog_name="worldloop")
def world() -> None:
    """Commands on a world's store (``--app`` may come before or after the command)."""


for _command in (*COMMANDS, runner_command):
    world.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``worldloop`` console script (and ``python -m worldloop``)."""
    from flask.cli import load_dotenv
    from flask.helpers import get_load_dotenv

    # As under `flask`: an `app.run()` left outside `if __name__ == "__main__"` does nothing.
    os.environ["FLASK_RUN_FROM_CLI"] = "true"
    if get_load_dotenv():
        load_dotenv()
    world.main(args=list(argv) if argv is not None else None, prog_name="worldloop")
