"""A small typed Python client of a worldloop server's REST API (standard library only).

    from worldloop.client import Client

    c = Client("http://127.0.0.1:5000")
    me = c.join("ann")                          # the player's token is kept by the client
    done = c.send("move_to", x=120, y=80, wait=True)
    snap = c.snapshot()                         # then c.snapshot(snap) -> None when unchanged
    for event in c.stream(hz=5, max_events=10):
        print(event.name, event.data["tick"])

Every command carries an ``Idempotency-Key`` (one per command, reused by its retries), and a
``503`` or ``429`` answer is retried after its ``Retry-After`` (bounded), so a retried command
is applied once by a server that honours the key. Errors raise :class:`ApiError` with the
server's stable ``code``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

RETRY_STATUSES = frozenset({429, 503})
TERMINAL = frozenset({"applied", "rejected"})


class ApiError(Exception):
    """The server refused a request: HTTP ``status``, the error ``code`` and ``message`` from
    its JSON envelope, its ``details``, and ``retry_after`` (seconds) when it said when."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Player:
    """A joined player: its id, bearer token (shown once by the server), avatar and name."""

    player_id: str
    token: str
    entity_id: int
    name: str
    tick: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A published snapshot (``GET /api/v1/world/snapshot``) and its ETag."""

    tick: int
    etag: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event of the live stream: ``frame``, ``stats`` or ``end``."""

    name: str
    data: dict[str, Any]
    id: str | None = None


@dataclass(slots=True)
class _Reply:
    status: int
    headers: Mapping[str, str]
    body: Any


@dataclass
class Client:
    """One server at ``base_url``; ``token`` is a player's bearer token (``join`` sets it),
    ``admin_token`` the admin API's. ``retries`` bounds the retries of a 503/429 answer, each
    after its Retry-After (at most ``max_retry_wait`` s)."""

    base_url: str
    token: str | None = None
    admin_token: str | None = None
    timeout: float = 10.0
    retries: int = 5
    max_retry_wait: float = 5.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    # -- players and commands --------------------------------------------------------------

    def join(self, name: str) -> Player:
        """Join as a player; the client keeps the token for the commands that follow."""
        body = self._call("POST", "/api/v1/players", {"name": name}, retry=False).body
        player = Player(
            str(body["player_id"]),
            str(body["token"]),
            int(body["entity_id"]),
            str(body["name"]),
            int(body["tick"]),
        )
        self.token = player.token
        return player

    def send(
        self, type_: str, *, wait: bool = False, idempotency_key: str | None = None, **payload: Any
    ) -> dict[str, Any]:
        """Send a command for this player's avatar: ``{"command_id", "status", "tick"}`` when
        queued, the applied command (with its ``result``) when ``wait``. ``idempotency_key``
        (a new UUID by default) is sent on every retry of this command."""
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        path = "/api/v1/commands" + ("?wait=true" if wait else "")
        reply = self._call("POST", path, {"type": type_, **payload}, headers=headers, auth=True)
        return dict(reply.body)

    def command(self, command_id: str) -> dict[str, Any]:
        """A command's status (``queued``, ``applied`` with its result, or ``rejected``)."""
        quoted = urllib.parse.quote(command_id, safe="")
        return dict(self._call("GET", f"/api/v1/commands/{quoted}", auth=True).body)

    def wait(self, command_id: str, timeout: float = 10.0, poll: float = 0.05) -> dict[str, Any]:
        """Poll a command until it is applied or rejected; TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.command(command_id)
            if status.get("status") in TERMINAL:
                return status
            if time.monotonic() >= deadline:
                raise TimeoutError(f"command {command_id} still {status.get('status')}")
            self.sleep(poll)

    # -- reading ---------------------------------------------------------------------------

    def world(self) -> dict[str, Any]:
        """The world's summary and clock (``GET /api/v1/world``)."""
        return dict(self._call("GET", "/api/v1/world").body)

    def snapshot(self, since: Snapshot | None = None) -> Snapshot | None:
        """The latest snapshot; with ``since``, None when it is still current (304, no body)."""
        headers = {"If-None-Match": since.etag} if since is not None else {}
        reply = self._call("GET", "/api/v1/world/snapshot", headers=headers)
        if reply.status == 304:
            return None
        body = dict(reply.body)
        return Snapshot(int(body.get("tick", 0)), reply.headers.get("ETag", ""), body)

    def frame(self, **query: Any) -> dict[str, Any]:
        """One viewer frame (``GET /api/v1/frame``; ``bbox``, ``limit`` as the stream's)."""
        return dict(self._call("GET", "/api/v1/frame" + _query(query)).body)

    def stream(
        self,
        *,
        hz: float | None = None,
        bbox: tuple[float, float, float, float] | None = None,
        limit: int | None = None,
        max_events: int | None = None,
    ) -> Iterator[Event]:
        """The live stream's events (frames, stats), ending with the server's ``end`` event
        or after ``max_events``. Each read waits at most ``timeout`` s."""
        query = _query({"hz": hz, "limit": limit, "bbox": bbox and ",".join(map(str, bbox))})
        req = self._request("GET", "/api/v1/stream" + query, None, {"Accept": "text/event-stream"})
        seen = 0
        with self._open(req) as resp:
            name, event_id = "message", None
            data: list[str] = []
            for raw in resp:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line == "":
                    if data:
                        yield Event(name, json.loads("\n".join(data)), event_id)
                        seen += 1
                        if name == "end" or (max_events is not None and seen >= max_events):
                            return
                    name, data, event_id = "message", [], None
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
                elif line.startswith("id:"):
                    event_id = line[3:].strip()

    # -- admin -----------------------------------------------------------------------------

    def admin(self, action: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """POST /api/v1/admin/<action> (pause, resume, step, rate, snapshot) with admin_token."""
        headers = {"Authorization": f"Bearer {self.admin_token or ''}"}
        return dict(self._call("POST", f"/api/v1/admin/{action}", body or {}, headers).body)

    # -- transport -------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, body: Any, headers: Mapping[str, str]
    ) -> urllib.request.Request:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base_url.rstrip("/") + path, data=data, method=method, headers=dict(headers)
        )
        if data is not None:
            req.add_header("Content-Type", "application/json")
        return req

    def _open(self, req: urllib.request.Request) -> Any:
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as err:
            raise _api_error(err.code, err.headers, err.read()) from None

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        auth: bool = False,
        retry: bool = True,
    ) -> _Reply:
        """One request, retried on 503/429 after Retry-After (with the same headers, so the
        same Idempotency-Key) at most ``retries`` times."""
        all_headers = dict(headers or {})
        if auth and self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        attempt = 0
        while True:
            req = self._request(method, path, body, all_headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                    return _Reply(resp.status, dict(resp.headers), json.loads(raw) if raw else None)
            except urllib.error.HTTPError as err:
                if err.code == 304:
                    return _Reply(304, dict(err.headers), None)
                error = _api_error(err.code, err.headers, err.read())
            if not retry or error.status not in RETRY_STATUSES or attempt >= self.retries:
                raise error
            attempt += 1
            wait = error.retry_after if error.retry_after is not None else 0.1 * 2**attempt
            self.sleep(min(max(wait, 0.0), self.max_retry_wait))


def _query(params: Mapping[str, Any]) -> str:
    items = {k: v for k, v in params.items() if v is not None}
    return "?" + urllib.parse.urlencode(items) if items else ""


def _api_error(status: int, headers: Any, raw: bytes) -> ApiError:
    """The server's JSON error envelope as an ApiError (a plain one for a non-JSON body)."""
    retry_after: float | None = None
    value = headers.get("Retry-After") if headers is not None else None
    if value is not None:
        try:
            retry_after = float(value)
        except ValueError:
            retry_after = None
    try:
        err = json.loads(raw)["error"]
        return ApiError(
            status, str(err["code"]), str(err["message"]), err.get("details"), retry_after
        )
    except (ValueError, KeyError, TypeError):
        return ApiError(
            status, "http_error", raw[:200].decode("utf-8", "replace"), None, retry_after
        )
