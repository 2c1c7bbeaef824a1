"""Spawn a Flask server and time it to its first ``/readyz`` 200, for bench/recovery.py; and
the floor of any Flask server on this machine at this moment: a one-route app under ``flask
run``, measured the same way just before each measured restart."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_to_ready(
    argv: list[str], env: dict[str, str], log: Path, port: int, cwd: Path
) -> tuple[float, float, subprocess.Popen[bytes]]:
    """Spawn ``argv`` and poll ``/readyz`` until 200: (wall time at spawn, seconds, process)."""
    base = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        started_at = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=5) as r:
                    if r.status == 200:
                        return started_at, time.perf_counter() - t0, proc
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.01)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def flask_run(app: str, port: int) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", app, "run", "--port", str(port), "--no-reload"]


TRIVIAL_APP = """from flask import Flask

app = Flask(__name__)


@app.get("/readyz")
def readyz():
    return {"ready": True}
"""


def trivial_once(folder: Path) -> float:
    """Spawn-to-200 of a one-route Flask app under ``flask run``: the floor of any Flask server
    on this machine at this moment (interpreter, Flask, Werkzeug). Measured just before each
    restart, so that each figure has its own baseline on a machine whose load moves."""
    folder.mkdir(exist_ok=True)
    app = folder / "trivial_app.py"
    if not app.exists():
        app.write_text(TRIVIAL_APP)
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    port = free_port()
    argv = flask_run("trivial_app:app", port)
    _, ready, proc = spawn_to_ready(argv, env, folder / "run.log", port, folder)
    proc.kill()
    proc.wait()
    return ready
