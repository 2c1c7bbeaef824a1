"""What every fault phase shares: the demo server it breaks, the client load whose
acknowledgements are the oracle, the journal check and ``worldloop verify``.

The oracle: a command is *acknowledged* when ``POST /api/v1/commands?wait=true`` answered 200
with status ``applied`` (DESIGN.md invariant 5: such a command is in the journal). After each
phase every acknowledged command id must be in the journal exactly once (*lost* counts those
that are not), no command id may be journaled twice, and ``worldloop verify`` must pass.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from liveserver import (  # noqa: E402
    APP,
    ROOT,
    Server,
    free_port,
    gunicorn_argv,
    http_json,
    join_player,
    server_env,
)

sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.support import runner_pids  # noqa: E402  (a runner fresh or forked, by its master)

__all__ = ["runner_pids"]

ADMIN_TOKEN = "faults-admin-token"

BASE_ENV = {
    "WORLDLOOP_ADMIN_TOKEN": ADMIN_TOKEN,
    "WORLDLOOP_RATE_LIMIT": "1000",
    "WORLDLOOP_RATE_BURST": "1000",
    "WORLDLOOP_JOIN_RATE_LIMIT": "1000",
    "WORLDLOOP_JOIN_RATE_BURST": "1000",
    "WORLDLOOP_JOURNAL_RETENTION": "100000000",  # keep every tick: the journal is the oracle
    "WORLDLOOP_SNAPSHOT_EVERY": "200",
    "WORLDLOOP_SHUTDOWN_TIMEOUT": "5",
    "MEADOW_ENTITIES": "400",
    # What a user's server runs by default: the world in its own runner process, beside the
    # web workers (tests/support.py would otherwise give the single-process mode).
    "WORLDLOOP_RUNNER": "process",
}


@dataclass
class Row:
    """One line of the results table."""

    phase: str
    tries: int = 0
    acknowledged: int = 0
    lost: int = 0
    duplicated: int = 0
    server_errors: int = 0
    """500s, and 5xx other than a 503 with Retry-After (documented backpressure)."""
    retry_503: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    verify: str = "not run"
    notes: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    """Reproductions of anything not clean (request and answer)."""

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicated == 0
            and self.server_errors == 0
            and self.verify == "ok"
        )

    def count(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.statuses[status] += 1
        if status >= 500:
            if status == 503 and headers is not None and "retry-after" in headers:
                self.retry_503 += 1
            else:
                self.server_errors += 1


class Target:
    """The demo server one phase works on: its instance folder, store and environment."""

    def __init__(self, work: Path, name: str, **env: str) -> None:
        self.work = work / name
        self.work.mkdir(parents=True, exist_ok=True)
        self.instance = self.work / "instance"
        self.env = server_env(self.instance, **{**BASE_ENV, **env})
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server: Server | None = None
        self.starts = 0

    @property
    def store_url(self) -> str:
        return self.env.get("WORLDLOOP_STORE_URL") or f"sqlite:///{self.instance}/worldloop.db"

    def start(self, *, ready: bool = True, timeout: float = 60.0) -> Server:
        self.starts += 1
        srv = Server(
            gunicorn_argv(self.port, threads=24),
            self.env,
            self.work,
            self.work / "server.log",
        )
        self.server = srv
        if ready:
            srv.wait_ready(self.base, timeout)
        return srv

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@contextmanager
def player_load(target: Target, row: Row, players: int, seed: int) -> Iterator[Load]:
    """``players`` threads sending ``?wait=true`` commands until the block ends."""
    tokens = [join_player(target.base, f"p{seed}-{i}") for i in range(players)]
    load = Load(target.base, tokens, row, seed)
    load.start()
    try:
        yield load
    finally:
        load.stop()


class Load:
    """Players sending commands back to back; every applied answer is an acknowledgement."""

    def __init__(self, base: str, tokens: list[str], row: Row, seed: int) -> None:
        self.base = base
        self.tokens = tokens
        self.row = row
        self.seed = seed
        self.acked: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i, token in enumerate(self.tokens):
            t = threading.Thread(target=self._run, args=(token, self.seed * 100 + i), daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def _run(self, token: str, seed: int) -> None:
        rng = random.Random(seed)
        host, _, port = self.base.removeprefix("http://").partition(":")
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        while not self._stop.is_set():
            body = json.dumps({"type": "move_to", "x": rng.uniform(0, 99), "y": rng.uniform(0, 99)})
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            try:
                conn.request("POST", "/api/v1/commands?wait=true", body, headers)
                resp = conn.getresponse()
                raw = resp.read()
                status, hdrs = resp.status, {k.lower(): v for k, v in resp.getheaders()}
            except (OSError, http.client.HTTPException):
                status, hdrs, raw = 0, {}, b""
            finally:
                conn.close()
            with self._lock:
                self.row.tries += 1
                self.row.count(status, hdrs)
                if status == 200:
                    data = json.loads(raw)
                    if data.get("status") == "applied":
                        self.acked.add(data["command_id"])
            if status in (0, 503):
                self._stop.wait(0.05)  # the server is down or asks to wait: do not spin


def journal_ids(store_url: str, schema: str | None = None) -> Counter[str]:
    """How many times each command id is journaled (read straight from the store's table)."""
    from sqlalchemy import create_engine, select

    from worldloop.store.sql_schema import commands

    options = {"schema_translate_map": {None: schema}} if schema else {}
    engine = create_engine(store_url, execution_options=options)
    try:
        with engine.connect() as conn:
            return Counter(str(r[0]) for r in conn.execute(select(commands.c.command_id)))
    finally:
        engine.dispose()


def final_snapshot_landed(store_url: str) -> bool:
    """Whether the last durable tick has a snapshot (what a clean stop writes)."""
    from sqlalchemy import create_engine, func, select

    from worldloop.store.sql_schema import heads, snapshots

    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            head = conn.execute(select(func.max(heads.c.tick))).scalar()
            snap = conn.execute(select(func.max(snapshots.c.tick))).scalar()
    finally:
        engine.dispose()
    return head is not None and head == snap


def check_journal(row: Row, acked: set[str], store_url: str, schema: str | None = None) -> None:
    """Every acknowledged command journaled exactly once; no id journaled twice."""
    seen = journal_ids(store_url, schema)
    row.acknowledged += len(acked)
    row.lost += sum(1 for cid in acked if seen[cid] == 0)
    row.duplicated += sum(1 for n in seen.values() if n > 1)


def verify(target: Target, row: Row) -> dict[str, Any]:
    """``python -m worldloop verify --app ... --json`` on the phase's store (server stopped)."""
    proc = subprocess.run(
        [sys.executable, "-m", "worldloop", "verify", "--app", APP, "--json"],
        env=target.env,
        cwd=target.work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        out = {"ok": False, "error": (proc.stdout + proc.stderr)[-800:]}
    ok = proc.returncode == 0 and out.get("ok", True) is not False
    row.verify = "ok" if ok else f"FAILED: {str(out)[:300]}"
    return out


def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def admin(target: Target, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return http_json(method, target.base, path, body, {"Authorization": f"Bearer {ADMIN_TOKEN}"})


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
