"""Commands in: the envelope, sequencing, a bounded queue, and tickets that resolve when applied.

Request threads validate a command and put it on the queue; the loop thread drains the queue in
arrival order at the next tick. A full queue raises :class:`QueueFull` (backpressure) instead of
growing without bound. Each command gets a :class:`CommandTicket` that the submitter can wait on.

A command may carry an :class:`IdempotencyKey` (exactly-once submission): the queue remembers
recent keys (bounded by count and age, never forgetting one still in flight), so a retry gets
the first command's ticket instead of a second command; the key is journaled with the command,
so the store answers for keys the queue no longer remembers (after a restart too).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .errors import IdempotencyKeyReused, QueueFull
from .sizes import TICKET_OVERHEAD, MiB, object_size


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A client's key for one submission: ``scope`` names it uniquely (who sent it, and the
    key), ``fingerprint`` is a digest of the request it first came with."""

    scope: str
    fingerprint: str

    def check(self, fingerprint: str | None) -> None:
        """Raise IdempotencyKeyReused unless ``fingerprint`` is this key's first request's."""
        if fingerprint != self.fingerprint:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was first used with a different request; "
                "use a new key for a new request",
                details={"header": "Idempotency-Key"},
            )


@dataclass(frozen=True, slots=True)
class Command:
    """One validated command, ready for the loop. ``seq`` orders it among all commands."""

    id: str
    seq: int
    type: str
    payload: Mapping[str, Any]
    actor: str | None = None
    submitted_at: float = field(default=0.0, compare=False)
    key: IdempotencyKey | None = None

    def to_record(self) -> dict[str, Any]:
        """The JSON-able form kept in the journal and replayed on recovery."""
        record: dict[str, Any] = {
            "id": self.id,
            "seq": self.seq,
            "type": self.type,
            "payload": dict(self.payload),
            "actor": self.actor,
        }
        if self.key is not None:
            record["key"] = self.key.scope
            record["key_fp"] = self.key.fingerprint
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Command:
        scope = record.get("key")
        return cls(
            id=str(record["id"]),
            seq=int(record["seq"]),
            type=str(record["type"]),
            payload=dict(record.get("payload") or {}),
            actor=record.get("actor"),
            key=None if scope is None else IdempotencyKey(str(scope), str(record.get("key_fp"))),
        )


class CommandStatus(StrEnum):
    QUEUED = "queued"
    APPLIED = "applied"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What applying one command did: a result, or a rejection with a reason."""

    command: Command
    ok: bool
    result: Any = None
    error_code: str | None = None
    error_message: str | None = None
    error_details: Mapping[str, Any] | None = None


_WAKE_LOCK = threading.Lock()
"""Guards each ticket's hand-over between :meth:`CommandTicket.resolve` and a first
:meth:`CommandTicket.wait` (held for a few instructions: one lock for all tickets, not one
each)."""


class CommandTicket:
    """The submitter's handle on a command: its status, tick and result once the loop is done.

    The event a waiter blocks on is made by the first :meth:`wait`, not with the ticket: most
    tickets are never waited on by a thread (the gateway's waits are futures; a 202 waits for
    nothing), and a ``threading.Event`` (a Condition and its lock) cost more than the rest of
    the ticket, on every put, on the submitter's side and again on the runner's."""

    __slots__ = ("_done", "_event", "command", "nbytes", "outcome", "status", "tick")

    def __init__(self, command: Command, nbytes: int = TICKET_OVERHEAD) -> None:
        self.command = command
        self.nbytes = nbytes
        """Estimated memory of this ticket (envelope, payload, and once resolved its result)."""
        self.status = CommandStatus.QUEUED
        self.tick: int | None = None
        self.outcome: Outcome | None = None
        self._done = False
        self._event: threading.Event | None = None

    @property
    def id(self) -> str:
        return self.command.id

    @property
    def done(self) -> bool:
        return self._done

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the command is applied or rejected; False on timeout."""
        if self._done:
            return True
        with _WAKE_LOCK:
            if self._done:  # resolved meanwhile: it set no event, none was there yet
                return True
            event = self._event
            if event is None:
                event = self._event = threading.Event()
        return event.wait(timeout)

    def resolve(self, outcome: Outcome, tick: int) -> None:
        """Called by the loop once the tick holding this command is durable."""
        self.outcome = outcome
        self.tick = tick
        self.status = CommandStatus.APPLIED if outcome.ok else CommandStatus.REJECTED
        with _WAKE_LOCK:
            self._done = True
            event = self._event
        if event is not None:
            event.set()

    @classmethod
    def from_journal(cls, tick: int, record: Mapping[str, Any]) -> CommandTicket:
        """A resolved ticket for a command the journal holds (a key the queue forgot)."""
        ticket = cls(Command.from_record(record))
        error = record.get("error") or {}
        ok = bool(record.get("ok"))
        outcome = Outcome(
            ticket.command,
            ok,
            record.get("result") if ok else None,
            None if ok else error.get("code"),
            None if ok else error.get("message"),
            None if ok else dict(error.get("details") or {}),
        )
        ticket.resolve(outcome, tick)
        return ticket

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "command_id": self.command.id,
            "type": self.command.type,
            "status": self.status.value,
            "tick": self.tick,
        }
        o = self.outcome
        if o is not None:
            if o.ok:
                data["result"] = o.result
            else:
                data["error"] = {
                    "code": o.error_code,
                    "message": o.error_message,
                    "details": dict(o.error_details or {}),
                }
        return data


class CommandQueue:
    """A bounded FIFO of commands with global sequencing; put never blocks, it refuses.

    Two memory bounds, both by estimated bytes (``worldloop.sizes``): the commands waiting
    (``max_bytes`` of payload, beside ``maxsize`` commands) and the history of recent tickets
    kept for look-ups by id (``history_bytes``; the oldest leave first, and the journal answers
    for them). A single command always fits an empty queue.
    """

    def __init__(
        self,
        maxsize: int,
        *,
        history_bytes: int = 32 * MiB,
        max_bytes: int = 64 * MiB,
        keys: int = 10_000,
        key_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if maxsize < 1:
            raise ValueError("queue size must be >= 1")
        if history_bytes < 0 or max_bytes < 1:
            raise ValueError("history_bytes must be >= 0 and max_bytes >= 1")
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self._items: deque[CommandTicket] = deque()
        self._queued_bytes = 0
        self._lock = threading.Lock()
        self._seq = 0
        self._history: OrderedDict[str, CommandTicket] = OrderedDict()
        self._history_bytes = 0
        self.history_max_bytes = history_bytes
        self._keys: OrderedDict[str, tuple[float, CommandTicket]] = OrderedDict()
        self._keys_max = keys
        self._key_seconds = key_seconds
        self._clock = clock

    def __len__(self) -> int:
        return len(self._items)

    @property
    def queued_bytes(self) -> int:
        """Estimated bytes of the commands waiting."""
        return self._queued_bytes

    @property
    def history_bytes(self) -> int:
        """Estimated bytes of the tickets kept for look-ups."""
        return self._history_bytes

    @property
    def history_len(self) -> int:
        return len(self._history)

    @property
    def last_seq(self) -> int:
        return self._seq

    def set_last_seq(self, seq: int) -> None:
        """Continue numbering after ``seq`` (used after recovery)."""
        with self._lock:
            self._seq = max(self._seq, seq)

    def put(
        self,
        type_: str,
        payload: Mapping[str, Any],
        actor: str | None = None,
        key: IdempotencyKey | None = None,
        *,
        command_id: str | None = None,
    ) -> CommandTicket:
        """Sequence and enqueue a validated command; raise QueueFull when at capacity.

        With a ``key`` the queue still remembers, the first command's ticket comes back and
        nothing is queued (IdempotencyKeyReused if the request differs). ``command_id``: the
        id the submitter chose (unique: a uuid4 hex), else a new one."""
        size = object_size(payload)
        with self._lock:
            if key is not None:
                known = self._keys.get(key.scope)
                if known is not None:
                    key.check(known[1].command.key.fingerprint if known[1].command.key else None)
                    return known[1]
            if len(self._items) >= self.maxsize:
                raise QueueFull(
                    f"command queue is full ({self.maxsize} waiting); retry shortly",
                    details={"capacity": self.maxsize},
                )
            if self._items and self._queued_bytes + size > self.max_bytes:
                raise QueueFull(
                    f"command queue is full ({self._queued_bytes} bytes waiting); retry shortly",
                    details={"capacity": self.maxsize, "capacity_bytes": self.max_bytes},
                )
            self._seq += 1
            cmd = Command(
                id=command_id or uuid.uuid4().hex,
                seq=self._seq,
                type=type_,
                payload=payload,
                actor=actor,
                submitted_at=time.time(),
                key=key,
            )
            ticket = CommandTicket(cmd, TICKET_OVERHEAD + size)
            self._items.append(ticket)
            self._queued_bytes += size
            self._remember(ticket)
            if key is not None:
                self._remember_key(key.scope, ticket)
        return ticket

    def _remember(self, ticket: CommandTicket) -> None:
        """Keep ``ticket`` for look-ups, letting the oldest go past the bound (lock held)."""
        self._history[ticket.command.id] = ticket
        self._history_bytes += ticket.nbytes
        self._trim()

    def _trim(self) -> None:
        history = self._history
        while self._history_bytes > self.history_max_bytes and history:
            _, old = history.popitem(last=False)
            self._history_bytes -= old.nbytes

    def _remember_key(self, scope: str, ticket: CommandTicket) -> None:
        """Keep ``scope`` → ticket; forget the oldest resolved keys beyond the count or age
        bound (one still in flight is never forgotten: the journal does not have it yet)."""
        now = self._clock()
        self._keys[scope] = (now, ticket)
        while self._keys:
            _scope, (since, oldest) = next(iter(self._keys.items()))
            expired = len(self._keys) > self._keys_max or now - since > self._key_seconds
            if not (expired and oldest.done):
                break
            self._keys.popitem(last=False)

    def keyed(self, scope: str) -> CommandTicket | None:
        """The ticket of a remembered idempotency key, or None (then ask the journal)."""
        with self._lock:
            known = self._keys.get(scope)
            return None if known is None else known[1]

    def drain(self, limit: int | None = None) -> list[CommandTicket]:
        """Take up to ``limit`` commands in arrival order (all when None)."""
        with self._lock:
            n = len(self._items) if limit is None else min(limit, len(self._items))
            taken = [self._items.popleft() for _ in range(n)]
            if not self._items:
                self._queued_bytes = 0
            else:
                for ticket in taken:
                    self._queued_bytes -= ticket.nbytes - TICKET_OVERHEAD
            return taken

    def charge_results(self, tickets: list[CommandTicket]) -> None:
        """Charge resolved tickets' results to the history (measured once, when resolved)."""
        extra = []
        for ticket in tickets:
            o = ticket.outcome
            if o is None:
                continue
            if o.ok:
                size = object_size(o.result)
            else:
                size = len(o.error_message or "") + object_size(o.error_details or {})
            extra.append((ticket, size))
        if not extra:
            return
        with self._lock:
            history = self._history
            for ticket, size in extra:
                ticket.nbytes += size
                if history.get(ticket.command.id) is ticket:
                    self._history_bytes += size
            self._trim()

    def get(self, command_id: str) -> CommandTicket | None:
        """A recent ticket by command id (kept while the history is under its byte bound)."""
        with self._lock:
            return self._history.get(command_id)
