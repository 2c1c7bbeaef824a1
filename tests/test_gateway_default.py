"""The stream gateway as the embedded default: plain servers start it on the next port.

With neither WORLDLOOP_RUNNER nor WORLDLOOP_GATEWAY set, ``gunicorn 'worldloop.demo:create_app()'``
and ``flask run`` run the world in a runner process, which starts the gateway on the port after
the server's own; the web workers send viewers there once it listens. When that port is taken,
the workers serve the streams themselves, and the gateway takes the port once it is free.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from worldloop.gateway.address import AUTO, explicit, join, mode

from .support import Server, flask_argv, gunicorn_argv, http, running_server, wait_for

DEFAULTS: dict[str, str | None] = {"WORLDLOOP_RUNNER": None, "WORLDLOOP_GATEWAY": None}
"""Both keys unset: the defaults apply."""


def test_the_setting_reads_auto_off_and_addresses() -> None:
    assert mode(None) is None
    assert [mode(v) for v in ("auto", " AUTO ", "off", "", "none", "0")] == [
        AUTO,
        AUTO,
        None,
        None,
        None,
        None,
    ]
    assert mode("127.0.0.1:5001") == "127.0.0.1:5001"
    assert explicit("auto") is None
    assert explicit("0.0.0.0:7001") == "0.0.0.0:7001"
    assert join("::1", 8001) == "[::1]:8001"
    assert join("127.0.0.1", 8001) == "127.0.0.1:8001"


def _two_free_ports() -> int:
    """A port P with P + 1 free too (the gateway's)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65534:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two free ports in a row")


@contextmanager
def _serve(tmp: Path, argv: list[str], port: int) -> Iterator[Server]:
    with running_server(argv, tmp, port=port, env=DEFAULTS) as srv:
        yield srv


def _websocket(srv: Server) -> str | None:
    status, _, body = srv.get("/api/v1/live", timeout=5)
    assert status == 200
    found = body["websocket"]
    return str(found) if found else None


def _gateway_up(srv: Server, port: int) -> bool:
    return _websocket(srv) == f"ws://127.0.0.1:{port + 1}/api/v1/ws"


def _frames_from(url: str) -> bytes:
    """The first bytes of the stream at ``url`` (its first frame among them)."""
    from http.client import HTTPConnection
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("GET", f"{parts.path}?{parts.query}")
        resp = conn.getresponse()
        assert resp.status == 200, resp.status
        assert resp.getheader("Content-Type", "").startswith("text/event-stream")
        data = b""
        while b"event: frame" not in data:
            chunk = resp.read1(4096)
            assert chunk, data
            data += chunk
        return data
    finally:
        conn.close()


@pytest.mark.parametrize("server", ["gunicorn", "flask run"])
def test_a_plain_server_runs_the_gateway_on_the_next_port(tmp_path: Path, server: str) -> None:
    port = _two_free_ports()
    argv = (
        gunicorn_argv("-w", "2", "-k", "gthread", "--threads", "4")
        if server == "gunicorn"
        else flask_argv()
    )
    with _serve(tmp_path, argv, port) as srv:
        try:
            wait_for(lambda: _gateway_up(srv, port), 60, 0.2, "the gateway to listen")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- server log ---\n{srv.log}") from None
        gateway = f"http://127.0.0.1:{port + 1}"
        status, location = srv.redirect("/api/v1/stream?limit=5")
        assert (status, location) == (307, gateway + "/api/v1/stream?limit=5")
        assert b"event: frame" in _frames_from(gateway + "/api/v1/stream?limit=5")
        status, _, health = http("GET", gateway + "/healthz", timeout=5)
        assert status == 200 and health["running"] is True
        assert f"--gateway 127.0.0.1:{port + 1}" in srv.log


def test_a_taken_port_leaves_the_streams_in_the_workers_until_it_is_free(
    tmp_path: Path,
) -> None:
    port = _two_free_ports()
    holder = socket.create_server(("127.0.0.1", port + 1))  # someone else's server
    try:
        argv = gunicorn_argv("-w", "1", "-k", "gthread", "--threads", "4")
        with _serve(tmp_path, argv, port) as srv:
            wait_for(lambda: "is in use" in srv.log, 60, 0.2, "the gateway to find its port taken")
            assert _websocket(srv) is None
            # Served here (200, no redirect), never sent to the stranger on the next port.
            assert b"event: frame" in _frames_from(srv.base + "/api/v1/stream?limit=5")
            holder.close()
            wait_for(lambda: _gateway_up(srv, port), 60, 0.2, "the gateway to take the port")
            status, _ = srv.redirect("/api/v1/stream?limit=5")
            assert status == 307
    finally:
        holder.close()
