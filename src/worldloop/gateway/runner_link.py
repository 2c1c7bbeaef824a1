"""Requests to a runner from the gateway, many in flight, with no thread waiting for an answer.

A web worker's request to its runner (worldloop.bus.ipc) holds its thread until the answer, one
request at a time per socket. The gateway sends its deferred command puts (worldloop.bus.
deferred) here instead: any thread hands a request over (tagged with a ``ref`` the runner
carries back) and goes on; one thread of the link owns the runner's DEALER socket, sends what
it is handed and calls each answer's callback as it comes. The answers are read, decoded and
taken in off the event loop: the gateway's loop, busy with hundreds of connections, woke two
more times per command when it read them itself (profiled under 200 waiting players), and each
wake queued behind all the loop's other work.

A request unanswered in time fails as a web worker's does (503, runner unavailable); if the
socket heard no answer at all meanwhile (the runner is silent) it is replaced, dropping what it
still queued, so a request the gateway gave up on is never delivered to a runner later (a
restarted one), and the requests still waiting on it fail too. An answer that is only late,
the runner answering the others, is dropped by its ref instead.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from ..bus.ipc import IpcBus
from ..runner import ipc

log = logging.getLogger("worldloop.gateway")

Answered = Callable[[dict[str, Any] | None], None]
"""Called on the link's thread with the runner's answer, or None: no answer will come."""

POLL_MS = 200
"""How often the link's thread looks at its stop flag while idle."""
RETRY_MS = 10
"""How often a request waiting for the runner's connection (restarting) is tried again."""


class RunnerLink:
    """One runner's request socket, owned by a thread of its own."""

    def __init__(self, bus: IpcBus) -> None:
        self.bus = bus
        self._ctx: zmq.Context[Any] = zmq.Context.instance()
        self._refs = itertools.count(1)
        self._waiting: dict[int, Answered] = {}
        self._outbox: list[tuple[int, bytes]] = []
        """Requests handed over and not yet taken by the link's thread (under ``_lock``)."""
        self._lock = threading.Lock()
        self._local = threading.local()
        self._inbox = f"inproc://worldloop-gateway-link-{id(self)}"
        self._closed = threading.Event()
        self.heard_at = 0.0
        """time.monotonic() of the last answer read."""
        self.sockets = 0
        """Request sockets opened so far (one more after each silent timeout)."""
        pull = self._ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.bind(self._inbox)
        self._thread = threading.Thread(
            target=self._run, args=(pull,), name="worldloop-gateway-link", daemon=True
        )
        self._thread.start()

    # -- any thread ------------------------------------------------------------------------

    def send(self, message: dict[str, Any], answered: Answered) -> int:
        """Hand ``message`` over to be sent; ``answered`` gets its answer. Its ref.

        The request joins an outbox; the link's thread is woken only when the outbox was empty
        (a burst of submissions costs one wake, not one inproc message each)."""
        ref = next(self._refs)
        data = ipc.pack({**message, "ref": ref})
        with self._lock:
            self._waiting[ref] = answered
            wake = not self._outbox
            self._outbox.append((ref, data))
        if wake:
            self._post(b"send", b"")
        return ref

    def forget(self, ref: int, sent_at: float) -> None:
        """The sender of ``ref`` stopped waiting (at ``sent_at`` + its timeout): its answer, if
        one comes, is dropped, and the socket is replaced if it heard nothing since."""
        with self._lock:
            self._waiting.pop(ref, None)
        if self.heard_at < sent_at:
            self._post(b"reset", repr(sent_at).encode())

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2.0)

    def _post(self, kind: bytes, data: bytes) -> None:
        push = getattr(self._local, "push", None)
        if push is None:  # one per thread: a ZeroMQ socket is never shared between threads
            push = self._ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 0)
            push.connect(self._inbox)
            self._local.push = push
        push.send_multipart([kind, data])

    # -- the link's thread -----------------------------------------------------------------

    def _run(self, pull: zmq.Socket[bytes]) -> None:
        dealer: zmq.Socket[bytes] | None = None
        unsent: deque[tuple[int, bytes]] = deque()
        try:
            while not self._closed.is_set():
                if dealer is None:
                    dealer = self._ctx.socket(zmq.DEALER)
                    dealer.setsockopt(zmq.LINGER, 0)
                    dealer.setsockopt(zmq.IMMEDIATE, 1)  # queue only on a live connection
                    dealer.connect(self.bus.endpoints.requests)
                    self.sockets += 1
                poller = zmq.Poller()
                poller.register(pull, zmq.POLLIN)
                poller.register(dealer, zmq.POLLIN)
                ready = dict(poller.poll(RETRY_MS if unsent else POLL_MS))
                if pull in ready and self._take(pull, dealer, unsent):
                    dealer.close(0)
                    dealer = None
                    unsent.clear()
                    self._fail_all()
                    continue
                self._flush(dealer, unsent)
                if dealer in ready:
                    self._read(dealer)
        finally:
            if dealer is not None:
                dealer.close(0)
            pull.close(0)
            self._fail_all()

    def _take(self, pull: zmq.Socket[bytes], dealer: Any, unsent: deque[tuple[int, bytes]]) -> bool:
        """Queue what the senders handed over; True if one asked for a new socket (and the
        socket heard nothing since that request was sent)."""
        reset = False
        while True:
            try:
                kind, data = pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return reset
            if kind == b"send":
                with self._lock:
                    handed, self._outbox = self._outbox, []
                unsent.extend(handed)
            elif self.heard_at < float(data):
                reset = True

    def _flush(self, dealer: zmq.Socket[bytes], unsent: deque[tuple[int, bytes]]) -> None:
        """Send what waits, in order, while the runner is connected (and still waited for)."""
        while unsent:
            ref, data = unsent[0]
            with self._lock:
                wanted = ref in self._waiting
            if wanted:
                try:
                    dealer.send(data, zmq.NOBLOCK)
                except zmq.Again:  # not connected (yet, or again): retried shortly
                    return
            unsent.popleft()

    def _read(self, dealer: zmq.Socket[bytes]) -> None:
        while True:
            try:
                data = dealer.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.heard_at = time.monotonic()
            try:
                answer = ipc.unpack(data)
                with self._lock:
                    answered = self._waiting.pop(int(answer.get("ref") or 0), None)
                if answered is not None:
                    answered(answer)
            except Exception:  # contained: the link goes on
                log.exception("worldloop: a runner's answer was dropped")

    def _fail_all(self) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for answered in waiting.values():
            with contextlib.suppress(Exception):
                answered(None)


class RunnerLinks:
    """The gateway's :class:`RunnerLink` of each runner (world) it sent a command to."""

    def __init__(self) -> None:
        self._links: dict[int, RunnerLink] = {}
        self._lock = threading.Lock()

    def of(self, bus: IpcBus) -> RunnerLink:
        with self._lock:
            link = self._links.get(id(bus))
            if link is None or link.bus is not bus:
                link = self._links[id(bus)] = RunnerLink(bus)
            return link

    def close(self) -> None:
        with self._lock:
            links, self._links = list(self._links.values()), {}
        for link in links:
            with contextlib.suppress(Exception):
                link.close()
