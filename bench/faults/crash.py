"""Process faults: kill -9 under command load, and SIGTERM with open streams.

kill -9: the whole server (gunicorn master and worker) is killed at a random moment while
players send commands, then started again on the same store, ``kills`` times. SIGTERM: streams
are open and commands flowing when the master gets SIGTERM; the server must stop within its
graceful timeout and lose nothing acknowledged.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

from common import Row, Target, check_journal, final_snapshot_landed, player_load, verify

from liveserver import StreamReader, http_json


def kill9(work: Path, kills: int, players: int = 4, seed: int = 1) -> Row:
    row = Row(f"kill -9 under command load (SQLite, {kills} kills)")
    target = Target(work, "kill9")
    rng = random.Random(seed)
    acked: set[str] = set()
    target.start()
    try:
        for n in range(kills):
            with player_load(target, row, players, seed * 1000 + n) as load:
                # kill at a random moment once commands flow
                time.sleep(rng.uniform(0.5, 2.0))
                assert target.server is not None
                target.server.signal_group(signal.SIGKILL)
                target.server.proc.wait(10)
                acked |= load.acked
            target.stop()
            target.start()
        with player_load(target, row, players, seed * 1000 + kills) as load:
            time.sleep(1.0)
            acked |= load.acked
    finally:
        target.stop()
    check_journal(row, acked, target.store_url)
    verify(target, row)
    row.notes.append(f"{target.starts} starts")
    return row


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
                t0 = time.monotonic()
                srv.proc.send_signal(signal.SIGTERM)
                try:
                    srv.proc.wait(60)
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
