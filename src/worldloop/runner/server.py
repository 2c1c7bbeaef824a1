"""The runner process's side of the one-host bus: web workers' requests in, the feed out.

The runner owns the world: its loop thread ticks and journals exactly as in the single-process
mode. Two more threads serve the web workers, and neither touches the world: the **request
thread** puts commands the workers validated on the in-process bus and answers look-ups (and
hands admin requests to a small pool that runs them through the app), the **feed thread**
writes each published snapshot once into shared memory and publishes one message per tick
with its file, the outcomes of the workers' commands (only once the tick is journaled: the
tickets resolve after the commit) and the loop's counters. The feed also beats while the world
is paused, so workers can tell a paused runner from a dead one.

A tick that resolved commands is announced twice: first an *early* message with only the
outcomes and the counters, sent before the snapshot file is written (a large world's file
takes milliseconds, tens under load), then the usual message with the file and the outcomes
again. The stream gateway answers its command waits from the early one; web workers resolve
their tickets from the second, with the snapshot, so a player who reads the world from the
same worker after its acknowledgement sees its command applied.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from ..commands import CommandTicket, IdempotencyKey
from ..errors import WorldLoopError
from ..plugins import RuntimePlugin
from . import ipc, shm

if TYPE_CHECKING:
    from flask import Flask

    from ..gateway.supervise import GatewaySupervisor
    from ..runtime import TickReport, WorldRuntime

log = logging.getLogger("worldloop.runner")

HEARTBEAT = 0.25
"""Seconds between feed messages while no tick is published (paused, or a slow tick)."""
KEEP_FILES = 1.0
"""Seconds a snapshot file stays after a newer one. Workers map the newest file within a tick
of its feed message; one whose feed thread lagged longer finds the file gone and serves its last
mapped snapshot until the next message (bus/ipc.py). The files live in RAM (``/dev/shm``): at 5 s,
a 100k-creature world kept about 100 files of 3.4 MB, some 330 MB; at 1 s, about 20."""


def ticket_data(ticket: CommandTicket, runner: str) -> dict[str, Any]:
    """A ticket as it travels to the worker that submitted its command."""
    command = ticket.command
    data: dict[str, Any] = {
        "command": {**command.to_record(), "submitted_at": command.submitted_at},
        "runner": runner,
    }
    if ticket.done and ticket.outcome is not None:
        data["outcome"] = outcome_data(ticket)
        data["tick"] = ticket.tick
    return data


def outcome_data(ticket: CommandTicket) -> dict[str, Any]:
    """A resolved ticket as the feed carries it: ``CommandTicket.to_dict`` (read back by
    worldloop.bus.ipc.outcome_from)."""
    return ticket.to_dict()


class _Wake(RuntimePlugin):
    """Wakes the feed thread after each tick, once its tickets are resolved."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def after_tick(self, rt: WorldRuntime, report: TickReport) -> None:
        self.event.set()


class RunnerServer:
    """Serves one world's runtime to the web workers of this host."""

    def __init__(self, app: Flask, runtime: WorldRuntime, endpoints: ipc.Endpoints) -> None:
        self.app = app
        self.runtime = runtime
        self.endpoints = endpoints
        self.id = f"{os.getpid()}-{time.time_ns()}"
        """This runner's identity in the feed: workers see a restart as a new id."""
        self._ctx: zmq.Context[Any] = zmq.Context.instance()
        self._pending: dict[str, CommandTicket] = {}
        self._pending_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._farewell = False
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="worldloop-runner-http")
        self._files: deque[tuple[float, Path]] = deque()
        self._feed_thread = threading.Thread(
            target=self._feed, name="worldloop-runner-feed", daemon=True
        )
        self._plugin = runtime.add_plugin(_Wake(self._wake))
        self._router: zmq.Socket[bytes] | None = None
        self._pub: zmq.Socket[bytes] | None = None
        self._served = False
        """True once :meth:`serve` took the sockets (it and the feed thread close them)."""
        self.gateway: GatewaySupervisor | None = None
        """The stream gateway this runner started (its address is in every feed message's
        ``stats`` while it listens: worldloop.gateway.address)."""

    # -- lifecycle -------------------------------------------------------------------------

    def bind(self) -> None:
        """Bind the request and feed endpoints now, before the world is recovered.

        Web workers connect while the runner recovers, so the feed's first message (sent as
        soon as :meth:`serve` starts) reaches them at once instead of after a reconnect and a
        heartbeat. Nothing is sent or answered before :meth:`serve`: workers keep seeing the
        runner as down (starting) until then. Idempotent; :meth:`serve` calls it too.
        """
        if self._router is not None:
            return
        router = self._ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        pub = self._ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.SNDHWM, 10_000)
        try:
            router.bind(self.endpoints.requests)
            pub.bind(self.endpoints.feed)
        except BaseException:
            router.close(0)
            pub.close(0)
            raise
        self._router, self._pub = router, pub

    def serve(self) -> None:
        """Serve requests on this thread until :meth:`stop` (the feed on its own thread)."""
        self.bind()
        router = self._router
        assert router is not None
        self._served = True
        replies = self._ctx.socket(zmq.PULL)
        replies.bind(f"inproc://replies-{id(self)}")
        self._feed_thread.start()  # it owns the feed socket from here on
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(replies, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(200))
                if replies in ready:
                    while replies.poll(0):
                        router.send_multipart(replies.recv_multipart())
                if router in ready:
                    while router.poll(0):
                        frames = router.recv_multipart()
                        answer = self._answer(frames[0], frames[-1])
                        if answer is not None:
                            router.send_multipart([frames[0], answer])
        finally:
            router.close(0)
            self._router = None
            replies.close(0)
            self._pool.shutdown(wait=False, cancel_futures=True)

    def halt(self) -> None:
        """Ask :meth:`serve` to return (safe from a signal handler)."""
        self._stop.set()
        self._wake.set()

    @property
    def halted(self) -> bool:
        return self._stop.is_set()

    def stop(self, *, farewell: bool = False) -> None:
        """Stop serving and remove this runner's snapshot files; ``farewell``: tell the workers
        the world is gone from here (deleted, or asleep: their next request asks again)."""
        self._farewell = farewell
        self.halt()
        self.runtime.remove_plugin(self._plugin)
        if self._feed_thread.is_alive():
            self._feed_thread.join(2.0)
        if not self._served:  # bound, never served (the start failed): closed here
            for sock in (self._router, self._pub):
                if sock is not None:
                    sock.close(0)
            self._router = self._pub = None
        for _, path in self._files:
            path.unlink(missing_ok=True)
        self._files.clear()

    # -- requests --------------------------------------------------------------------------

    def _answer(self, identity: bytes, body: bytes) -> bytes | None:
        """The answer to one request; it carries the request's ``ref`` back, if it had one (the
        stream gateway keeps many requests in flight on one socket and matches them by it)."""
        ref = None
        try:
            message = ipc.unpack(body)
            ref = message.get("ref")
            op = message.get("op")
            if op == "http":
                self._pool.submit(self._forward, identity, message)
                return None
            answer = {"value": self._handle(op, message)}
        except WorldLoopError as exc:
            answer = ipc.error_message(exc)
        except Exception as exc:  # contained: one bad request never ends the runner
            log.exception("worldloop: runner request failed")
            answer = ipc.error_message(WorldLoopError(f"runner error: {exc}"))
        if ref is not None:
            answer["ref"] = ref
        return ipc.pack(answer)

    def _handle(self, op: Any, message: Mapping[str, Any]) -> Any:
        rt = self.runtime
        if op == "put":
            raw = message.get("key")
            key = None if raw is None else IdempotencyKey(str(raw[0]), str(raw[1]))
            chosen = message.get("id")  # the stream gateway's (it answers before this does)
            command_id = chosen if isinstance(chosen, str) and 0 < len(chosen) <= 64 else None
            ticket = rt.accept(
                str(message["type"]),
                message["payload"],
                message["actor"],
                key,
                command_id=command_id,
            )
            if not ticket.done:
                with self._pending_lock:
                    self._pending[ticket.id] = ticket
            return ticket_data(ticket, self.id)
        if op == "keyed":
            keyed = rt.bus.keyed(str(message["scope"]))
            if keyed is None and rt.store is not None:
                found = rt.store.find_key(rt.name, str(message["scope"]))
                if found is not None:
                    keyed = CommandTicket.from_journal(*found)
            if keyed is None:
                return None
            ticket = keyed
            if not ticket.done:
                with self._pending_lock:
                    self._pending[ticket.id] = ticket
            return ticket_data(ticket, self.id)
        if op == "status":
            return rt.command_status(str(message["id"]))
        if op == "writable":
            rt.check_writable()
            return True
        if op == "world":  # a web worker asks what an extra world is (worldloop.runner.worlds)
            from ..state import state_of

            hosted = state_of(self.app).host.get(str(message["name"]))
            return {"name": hosted.name, "kind": hosted.kind, "config": dict(hosted.config)}
        if op == "ping":
            return {"runner": self.id, "pid": os.getpid(), "tick": rt.tick}
        raise WorldLoopError(f"unknown runner request {op!r}")

    def _forward(self, identity: bytes, message: Mapping[str, Any]) -> None:
        """Run a forwarded HTTP request through this process's app (admin, metrics, health:
        what needs the live runtime), and queue the answer for the request thread."""
        try:
            with self.app.test_client() as client:
                response = client.open(
                    str(message["path"]),
                    method=str(message["method"]),
                    query_string=str(message.get("query") or ""),
                    headers=[
                        (str(k), str(v))
                        for k, v in message.get("headers") or ()
                        if str(k).lower() != "content-length"
                    ],
                    data=base64.b64decode(message.get("body") or ""),
                    environ_base={"REMOTE_ADDR": str(message.get("remote_addr") or "")},
                )
                value = {
                    "status": response.status_code,
                    "headers": [
                        [k, v]
                        for k, v in response.headers.items()
                        if k.lower() not in ("content-length", "transfer-encoding")
                    ],
                    "body": base64.b64encode(response.get_data()).decode(),
                }
            answer = ipc.pack({"value": value})
        except Exception as exc:
            log.exception("worldloop: forwarded request failed")
            answer = ipc.pack(ipc.error_message(WorldLoopError(f"runner error: {exc}")))
        push = self._ctx.socket(zmq.PUSH)
        try:
            push.connect(f"inproc://replies-{id(self)}")
            push.send_multipart([identity, answer])
        finally:
            push.close()

    # -- the feed --------------------------------------------------------------------------

    def _feed(self) -> None:
        """One message at once (workers learn that the runner serves without waiting a
        heartbeat), then one per published tick, or every HEARTBEAT s while none is."""
        pub = self._pub
        assert pub is not None
        folder = shm.shm_dir()
        last: dict[str, Any] = {}
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    self._send(pub, folder, last)
                except Exception:  # contained: the next tick tries again
                    log.exception("worldloop: feed message failed")
                self._prune()
                self._wake.wait(HEARTBEAT)
            if self._farewell:
                pub.send(ipc.pack({"runner": self.id, "gone": True}))
        finally:
            pub.close(500 if self._farewell else 0)
            self._pub = None

    def _send(self, pub: zmq.Socket[bytes], folder: Path, last: dict[str, Any]) -> None:
        """This wake's messages: the early outcomes when a new snapshot file is to be written,
        then the message with the file (or, if it cannot be written, the outcomes alone: they
        are never held back by a snapshot)."""
        done = self._resolved()
        snap = self.runtime.latest
        if done and snap is not None and last.get("tick") != snap.tick:
            pub.send(ipc.pack(self._early(done)))
        try:
            message = self._message(folder, last, done)
        except Exception:
            if done:
                pub.send(ipc.pack({"runner": self.id, "stats": self._stats(), "outcomes": done}))
            raise
        pub.send(ipc.pack(message))

    def _early(self, outcomes: list[dict[str, Any]]) -> dict[str, Any]:
        return {"runner": self.id, "stats": self._stats(), "early": True, "outcomes": outcomes}

    def _resolved(self) -> list[dict[str, Any]]:
        """The outcomes of the workers' commands resolved since the last message (each sent
        once, or twice when announced early)."""
        with self._pending_lock:
            done = [t for t in self._pending.values() if t.done]
            for ticket in done:
                del self._pending[ticket.id]
        return [outcome_data(t) for t in done]

    def _message(
        self, folder: Path, last: dict[str, Any], outcomes: list[dict[str, Any]]
    ) -> dict[str, Any]:
        rt = self.runtime
        snap = rt.latest
        message: dict[str, Any] = {"runner": self.id, "stats": self._stats()}
        if snap is not None:
            if last.get("tick") != snap.tick:
                path = folder / f"{self.endpoints.prefix}{self.id}-{snap.tick}"
                meta = {
                    "runner": self.id,
                    "tick": snap.tick,
                    "sim_time": snap.sim_time,
                    "created_at": snap.created_at,
                    "summary": dict(snap.summary),
                }
                shm.write(path, snap.data, meta)
                if not self._files:
                    self._remove_predecessors(folder)
                self._files.append((time.monotonic(), path))
                last.update(meta, file=str(path))
            message.update(last)
        if outcomes:
            message["outcomes"] = outcomes
        return message

    def _stats(self) -> dict[str, Any]:
        rt = self.runtime
        return {
            "ticker": dataclasses.asdict(rt.stats()),
            "running": rt.running,
            "degraded": rt.degraded,
            "queue_depth": rt.queue_depth,
            "last_tick_duration": rt.last_tick_duration,
            "last_tick_at": rt.last_tick_at,
            "hook_errors": rt.hook_errors,
            "pid": os.getpid(),
            "gateway": self.gateway.listening if self.gateway is not None else None,
        }

    def _remove_predecessors(self, folder: Path) -> None:
        """Remove the snapshot files earlier runners of this world left (killed, they could
        not): only once this runner published its own, so until then a worker can still serve
        the last one. Workers that mapped one keep it whole (unlinked files stay mapped)."""
        mine = f"{self.endpoints.prefix}{self.id}-"
        for path in folder.glob(f"{self.endpoints.prefix}*"):
            if not path.name.startswith(mine):
                path.unlink(missing_ok=True)

    def _prune(self) -> None:
        """Remove snapshot files older than KEEP_FILES seconds, never the newest."""
        cutoff = time.monotonic() - KEEP_FILES
        files = self._files
        while len(files) > 1 and files[0][0] < cutoff:
            files.popleft()[1].unlink(missing_ok=True)
