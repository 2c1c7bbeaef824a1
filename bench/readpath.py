"""Per-request CPU of the hot reads on a web worker, against a trivial Flask GET (issue 11).

The quick loop behind bench/runner_split.py's "vs trivial Flask GET" row, without gunicorn,
sockets or load clients: the demo app is loaded as a web worker of the runner split (the
world ticks in its runner process, this process reads the snapshots it publishes), and each
read is called through the app's WSGI callable, as gunicorn calls it, N times in a row. The
measure is this thread's CPU time per request (``time.thread_time``: the worker's feed thread
and the runner process are not counted, and other jobs on the machine slow a request's wall
time but hardly its CPU time). Rounds alternate the targets, the trivial app
(bench/trivial_app.py) included, in a rotating order; the table gives medians over rounds and
each read's median ratio to the trivial GET measured in the same round.

    python bench/readpath.py [--creatures 100000] [--rounds 15] [--requests 300] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from benchenv import emit, header, meadow_config  # noqa: E402

TRIVIAL = "trivial Flask GET /api/v1/world (baseline)"
READS = ("/api/v1/world", "/api/v1/world/snapshot", "/api/v1/entities?limit=50")
HEADERS = {"Host": "127.0.0.1:8000", "User-Agent": "bench-readpath", "Accept": "*/*"}
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def environ_of(path: str) -> dict[str, Any]:
    """A GET request's WSGI environ, as a server builds it."""
    from werkzeug.test import EnvironBuilder

    builder = EnvironBuilder(path=path, headers=HEADERS)
    try:
        return builder.get_environ()
    finally:
        builder.close()


def serve(app: WSGIApp, base: dict[str, Any]) -> str:
    """One request through ``app``: its status line (the body is read and closed)."""
    status: list[str] = []

    def start_response(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        status.append(line)

    environ = dict(base)
    environ["wsgi.input"] = io.BytesIO(b"")
    body = app(environ, start_response)
    try:
        for _ in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return status[0]


def per_request_us(app: WSGIApp, base: dict[str, Any], n: int) -> float:
    """This thread's CPU microseconds per request over ``n`` requests."""
    t0 = time.thread_time()
    for _ in range(n):
        serve(app, base)
    return (time.thread_time() - t0) / n * 1e6


def web_worker(creatures: int, hz: float, instance: str) -> Any:
    """The demo app as a web worker of the runner split, once its first snapshot is in."""
    os.environ.update(
        WORLDLOOP_RUNNER="process",
        WORLDLOOP_RUNNER_APP="worldloop.demo:create_app()",
        WERKZEUG_RUN_MAIN="true",  # a serving process: the world runs in a runner process
        WORLDLOOP_INSTANCE_PATH=instance,
        WORLDLOOP_RATE_HZ=str(hz),
        WORLDLOOP_ADMIN_TOKEN="bench-admin-token-0123456789",
        WORLDLOOP_LOG_LEVEL="WARNING",
        **meadow_config(creatures),
    )
    from worldloop.demo import create_app

    app = create_app()
    base = environ_of(READS[0])
    deadline = time.monotonic() + 120
    while not serve(app.wsgi_app, base).startswith("200"):
        if time.monotonic() > deadline:
            raise SystemExit("the runner published no snapshot in 120 s")
        time.sleep(0.2)
    return app


def stop_worker(app: Any, timeout: float = 30.0) -> None:
    """Stop the web worker and its runner process, and wait for the runner to exit (before its
    instance folder goes: a runner left to notice this process's exit on its own would still
    be journaling into a folder removed under it)."""
    state = app.extensions["worldloop"]
    pid = state.runtime.runner_pid
    if state.spawner is not None:
        state.spawner.stop()  # no new runner once this one is asked to stop
    state.stop()
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):  # a forked runner is this process's child
            os.waitpid(pid, os.WNOHANG)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise SystemExit(f"the runner (pid {pid}) did not stop in {timeout:g} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--creatures", type=int, default=100_000)
    ap.add_argument("--hz", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--requests", type=int, default=300, help="requests per target per round")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import trivial_app

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="wl-readpath-") as instance:
        app = web_worker(args.creatures, args.hz, instance)
        try:
            runtime = type(app.extensions["worldloop"].runtime).__name__
            targets: dict[str, tuple[WSGIApp, dict[str, Any]]] = {
                TRIVIAL: (trivial_app.create_app().wsgi_app, environ_of("/api/v1/world"))
            }
            for path in READS:
                targets[f"GET {path}"] = (app.wsgi_app, environ_of(path))
            for wsgi, base in targets.values():  # warm: first-use caches, imports
                for _ in range(50):
                    status = serve(wsgi, base)
                assert status.startswith("200"), status
            names = list(targets)
            cpu: dict[str, list[float]] = {name: [] for name in names}
            for r in range(args.rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    cpu[name].append(per_request_us(*targets[name], args.requests))
        finally:
            stop_worker(app)
    load_after = os.getloadavg()[0]

    lines = header("Hot reads on a web worker: CPU per request vs a trivial Flask GET")
    lines += [
        f"A web worker of the runner split ({runtime}; demo meadow, {args.creatures:,} "
        f"creatures at {args.hz:g} Hz in its runner process); each read called through the "
        f"WSGI app {args.requests} times per round, {args.rounds} rounds in a rotating order "
        "with the trivial app; this thread's CPU time per request (no server, no sockets). "
        f"1-min load average {load_before:.1f} at the start, {load_after:.1f} at the end.",
        "",
        "| read | CPU µs/request (median) | min | vs trivial GET (median of rounds) |",
        "|---|---:|---:|---:|",
    ]
    for name in names:
        ratios = [a / b for a, b in zip(cpu[name], cpu[TRIVIAL], strict=True)]
        lines.append(
            f"| {name} | {statistics.median(cpu[name]):,.1f} | {min(cpu[name]):,.1f} | "
            f"{statistics.median(ratios):.2f} |"
        )
    lines += [
        "",
        "- The goal of issue 11 (GET /world throughput >= 0.9x the trivial app's under gunicorn) "
        "is about the whole request, server included: gunicorn's share is the same for both, "
        "so a ratio here above 1.1 can still meet it. bench/runner_split.py measures it.",
    ]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
