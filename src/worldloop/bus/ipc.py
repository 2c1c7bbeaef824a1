"""The one-host bus, web-worker side: commands to the runner process, its feed back.

A web worker (any number of them, ``gunicorn -w N``) holds one :class:`IpcBus` per world. A put
is one request to the runner (it sequences and queues the command, or refuses it: full, halted,
a key reused) answered with the command's envelope (the stream gateway sends it after its
handler answered, waiting on no thread: worldloop.bus.deferred); the ticket the worker keeps
resolves when the runner's feed reports the command's outcome, which the runner sends only after
the tick is journaled. The feed also carries each published snapshot as the name of a
shared-memory file (worldloop.runner.shm): ``latest`` maps it read-only, once per tick and only
when someone reads, so a snapshot of any size reaches every worker without a copy.

Only the API side of :class:`~worldloop.bus.base.Bus` is served here; the loop side belongs to
the runner, whose own bus is the in-process one.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import zmq

from ..commands import Command, CommandTicket, IdempotencyKey, Outcome
from ..errors import WorldNotRunning
from ..runner import ipc, shm
from ..snapshot import Snapshot
from . import deferred

log = logging.getLogger("worldloop.bus")

REQUEST_TIMEOUT = 5.0
"""Seconds a request to the runner may take before the worker answers 503 (runner down)."""
STALE_AFTER = 2.0
"""Seconds without a feed message after which the runner counts as down."""
STALE_GRACE = 0.5
"""Seconds a request waits for the feed when it is stale before answering 503: a feed that is
only late (this process or the runner descheduled on a loaded host) is told from a runner that
is gone, at the cost of at most this long per request while it really is gone."""
FIRST_FEED = 2.0
"""Seconds a new worker's first requests wait for the feed (the runner beats every 0.25 s)."""
HISTORY = 10_000
"""Tickets of this worker's recent commands kept for look-ups (the runner answers the rest)."""
UNCLAIMED = 4096
"""Outcomes of commands this worker does not know (yet) kept for a put still under way: the
feed may bring a command's outcome before the put that sent it has read the runner's answer
(the tick ran at once, this process was descheduled). Every other worker's outcomes pass
through too, so it is a bounded, most-recent-first window: seconds at hundreds of commands per
second."""


class RunnerUnavailable(WorldNotRunning):
    """The runner process did not answer (restarting, or down): retry shortly."""


def _command(record: Mapping[str, Any]) -> Command:
    command = Command.from_record(record)
    return Command(
        command.id,
        command.seq,
        command.type,
        command.payload,
        command.actor,
        float(record.get("submitted_at") or time.time()),
        command.key,
    )


def ticket_from(data: Mapping[str, Any]) -> CommandTicket:
    """A worker-side ticket from the runner's answer (resolved when the answer says so)."""
    ticket = CommandTicket(_command(data["command"]))
    outcome = data.get("outcome")
    if outcome is not None:
        ticket.resolve(outcome_from(ticket.command, outcome), int(data["tick"]))
    return ticket


def outcome_from(command: Command, data: Mapping[str, Any]) -> Outcome:
    """The outcome of a ticket the runner sent as ``CommandTicket.to_dict``."""
    error = data.get("error") or {}
    return Outcome(
        command,
        data["status"] == "applied",
        data.get("result"),
        error.get("code"),
        error.get("message"),
        error.get("details"),
    )


class IpcBus:
    """Commands to a world's runner process and its feed, for one web worker."""

    def __init__(
        self,
        endpoints: ipc.Endpoints,
        world: str = "world",
        *,
        on_feed: Callable[[Mapping[str, Any]], None] | None = None,
        cache_bytes: int = 32 * 1024 * 1024,
        early_outcomes: bool = False,
    ) -> None:
        self.world = world
        self.early_outcomes = early_outcomes
        """Resolve tickets from the runner's early outcome messages, sent before the tick's
        snapshot file is written (the stream gateway, which serves no reads of the world);
        False (a web worker): resolve them with the snapshot, so a read after an
        acknowledgement sees the command applied."""
        self.endpoints = endpoints
        self.on_feed = on_feed
        """Called on the feed thread with every message's loop counters (``stats``)."""
        self.on_resolved: Callable[[CommandTicket], None] | None = None
        """Called on the feed thread with each of this worker's tickets once it resolves."""
        self.cache_bytes = cache_bytes
        self._ctx: zmq.Context[Any] = zmq.Context.instance()
        self._local = threading.local()
        self._mine: OrderedDict[str, CommandTicket] = OrderedDict()
        self._sent_to: dict[str, Any] = {}
        self._unclaimed: OrderedDict[str, Mapping[str, Any]] = OrderedDict()
        """Outcomes the feed brought for ids not in ``_mine`` (see UNCLAIMED)."""
        """The runner (its id) that accepted each of this worker's commands."""
        self._mine_lock = threading.Lock()
        self._map_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:16]
        """Ids of deferred puts: this bus's random prefix and a count (unique as a uuid4 is,
        without the system call a uuid4 makes per command)."""
        self._cv = threading.Condition()
        self._message: dict[str, Any] | None = None
        """The last feed message with a snapshot."""
        self._snapshot: Snapshot | None = None
        self._runner: int | None = None
        self.received_at = 0.0
        """time.monotonic() of the last feed message (0: none yet)."""
        self._closed = threading.Event()
        self._heard = threading.Event()
        self._thread = threading.Thread(target=self._read_feed, name="worldloop-feed", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"IpcBus({self.world!r})"

    @property
    def url(self) -> str:
        return self.endpoints.requests

    @property
    def runner_up(self) -> bool:
        """True while the runner's feed is fresh (it beats while paused too)."""
        at = self.received_at
        return at > 0 and time.monotonic() - at < STALE_AFTER

    # -- requests --------------------------------------------------------------------------

    def request(self, message: dict[str, Any], timeout: float = REQUEST_TIMEOUT) -> Any:
        """Send one request to the runner and return its answer (raising its error).

        While the runner's feed is silent (down, or not started yet) it fails fast: a request
        thread never waits out a timeout on a runner known to be gone (it waits STALE_GRACE s
        for a late feed; a worker that just started up to FIRST_FEED s for the first message)."""
        self._check_runner()
        sock = getattr(self._local, "sock", None)
        if sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.endpoints.requests)
            self._local.sock = sock
        sock.send(ipc.pack(message))
        if not sock.poll(int(timeout * 1000)):
            # A lost or late answer must not be read as the next request's: a fresh socket.
            sock.close(0)
            self._local.sock = None
            raise self.no_answer(timeout)
        answer = ipc.unpack(sock.recv())
        if "error" in answer:
            ipc.raise_error(answer["error"])
        return answer.get("value")

    def no_answer(self, timeout: float) -> RunnerUnavailable:
        """The error of a request the runner did not answer in ``timeout`` seconds."""
        return RunnerUnavailable(
            f"the runner of world {self.world!r} did not answer in {timeout:g} s "
            "(restarting?); retry shortly",
            details={"reason": "runner_unavailable"},
        )

    def _check_runner(self, *, wait: bool = True) -> None:
        """Raise RunnerUnavailable while the runner's feed is silent (after the short waits
        :meth:`request` describes; at once without ``wait``)."""
        if not self._heard.is_set() and wait:
            self._heard.wait(FIRST_FEED)
        if not self.runner_up and wait:
            with self._cv:
                self._cv.wait_for(lambda: self.runner_up, STALE_GRACE)
        if not self.runner_up:
            raise RunnerUnavailable(
                f"the runner of world {self.world!r} is not running (starting, or restarting "
                "after it stopped); retry shortly",
                details={"reason": "runner_unavailable"},
            )

    def put(
        self,
        type_: str,
        payload: Mapping[str, Any],
        actor: str | None = None,
        key: IdempotencyKey | None = None,
        *,
        command_id: str | None = None,
    ) -> CommandTicket:
        message: dict[str, Any] = {"op": "put", "type": type_, "payload": payload, "actor": actor}
        if key is not None:
            message["key"] = [key.scope, key.fingerprint]
        if command_id is not None:
            message["id"] = command_id
        later = deferred.current()
        if later is not None and later.message is None:
            return self._defer(later, message, key)
        return self.accepted(self.request(message))

    def _defer(
        self, later: deferred.Deferred, message: dict[str, Any], key: IdempotencyKey | None
    ) -> CommandTicket:
        """Record the put for the caller of deferred.deferring to send; a provisional ticket
        (queued, under the id chosen here) meanwhile. Fails fast as a request does while the
        runner is down."""
        self._check_runner(wait=not later.inline)
        message.setdefault("id", f"{self._id_prefix}{next(self._ids):016x}")
        later.bus, later.message = self, message
        command = Command(
            str(message["id"]), 0, message["type"], message["payload"], message["actor"], 0, key
        )
        return CommandTicket(command)

    def accepted(self, answer: Mapping[str, Any]) -> CommandTicket:
        """This worker's ticket of a command the runner answered a put with (kept until its
        outcome comes on the feed; a keyed retry's is the one already kept)."""
        ticket = ticket_from(answer)
        if not ticket.done:
            with self._mine_lock:
                known = self._mine.get(ticket.id)
                if known is not None:  # a keyed retry of a command this worker sent
                    return known
                self._mine[ticket.id] = ticket
                self._sent_to[ticket.id] = answer.get("runner")
                while len(self._mine) > HISTORY:
                    self._sent_to.pop(self._mine.popitem(last=False)[0], None)
                early = self._unclaimed.pop(ticket.id, None)
            if early is not None:  # the feed was faster than this put's answer
                self._resolve(ticket, early)
        return ticket

    def keyed(self, scope: str) -> CommandTicket | None:
        if deferred.current() is not None:
            return None  # the deferred put's runner checks the key (its bus, then the journal)
        found = self.request({"op": "keyed", "scope": scope})
        if found is None:
            return None
        with self._mine_lock:
            known = self._mine.get(found["command"]["id"])
        return known if known is not None else ticket_from(found)

    def ticket(self, command_id: str) -> CommandTicket | None:
        with self._mine_lock:
            return self._mine.get(command_id)

    @property
    def latest(self) -> Snapshot | None:
        message = self._message
        if message is None:  # no feed heard yet: the runner may be down, its files are not
            return self._snapshot or self._newest_file()
        snap = self._snapshot
        if snap is not None and snap.tick == message["tick"]:
            return snap
        with self._map_lock:  # one thread maps a tick's file; the others wait and share it
            snap = self._snapshot
            if snap is not None and snap.tick == message["tick"]:
                return snap
            return self._map(message)

    def _map(self, message: Mapping[str, Any]) -> Snapshot | None:
        """The snapshot of ``message``, mapped from its file (once per tick per worker)."""
        try:
            data = shm.read(Path(message["file"]))
        except (OSError, ValueError) as exc:  # removed already: a newer one is on its way
            log.debug("worldloop: snapshot file of tick %s unreadable: %s", message["tick"], exc)
            return self._snapshot or self._newest_file()
        return self._keep(data, message)

    def _keep(self, data: dict[str, Any], meta: Mapping[str, Any]) -> Snapshot:
        """The snapshot of ``data`` described by ``meta``; kept if it is the newest seen."""
        snap = Snapshot(
            self.world,
            int(meta["tick"]),
            float(meta["sim_time"]),
            data,
            meta.get("summary") or {},
            float(meta["created_at"]),
            cache_bytes=self.cache_bytes,
        )
        current = self._snapshot
        if current is None or current.tick < snap.tick:
            self._snapshot = snap
        return snap

    def _newest_file(self) -> Snapshot | None:
        """The newest snapshot file of this world's runners, read without the feed.

        A worker that started while the runner was stopped (SIGSTOP, a long pause) or was
        being replaced has heard no feed message, yet the last published snapshot is still on
        disk (a runner removes its predecessors' files only once it has published its own):
        reads are served from it, as they are in a worker that heard the feed before."""
        try:
            found = sorted(
                shm.shm_dir().glob(f"{self.endpoints.prefix}*"),
                key=lambda p: p.stat().st_mtime_ns,
                reverse=True,
            )
        except OSError:  # a file went while listing: the next read looks again
            return None
        for path in found[:3]:
            try:
                data, meta = shm.read_meta(path)
            except (OSError, ValueError):
                continue
            if "tick" in meta:
                return self._keep(data, meta)
        return None

    def wait_after(self, tick: int, timeout: float) -> Snapshot | None:
        with self._cv:
            self._cv.wait_for(
                lambda: self._message is not None and self._message["tick"] > tick, timeout
            )
        return self.latest

    @property
    def depth(self) -> int:
        message = self._stats
        return int(message.get("queue_depth", 0)) if message else 0

    @property
    def gateway(self) -> str | None:
        """``host:port`` of the runner's stream gateway while it listens (the feed says so,
        worldloop.gateway.address) and the runner is up; else None."""
        message = self._stats
        found = message.get("gateway") if message and self.runner_up else None
        return str(found) if found else None

    _stats: dict[str, Any] | None = None

    # -- the feed --------------------------------------------------------------------------

    def _read_feed(self) -> None:
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(self.endpoints.feed)
        try:
            while not self._closed.is_set():
                if not sock.poll(200):
                    continue
                try:
                    self._on_message(ipc.unpack(sock.recv()))
                except Exception:  # a bad message must not end the feed
                    log.exception("worldloop: feed message dropped")
        finally:
            sock.close(0)

    def _on_message(self, message: dict[str, Any]) -> None:
        self.received_at = time.monotonic()
        self._heard.set()
        runner = message.get("runner")
        if runner != self._runner:
            self._runner = runner
            self._orphan(message)
        self._stats = message.get("stats")
        outcomes: Sequence[Mapping[str, Any]] = message.get("outcomes") or ()
        if message.get("early") and not self.early_outcomes:
            outcomes = ()  # this worker resolves them with the snapshot, in the next message
        if outcomes:
            with self._mine_lock:
                resolved = []
                for o in outcomes:
                    ticket = self._mine.get(o["command_id"])
                    if ticket is not None:
                        resolved.append((ticket, o))
                    else:
                        self._unclaimed[o["command_id"]] = o
                while len(self._unclaimed) > UNCLAIMED:
                    self._unclaimed.popitem(last=False)
            for ticket, o in resolved:
                self._resolve(ticket, o)
        if "file" in message:
            with self._cv:
                previous = self._message
                if (
                    previous is None
                    or message["tick"] != previous["tick"]
                    or runner != (previous.get("runner"))
                ):
                    self._message = message
                self._cv.notify_all()
        else:
            with self._cv:
                self._cv.notify_all()  # a beat: requests waiting out STALE_GRACE go on
        if self.on_feed is not None:
            self.on_feed(message)

    def _resolve(self, ticket: CommandTicket, outcome: Mapping[str, Any]) -> None:
        if not ticket.done:
            ticket.resolve(outcome_from(ticket.command, outcome), int(outcome["tick"]))
            self._announce(ticket)

    def _orphan(self, message: Mapping[str, Any]) -> None:
        """A new runner took over: commands the old one had not journaled never will be."""
        tick = int(message.get("tick") or 0)
        runner = message.get("runner")
        with self._mine_lock:
            waiting = [
                t for t in self._mine.values() if not t.done and self._sent_to[t.id] != runner
            ]
        for ticket in waiting:
            ticket.resolve(
                Outcome(
                    ticket.command,
                    False,
                    None,
                    "world_stopped",
                    "the runner restarted before this command was journaled; it was not "
                    "applied (retry it, with the same Idempotency-Key if it had one)",
                    {"reason": "runner_restarted"},
                ),
                tick,
            )
            self._announce(ticket)

    def _announce(self, ticket: CommandTicket) -> None:
        hook = self.on_resolved
        if hook is not None:
            try:
                hook(ticket)
            except Exception:  # contained: the feed goes on
                log.exception("worldloop: a resolution listener failed")

    # -- loop side: the runner's ---------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        raise NotImplementedError("the runner process sequences commands")

    def set_last_seq(self, seq: int) -> None:
        raise NotImplementedError("the runner process sequences commands")

    def take(self, limit: int | None = None) -> list[Command]:
        raise NotImplementedError("the runner process takes commands")

    def publish(self, snapshot: Snapshot, outcomes: Sequence[Outcome] = ()) -> None:
        raise NotImplementedError("the runner process publishes snapshots")

    def settle(self, outcomes: Sequence[Outcome], tick: int) -> None:
        raise NotImplementedError("the runner process resolves commands")

    def refuse_waiting(
        self, code: str, message: str, tick: int, details: Mapping[str, Any] | None = None
    ) -> int:
        return 0

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2.0)
