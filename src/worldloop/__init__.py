"""worldloop: a living, in-memory world behind a Flask REST API, on a drift-free fixed clock."""

from .clock import ManualClock, MonotonicClock, OverrunPolicy, Ticker, TickInfo
from .commands import Command, CommandQueue, CommandTicket, Outcome
from .errors import (
    CommandInvalid,
    CommandRejected,
    ConfigError,
    QueueFull,
    StoreError,
    WorldLockedError,
    WorldLoopError,
    WorldNotRunning,
)
from .extension import WorldLoop, get_runtime
from .jobs import (
    Cron,
    Every,
    EveryTicks,
    JobContext,
    JobKind,
    JobScheduler,
    JobSpec,
    Misfire,
)
from .runtime import TickReport, WorldRuntime
from .snapshot import Snapshot
from .world import System, World

__all__ = [
    "Command",
    "CommandInvalid",
    "CommandQueue",
    "CommandRejected",
    "CommandTicket",
    "ConfigError",
    "Cron",
    "Every",
    "EveryTicks",
    "JobContext",
    "JobKind",
    "JobScheduler",
    "JobSpec",
    "ManualClock",
    "Misfire",
    "MonotonicClock",
    "Outcome",
    "OverrunPolicy",
    "QueueFull",
    "Snapshot",
    "StoreError",
    "System",
    "TickInfo",
    "TickReport",
    "Ticker",
    "World",
    "WorldLockedError",
    "WorldLoop",
    "WorldLoopError",
    "WorldNotRunning",
    "WorldRuntime",
    "get_runtime",
]
