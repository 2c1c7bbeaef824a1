"""The in-process bus (``local://``): the bounded command queue and the snapshot board.

It wraps :class:`~worldloop.commands.CommandQueue` and :class:`~worldloop.snapshot.SnapshotBoard`
unchanged, so the embedded mode pays nothing for the seam: a put is one locked append, a
publish one reference swap, and a taken command's ticket is found again by id when its tick is
published.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..commands import Command, CommandQueue, CommandTicket, IdempotencyKey, Outcome
from ..sizes import MiB
from ..snapshot import Snapshot, SnapshotBoard


class LocalBus:
    """Commands and snapshots of one world inside this process."""

    def __init__(
        self,
        world: str = "world",
        *,
        queue_size: int = 10_000,
        queue_bytes: int = 64 * MiB,
        history_bytes: int = 32 * MiB,
        keys: int = 10_000,
        key_seconds: float = 600.0,
    ) -> None:
        self.world = world
        self._queue = CommandQueue(
            queue_size,
            max_bytes=queue_bytes,
            history_bytes=history_bytes,
            keys=keys,
            key_seconds=key_seconds,
        )
        self._board = SnapshotBoard()
        self._taken: dict[str, CommandTicket] = {}
        """Tickets of commands taken by the loop and not resolved yet (loop thread only)."""

    def __repr__(self) -> str:
        return f"LocalBus({self.world!r})"

    @property
    def url(self) -> str:
        return "local://"

    @property
    def capacity(self) -> int:
        return self._queue.maxsize

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
        return self._queue.put(type_, payload, actor, key, command_id=command_id)

    def keyed(self, scope: str) -> CommandTicket | None:
        return self._queue.keyed(scope)

    def ticket(self, command_id: str) -> CommandTicket | None:
        return self._queue.get(command_id)

    @property
    def latest(self) -> Snapshot | None:
        return self._board.latest

    def wait_after(self, tick: int, timeout: float) -> Snapshot | None:
        return self._board.wait_after(tick, timeout)

    @property
    def depth(self) -> int:
        return len(self._queue)

    # -- loop side ---------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self._queue.last_seq

    def set_last_seq(self, seq: int) -> None:
        self._queue.set_last_seq(seq)

    def take(self, limit: int | None = None) -> list[Command]:
        tickets = self._queue.drain(limit)
        taken = self._taken
        for ticket in tickets:
            taken[ticket.command.id] = ticket
        return [ticket.command for ticket in tickets]

    def publish(self, snapshot: Snapshot, outcomes: Sequence[Outcome] = ()) -> None:
        self._board.publish(snapshot)
        if outcomes:
            self.settle(outcomes, snapshot.tick)

    def settle(self, outcomes: Sequence[Outcome], tick: int) -> None:
        taken = self._taken
        resolved = []
        for outcome in outcomes:
            ticket = taken.pop(outcome.command.id, None)
            if ticket is not None:
                ticket.resolve(outcome, tick)
                resolved.append(ticket)
        self._queue.charge_results(resolved)

    def refuse_waiting(
        self, code: str, message: str, tick: int, details: Mapping[str, Any] | None = None
    ) -> int:
        tickets = self._queue.drain()
        for ticket in tickets:
            ticket.resolve(Outcome(ticket.command, False, None, code, message, details), tick)
        self._queue.charge_results(tickets)
        return len(tickets)

    def close(self) -> None:
        """Nothing to release."""
