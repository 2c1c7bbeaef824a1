"""The bus protocol: how commands travel from the API to a world's loop, and published
snapshots (with the outcomes of their tick) travel back.

Two sides, one object. The **API side** (any request thread, any web worker) puts validated
commands and gets a :class:`~worldloop.commands.CommandTicket` back, looks tickets up, reads the
latest snapshot and waits for a newer one. The **loop side** (the one writer thread of the
process holding the world's lease) takes commands in order, and after the tick is journaled
publishes the snapshot together with that tick's outcomes: tickets resolve only then, so an
acknowledgement always means a committed journal (DESIGN.md invariants 2 and 5).

``local://`` (bus/local.py) is the in-process queue and board. A Redis bus (SCALEOUT.md) maps
the same calls onto streams: ``put`` is a bounded XADD to ``wl:{world}:cmd`` (full: QueueFull),
``take`` reads from the offset journaled with the last tick, ``publish`` appends ``(epoch,
tick, bytes, outcomes)`` to ``wl:{world}:feed`` after the commit, and every worker resolves its
own tickets and serves ``latest`` from that feed. Commands are sequenced by the bus (``seq``
grows across restarts: :meth:`Bus.set_last_seq` after recovery). One contract suite
(``tests/contracts/test_bus_contract.py``) runs over every implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ..commands import Command, CommandTicket, IdempotencyKey, Outcome
from ..snapshot import Snapshot


class Bus(Protocol):
    """Commands in, snapshots out, for one world. Opened by URL with
    :func:`worldloop.bus.open_bus`."""

    world: str

    @property
    def url(self) -> str:
        """Where the bus runs (``local://``)."""
        ...

    # -- API side (any thread) ---------------------------------------------------------------

    def put(
        self,
        type_: str,
        payload: Mapping[str, Any],
        actor: str | None = None,
        key: IdempotencyKey | None = None,
        *,
        command_id: str | None = None,
    ) -> CommandTicket:
        """Sequence and enqueue a validated command; never blocks: QueueFull when at capacity.
        With a ``key`` the bus remembers, the first command's ticket instead (nothing queued;
        IdempotencyKeyReused when the request differs). ``command_id``: the id the submitter
        chose (the stream gateway answers before the runner does), else a new one."""
        ...

    def keyed(self, scope: str) -> CommandTicket | None:
        """The ticket of a recent idempotency key (bounded; never one in flight), or None."""
        ...

    def ticket(self, command_id: str) -> CommandTicket | None:
        """A recent command's ticket by id (a bounded history), or None."""
        ...

    @property
    def latest(self) -> Snapshot | None:
        """The last published snapshot (None before the first); never blocks."""
        ...

    def wait_after(self, tick: int, timeout: float) -> Snapshot | None:
        """The first snapshot with a tick after ``tick``, or the latest after ``timeout`` s."""
        ...

    @property
    def depth(self) -> int:
        """Commands put and not yet taken (backpressure, metrics)."""
        ...

    # -- loop side (the world's writer thread) ---------------------------------------------

    @property
    def last_seq(self) -> int:
        """The sequence number of the last command put."""
        ...

    def set_last_seq(self, seq: int) -> None:
        """Number the next commands after ``seq`` (after recovery: the journal's last seq)."""
        ...

    def take(self, limit: int | None = None) -> list[Command]:
        """Up to ``limit`` waiting commands (all when None), in the order they were put."""
        ...

    def publish(self, snapshot: Snapshot, outcomes: Sequence[Outcome] = ()) -> None:
        """Make ``snapshot`` the latest, then resolve the tickets of ``outcomes`` (commands
        taken for that tick) at its tick. Call it only once the tick is durable."""
        ...

    def settle(self, outcomes: Sequence[Outcome], tick: int) -> None:
        """Resolve taken commands without publishing (a tick that could not be journaled)."""
        ...

    def refuse_waiting(
        self, code: str, message: str, tick: int, details: Mapping[str, Any] | None = None
    ) -> int:
        """Reject every command still waiting with ``code``/``message`` (the world stops or
        halted, nothing would ever run them); returns how many. A shared bus whose commands
        outlive this runner (Redis) may leave them for the next owner instead."""
        ...

    def close(self) -> None:
        """Release what the bus holds (connections, reader threads)."""
        ...
