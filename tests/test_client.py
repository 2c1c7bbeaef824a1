"""worldloop.client against the real demo server (a real process), and its retry rules
against a scripted HTTP server (503 + Retry-After, then success, with one Idempotency-Key)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import Server, flask_argv, running_server
from worldloop.client import ApiError, Client


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Server]:
    env = {"WORLDLOOP_ADMIN_TOKEN": "client-admin-token-0123", "WORLDLOOP_RATE_HZ": "40"}
    with running_server(flask_argv(), tmp_path, env=env, name="demo") as srv:
        yield srv


@pytest.mark.slow
def test_the_client_drives_the_demo(demo: Server) -> None:
    c = Client(demo.base, admin_token="client-admin-token-0123")
    me = c.join("ann")
    assert me.name == "ann" and me.entity_id > 0 and c.token == me.token
    done = c.send("move_to", wait=True, x=5.0, y=6.0)
    assert done["status"] == "applied", done
    queued = c.send("say", text="hi")
    assert queued["status"] in ("queued", "applied")
    said = c.wait(queued["command_id"])
    assert said["status"] == "applied" and said["command_id"] == queued["command_id"]
    with pytest.raises(ApiError) as refused:
        c.send("move_to", x="far")
    assert refused.value.status == 422 and refused.value.code == "invalid_command"
    events = list(c.stream(hz=10, limit=5, max_events=3))
    frames = [e for e in events if e.name == "frame"]
    assert frames and all(len(lay["x"]) <= 5 for lay in frames[0].data["layers"])
    assert [int(e.id) for e in frames] == sorted({int(e.id) for e in frames})
    c.admin("pause")
    snap = c.snapshot()
    assert snap is not None and snap.etag and snap.data["tick"] == snap.tick
    assert c.snapshot(snap) is None  # paused: unchanged, 304 without a body
    c.admin("step", {"n": 1})
    newer = c.snapshot(snap)
    assert newer is not None and newer.tick == snap.tick + 1
    assert c.world()["tick"] == newer.tick
    assert c.frame(limit=3)["tick"] == newer.tick


class Scripted(BaseHTTPRequestHandler):
    """Answers POST /api/v1/commands with the queued replies, recording each request."""

    replies: list[tuple[int, dict[str, str], dict[str, Any]]] = []
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).seen.append(dict(self.headers))
        status, headers, body = type(self).replies.pop(0)
        raw = json.dumps(body).encode()
        self.send_response(status)
        for k, v in {**headers, "Content-Type": "application/json"}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(5)


def full(code: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": "busy", "details": {}}}


def test_503_and_429_are_retried_after_retry_after_with_one_idempotency_key(scripted: str) -> None:
    Scripted.seen = []
    Scripted.replies = [
        (503, {"Retry-After": "2"}, full("queue_full")),
        (429, {"Retry-After": "1"}, full("rate_limited")),
        (202, {}, {"command_id": "c1", "status": "queued", "tick": 3}),
    ]
    waits: list[float] = []
    c = Client(scripted, token="t", sleep=waits.append)
    assert c.send("say", text="hi")["command_id"] == "c1"
    assert waits == [2.0, 1.0]  # as the server said
    keys = {h["Idempotency-Key"] for h in Scripted.seen}
    assert len(Scripted.seen) == 3 and len(keys) == 1  # the same key on every retry
    assert all(h["Authorization"] == "Bearer t" for h in Scripted.seen)


def test_retries_are_bounded_and_other_errors_are_not_retried(scripted: str) -> None:
    Scripted.seen = []
    Scripted.replies = [(503, {"Retry-After": "30"}, full("queue_full"))] * 3
    waits: list[float] = []
    c = Client(scripted, token="t", retries=2, max_retry_wait=0.5, sleep=waits.append)
    with pytest.raises(ApiError) as exc:
        c.send("say", text="hi")
    assert exc.value.status == 503 and exc.value.retry_after == 30.0
    assert waits == [0.5, 0.5] and len(Scripted.seen) == 3
    Scripted.replies = [(409, {}, full("cell_full"))]
    with pytest.raises(ApiError) as conflict:
        c.send("plant")
    assert conflict.value.code == "cell_full" and len(Scripted.seen) == 4
