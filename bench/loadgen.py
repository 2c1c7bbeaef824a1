"""HTTP load from separate processes: keep-alive readers and players who wait for their commands.

The load runs in ``procs`` worker processes (spawned, so the measuring process and its GIL are
not the bottleneck), each with ``threads`` threads that hold one keep-alive connection apiece.
Every process waits for the same wall-clock start, runs for ``seconds`` and sends back the
latencies of the requests that succeeded and a count of those that did not. Used by
bench/runner_split.py; nothing here imports worldloop.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CTX = mp.get_context("spawn")
"""Fresh interpreters: never a fork of a process that already runs threads."""


@dataclass
class Load:
    """What one load window produced (latencies in seconds of the requests that succeeded)."""

    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def quantile(self, q: float) -> float:
        xs = sorted(self.latencies)
        if not xs:
            return float("nan")
        return xs[min(len(xs) - 1, int(q * len(xs)))]


def _conn(base: str, timeout: float) -> http.client.HTTPConnection:
    host, _, port = base.removeprefix("http://").partition(":")
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def _exchange(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


Request = tuple[str, str, bytes | None, dict[str, str]]


def _timed(
    base: str, timeout: float, end: float, next_request: Callable[[int], Request]
) -> tuple[list[float], int, dict[int, int]]:
    """Send ``next_request(i)`` back to back on one kept-alive connection until ``end``: the
    latencies of the 200s, the errors (anything else, or no answer) and the statuses seen."""
    lat: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    conn = _conn(base, timeout)
    i = 0
    while time.time() < end:
        i += 1
        method, path, body, headers = next_request(i)
        t0 = time.perf_counter()
        try:
            status, _ = _exchange(conn, method, path, body, headers)
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = _conn(base, timeout)
            continue
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            lat.append(time.perf_counter() - t0)
        else:
            errors += 1
    conn.close()
    return lat, errors, statuses


def _reader(base: str, path: str, start_at: float, seconds: float, out: list[Any]) -> None:
    while time.time() < start_at:
        time.sleep(0.001)
    out.append(_timed(base, 10.0, start_at + seconds, lambda i: ("GET", path, None, {})))


def _player(
    base: str, name: str, start_at: float, seconds: float, out: list[Any], joined: list[str]
) -> None:
    conn = _conn(base, 30.0)
    body = json.dumps({"name": name}).encode()
    token = None
    deadline = start_at + seconds
    while token is None and time.time() < deadline:
        try:
            status, raw = _exchange(
                conn, "POST", "/api/v1/players", body, {"Content-Type": "application/json"}
            )
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = _conn(base, 30.0)
            time.sleep(0.1)
            continue
        if status == 201:
            token = json.loads(raw)["token"]
        else:
            time.sleep(0.1)
    if token is None:
        out.append(([], 1, {0: 1}))
        return
    joined.append(name)
    conn.close()  # idle until the start: the server may close it (keep-alive timeout)
    while time.time() < start_at:
        time.sleep(0.001)

    def command(i: int) -> Request:
        cmd = json.dumps({"type": "move_to", "x": float(i % 500), "y": float(7 * i % 500)})
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "Idempotency-Key": uuid.uuid4().hex,
        }
        return "POST", "/api/v1/commands?wait=true", cmd.encode(), headers

    out.append(_timed(base, 30.0, deadline, command))


def _process(kind: str, args: tuple[Any, ...], threads: int, index: int, q: Any) -> None:
    out: list[Any] = []
    joined: list[str] = []
    base, what, start_at, seconds = args
    pool = []
    for t in range(threads):
        if kind == "get":
            target: Any = _reader
            targs: tuple[Any, ...] = (base, what, start_at, seconds, out)
        else:
            target = _player
            targs = (base, f"{what}{index}-{t}", start_at, seconds, out, joined)
        pool.append(threading.Thread(target=target, args=targs, daemon=True))
    for th in pool:
        th.start()
    for th in pool:
        th.join(seconds + 60)
    lat: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    for part_lat, part_err, part_st in out:
        lat.extend(part_lat)
        errors += part_err
        for k, v in part_st.items():
            statuses[k] = statuses.get(k, 0) + v
    q.put((lat, errors, statuses, len(joined)))


def run(
    kind: str, base: str, what: str, *, procs: int, threads: int, seconds: float, lead: float
) -> tuple[Load, int]:
    """``kind`` ``get`` (``what`` is the path) or ``players`` (``what`` names them): the load
    of ``procs`` x ``threads`` clients for ``seconds``, starting ``lead`` s from now (players
    join in the lead). Returns the load and how many clients joined (players)."""
    q = CTX.Queue()
    start_at = time.time() + lead
    ps = [
        CTX.Process(target=_process, args=(kind, (base, what, start_at, seconds), threads, i, q))
        for i in range(procs)
    ]
    for p in ps:
        p.start()
    load = Load(seconds)
    joined = 0
    for _ in ps:
        lat, errors, statuses, n = q.get(timeout=lead + seconds + 120)
        load.latencies.extend(lat)
        load.errors += errors
        joined += n
        for k, v in statuses.items():
            load.statuses[k] = load.statuses.get(k, 0) + v
    for p in ps:
        p.join(30)
    return load, joined
