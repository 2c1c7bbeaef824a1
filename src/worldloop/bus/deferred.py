"""Deferred puts: a submission that returns before the runner has answered it.

The stream gateway runs the web workers' Flask handler for ``POST /api/v1/commands`` on a small
thread pool. A put there used to be a request/reply round trip to the runner, so a pool thread
waited on the runner (which answers between and during its ticks) for every command. Inside
:func:`deferring`, :meth:`worldloop.bus.ipc.IpcBus.put` sends nothing: it records the request,
with a command id chosen here, and returns a provisional ticket (queued, under that id), so the
handler renders the answer it renders for a fresh command. The gateway then hands the recorded
request to its runner link (worldloop.gateway.runner_link), waits for the answer without a
thread, and keeps or corrects the handler's answer with the runner's (refused: the refusal's
status; a reused Idempotency-Key: the first command's ticket). The runner still sequences,
refuses and checks keys exactly as for a web worker.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .ipc import IpcBus


class WouldBlock(BaseException):
    """Raised inside an inline deferral where the handler would wait (for a newer snapshot that
    may know its token): the gateway's event loop never waits, so it runs the request again on
    a thread. Raised before the request changed anything (no rate-limit token taken, no put);
    a BaseException so that the app's error handlers pass it through (it is no response)."""


@dataclass(slots=True)
class Deferred:
    """The put a handler made inside :func:`deferring`: its bus and request (None: none).
    ``inline``: the handler runs on the gateway's event loop, where nothing may wait."""

    bus: IpcBus | None = None
    message: dict[str, Any] | None = None
    inline: bool = False

    @property
    def command_id(self) -> str | None:
        return None if self.message is None else str(self.message["id"])


_current = threading.local()


class _Deferring:
    """The context manager :func:`deferring` returns (a class: a generator-based one cost
    four times as much, on every command the gateway submits)."""

    __slots__ = ("deferred",)

    def __init__(self, deferred: Deferred) -> None:
        self.deferred = deferred

    def __enter__(self) -> Deferred:
        _current.value = self.deferred
        return self.deferred

    def __exit__(self, *exc: object) -> None:
        _current.value = None


def deferring(*, inline: bool = False) -> AbstractContextManager[Deferred]:
    """Defer this thread's first put (and skip its key look-up: the runner checks the key
    when the put reaches it) until the block ends; the caller sends what it recorded.

    ``inline``: the block runs on an event loop: a handler that would wait raises
    :class:`WouldBlock` instead, and a put while the runner's feed is silent is refused at
    once (503) instead of waiting for it to come back."""
    return _Deferring(Deferred(inline=inline))


def current() -> Deferred | None:
    """This thread's open deferral, if any."""
    found: Deferred | None = getattr(_current, "value", None)
    return found
