"""Tick lateness while the meadow's forecast runs: in this process (a worker thread, sharing the
interpreter lock with the tick) vs on a Celery worker process, same run, same load.

Each case runs the demo meadow at 20 Hz on the real clock for ``--seconds`` and asks for a new
forecast (``--forecast-ticks`` ticks ahead) whenever none is pending, so the heavy work runs the
whole time. Tick lateness (start minus due time) is recorded for every tick. The baseline is the
same world with no forecast. Needs RabbitMQ at 127.0.0.1:5672 for the Celery case.

Run: python bench/celery_offload.py [--seconds 20] [--out bench/results/celery_offload.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench.benchenv import emit, machine  # noqa: E402

from worldloop import WorldRuntime  # noqa: E402
from worldloop.clock import TickInfo  # noqa: E402
from worldloop.demo.forecast import FORECAST_TASK, run_forecast  # noqa: E402
from worldloop.demo.meadow import Meadow  # noqa: E402
from worldloop.offload import OffloadPlugin, TaskSender, ThreadSender  # noqa: E402
from worldloop.plugins import RuntimePlugin  # noqa: E402

BROKER = "amqp://guest:guest@127.0.0.1:5672//"
RATE_HZ = 20.0


class Lateness(RuntimePlugin):
    def __init__(self) -> None:
        self.values: list[float] = []

    def before_tick(self, rt: WorldRuntime, info: TickInfo) -> None:
        self.values.append(info.lateness)


@contextmanager
def celery_worker(queue: str, log: Path) -> Iterator[None]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT / "src"),
        CELERY_BROKER_URL=BROKER,
        CELERY_QUEUE=queue,
        WORLDLOOP_INSTANCE_PATH=str(log.parent / "instance"),
    )
    argv = [str(Path(sys.executable).parent / "celery"), "-A", "worldloop.demo.celery_app"]
    argv += ["worker", "--pool=solo", "-c", "1", "-Q", queue, "--without-gossip"]
    argv += ["--without-mingle", "--without-heartbeat", "--loglevel=INFO"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while b" ready." not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the celery worker did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        proc.wait(20)


def celery_sender(queue: str) -> TaskSender:
    from flask import Flask

    from worldloop.offload.celery import CelerySender, celery_init_app

    app = Flask("celery_offload_bench", root_path=str(ROOT))
    app.config["CELERY"] = {
        "broker_url": BROKER,
        "result_backend": "rpc://",
        "task_default_queue": queue,
    }
    return CelerySender(celery_init_app(app))


def run_case(sender: TaskSender | None, seconds: float, forecast_ticks: int) -> dict[str, Any]:
    world = Meadow(entities=200, seed=1)
    rt = WorldRuntime(world, rate_hz=RATE_HZ)
    late = Lateness()
    rt.add_plugin(late)
    offload = None if sender is None else OffloadPlugin(sender, timeout=600)
    if offload is not None:
        rt.add_plugin(offload)
    rt.start()
    asked = 0
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            done = 0 if offload is None else offload.counts["succeeded"]
            if offload is not None and asked == done:
                ticket = rt.submit("forecast", {"ticks": forecast_ticks})
                ticket.wait(5)
                asked += 1
            time.sleep(0.05)
        completed = 0 if offload is None else offload.counts["succeeded"]
    finally:
        rt.stop()
    values = sorted(late.values[20:])  # the first second settles the process
    return {
        "ticks": len(values),
        "p50": statistics.median(values) * 1e3,
        "p99": values[int(0.99 * (len(values) - 1))] * 1e3,
        "max": values[-1] * 1e3,
        "overruns": rt.stats().overruns,
        "skipped": rt.stats().skipped,
        "forecasts": completed,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--forecast-ticks", type=int, default=1000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    import celery

    queue = f"bench-{uuid.uuid4().hex[:8]}"
    work = Path("/tmp") / queue
    work.mkdir()
    rows = [("no forecast (baseline)", run_case(None, args.seconds, args.forecast_ticks))]
    threads = ThreadSender({FORECAST_TASK: run_forecast}, workers=1)
    rows.append(
        (
            "forecast in-process (1 worker thread)",
            run_case(threads, args.seconds, args.forecast_ticks),
        )
    )
    with celery_worker(queue, work / "worker.log"):
        sender = celery_sender(queue)
        rows.append(
            (
                "forecast on a Celery worker (solo)",
                run_case(sender, args.seconds, args.forecast_ticks),
            )
        )
    base = rows[0][1]["p99"] or 1e-9
    cmd = "python bench/celery_offload.py " + " ".join(sys.argv[1:])
    lines = [
        "## Tick lateness with the forecast in-process vs on Celery",
        "",
        f"Command: `{cmd.strip()}`  ",
        f"{machine()}  ",
        f"Celery {celery.__version__}, RabbitMQ broker, rpc:// results; "
        f"{time.strftime('%Y-%m-%d')}.  ",
        f"Meadow 200 sheep at {RATE_HZ:g} Hz for {args.seconds:g} s per case; a new "
        f"{args.forecast_ticks}-tick forecast asked whenever none is pending.",
        "",
        "| case | ticks | lateness p50 ms | p99 ms | max ms | p99 ratio to baseline "
        "| overruns | skipped | forecasts done |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['ticks']} | {r['p50']:.2f} | {r['p99']:.2f} | {r['max']:.2f} "
            f"| {r['p99'] / base:.2f} | {r['overruns']} | {r['skipped']} | {r['forecasts']} |"
        )
    emit(lines, args.out)


if __name__ == "__main__":
    main()
