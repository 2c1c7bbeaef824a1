"""``worldloop runner``: a process that runs worlds of the Redis mode and serves no HTTP.

Heavy worlds tick without competing with request threads for one interpreter lock when they
run in a process of their own. In the Redis mode every worker of every host is a runner by
default (worldloop.fleet); this command starts one more, with its own weight: run it beside
the web servers with ``--capacity 4`` and give the web workers ``WORLDLOOP_RUNNER_CAPACITY=0``
(they then serve every world and run none), or a small weight (they run what the dedicated
runners cannot take). It loads the app as gunicorn or ``flask --app`` would, joins the
runners' registry, runs the worlds placed on it, and on SIGTERM or Ctrl-C hands them over
(final snapshot, release) and leaves.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import click


@click.command("runner")
@click.option(
    "--app",
    "spec",
    metavar="IMPORT",
    envvar="FLASK_APP",
    required=True,
    help="The Flask app, as for gunicorn or 'flask --app' ('module:create_app()').",
)
@click.option(
    "--capacity",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="This runner's weight among the runners (default: WORLDLOOP_RUNNER_CAPACITY, 1).",
)
def runner_command(spec: str, capacity: float | None) -> None:
    """Run worlds of the Redis mode in a process of their own (no HTTP)."""
    from .. import lifecycle
    from ..runner.child import load_app
    from ..state import state_of

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if capacity is not None:
        os.environ["WORLDLOOP_RUNNER_CAPACITY"] = repr(capacity)
    lifecycle.RUNNER_PROCESS = True  # a server role: the world starts here, not on a request
    app = load_app(spec)
    state = state_of(app)
    if state.scaleout_worlds is None:
        raise click.UsageError(
            "'worldloop runner' runs worlds of the Redis mode: set WORLDLOOP_REDIS_URL (and a "
            "PostgreSQL WORLDLOOP_STORE_URL). On one host the runner process starts by itself."
        )
    state.start()
    stop = threading.Event()  # after the start: these replace the handlers it installs
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fleet = state.scaleout_worlds.fleet
    click.echo(f"worldloop runner {fleet.me.id} (capacity {fleet.me.capacity:g}) running", err=True)
    stop.wait()
    click.echo("worldloop runner: handing the worlds over", err=True)
    state.stop()
