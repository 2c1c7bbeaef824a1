"""A real demo server for the long-running benches (soak, faults): started as a user would,
watched through /proc, talked to over HTTP.

Shared by ``bench/soak.py`` and ``bench/faults/``; nothing here imports worldloop, so the server
under test is exactly the subprocess (its ``src`` comes first on ``PYTHONPATH``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
APP = "worldloop.demo:create_app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(instance: Path, **extra: str) -> dict[str, str]:
    """The environment of a server (or CLI) subprocess: this checkout's src first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    env["WORLDLOOP_INSTANCE_PATH"] = str(instance)
    env.update(extra)
    return env


def gunicorn_argv(
    port: int, threads: int = 32, *, workers: int = 1, app: str = APP, extra: Sequence[str] = ()
) -> list[str]:
    """The demo (or ``app``) under gunicorn gthread, one worker unless told otherwise."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--worker-class",
        "gthread",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "10",
        *extra,
        f"{app}()",
    ]


def versions() -> str:
    """Python, platform and the versions of the parts under test, for result headers."""
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"Python {platform.python_version()}", platform.platform(terse=True)]
    for name in ("flask", "gunicorn", "sqlalchemy", "psycopg", "schemathesis"):
        with contextlib.suppress(PackageNotFoundError):
            parts.append(f"{name} {version(name)}")
    cpus = os.cpu_count()
    return f"{cpus} CPUs (shared with other jobs); " + ", ".join(parts)


def http_json(
    method: str,
    base: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    """One JSON request: (status, decoded body); status 0 when the connection failed."""
    host, _, port = base.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
    except (OSError, http.client.HTTPException):
        return 0, None
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw) if raw else None
    except ValueError:
        return resp.status, raw


def creature_count(base: str) -> int | None:
    """The demo world's creature count now (benchenv.meadow_config keeps it where it started);
    None when the server did not answer 200."""
    status, body = http_json("GET", base, "/api/v1/world", timeout=30)
    return int(body["creature_count"]) if status == 200 else None


def proc_status(pid: int) -> dict[str, int]:
    """RSS (KiB) and thread count of ``pid`` from /proc (no extra dependency)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == "VmRSS":
                out["rss_kib"] = int(value.split()[0])
            elif key == "Threads":
                out["threads"] = int(value)
    return out


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class Server:
    """A server subprocess in its own session, its log in a file; stopped and reaped on exit."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.argv = list(argv)
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            env=env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def worker_pid(self, timeout: float = 30.0) -> int:
        """The process serving requests: gunicorn's worker, or the process itself."""
        if "gunicorn" not in " ".join(self.argv):
            return self.proc.pid
        return wait_for(lambda: (children(self.proc.pid) or [0])[0], timeout, "gunicorn worker")

    def wait_ready(self, base: str, timeout: float = 60.0) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.tail()}")
            return http_json("GET", base, "/readyz", timeout=2)[0] == 200

        wait_for(up, timeout, "server ready")

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.proc.wait(10)
        wait_group(self.proc.pid, timeout)  # the runner writes its final snapshot last
        self.signal_group(signal.SIGKILL)
        self._log.close()
        return self.proc.returncode


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until ``predicate`` is truthy; RuntimeError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except RuntimeError:
            raise
        except Exception as exc:  # not checkable yet
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}: {last!r}")


def group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` still runs (zombies aside: an orphan's
    parent is init, which may reap it late)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def wait_group(pgid: int, timeout: float) -> None:
    """Wait up to ``timeout`` s for every process of group ``pgid`` to end: the runner outlives
    a master stopped without the shipped config's hook, and a SIGKILL to the group then would
    cut its final snapshot short and leave its snapshot files in /dev/shm."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and group_alive(pgid):
        time.sleep(0.02)


@contextlib.contextmanager
def running(argv: Sequence[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[Server]:
    srv = Server(argv, env, cwd, log)
    try:
        yield srv
    finally:
        srv.stop()


@dataclass
class StreamReader:
    """One open SSE connection to /api/v1/stream, read until ``stop``; reconnects if it ends."""

    base: str
    stop: threading.Event
    query: str = "?limit=200"
    bytes_read: int = 0
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        host, _, port = self.base.removeprefix("http://").partition(":")
        while not self.stop.is_set():
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
            try:
                conn.request("GET", "/api/v1/stream" + self.query)
                resp = conn.getresponse()
                if resp.status != 200:
                    self.errors.append(f"status {resp.status}")
                    resp.read()
                    self.stop.wait(0.5)
                    continue
                while not self.stop.is_set():
                    chunk = resp.read1(65536)
                    if not chunk:
                        break
                    self.bytes_read += len(chunk)
            except (OSError, http.client.HTTPException) as exc:
                if not self.stop.is_set():
                    self.errors.append(type(exc).__name__)
                    self.stop.wait(0.2)
            finally:
                conn.close()
            if not self.stop.is_set():
                self.reconnects += 1

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.run, name="sse-reader", daemon=True)
        t.start()
        return t


def join_player(base: str, name: str, timeout: float = 30.0) -> str:
    """A new player's bearer token (retrying a 429/503 until ``timeout``)."""

    def attempt() -> str | None:
        status, body = http_json("POST", base, "/api/v1/players", {"name": name})
        if status == 201:
            return str(body["token"])
        if status in (0, 429, 503):
            return None
        raise RuntimeError(f"join {name}: {status} {body}")

    return str(wait_for(attempt, timeout, f"player {name} to join"))
