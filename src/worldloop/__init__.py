"""worldloop: a living, in-memory world behind a Flask REST API, on a drift-free fixed clock."""

from .clock import ManualClock, MonotonicClock, OverrunPolicy, Ticker, TickInfo
from .commands import Command, CommandQueue, CommandTicket, Outcome
from .config import Settings
from .errors import (
    ClockStateError,
    CommandInvalid,
    CommandRejected,
    ConfigError,
    JobBusy,
    JobFailed,
    JobNotFound,
    QueueFull,
    StoreError,
    WorldLockedError,
    WorldLoopError,
    WorldNotRunning,
)
from .extension import WorldLoop
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
from .looppool import LoopPool
from .plugins import RuntimePlugin, TickListener
from .runtime import TickReport, WorldRuntime
from .snapshot import Snapshot
from .state import WorldLoopState, get_runtime
from .world import System, World

__all__ = [
    "ClockStateError",
    "Command",
    "CommandInvalid",
    "CommandQueue",
    "CommandRejected",
    "CommandTicket",
    "ConfigError",
    "Cron",
    "Every",
    "EveryTicks",
    "JobBusy",
    "JobContext",
    "JobFailed",
    "JobKind",
    "JobNotFound",
    "JobScheduler",
    "JobSpec",
    "LoopPool",
    "ManualClock",
    "Misfire",
    "MonotonicClock",
    "Outcome",
    "OverrunPolicy",
    "QueueFull",
    "RuntimePlugin",
    "Settings",
    "Snapshot",
    "StoreError",
    "System",
    "TickInfo",
    "TickListener",
    "TickReport",
    "Ticker",
    "World",
    "WorldLockedError",
    "WorldLoop",
    "WorldLoopError",
    "WorldLoopState",
    "WorldNotRunning",
    "WorldRuntime",
    "get_runtime",
]
