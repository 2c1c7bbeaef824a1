"""One world of a host (worldloop.host): its kind, config and runtime, and how the list shows it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .jobs import JobScheduler
from .runtime import WorldRuntime

Status = Literal["running", "paused", "stopped", "failed", "hibernated"]


@dataclass(slots=True)
class HostedWorld:
    """One world of the host: its kind and config, and the runtime that runs it."""

    name: str
    kind: str
    config: Mapping[str, Any]
    runtime: WorldRuntime
    jobs: JobScheduler | None = None
    created_at: float = 0.0
    default: bool = False
    failed: str | None = field(default=None)
    """Why the world could not be started here (its runtime is then not running)."""
    seen_at: float = 0.0
    """When a world served from elsewhere was looked up (monotonic; see WorldHost.get)."""

    @property
    def status(self) -> Status:
        if self.failed is not None:
            return "failed"
        if not self.runtime.running:
            return "stopped"
        return "paused" if self.runtime.stats().paused else "running"

    def summary(self) -> dict[str, Any]:
        """What ``GET /api/v1/worlds`` lists for this world."""
        rt = self.runtime
        snap = rt.latest
        extra = snap.summary if snap is not None else {}
        players = extra.get("player_count", extra.get("players"))
        return {
            "name": self.name,
            "kind": self.kind,
            "default": self.default,
            "status": self.status,
            "tick": snap.tick if snap is not None else rt.tick,
            "rate_hz": rt.stats().rate_hz,
            "players": players if isinstance(players, int) else None,
            "error": self.failed,
            **(rt.ownership() if hasattr(rt, "ownership") else {}),
        }
