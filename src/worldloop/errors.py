"""The worldloop error hierarchy: every error the library raises on purpose is a WorldLoopError."""

from __future__ import annotations

from typing import Any


class WorldLoopError(Exception):
    """Base of every error worldloop raises on purpose.

    ``code`` is a stable machine-readable name and ``status`` the HTTP status the API maps it to.
    """

    code = "worldloop_error"
    status = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}


class CommandInvalid(WorldLoopError):
    """A command failed validation before it was queued (bad type, bad or missing fields)."""

    code = "invalid_command"
    status = 422


class CommandRejected(WorldLoopError):
    """A command was valid but the world refused it when applied (the reason says why)."""

    code = "command_rejected"
    status = 409


class QueueFull(WorldLoopError):
    """The command queue is at capacity: back off and retry (backpressure)."""

    code = "queue_full"
    status = 503


class WorldNotRunning(WorldLoopError):
    """The world loop is not running in this process (stopped, or never started)."""

    code = "world_not_running"
    status = 503


class WorldLockedError(WorldLoopError):
    """Another process already runs this world (the lease is held elsewhere)."""

    code = "world_locked"
    status = 503


class ConfigError(WorldLoopError):
    """The configuration is wrong; the message names the key."""

    code = "config_error"
    status = 500


class StoreError(WorldLoopError):
    """The journal or snapshot store failed, or holds data that cannot be trusted."""

    code = "store_error"
    status = 503
