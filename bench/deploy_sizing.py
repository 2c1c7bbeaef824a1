"""Sizing a deployment: memory per 100k entities, threads and memory per viewer, restart time.

Each figure comes from real gunicorn processes started with the shipped config
(``-c python:worldloop.gunicorn_conf``) on the embedded SQLite store:

- memory: the worker's resident memory (VmRSS) with the demo meadow at N creatures, after
  ``--settle`` s of ticking; baseline in the same run: 1,000 creatures;
- viewers: the worker's thread count and RSS with 0, 10 and 50 open ``/api/v1/stream``
  connections reading frames (baseline: no viewer);
- restart: SIGTERM to the master until every server process is gone (the runner writes the
  final snapshot), then a new server until ``/readyz`` answers 200 (recovery = newest
  snapshot + journal replay).

    python bench/deploy_sizing.py [--creatures 100000] [--viewers 10,50] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.benchenv import emit, machine, meadow_config  # noqa: E402
from bench.liveserver import wait_group  # noqa: E402

GUNICORN = str(Path(sys.executable).parent / "gunicorn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


def proc_field(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise KeyError(name)


class Gunicorn:
    """A real server with the shipped config; ``worker`` is its one worker's pid."""

    def __init__(self, instance: Path, creatures: int, gateway: str = "auto") -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update(
            PYTHONPATH=str(ROOT / "src"),
            WORLDLOOP_INSTANCE_PATH=str(instance),
            **meadow_config(creatures),
            WORLDLOOP_ADMIN_TOKEN="bench-admin-token-0123456789",
            WORLDLOOP_GATEWAY=gateway,
        )
        self.log = open(instance.parent / f"gunicorn-{self.port}.log", "wb")  # noqa: SIM115
        argv = [GUNICORN, "-c", "python:worldloop.gunicorn_conf", "-b", f"127.0.0.1:{self.port}"]
        self.proc = subprocess.Popen(
            [*argv, "worldloop.demo:create_app()"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started = time.monotonic()
        self.ready_after = self.wait_ready()
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], text=True,
                             capture_output=True, check=True)  # fmt: skip
        self.worker = int(out.stdout.split()[0])

    def rss_mib(self) -> float:
        """Resident memory of the processes that hold the world: the web worker and the
        runner process it started (the world lives in the runner; worldloop.runner)."""
        from tests.support import runner_pids

        pids = [self.worker, *runner_pids(self.proc.pid)]
        return sum(proc_field(pid, "VmRSS") for pid in pids) / 1024

    def wait_ready(self, timeout: float = 120.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}")
            if status_of(self.base + "/readyz") == 200:
                return time.monotonic() - self.started
            time.sleep(0.05)
        raise RuntimeError("gunicorn did not become ready")

    def stop(self) -> float:
        """SIGTERM to the master; seconds until the whole server is gone: the master and
        everything it started, the runner included (it writes the final snapshot, and it
        outlives the master until it sees it gone)."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        wait_group(self.proc.pid, 30)
        gone = time.monotonic() - t0
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()
        return gone


@contextmanager
def viewers(port: int, count: int) -> Iterator[list[int]]:
    """``count`` open streams, each drained on its own thread; yields bytes read per stream."""
    socks: list[socket.socket] = []
    got = [0] * count

    def drain(i: int, s: socket.socket) -> None:
        with suppress(OSError):
            while chunk := s.recv(65536):
                got[i] += len(chunk)

    try:
        for i in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(b"GET /api/v1/stream HTTP/1.1\r\nHost: bench\r\n\r\n")
            socks.append(s)
            threading.Thread(target=drain, args=(i, s), daemon=True).start()
        yield got
    finally:
        for s in socks:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def settle(seconds: float) -> None:
    time.sleep(seconds)  # a benchmark's measured interval, not a test's wait


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--creatures", type=int, default=100_000)
    ap.add_argument("--viewers", default="10,50")
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    cmd = "python bench/deploy_sizing.py " + shlex.join(sys.argv[1:])
    counts = [int(v) for v in args.viewers.split(",") if v]

    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for creatures in (1_000, args.creatures):
            inst = Path(tmp) / f"mem-{creatures}" / "instance"
            inst.parent.mkdir()
            srv = Gunicorn(inst, creatures)
            try:
                settle(args.settle)
                rows.append((creatures, srv.rss_mib()))
            finally:
                srv.stop()

        inst = Path(tmp) / "viewers" / "instance"
        inst.parent.mkdir()
        srv = Gunicorn(inst, 1_000, gateway="off")  # the worker serves the streams itself
        view_rows = []
        try:
            settle(1.0)
            base_threads = proc_field(srv.worker, "Threads")
            base_rss = proc_field(srv.worker, "VmRSS") / 1024
            t0 = time.monotonic()
            status_of(srv.base + "/healthz")
            view_rows.append((0, base_threads, base_rss, 0.0, (time.monotonic() - t0) * 1000))
            for count in counts:
                with viewers(srv.port, count) as got:
                    settle(args.settle)
                    before = sum(got)
                    t0 = time.monotonic()
                    settle(2.0)
                    rate = (sum(got) - before) / (time.monotonic() - t0) / max(count, 1)
                    t0 = time.monotonic()
                    status_of(srv.base + "/healthz")
                    probe_ms = (time.monotonic() - t0) * 1000
                    view_rows.append(
                        (count, proc_field(srv.worker, "Threads"),
                         proc_field(srv.worker, "VmRSS") / 1024, rate / 1024, probe_ms)
                    )  # fmt: skip
            stop_s = srv.stop()
            again = Gunicorn(inst, 1_000)
            recovery_s = again.ready_after
            again.stop()
        finally:
            srv.stop()

    small, big = rows
    per_100k = (big[1] - small[1]) / (big[0] - small[0]) * 100_000
    lines = [
        "# Deployment sizing (shipped gunicorn config, embedded SQLite store)",
        "",
        f"Command: `{cmd}`  ",
        f"{machine()}  ",
        f"gunicorn {_version('gunicorn')}.",
        "",
        "## Memory per entity (RSS of the web worker and its runner after the world ticked)",
        "",
        "| demo meadow creatures | web worker + runner RSS (MB) | ratio to baseline |",
        "|---|---|---|",
        f"| {small[0]:,} (baseline) | {small[1]:.0f} | 1.00 |",
        f"| {big[0]:,} | {big[1]:.0f} | {big[1] / small[1]:.2f} |",
        "",
        f"**About {per_100k:.0f} MB per 100,000 entities** (difference over the baseline; the "
        "published snapshot, its cached encodings, the state and the journal batch).",
        "",
        "## Viewers (open event streams) on one gthread worker, without the stream gateway",
        "",
        "`WORLDLOOP_GATEWAY=off`: the worker serves each stream itself (with the gateway, the "
        "default, it answers `307` and holds no thread; see bench/results/gateway.md).",
        "",
        "| open streams | worker threads | worker RSS (MB) | KB/s per stream | /healthz ms |",
        "|---|---|---|---|---|",
    ]
    for count, threads, rss, rate, probe in view_rows:
        label = f"{count} (baseline)" if count == 0 else str(count)
        lines.append(f"| {label} | {threads} | {rss:.0f} | {rate:.1f} | {probe:.1f} |")
    last = view_rows[-1]
    per_thread = (last[1] - view_rows[0][1]) / max(last[0], 1)
    per_mb = (last[2] - view_rows[0][2]) / max(last[0], 1)
    lines += [
        "",
        f"**{per_thread:.2f} thread per viewer** (gthread's pool grows to one thread per open "
        f"stream, up to `threads`), about {per_mb:.2f} MB of RSS per viewer. Size `--threads` "
        "as viewers + WORLDLOOP_STREAM_RESERVE_THREADS (2).",
        "",
        "## Restart",
        "",
        "| step | seconds |",
        "|---|---|",
        f"| SIGTERM to the master until every server process is gone (the runner's final "
        f"snapshot included) | {stop_s:.2f} |",
        f"| new server until /readyz 200 (recovery included) | {recovery_s:.2f} |",
    ]
    emit(lines, args.out)


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
