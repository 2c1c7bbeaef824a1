"""Store faults: a read-only database file, a database locked by another process, and
PostgreSQL backends killed under load (``pg_terminate_backend``).

Each fault must end in the truth: no acknowledged command lost, no 500, /readyz saying what is
wrong while it is, and the world back once the fault is gone (by itself, or after a restart).
"""

from __future__ import annotations

import http.client
import os
import sqlite3
import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path

from common import Row, Target, check_journal, player_load, verify

from liveserver import http_json

PG_URL = os.environ.get(
    "WORLDLOOP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _readyz(target: Target) -> int:
    return http_json("GET", target.base, "/readyz", timeout=3)[0]


def _status_and_headers(target: Target, path: str) -> tuple[int, dict[str, str]]:
    """A GET's status and headers (a 503 with Retry-After is backpressure, not a 5xx)."""
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    except (OSError, http.client.HTTPException):
        return 0, {}
    finally:
        conn.close()


def _watch_readyz(target: Target, stop: threading.Event, seen: set[int]) -> threading.Thread:
    def run() -> None:
        while not stop.is_set():
            seen.add(_readyz(target))
            stop.wait(0.2)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def read_only(work: Path, seconds: float = 3.0, players: int = 3) -> Row:
    """The database file turns read-only between two runs: the server must refuse to serve
    writes (clearly), and once the file is writable again carry on with nothing lost."""
    row = Row("read-only database file")
    target = Target(work, "readonly")
    acked: set[str] = set()
    target.start()
    with player_load(target, row, players, 31) as load:
        time.sleep(seconds)
    acked |= load.acked
    target.stop()
    db = target.instance / "worldloop.db"
    files = [p for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in files}
    try:
        for p in files:
            _set_read_only(p, True)
        srv = target.start(ready=False)
        deadline = time.monotonic() + 20
        ready: set[int] = set()
        while time.monotonic() < deadline and srv.proc.poll() is None:
            ready.add(_readyz(target))
            if 503 in ready:
                break
            time.sleep(0.2)
        exited = srv.proc.poll() is not None
        row.notes.append(
            "read-only: server exited (" + _last_error(target) + ")"
            if exited
            else f"read-only: /readyz {sorted(ready)}"
        )
        if not exited:  # it serves: what it acknowledges must still be durable
            row.count(*_status_and_headers(target, "/api/v1/world"))
        target.stop()
    finally:
        for p, mode in modes.items():
            _set_read_only(p, False)
            p.chmod(mode)
    target.start()
    with player_load(target, row, players, 32) as load:
        time.sleep(seconds)
    acked |= load.acked
    target.stop()
    check_journal(row, acked, target.store_url)
    verify(target, row)
    return row


def _set_read_only(path: Path, on: bool) -> None:
    """Make ``path`` read-only even for root (immutable, ``chattr``), or by its mode."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True)
    elif on:
        path.chmod(0o444)


def locked(work: Path, holds: tuple[float, ...] = (2.0, 15.0), players: int = 3) -> Row:
    """Another process holds an exclusive lock on the database under load: shorter than the
    store's retry window (the world stalls, then carries on) and longer (the world halts, says
    so in /readyz, and a restart recovers it)."""
    row = Row("locked database (" + ", ".join(f"{h:g} s" for h in holds) + ")")
    target = Target(work, "locked", WORLDLOOP_STORE_RETRY_SECONDS="5")
    acked: set[str] = set()
    for n, hold in enumerate(holds):
        target.start()
        seen: set[int] = set()
        stop = threading.Event()
        with player_load(target, row, players, 40 + n) as load:
            time.sleep(1.0)
            watcher = _watch_readyz(target, stop, seen)
            conn = sqlite3.connect(target.instance / "worldloop.db", timeout=10)
            conn.execute("BEGIN EXCLUSIVE")
            time.sleep(hold)
            conn.rollback()
            conn.close()
            time.sleep(2.0)
            stop.set()
            watcher.join(5)
            after = _readyz(target)
        acked |= load.acked
        row.notes.append(f"{hold:g} s lock: /readyz saw {sorted(seen)}, then {after}")
        target.stop()
    target.start()
    with player_load(target, row, players, 49) as load:
        time.sleep(1.5)
    acked |= load.acked
    target.stop()
    check_journal(row, acked, target.store_url)
    verify(target, row)
    return row


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(
            PG_URL.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3
        ):
            return True
    except Exception:
        return False


def pg_killed(work: Path, kills: int = 3, players: int = 3) -> Row:
    """The server's PostgreSQL connections are terminated under load, ``kills`` times."""
    import psycopg

    row = Row(f"PostgreSQL backends killed ({kills} times)")
    dsn = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    app_name = f"wlfaults_{uuid.uuid4().hex[:10]}"
    schema = app_name
    sep = "&" if "?" in PG_URL else "?"
    target = Target(
        work,
        "postgres",
        WORLDLOOP_STORE_URL=f"{PG_URL}{sep}application_name={app_name}",
        WORLDLOOP_STORE_SCHEMA=schema,
    )
    acked: set[str] = set()
    terminated = 0
    try:
        target.start()
        with player_load(target, row, players, 50) as load, psycopg.connect(dsn) as admin:
            admin.autocommit = True
            for _ in range(kills):
                time.sleep(1.5)
                cur = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = %s AND pid <> pg_backend_pid()",
                    (app_name,),
                )
                terminated += int(cur.fetchone()[0])  # type: ignore[index]
            time.sleep(2.0)
            row.notes.append(f"{terminated} backends terminated; /readyz then {_readyz(target)}")
        acked |= load.acked
        target.stop()
        check_journal(row, acked, target.env["WORLDLOOP_STORE_URL"], schema)
        verify(target, row)
    finally:
        target.stop()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return row


def _last_error(target: Target) -> str:
    log = (target.work / "server.log").read_text(errors="replace").strip().splitlines()
    for line in reversed(log):
        if "rror" in line or "read-only" in line or "readonly" in line:
            return line.strip()[:160]
    return log[-1][:160] if log else "no log"
