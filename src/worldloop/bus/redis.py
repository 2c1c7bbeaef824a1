"""The scale-out bus (``redis://host:port/db?prefix=wl:``): commands and the feed on Redis Streams.

Any worker, any host: ``put`` is a bounded XADD to ``wl:{world}:cmd`` (one script: idempotency
key, bound, sequence number, append; full = QueueFull). The world's owner ``take``s from the
stream offset its journal reached (:meth:`RedisBus.start_at` after it claims the world); the
offset of each tick's last command goes to the store's epoch fence (``on_taken``) and commits with
the tick, so commands read but not committed are read again by the next owner. After the commit,
``publish`` hands ``(epoch, tick, snapshot, outcomes)`` to a publisher thread, which packs it,
appends it to the capped ``wl:{world}:feed`` and trims the commands the journal now holds. Every
worker reads the feed on a thread of its own: it serves ``latest`` from it (never going back in
``(epoch, tick)``) and resolves the tickets of the commands it put, so an acknowledgement always
means a committed journal.

Streams rather than pub/sub: a worker that misses a moment reads on from where it was. The keys
of one world share the hash tag ``{world}`` (one Redis Cluster slot). A failed tick (``settle``)
and a stop (``refuse_waiting``) resolve nothing here: the commands stay in the stream for the
next owner, which applies them, so refusing them now could contradict what happens next.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from ..commands import Command, CommandTicket, IdempotencyKey, Outcome
from ..errors import QueueFull, WorldNotRunning
from ..snapshot import DEFAULT_CACHE_BYTES, Snapshot
from ..store.base import _jsonable
from .feed_codec import DEFAULT_LEVEL, decode, encode, entry_position
from .redis_scripts import PUT, SET_SEQ, START, after, id_key

if TYPE_CHECKING:
    import redis


log = logging.getLogger("worldloop.bus")


class BusUnavailable(WorldNotRunning):
    """Redis did not answer a put (restarting, unreachable): nothing was queued, retry."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBus:
    """One world's commands and feed on Redis; see the module docstring."""

    def __init__(
        self,
        client: redis.Redis,
        world: str = "world",
        *,
        prefix: str = "wl:",
        queue_size: int = 10_000,
        feed_length: int = 64,
        history: int = 10_000,
        key_seconds: float = 600.0,
        url: str = "redis://",
        snapshot_cache_bytes: int = DEFAULT_CACHE_BYTES,
        read: bool = True,
        feed_level: int = DEFAULT_LEVEL,
    ) -> None:
        self.world = world
        self.client = client
        base = f"{prefix}{{{world}}}"
        self.cmd_key, self.feed_key = f"{base}:cmd", f"{base}:feed"
        self.seq_key, self.depth_key = f"{base}:seq", f"{base}:depth"
        self.key_prefix = f"{base}:key:"
        self.capacity = queue_size
        self.feed_length = feed_length
        self.feed_level = feed_level
        """zlib level of the feed's snapshots (0: raw; feed_codec says what pays)."""
        self.history = history
        self.key_seconds = key_seconds
        self.snapshot_cache_bytes = snapshot_cache_bytes
        self._url = url
        self._put = client.register_script(PUT)
        self._set_seq = client.register_script(SET_SEQ)
        self._start = client.register_script(START)
        self.epoch = 0
        """The owner's epoch, written with each feed entry (set when it claims the world)."""
        self.cursor = "0-0"
        """The stream offset of the last command taken (owner only)."""
        self._committed = "0-0"
        self.on_taken: Callable[[str], None] | None = None
        """Told the offset of each batch's last command (the store's fence commits it)."""
        self._tickets: OrderedDict[str, CommandTicket] = OrderedDict()
        self._keys: dict[str, CommandTicket] = {}
        self._lock = threading.Lock()
        self._latest: Snapshot | None = None
        self._position = (-1, -1)
        self._cv = threading.Condition()
        self._closed = threading.Event()
        self._depth = 0
        from redis.exceptions import RedisError  # the extra "redis", loaded with this bus

        self._errors = RedisError
        self._outbox_cv = threading.Condition()
        self._outbox: tuple[int, Snapshot] | None = None
        self._outbox_out: list[list[Any]] = []
        self._outbox_trim: str | None = None
        self._sending = False
        self._publisher: threading.Thread | None = None
        self._reader: threading.Thread | None = None
        if read:
            self._reader = threading.Thread(
                target=self._read_feed, name=f"feed-{world}", daemon=True
            )
            self._reader.start()

    def __repr__(self) -> str:
        return f"RedisBus({self.world!r}, {self.cmd_key!r})"

    @property
    def url(self) -> str:
        return self._url

    # -- API side ----------------------------------------------------------------------------

    def put(
        self,
        type_: str,
        payload: Mapping[str, Any],
        actor: str | None = None,
        key: IdempotencyKey | None = None,
        *,
        command_id: str | None = None,
    ) -> CommandTicket:
        if key is not None:
            known = self.keyed(key.scope)
            if known is not None:
                return self._same(known, key)
        record: dict[str, Any] = {
            "id": command_id or uuid.uuid4().hex,
            "type": type_,
            "payload": dict(payload),
            "actor": actor,
            "at": time.time(),
        }
        if key is not None:
            record["key"], record["key_fp"] = key.scope, key.fingerprint
        try:
            reply: Any = self._put(
                keys=[
                    self.cmd_key,
                    self.seq_key,
                    self.depth_key,
                    "" if key is None else self.key_prefix + key.scope,
                ],
                args=[self.capacity, orjson.dumps(record), int(self.key_seconds * 1000)],
            )
        except self._errors as exc:
            raise BusUnavailable(
                f"world {self.world!r}: Redis did not take the command ({exc}); nothing was "
                "queued, retry shortly",
                details={"bus": self.cmd_key},
            ) from exc
        if int(reply[0]) == -1:
            raise QueueFull(
                f"world {self.world!r}: {self.capacity} commands are waiting; retry shortly",
                details={"capacity": self.capacity},
            )
        if int(reply[0]) == 0:  # the key's first command, put by this or another worker
            seq, _, first = _text(reply[1]).partition(" ")
            ticket = CommandTicket(self._command(orjson.loads(first), int(seq)))
            assert key is not None
            return self._same(self._remember(ticket), key)
        return self._remember(CommandTicket(self._command(record, int(reply[1]))))

    def _same(self, ticket: CommandTicket, key: IdempotencyKey) -> CommandTicket:
        first = ticket.command.key
        key.check(None if first is None else first.fingerprint)
        return ticket

    @staticmethod
    def _command(record: Mapping[str, Any], seq: int) -> Command:
        scope = record.get("key")
        return Command(
            id=str(record["id"]),
            seq=seq,
            type=str(record["type"]),
            payload=dict(record.get("payload") or {}),
            actor=record.get("actor"),
            submitted_at=float(record.get("at") or 0.0),
            key=None if scope is None else IdempotencyKey(str(scope), str(record.get("key_fp"))),
        )

    def _remember(self, ticket: CommandTicket) -> CommandTicket:
        """Keep this worker's ticket to resolve from the feed (bounded: resolved ones go first,
        and one still pending after ``key_seconds``: its command was lost with a restart of
        Redis, and would otherwise hold every later ticket in memory)."""
        with self._lock:
            found = self._tickets.get(ticket.id)
            if found is not None:
                return found
            self._tickets[ticket.id] = ticket
            if ticket.command.key is not None:
                self._keys[ticket.command.key.scope] = ticket
            while len(self._tickets) > self.history:
                old_id, old = next(iter(self._tickets.items()))
                if not old.done and time.time() - old.command.submitted_at < self.key_seconds:
                    break
                del self._tickets[old_id]
                if old.command.key is not None:
                    self._keys.pop(old.command.key.scope, None)
        return ticket

    def keyed(self, scope: str) -> CommandTicket | None:
        """The ticket of a key this worker put. One still in flight is answered only while
        Redis still holds its key: after a restart of Redis without its data the key is gone,
        and with it the command, which a retry must then put anew (the journal is asked
        first); an unreachable Redis answers None too (the put then says 503)."""
        with self._lock:
            ticket = self._keys.get(scope)
        if ticket is None or ticket.done:
            return ticket
        try:
            held = bool(self.client.exists(self.key_prefix + scope))
        except self._errors:
            return None
        return ticket if held else None

    def ticket(self, command_id: str) -> CommandTicket | None:
        with self._lock:
            return self._tickets.get(command_id)

    @property
    def latest(self) -> Snapshot | None:
        return self._latest

    def wait_after(self, tick: int, timeout: float) -> Snapshot | None:
        snap = self._latest
        if snap is not None and snap.tick > tick:
            return snap
        with self._cv:
            self._cv.wait_for(
                lambda: self._latest is not None and self._latest.tick > tick, timeout
            )
        return self._latest

    @property
    def position(self) -> tuple[int, int]:
        """(epoch, tick) of :attr:`latest` ((-1, -1) before the first): it never goes back."""
        return self._position

    @property
    def depth(self) -> int:
        """Commands waiting (the last known count while Redis does not answer)."""
        with contextlib.suppress(self._errors):
            self._depth = int(_text(self.client.get(self.depth_key) or 0))
        return self._depth

    # -- loop side ---------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return int(_text(self.client.get(self.seq_key) or 0))

    def set_last_seq(self, seq: int) -> None:
        self._set_seq(keys=[self.seq_key], args=[int(seq)])

    def start_at(self, cursor: str, epoch: int) -> None:
        """Take over the stream for ``epoch``: read after ``cursor`` (the journal's offset),
        drop what the journal already holds, and count what is still waiting."""
        self.epoch = epoch
        self.cursor = self._committed = cursor
        self._start(keys=[self.cmd_key, self.depth_key], args=[after(cursor), cursor])  # one
        # script: no put slips between the count and the reset (redis_scripts.START)

    def take(self, limit: int | None = None) -> list[Command]:
        entries: Any = self.client.xrange(
            self.cmd_key, min=f"({self.cursor}", max="+", count=limit or None
        )
        if not entries:
            return []
        commands = [
            self._command(orjson.loads(fields[b"c"]), int(fields[b"seq"])) for _, fields in entries
        ]
        self.cursor = _text(entries[-1][0])
        self.client.decrby(self.depth_key, len(entries))
        if self.on_taken is not None:
            self.on_taken(self.cursor)
        return commands

    def publish(self, snapshot: Snapshot, outcomes: Sequence[Outcome] = ()) -> None:
        """Show ``snapshot`` here and resolve this worker's tickets now; hand the feed entry
        (packing and XADD take tens of ms for a large world) to the publisher thread, so the
        loop never waits on Redis. A publisher behind by a tick sends only the newest snapshot,
        with every outcome since (each carrying its own tick)."""
        tick = snapshot.tick
        out = [
            [o.command.id, tick, True, _jsonable(o.result)]
            if o.ok
            else [
                o.command.id,
                tick,
                False,
                None,
                o.error_code,
                o.error_message,
                _jsonable(dict(o.error_details or {})),
            ]
            for o in outcomes
        ]
        self._show(self.epoch, snapshot)
        if out:
            self.settle_local(out)
        trim = None
        if self.cursor != self._committed:  # the journal holds these commands now
            trim = self._committed = self.cursor
        with self._outbox_cv:
            self._outbox = (self.epoch, snapshot)
            self._outbox_out.extend(out)
            if trim is not None:
                self._outbox_trim = trim
            self._outbox_cv.notify_all()
            if self._publisher is None:
                self._publisher = threading.Thread(
                    target=self._publish_loop, name=f"publish-{self.world}", daemon=True
                )
                self._publisher.start()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every published tick is in the feed; False on timeout."""
        with self._outbox_cv:
            return self._outbox_cv.wait_for(
                lambda: self._outbox is None and not self._sending, timeout
            )

    def _publish_loop(self) -> None:
        cv = self._outbox_cv
        while True:
            with cv:
                cv.wait_for(lambda: self._outbox is not None or self._closed.is_set())
                if self._outbox is None:
                    return
                (epoch, snap), out, trim = self._outbox, self._outbox_out, self._outbox_trim
                self._outbox, self._outbox_out, self._outbox_trim = None, [], None
                self._sending = True
            try:
                self._send(epoch, snap, out, trim)
            except Exception as exc:
                log.warning(
                    "world %r: the feed entry of tick %d failed: %s", self.world, snap.tick, exc
                )
                with cv:  # kept for the next attempt (a newer snapshot replaces this one)
                    if self._outbox is None:
                        self._outbox = (epoch, snap)
                    self._outbox_out[:0] = out
                    self._outbox_trim = self._outbox_trim or trim
                if self._closed.wait(0.1):
                    return
            finally:
                with cv:
                    self._sending = False
                    cv.notify_all()

    def _send(self, epoch: int, snap: Snapshot, out: list[list[Any]], trim: str | None) -> None:
        parts = {
            "sim_time": snap.sim_time,
            "created_at": snap.created_at,
            "summary": dict(snap.summary),
            "data": dict(snap.data),
        }
        body = encode(parts, self.feed_level)
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(
            self.feed_key,
            {"epoch": epoch, "tick": snap.tick, "snap": body, "out": orjson.dumps(out)},
            maxlen=self.feed_length,
            approximate=True,
        )
        if trim is not None:
            pipe.xtrim(self.cmd_key, minid=after(trim), approximate=False)
        pipe.execute()

    def settle(self, outcomes: Sequence[Outcome], tick: int) -> None:
        """Nothing: the tick was not journaled, its commands stay for the next owner."""

    def refuse_waiting(
        self, code: str, message: str, tick: int, details: Mapping[str, Any] | None = None
    ) -> int:
        """Nothing: the waiting commands stay in the stream for the world's next owner."""
        return 0

    def close(self) -> None:
        """Send what is still to be published (within 2 s), then stop both threads."""
        self.flush(2.0)
        self._closed.set()
        with self._outbox_cv:
            self._outbox_cv.notify_all()
        for thread in (self._reader, self._publisher):
            if thread is not None and thread is not threading.current_thread():
                thread.join(3.0)

    # -- the feed ------------------------------------------------------------------------------

    def _show(self, epoch: int, snap: Snapshot) -> bool:
        """Make ``snap`` the latest unless it is not newer in (epoch, tick)."""
        with self._cv:
            if (epoch, snap.tick) <= self._position:
                return False
            self._position = (epoch, snap.tick)
            self._latest = snap
            self._cv.notify_all()
        return True

    def settle_local(self, out: Sequence[Sequence[Any]]) -> None:
        """Resolve this worker's tickets named in a feed entry's outcomes, each
        ``[id, tick, ok, result]`` or ``[id, tick, False, None, code, message, details]``."""
        for item in out:
            ticket = self.ticket(str(item[0]))
            if ticket is None or ticket.done:
                continue
            outcome = (
                Outcome(ticket.command, True, item[3])
                if item[2]
                else Outcome(ticket.command, False, None, item[4], item[5], item[6])
            )
            ticket.resolve(outcome, int(item[1]))

    def _read_feed(self) -> None:
        client = self.client
        last = "0-0"
        while not self._closed.is_set():
            try:
                if last == "0-0":
                    newest: Any = client.xrevrange(self.feed_key, count=1)
                    if newest:
                        self._entry(newest[0][1])
                        last = _text(newest[0][0])
                    else:
                        last = "0-1"  # anything from now on
                        continue
                reply: Any = client.xread({self.feed_key: last}, count=256, block=500)
                if not reply and last != "0-1":
                    last = self._behind(last)
            except Exception as exc:
                log.warning("world %r: reading the feed failed: %s", self.world, exc)
                self._closed.wait(0.5)
                continue
            for _, entries in reply or ():
                # a reader behind decodes only the newest snapshot it read, and shows it before
                # it resolves any ticket: an acknowledged command is in what this worker serves
                newest = max(range(len(entries)), key=lambda n: entry_position(entries[n][1]))
                for n in (newest, *range(newest)):
                    try:
                        self._entry(entries[n][1], show=n == newest)
                    except Exception:
                        log.exception("world %r: a bad feed entry %s", self.world, entries[n][0])
                if entries:
                    last = _text(entries[-1][0])

    def _behind(self, last: str) -> str:
        """``last``, or "0-0" (read the newest again) when the feed's newest id is below it: a
        Redis restarted without its data and with its clock behind numbers the new entries
        below what this reader saw (redis_scripts), and XREAD after ``last`` would wait forever.
        """
        newest: Any = self.client.xrevrange(self.feed_key, count=1)
        if newest and id_key(_text(newest[0][0])) < id_key(last):
            log.warning(
                "world %r: the feed restarted below %s; reading it afresh", self.world, last
            )
            return "0-0"
        return last

    def _entry(self, fields: Mapping[bytes, Any], show: bool = True) -> None:
        """Show an entry's snapshot (decoded here, once per worker and tick) if it is newer,
        then resolve this worker's tickets it names; ``show`` False: only the tickets."""
        epoch, tick = int(fields[b"epoch"]), int(fields[b"tick"])
        if show and (epoch, tick) > self._position:
            parts = decode(bytes(fields[b"snap"]))
            snap = Snapshot(
                self.world,
                tick,
                float(parts["sim_time"]),
                parts["data"],
                parts["summary"],
                float(parts["created_at"]),
                cache_bytes=self.snapshot_cache_bytes,
            )
            self._show(epoch, snap)
        self.settle_local(orjson.loads(fields[b"out"]))
