"""What the runner and gateway processes share: their command line, the app, the watched server.

Both are started by the server they serve (``--watch PID``: the gunicorn master or the ``flask
run`` process, resp. the runner) with the app as gunicorn or ``flask --app`` were told
(``--app SPEC``), and both end when the watched process is gone.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

WATCH_EVERY = 0.5
"""Seconds between looks at the watched process."""


def parse_args(prog: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--app", default="", help="the app, as gunicorn or flask --app name it")
    parser.add_argument("--watch", type=int, default=os.getppid(), help="stop when it exits")
    return parser.parse_args(argv)


def load_app(spec: str) -> Flask:
    """The app named by ``spec`` (``module:create_app()``; empty: Flask's own discovery)."""
    from flask.cli import ScriptInfo

    return ScriptInfo(app_import_path=spec or None).load_app()


def alive(pid: int) -> bool:
    """True while process ``pid`` exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
