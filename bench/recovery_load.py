"""Restart under load, for bench/recovery.py: players keep sending commands while the server
is killed and started again; time to ready, and every acknowledged command present after.

The demo server (as ``make run`` starts it) runs on the killed builder's store; players join,
then send ``move_to`` commands with ``?wait=true`` (acknowledged = answered ``applied``, which
comes only after the tick's journal commit) and an Idempotency-Key, and a reader polls
``GET /api/v1/world``. After ``before`` seconds the whole server (web process, runner, gateway:
its process group) is killed with SIGKILL — a crash, no final snapshot — and a new one is
spawned on the same port and store at once; the clients never stop (refused connections are
retried after 10 ms). ``after`` seconds past its ``/readyz`` 200 the load stops, the server
is stopped, and every acknowledged command id is looked up in the store's journal.
Every loop is bounded in time and count.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

MAX_SENDS = 20_000
"""Most commands one player sends in a run (the run is bounded in time first)."""


def request(
    base: str, method: str, path: str, body: Any = None, token: str | None = None, **headers: str
) -> tuple[int, Any]:
    """One HTTP request; (status, JSON body or None). A refused connection is status 0."""
    data = None if body is None else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", **headers}
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, None


class Players:
    """Players sending commands and one reader, in threads, until stopped."""

    def __init__(self, base: str, tokens: list[str]) -> None:
        self.base = base
        self.stop = threading.Event()
        self.acked: list[tuple[float, str]] = []
        """(time acknowledged, command id) of every command answered ``applied``."""
        self.statuses: Counter[int] = Counter()
        self.reads: Counter[int] = Counter()
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._player, args=(t, i), daemon=True)
            for i, t in enumerate(tokens)
        ] + [threading.Thread(target=self._reader, daemon=True)]

    def __enter__(self) -> Players:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _player(self, token: str, i: int) -> None:
        for n in range(MAX_SENDS):
            if self.stop.is_set():
                return
            key = f"bench-{i}-{n:08d}-{uuid.uuid4().hex[:8]}"
            status, body = request(
                self.base,
                "POST",
                "/api/v1/commands?wait=true",
                {"type": "move_to", "x": float(n % 500), "y": 10.0},
                token,
                **{"Idempotency-Key": key},
            )
            with self._lock:
                self.statuses[status] += 1
                if status == 200 and isinstance(body, dict) and body.get("status") == "applied":
                    self.acked.append((time.perf_counter(), str(body["command_id"])))
            if status in (0, 503):
                time.sleep(0.01)

    def _reader(self) -> None:
        for _ in range(MAX_SENDS):
            if self.stop.is_set():
                return
            status, _ = request(self.base, "GET", "/api/v1/world")
            with self._lock:
                self.reads[status] += 1
            time.sleep(0.01)


def wait_ready(base: str, proc: subprocess.Popen[bytes], bound: float) -> float:
    """Seconds until ``/readyz`` answers 200 (polled every 10 ms, at most ``bound``)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < bound:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        if request(base, "GET", "/readyz")[0] == 200:
            return time.perf_counter() - t0
        time.sleep(0.01)
    raise RuntimeError(f"not ready within {bound} s")


def spawn(argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
        )


def kill_group(
    proc: subprocess.Popen[bytes], sig: int, bound: float = 30.0, *, whole: bool = True
) -> None:
    """Send ``sig`` to the server's process group and wait (at most ``bound``) until its
    first process is gone and, with ``whole``, the rest of the group (runner, gateway) too."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    proc.wait(bound)
    if not whole:
        return
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if not group_running(proc.pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def group_running(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs. A zombie does not (it has exited and
    waits to be reaped; an orphan's reaper, init, can take seconds in a container), which
    ``killpg(pgid, 0)`` cannot tell."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def missing(db: str, ids: list[str]) -> list[str]:
    """The acknowledged command ids the journal does not hold as applied."""
    from worldloop.store import SqlStore

    store = SqlStore(f"sqlite:///{db}", readonly=True)
    try:
        lost = []
        for command_id in ids:
            found = store.find_command("meadow", command_id)
            if found is None or found.get("status") != "applied":
                lost.append(command_id)
        return lost
    finally:
        store.close()


def under_load(
    folder: Path,
    db: str,
    argv: list[str],
    env: dict[str, str],
    port: int,
    cwd: Path,
    *,
    players: int = 4,
    before: float = 3.0,
    after: float = 3.0,
) -> dict[str, Any]:
    """One restart under load on ``db`` (see the module's docstring); what it measured."""
    base = f"http://127.0.0.1:{port}"
    env = {**env, "WORLDLOOP_START_PAUSED": "false"}  # the world runs: commands are applied
    first = spawn(argv, env, folder / "first.log", cwd)
    try:
        wait_ready(base, first, 120)
        tokens = []
        for i in range(players):
            status, body = request(base, "POST", "/api/v1/players", {"name": f"bench{i}"})
            if status != 201:
                raise RuntimeError(f"join: {status} {body}")
            tokens.append(str(body["token"]))
        with Players(base, tokens) as load:
            time.sleep(before)  # the load runs in its threads
            with load._lock:
                acked_before = len(load.acked)
            killed_at = time.perf_counter()
            # As a supervisor restarts a crashed server: once its main process is gone (the
            # killed runner lets go of its lock when the kernel has closed its files).
            kill_group(first, signal.SIGKILL, whole=False)
            second = spawn(argv, env, folder / "second.log", cwd)
            try:
                ready = wait_ready(base, second, 120)
                ready_at = time.perf_counter()
                time.sleep(after)
            finally:
                load.stop.set()
        kill_group(second, signal.SIGTERM)  # a clean stop: the final snapshot, the lock let go
        kill_group(first, signal.SIGKILL)  # nothing of the first server is left
    except BaseException:
        for proc in (first, locals().get("second")):
            if isinstance(proc, subprocess.Popen) and proc.poll() is None:
                kill_group(proc, signal.SIGKILL)
        raise
    ids = [cid for _, cid in load.acked]
    after_ready = sum(1 for at, _ in load.acked if at >= ready_at)
    down = sum(1 for at, _ in load.acked if killed_at <= at < ready_at)
    return {
        "ready_s": ready,
        "down_s": ready_at - killed_at,
        "acked": len(ids),
        "acked_before": acked_before,
        "acked_while_down": down,
        "acked_after": after_ready,
        "lost": len(missing(db, ids)),
        "unique": len(set(ids)) == len(ids),
        "statuses": dict(load.statuses),
        "reads": dict(load.reads),
    }


def load_table(runs: list[tuple[dict[str, Any], float]], seconds: float = 3.0) -> list[str]:
    """The markdown lines of the restart-under-load runs: (result, trivial app's spawn-to-200
    measured just before), the median run by time to ready first; ``seconds`` of load before
    the kill and after ready."""
    if not runs:
        return []
    ordered = sorted(runs, key=lambda r: r[0]["ready_s"])
    median, trivial = ordered[len(ordered) // 2]
    lines = [
        "Restart under load (default settings): 4 players send `move_to` commands with "
        "`?wait=true` and an Idempotency-Key, a reader polls `GET /api/v1/world`; the whole "
        f"server (web process, runner, gateway) is killed with SIGKILL after {seconds:g} s of "
        "load and a new one spawned at once on the same port and store, the clients never "
        f"stopping; the load stops {seconds:g} s after its `/readyz` 200, and every acknowledged "
        "command id is looked up in the journal.",
        "",
        "| run | spawn to /readyz 200 s | vs trivial Flask app | kill to ready s "
        "| acknowledged (before the kill / after ready) | acknowledged lost | command statuses "
        "| read statuses |",
        "|---|---:|---:|---:|---|---:|---|---|",
    ]
    for i, (r, base) in enumerate(ordered):
        tag = "median" if r is median else str(i + 1)
        lines.append(
            f"| {tag} | {r['ready_s']:.2f} | {r['ready_s'] / base:.2f} | {r['down_s']:.2f} "
            f"| {r['acked']:,} ({r['acked_before']:,} / {r['acked_after']:,}) | {r['lost']} "
            f"| {_statuses(r['statuses'])} | {_statuses(r['reads'])} |"
        )
    lines += [
        "",
        f"Every run: acknowledged commands lost {sum(r['lost'] for r, _ in runs)}, duplicates "
        f"{'none' if all(r['unique'] for r, _ in runs) else 'SOME'}; the trivial app's figure "
        f"just before the median run was {trivial:.2f} s. Status 0 is a refused connection "
        "(no server on the port).",
        "",
    ]
    return lines


def _statuses(counts: dict[int, int]) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(counts.items()))
