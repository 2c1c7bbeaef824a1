"""The engine's errors, and the one registry from an error code to its HTTP status.

Every error worldloop raises on purpose is a :class:`WorldLoopError` with a stable ``code``.
A class declares its status once, in its class line (``class QueueFull(WorldLoopError,
code="queue_full", status=503)``); the API answers with that status and nothing else writes it
again. Codes that only appear in command outcomes (``world_stopped``…) are registered with
:func:`register_code`. A code registered twice with two statuses is a programming error.
"""

from __future__ import annotations

from typing import Any, ClassVar

HTTP_STATUS: dict[str, int] = {}
"""Error code → HTTP status: the API's single source for both."""


def register_code(code: str, status: int) -> None:
    """Declare the HTTP status of ``code`` (once; the same status again is fine)."""
    known = HTTP_STATUS.setdefault(code, status)
    if known != status:
        raise ValueError(f"error code {code!r} is already registered with status {known}")


def status_of(code: str, default: int = 500) -> int:
    """The HTTP status of ``code`` (``default`` for a code nobody registered)."""
    return HTTP_STATUS.get(code, default)


class WorldLoopError(Exception):
    """Base of every error worldloop raises on purpose.

    ``code`` is a stable machine-readable name; ``status`` its HTTP status (from the
    registry); ``retry_after`` (seconds), when set, tells a client when to try again.
    """

    code: ClassVar[str] = "worldloop_error"
    headers: dict[str, str] = {}
    retry_after: float | None = None

    def __init_subclass__(cls, code: str | None = None, status: int | None = None, **kw: Any):
        super().__init_subclass__(**kw)
        if code is not None:
            cls.code = code
        if status is not None:
            register_code(cls.code, status)

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    @property
    def status(self) -> int:
        return status_of(self.code)


register_code(WorldLoopError.code, 500)


class CommandInvalid(WorldLoopError, code="invalid_command", status=422):
    """A command failed validation before it was queued (bad type, bad or missing fields)."""


class CommandRejected(WorldLoopError, code="command_rejected", status=409):
    """A command was valid but the world refused it when applied (the reason says why)."""


class QueueFull(WorldLoopError, code="queue_full", status=503):
    """The command queue is at capacity: back off and retry (backpressure)."""

    retry_after = 1.0


class WorldNotRunning(WorldLoopError, code="world_not_running", status=503):
    """The world loop is not running in this process (stopped, or never started)."""

    retry_after = 1.0


class WorldLockedError(WorldLoopError, code="world_locked", status=503):
    """Another process already runs this world (the lease is held elsewhere)."""


class ConfigError(WorldLoopError, code="config_error", status=500):
    """The configuration is wrong; the message names the key."""


class StoreError(WorldLoopError, code="store_error", status=503):
    """The journal or snapshot store failed, or holds data that cannot be trusted."""

    retry_after = 5.0


class WorldFenced(StoreError, code="world_fenced", status=503):
    """Another runner owns this world now (its epoch in the store is newer, or this runner's
    lease expired): this one commits nothing more and gives the world up."""

    retry_after = 1.0


class IdempotencyKeyReused(WorldLoopError, code="idempotency_key_reused", status=422):
    """An ``Idempotency-Key`` came back with a different request than the one it first named."""


class ClockStateError(WorldLoopError, code="clock_state", status=409):
    """A clock control was used in a state that does not allow it (e.g. step while running)."""


class JobNotFound(WorldLoopError, code="job_not_found", status=404):
    """No job of that name is registered."""


class JobBusy(WorldLoopError, code="job_busy", status=409):
    """The job already runs as many times at once as it may."""


class JobFailed(WorldLoopError, code="job_failed", status=500):
    """A job raised or timed out (its traceback is in the log)."""


class WorldNotFound(WorldLoopError, code="world_not_found", status=404):
    """No world of that name is hosted here (issue 13: many worlds in one server)."""


class WorldExists(WorldLoopError, code="world_exists", status=409):
    """A world of that name exists already (names are unique in a server and its store)."""


class WorldLimit(WorldLoopError, code="world_limit", status=409):
    """Creating the world would pass WORLDLOOP_MAX_WORLDS or WORLDLOOP_MAX_WORLDS_PER_KIND."""


class WorldConfigInvalid(WorldLoopError, code="invalid_world", status=422):
    """An unknown world kind, or a config that the kind's factory refused."""


class WorldsUnsupported(WorldLoopError, code="worlds_unsupported", status=501):
    """This process cannot create worlds (a web worker: its runner process hosts them)."""


# Codes that only appear in command outcomes (a ticket's error), never raised as such.
register_code("command_failed", 409)
register_code("world_stopped", 503)
register_code("store_unavailable", 503)
register_code("forbidden", 403)
register_code("not_found", 404)
