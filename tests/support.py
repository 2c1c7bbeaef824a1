"""Shared test helpers: waiting on conditions, free ports, and real server processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
BIN = Path(sys.executable).parent
from worldloop.runner.fork import COMM as RUNNER_COMM  # noqa: E402

T = TypeVar("T")
B = TypeVar("B", bound="Background")


def wait_for(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the condition may not be checkable yet (server starting)
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or predicate}: {last_exc!r}"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host`` now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def child_env(**extra: str | None) -> dict[str, str]:
    """Environment for a server subprocess: this checkout's src first on the path. A key given
    as None is left unset (its default applies)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    # The single-process mode unless a test asks for the runner process (tests/test_runner.py,
    # tests/test_gateway.py): most server tests are about the loop inside the serving process.
    env.setdefault("WORLDLOOP_RUNNER", "thread")
    # No stream gateway unless a test asks for one (tests/test_gateway*.py): a runner's tests
    # are not about it, and it is one more process to start per server.
    env.setdefault("WORLDLOOP_GATEWAY", "off")
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], Any]:
    """A small JSON HTTP client (status, headers, decoded body)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status, hdrs = resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        raw, status, hdrs = err.read(), err.code, dict(err.headers)
    try:
        return status, hdrs, json.loads(raw) if raw else None
    except ValueError:
        return status, hdrs, raw


class Background:
    """Client threads that each run ``_run(seed)`` while the ``with`` block lasts (a load;
    each ``_run`` bounds itself in count, and stops once ``_stop`` is set)."""

    def __init__(self, seed: int = 0, threads: int = 3) -> None:
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(seed * 100 + i,), daemon=True)
            for i in range(threads)
        ]

    def __enter__(self: B) -> B:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self, seed: int) -> None:
        raise NotImplementedError


class Server:
    """A real server process in its own process group, stopped (and reaped) on exit."""

    def __init__(
        self, argv: Sequence[str], *, port: int, env: dict[str, str], cwd: Path, log_path: Path
    ) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            list(argv),
            env=env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **kw: Any) -> tuple[int, dict[str, str], Any]:
        return http("GET", self.base + path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, dict[str, str], Any]:
        return http("POST", self.base + path, body, **kw)

    def redirect(self, path: str) -> tuple[int, str | None]:
        """The status and ``Location`` of ``GET path``, the redirect not followed."""
        from http.client import HTTPConnection

        conn = HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            return resp.status, resp.getheader("Location")
        finally:
            conn.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log}")
            return self.get("/api/v1/world", timeout=2)[0] == 200

        try:
            wait_for(up, timeout, 0.1, "server to answer")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- server log ---\n{self.log}") from None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def group_alive(self) -> bool:
        return bool(group_members(self.proc.pid))

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.proc.wait(5)
        # The runner process (worldloop.runner) stops after the server, writing its final
        # snapshot: give the group its bound before killing what is left.
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not self.group_alive(), timeout, 0.05, "the process group to end")
        self.signal_group(signal.SIGKILL)  # any orphans left in the group
        self._log.close()
        return self.proc.returncode


@contextlib.contextmanager
def running_server(
    argv: Sequence[str],
    tmp_path: Path,
    *,
    port: int | None = None,
    env: Mapping[str, str | None] | None = None,
    ready: bool = True,
    name: str = "server",
) -> Iterator[Server]:
    port = port or free_port()
    full_env = child_env(WORLDLOOP_INSTANCE_PATH=str(tmp_path / "instance"), **(env or {}))
    argv = [a.replace("{port}", str(port)) for a in argv]
    srv = Server(argv, port=port, env=full_env, cwd=tmp_path, log_path=tmp_path / f"{name}.log")
    try:
        if ready:
            srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def flask_argv(*extra: str) -> list[str]:
    return [
        str(BIN / "flask"),
        "--app",
        "worldloop.demo:create_app",
        "run",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        *extra,
    ]


def gunicorn_argv(*extra: str, app: str = "worldloop.demo:create_app()") -> list[str]:
    """gunicorn on a free port ({port}, filled in by running_server) serving ``app``."""
    return [str(BIN / "gunicorn"), "--bind", "127.0.0.1:{port}", *extra, app]


def gateway_running(gateway: str) -> bool:
    """Whether a gateway at ``gateway`` (its base URL) answers /healthz with its world running."""
    status, _, body = http("GET", gateway + "/healthz", timeout=2)
    return status == 200 and isinstance(body, dict) and bool(body["running"])


@contextlib.contextmanager
def gateway_server(
    tmp_path: Path,
    *,
    workers: int,
    env: Mapping[str, str],
    ready: Callable[[str], bool] = gateway_running,
) -> Iterator[tuple[Server, str]]:
    """gunicorn (gthread, 4 threads, ``workers`` workers) with a runner process and its stream
    gateway on a port of its own, ``env`` added; yields the server and the gateway's base URL
    once ``ready(gateway)`` (the server's log in the error if it never is)."""
    gport = free_port()
    argv = gunicorn_argv("-w", str(workers), "-k", "gthread", "--threads", "4")
    full = {"WORLDLOOP_GATEWAY": f"127.0.0.1:{gport}", "WORLDLOOP_RUNNER": "process", **env}
    with running_server(argv, tmp_path, env=full) as srv:
        gateway = f"http://127.0.0.1:{gport}"
        try:
            wait_for(lambda: ready(gateway), 120, 0.2, "the gateway to serve")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- server log ---\n{srv.log}") from None
        yield srv, gateway


def proc_stat(pid: int | str) -> tuple[str, int] | None:
    """The state letter and process group of ``pid`` (from /proc), None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[2])


def group_members(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that still run. A zombie does not: it has exited, and
    only waits for its parent to reap it; an orphan's parent is init, which in some containers
    reaps seconds later (or never), so ``killpg(pgid, 0)`` would keep a stopped group alive."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(entry.name)
            if stat is not None and stat[1] == pgid and stat[0] != "Z":
                found.append(int(entry.name))
    return found


def service_required(name: str) -> bool:
    """Under CI=true a missing service fails the test; elsewhere it skips."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def runner_pids(master: int) -> list[int]:
    """Runner processes started for the server whose master is ``master``: a fresh
    ``python -m worldloop.runner --watch MASTER``, or one forked from a worker of it (named
    ``wl-runner``, worldloop.runner.fork) in the master's process group (still there once the
    worker that forked it is gone); zombies (exited, not yet reaped) are not counted. Also once
    the master itself is gone and reaped: the servers here start in their own session, so the
    group's id is the master's pid."""
    found = []
    try:
        group = os.getpgid(master)
    except ProcessLookupError:
        group = master
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = proc_stat(entry.name)
        if stat is None or stat[0] == "Z":  # gone, or exited and not yet reaped
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        forked = comm == RUNNER_COMM and stat[1] == group
        watching = b"--watch" in argv and argv[argv.index(b"--watch") + 1 :][:1]
        if forked or (b"worldloop.runner" in argv and watching == [str(master).encode()]):
            found.append(int(entry.name))
    return found
