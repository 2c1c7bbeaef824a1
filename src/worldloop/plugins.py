"""The runtime's one plug-in protocol: named hooks that do nothing unless overridden.

Metrics, jobs and anything else that follows a world's life is a plug-in added with
``WorldRuntime.add_plugin``. The runtime calls only the hooks a plug-in overrides, and contains
every failure in one place (``WorldRuntime.hook_errors``, logged with the hook's name): a
failing plug-in never stops a tick, a journal write or a stop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .clock import TickInfo
    from .runtime import TickReport, WorldRuntime

HOOKS = (
    "started",
    "before_tick",
    "after_tick",
    "journal_written",
    "snapshot_saved",
    "stopping",
)
"""Every hook name, in the order of a world's life."""


class RuntimePlugin:
    """Base of every runtime plug-in; override the hooks you need, leave the rest."""

    def started(self, rt: WorldRuntime) -> None:
        """The world is recovered, published and its loop is running (starting thread)."""

    def before_tick(self, rt: WorldRuntime, info: TickInfo) -> None:
        """A tick is about to drain the queue and step the world (loop thread)."""

    def after_tick(self, rt: WorldRuntime, report: TickReport) -> None:
        """A tick is durable, published and its tickets are resolved (loop thread)."""

    def journal_written(self, rt: WorldRuntime, tick: int, seconds: float) -> None:
        """Tick ``tick`` is durable; ``seconds`` is the write's time, retries included."""

    def snapshot_saved(self, rt: WorldRuntime, tick: int, seconds: float) -> None:
        """A full snapshot of ``tick`` is stored (snapshot writer or stopping thread)."""

    def stopping(self, rt: WorldRuntime) -> None:
        """The loop has stopped; the store is still open (close pools, flush, say goodbye)."""


def overridden(plugin: RuntimePlugin, hook: str) -> Callable[..., None] | None:
    """``plugin``'s bound ``hook`` when its class overrides it, else None (never called)."""
    if getattr(type(plugin), hook) is getattr(RuntimePlugin, hook):
        return None
    method: Callable[..., None] = getattr(plugin, hook)
    return method


class TickListener(RuntimePlugin):
    """A plug-in made of one after-tick function: ``rt.add_plugin(TickListener(fn))``."""

    def __init__(self, fn: Callable[[TickReport], object]) -> None:
        self.fn = fn

    def after_tick(self, rt: WorldRuntime, report: TickReport) -> None:
        self.fn(report)
