"""/metrics under several gunicorn workers: any worker's scrape shows every worker's numbers."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import gunicorn_argv, running_server, wait_for

pytestmark = pytest.mark.slow


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_metrics_aggregate_across_two_workers(tmp_path: Path) -> None:
    prom = tmp_path / "prom"
    prom.mkdir()
    (prom / "gauge_livesum_1.db").write_bytes(b"stale")  # emptied by the master at start
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(prom),
        # One worker wins the world's lease on its first request; the other serves the rest.
        "WORLDLOOP_AUTOSTART": "lazy",
        "WORLDLOOP_LEASE_WAIT": "0",
        "WORLDLOOP_RATE_HZ": "50",
    }
    argv = gunicorn_argv("-w", "2", "-c", "python:worldloop.gunicorn_hooks")
    with running_server(argv, tmp_path, env=env) as srv:
        pids: set[int] = set()
        ready: dict[int, int] = {}
        sent = 0
        while len(pids) < 2 and sent < 400:
            status, _, body = srv.get("/healthz")
            assert status == 200
            pids.add(body["pid"])
            sent += 1
        assert len(pids) == 2, "both workers should have answered"
        # /readyz tells the truth per worker: only the lease holder runs the world. It may
        # itself say 503 a while (a loaded machine: overrunning), so ask until both answers
        # came, for a bounded time.
        last: dict[int, object] = {}
        deadline = time.monotonic() + 30
        while len(ready) < 2 and time.monotonic() < deadline:
            status, _, body = srv.get("/readyz")
            ready[status] = ready.get(status, 0) + 1
            last[status] = body
            time.sleep(0.01)
        assert set(ready) == {200, 503}, last

        key = (
            "worldloop_http_request_duration_seconds_count",
            (("endpoint", "/healthz"), ("method", "GET"), ("status", "200")),
        )
        ticks_key = ("worldloop_ticks_total", (("world", "meadow"),))
        seen_ticks = []
        for _ in range(8):  # scrapes land on either worker; each must see the whole picture
            values = scrape(srv.base)
            assert values[key] == sent
            assert values[ticks_key] > 0
            assert values[("worldloop_rate_hz", (("world", "meadow"),))] == 50.0
            seen_ticks.append(values[ticks_key])
        assert seen_ticks == sorted(seen_ticks)  # one world, one counter: never goes back
        wait_for(lambda: scrape(srv.base)[ticks_key] > seen_ticks[-1], 5)
    assert not any(p.name == "gauge_livesum_1.db" for p in prom.iterdir())


def test_sigterm_ends_open_streams_so_gunicorn_stops_promptly(tmp_path: Path) -> None:
    argv = gunicorn_argv(
        "-k", "gthread", "--threads", "4", "--graceful-timeout", "20",
        "-c", "python:worldloop.gunicorn_hooks",
    )  # fmt: skip
    with running_server(argv, tmp_path, env={"WORLDLOOP_RATE_HZ": "20"}) as srv:
        stream = urllib.request.urlopen(srv.base + "/api/v1/stream", timeout=10)
        lines: list[bytes] = []
        got_frame = threading.Event()

        def read() -> None:
            for line in stream:
                lines.append(line)
                if line.startswith(b"event: frame"):
                    got_frame.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert got_frame.wait(10)
        t0 = time.monotonic()
        os.kill(srv.proc.pid, signal.SIGTERM)  # to the master, as a process manager would
        srv.proc.wait(timeout=12)
        elapsed = time.monotonic() - t0
        reader.join(5)
        stream.close()
    assert elapsed < 8, f"gunicorn took {elapsed:.1f}s to stop with a stream open"
    assert b"event: end\n" in lines
