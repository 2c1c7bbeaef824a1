"""Command waits on the gateway: ``POST /api/v1/commands?wait=true`` without a thread per wait.

A waiting command spends almost all of its time waiting for its tick to be journaled; on a web
worker that wait holds a request thread (gthread) or the whole worker (sync). Here the request
runs through the same Flask app *without* the wait — authentication, validation, rate limits and
idempotency keys are exactly the web workers' — and its put to the runner is deferred
(worldloop.bus.deferred): it is sent without a thread waiting for the runner's answer
(worldloop.gateway.runner_link), which keeps or corrects the handler's answer. The handler runs
on the event loop itself (no hand-off to a thread and back per command) while nothing in it can
wait: the rate limits are in this process and the runner's feed is fresh; a handler that would
still wait there (a token only a newer snapshot knows) raises WouldBlock before it changed
anything and runs again on a small thread pool, as every submission does otherwise.
The wait itself is a future resolved by the runner's feed when the command's outcome arrives, so
a thousand waiting players cost a thousand futures, not a thousand threads. The answer is the
one a web worker gives: 200 with the result, the refusal's own status, or 202 when
``WORLDLOOP_COMMAND_WAIT`` runs out first.

What this costs per command is what bounds the acknowledgement's latency once hundreds of
players wait (bench/gateway.py): the handler is called as a WSGI server calls it (one environ
dict, not Werkzeug's test client, which built a whole request twice per command), the answer
of a resolved command is rendered on the event loop (a fraction of a millisecond: on the pool
it queued behind the submissions), and the feed thread wakes the loop once per feed message,
not once per resolved command; the runner link's thread likewise once per batch of the runner's
answers it reads together. ``GET /healthz`` shows where a waited command's time goes
(``command_phases_ms``: submission, the tick until the feed resolved it, the loop until the
answer), over the last few thousand waits.
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlencode

import orjson
from aiohttp import web

from ..api.commands import resolved_response
from ..api.jsonout import json_response
from ..bus import deferred
from ..bus.ipc import REQUEST_TIMEOUT, IpcBus
from ..commands import CommandTicket
from ..errors import WorldLoopError
from ..runner import ipc
from .runner_link import RunnerLinks

if TYPE_CHECKING:
    from flask import Flask

    from ..runner.remote import RemoteRuntime

log = logging.getLogger("worldloop.gateway")

FLAGS_TRUE = frozenset({"1", "true", "yes", "on"})
POOL = 2
"""Threads that run the Flask side of the submissions that cannot run on the event loop (a
Redis rate limiter, a silent runner, a token a newer snapshot must confirm): more threads only
queue for the GIL, and make the event loop, which answers the waits, queue behind them."""


Taken: TypeAlias = CommandTicket | WorldLoopError
"""The runner's answer to a deferred put, taken in: the command's ticket, or the refusal."""

PHASE_SAMPLES = 4096
"""Waits whose phases :class:`PhaseTimes` keeps (the most recent)."""


class PhaseTimes:
    """Where waited commands spent their time, over the last PHASE_SAMPLES of them: ``submit``
    (received → the runner queued it: the pool, the handler, the round trip), ``tick`` (→ the
    feed resolved it: the wait for the tick, the tick, its journal commit, the feed) and
    ``answer`` (→ answered: the event loop waking the wait, the rendering)."""

    NAMES = ("submit", "tick", "answer")

    def __init__(self) -> None:
        self.samples: dict[str, deque[float]] = {n: deque(maxlen=PHASE_SAMPLES) for n in self.NAMES}

    def add(self, submit: float, tick: float, answer: float) -> None:
        for name, seconds in zip(self.NAMES, (submit, tick, answer), strict=True):
            self.samples[name].append(seconds)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per phase: how many, and the median and 99th percentile in milliseconds."""
        out: dict[str, dict[str, float]] = {}
        for name, values in self.samples.items():
            ranked = sorted(values)
            if not ranked:
                continue
            n = len(ranked)
            out[name] = {
                "n": n,
                "p50": round(ranked[n // 2] * 1000.0, 2),
                "p99": round(ranked[min(n - 1, int(n * 0.99))] * 1000.0, 2),
            }
        return out


class CommandWaits:
    """``POST /api/v1/commands`` on the gateway, waits as futures."""

    def __init__(self, app: Flask, runtime: RemoteRuntime, wait_seconds: float) -> None:
        self.app = app
        self.runtime = runtime
        self.wait_seconds = wait_seconds
        self.pool = ThreadPoolExecutor(POOL, thread_name_prefix="worldloop-gateway-api")
        self.links = RunnerLinks()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._waiting = 0
        """The futures in ``_waiters``, counted as they come and go (not summed per command:
        hundreds wait at once)."""
        self.waiting_peak = 0
        self._resolved: list[tuple[str, float]] = []
        """Ids resolved by the feed thread that the loop has not woken yet, and when."""
        self._resolved_at: dict[str, float] = {}
        """When the feed resolved each command that is waited for (monotonic)."""
        self._answers: list[tuple[asyncio.Future[Taken], Taken]] = []
        """The runner's answers to puts, taken in by the link's thread, the loop not woken yet."""
        self.phases = PhaseTimes()
        self._resolved_lock = threading.Lock()
        self._memory_limits: bool | None = None
        """Whether the app's rate limits live in this process (found on the first request)."""
        self.inline_moved = 0
        """Submissions begun on the event loop that had to move to the pool (they would wait)."""
        runtime.ipc.on_resolved = self._resolved_elsewhere

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.links.close()

    @property
    def waiting(self) -> int:
        return self._waiting

    # -- the feed thread's side ------------------------------------------------------------

    def _resolved_elsewhere(self, ticket: CommandTicket) -> None:
        """From the feed thread: ``ticket`` resolved. The loop is woken once for all the
        tickets of a feed message (a tick resolves hundreds at once), not once for each."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        with self._resolved_lock:
            first = not self._resolved
            self._resolved.append((ticket.id, time.monotonic()))
        if first:
            loop.call_soon_threadsafe(self._wake_resolved)

    def _taken_elsewhere(self, answer: asyncio.Future[Taken], taken: Taken) -> None:
        """From the link's thread: the runner answered a put. As for resolutions, the loop is
        woken once for the answers the link reads together (a burst of puts), not for each."""
        loop = answer.get_loop()
        if loop.is_closed():
            return
        with self._resolved_lock:
            first = not self._answers
            self._answers.append((answer, taken))
        if first:
            loop.call_soon_threadsafe(self._settle_answers)

    def _settle_answers(self) -> None:
        with self._resolved_lock:
            answers, self._answers = self._answers, []
        for answer, taken in answers:
            _settle(answer, taken)

    def _wake_resolved(self) -> None:
        with self._resolved_lock:
            resolved, self._resolved = self._resolved, []
        for command_id, at in resolved:
            if command_id in self._waiters:
                self._resolved_at[command_id] = at
            self._wake(command_id)

    def _wake(self, command_id: str) -> None:
        waiters = self._waiters.pop(command_id, ())
        self._waiting -= len(waiters)
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # -- the request -----------------------------------------------------------------------

    async def submit(self, request: web.Request) -> web.Response:
        received = time.monotonic()
        loop = asyncio.get_running_loop()
        wait = request.query.get("wait", "").lower() in FLAGS_TRUE
        query = [(k, v) for k, v in request.query.items() if k != "wait"]
        body = await request.read()
        headers = list(request.headers.items())
        environ = _environ(request.path, query, headers, body, request.remote)
        answer: asyncio.Future[Taken] = loop.create_future()
        handled = None
        if self._inline_ok():
            try:
                handled = self._flask(environ, answer, inline=True)
            except deferred.WouldBlock:  # it would wait for a newer snapshot: from a thread
                self.inline_moved += 1
                environ = _environ(request.path, query, headers, body, request.remote)
        if handled is None:
            handled = await loop.run_in_executor(self.pool, self._flask, environ, answer)
        status, out_headers, data, later, sent = handled
        ticket = None
        bus = later.bus
        if sent is not None:
            taken = await self._taken_in_time(later, answer, *sent)
            status, out_headers, data, ticket = self._put_answer(
                later, taken, environ, out_headers, data
            )
        elif wait and status == 202:  # a handler that put without deferring: its ticket by id
            bus = self.runtime.ipc
            ticket = bus.ticket(str(orjson.loads(data).get("command_id")))
        submitted = time.monotonic()
        if wait and ticket is not None:
            if not ticket.done and bus is self.runtime.ipc:
                fut: asyncio.Future[None] = loop.create_future()
                self._waiters.setdefault(ticket.id, []).append(fut)
                self._waiting += 1
                self.waiting_peak = max(self.waiting_peak, self._waiting)
                if ticket.done:  # resolved between the look and the registration
                    self._wake(ticket.id)
                try:  # asyncio.timeout, not wait_for: no future and callbacks of its own
                    async with asyncio.timeout(self.wait_seconds):
                        await fut
                except TimeoutError:
                    self._forget(ticket.id, fut)
            if ticket.done:
                status, out_headers, data = self._render(ticket)
                resolved = self._resolved_at.pop(ticket.id, submitted)
                self.phases.add(
                    submitted - received, resolved - submitted, time.monotonic() - resolved
                )
        return web.Response(body=data, status=status, headers=out_headers)

    def _forget(self, command_id: str, fut: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(command_id)
        if waiters is not None and fut in waiters:
            waiters.remove(fut)
            self._waiting -= 1
            if not waiters:
                del self._waiters[command_id]
                self._resolved_at.pop(command_id, None)

    def _send(self, later: deferred.Deferred, answer: asyncio.Future[Taken]) -> tuple[int, float]:
        """Send the put the handler deferred (from the pool thread, at once); the runner's
        answer is taken in on the link's thread and set on ``answer``. Its ref, and when."""
        bus, message = later.bus, later.message
        assert bus is not None and message is not None

        def answered(data: dict[str, Any] | None) -> None:  # on the link's thread
            self._taken_elsewhere(answer, _taken(bus, data))

        sent_at = time.monotonic()
        return self.links.of(bus).send(message, answered), sent_at

    async def _taken_in_time(
        self, later: deferred.Deferred, answer: asyncio.Future[Taken], ref: int, sent_at: float
    ) -> Taken:
        """The runner's answer to the deferred put, or the web worker's 503 when none comes in
        REQUEST_TIMEOUT seconds."""
        assert later.bus is not None
        if answer.done():  # answered already: no timer to arm and cancel
            return answer.result()
        left = REQUEST_TIMEOUT - (time.monotonic() - sent_at)
        try:
            async with asyncio.timeout(max(0.0, left)):
                return await answer
        except TimeoutError:
            self.links.of(later.bus).forget(ref, sent_at)
            return later.bus.no_answer(REQUEST_TIMEOUT)

    def _put_answer(
        self,
        later: deferred.Deferred,
        taken: Taken,
        environ: dict[str, Any],
        headers: dict[str, str],
        data: bytes,
    ) -> tuple[int, dict[str, str], bytes, CommandTicket | None]:
        """The answer the handler would have given with the runner's answer to its put: its
        202 as it is for a fresh command (the common case: nothing to redo), the first
        command's ticket for a reused key, the refusal's error otherwise."""
        if isinstance(taken, WorldLoopError):
            return *self._render_error(taken, environ), None
        ticket = taken
        if ticket.id == later.command_id:  # queued, as the runner answered (the feed may
            return 202, headers, data, ticket  # have resolved it since: a wait answers that)
        tick = ticket.tick if ticket.tick is not None else orjson.loads(data)["tick"]
        body = {"command_id": ticket.id, "status": ticket.status.value, "tick": tick}
        resp = json_response(body, self.app)
        fresh = {**headers, **_headers(resp.headers.items())}
        fresh["Location"] = f"/api/v1/commands/{ticket.id}"
        return 202, fresh, resp.get_data(), ticket

    def _render_error(
        self, exc: WorldLoopError, environ: dict[str, Any]
    ) -> tuple[int, dict[str, str], bytes]:
        """The response the app gives when its handler raises ``exc``: its error handler's,
        through the app's after-request hooks, in the request's context. Before-request hooks
        (rate limits among them) ran with the handler and are not run again."""
        from ..api.errors import worldloop_error

        with self.app.request_context({**environ, "wsgi.input": io.BytesIO(b"")}):
            resp = self.app.process_response(self.app.make_response(worldloop_error(exc)))
            return resp.status_code, _headers(resp.headers.items()), resp.get_data()

    def _inline_ok(self) -> bool:
        """Whether the handler may run on the event loop: the rate limits are this process's
        (a Redis limiter is a network round trip), the runner's feed is fresh (a put otherwise
        waits for it) and has brought a snapshot (a worker that just started waits for its
        first). A handler that would still wait raises WouldBlock there."""
        if self._memory_limits is None:
            from ..api.common import limiter_url

            if "worldloop" not in self.app.extensions:  # a bare app: no limits of ours
                self._memory_limits = True
            else:
                with self.app.app_context():
                    self._memory_limits = limiter_url().startswith("memory://")
        ipc = self.runtime.ipc
        return self._memory_limits and ipc.runner_up and ipc.latest is not None

    def _flask(
        self, environ: dict[str, Any], answer: asyncio.Future[Taken], inline: bool = False
    ) -> tuple[int, dict[str, str], bytes, deferred.Deferred, tuple[int, float] | None]:
        """The web workers' handler, run here without the wait (on the event loop when
        ``inline``, else on the pool), called with ``environ`` exactly as a WSGI server calls
        the app; its put deferred, then sent if the handler answered 202 (a handler that raised
        after its put sends nothing), without a thread waiting for the runner's answer (it
        comes to ``answer``)."""
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
            started[:] = [status, headers]
            return lambda data: None  # the legacy write(): Flask never calls it

        with deferred.deferring(inline=inline) as later:
            chunks = self.app(environ, start_response)
            try:
                data = b"".join(chunks)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
        status, headers = started
        code = int(status.split(" ", 1)[0])
        sent = self._send(later, answer) if later.message is not None and code == 202 else None
        return code, _headers(headers), data, later, sent

    def _render(self, ticket: CommandTicket) -> tuple[int, dict[str, str], bytes]:
        """The answer a web worker gives for a resolved command (on the loop: it only encodes
        the outcome the feed brought, for this app: no app context to push and pop)."""
        resp = resolved_response(ticket, self.app)
        return resp.status_code, _headers(resp.headers.items()), resp.get_data()


def _taken(bus: IpcBus, answer: dict[str, Any] | None) -> Taken:
    """``answer`` taken in (on the link's thread, off the event loop): the ticket this bus
    keeps for the command, or the error the runner refused it with (None: no answer)."""
    if answer is None:
        return bus.no_answer(REQUEST_TIMEOUT)
    try:
        if "error" in answer:
            ipc.raise_error(answer["error"])
        return bus.accepted(answer["value"])
    except WorldLoopError as exc:
        return exc


def _settle(answer: asyncio.Future[Taken], taken: Taken) -> None:
    if not answer.done():  # not given up on (timed out) meanwhile
        answer.set_result(taken)


def _environ(
    path: str,
    query: list[tuple[str, str]],
    headers: Iterable[tuple[str, str]],
    body: bytes,
    remote: str | None,
) -> dict[str, Any]:
    """The WSGI environ (PEP 3333) of a request the gateway received, ``wait`` taken out of
    its query: what gunicorn gives a web worker's app for the same request."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": urlencode(query) if query else "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": remote or "",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in headers:
        key = name.upper().replace("-", "_")
        if key == "CONTENT_LENGTH":
            continue
        if key != "CONTENT_TYPE":
            key = "HTTP_" + key
        # Repeated headers are joined as a WSGI server joins them.
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    if "HTTP_HOST" in environ:
        host, _, port = str(environ["HTTP_HOST"]).rpartition(":")
        if host and port.isdigit():
            environ["SERVER_NAME"], environ["SERVER_PORT"] = host, port
        else:
            environ["SERVER_NAME"] = environ["HTTP_HOST"]
    return environ


_HOP = frozenset({"content-length", "transfer-encoding", "connection"})
"""Headers aiohttp sets itself."""


def _headers(items: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in items if str(k).lower() not in _HOP}
