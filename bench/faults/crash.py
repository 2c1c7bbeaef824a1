"""Process faults: kill -9 under command load, and SIGTERM with open streams.

kill -9: at a random moment while players send commands, ``kills`` times, alternately
the whole server (gunicorn master, worker and the runner process that holds the world: a host
or container crash), then started again on the same store; and the runner process alone (what
an OOM killer picks), which the web workers replace while the server stays up. SIGTERM: streams
are open and commands flowing when the master gets SIGTERM; the server (master, then the
runner, which stops when its master is gone) must stop within its graceful timeout, write its
final snapshot and lose nothing acknowledged.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

from common import (
    Row,
    Target,
    check_journal,
    final_snapshot_landed,
    player_load,
    runner_pids,
    verify,
)

from liveserver import StreamReader, http_json, wait_for


def kill9(work: Path, kills: int, players: int = 4, seed: int = 1) -> Row:
    row = Row(f"kill -9 under command load (SQLite, {kills} kills)")
    target = Target(work, "kill9")
    rng = random.Random(seed)
    acked: set[str] = set()
    runners = 0
    target.start()
    try:
        for n in range(kills):
            assert target.server is not None
            master = target.server.proc.pid
            runner = _runner_of(master)
            with player_load(target, row, players, seed * 1000 + n) as load:
                # kill at a random moment once commands flow
                time.sleep(rng.uniform(0.5, 2.0))
                if n % 2:
                    os.kill(runner, signal.SIGKILL)
                    runners += 1
                    # a web worker starts a new runner, which recovers from the journal
                    _runner_of(master, not_pid=runner, timeout=60)
                    target.server.wait_ready(target.base, 60)
                else:
                    target.server.signal_group(signal.SIGKILL)
                    target.server.proc.wait(10)
                acked |= load.acked
            if not n % 2:
                target.stop()
                target.start()
        with player_load(target, row, players, seed * 1000 + kills) as load:
            time.sleep(1.0)
            acked |= load.acked
    finally:
        target.stop()
    check_journal(row, acked, target.store_url)
    verify(target, row)
    row.notes.append(
        f"{kills - runners} whole-server kills, {runners} runner-only kills; {target.starts} starts"
    )
    return row


def _runner_of(master: int, not_pid: int = 0, timeout: float = 30.0) -> int:
    """The pid of the runner process of the server whose master is ``master`` (other than
    ``not_pid``: the one a web worker started after it died)."""
    found = wait_for(
        lambda: [p for p in runner_pids(master) if p != not_pid], timeout, "a runner process"
    )
    return int(found[0])


def _wait_gone(master: int, runners: list[int], timeout: float) -> None:
    """Wait until none of ``runners`` (runner processes of ``master``) is alive."""
    wait_for(lambda: not set(runners) & set(runner_pids(master)), timeout, "the runner to stop")


def sigterm(work: Path, rounds: int, streams: int = 8, players: int = 3, seed: int = 2) -> Row:
    row = Row(f"SIGTERM with {streams} open streams ({rounds} rounds)")
    target = Target(work, "sigterm")
    acked: set[str] = set()
    stops: list[float] = []
    finals = 0
    try:
        for n in range(rounds):
            srv = target.start()
            stop = threading.Event()
            readers = [StreamReader(target.base, stop) for _ in range(streams)]
            for r in readers:
                r.start()
            with player_load(target, row, players, seed * 1000 + n) as load:
                wait = time.monotonic() + 10
                while time.monotonic() < wait and sum(r.bytes_read > 0 for r in readers) < streams:
                    time.sleep(0.05)
                time.sleep(0.5)
                master = srv.proc.pid
                runners = runner_pids(master)
                t0 = time.monotonic()
                srv.proc.send_signal(signal.SIGTERM)
                try:
                    srv.proc.wait(60)
                    # the runner sees its master gone and stops on its own (final snapshot):
                    # stopped = master and runner gone (target.stop() SIGKILLs what is left)
                    _wait_gone(master, runners, 60)
                    stops.append(time.monotonic() - t0)
                except Exception:
                    row.notes.append("did not stop within 60 s")
                acked |= load.acked
            stop.set()
            target.stop()
            finals += final_snapshot_landed(target.store_url)
            status, _ = http_json("GET", target.base, "/healthz", timeout=1)
            if status != 0:
                row.notes.append(f"still answering after stop: {status}")
    finally:
        target.stop()
    check_journal(row, acked, target.store_url)
    verify(target, row)
    if stops:
        row.notes.append(f"stopped in {min(stops):.1f}-{max(stops):.1f} s")
    row.notes.append(f"final snapshot written in {finals} of {rounds} stops")
    return row
