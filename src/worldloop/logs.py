"""Logging: stdlib ``logging`` configured once, one line per event, JSON on request.

Records logged on a world's loop thread carry the world name and the number of the tick being
computed, as its snapshot and journal entry will carry it (set by a before-tick hook, so the
tick itself is untouched); formatters print them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from typing import Any, TextIO

_loop = threading.local()
_configured_lock = threading.Lock()
_handler: logging.Handler | None = None

TRUTHY = ("1", "true", "yes", "on")


def set_loop_context(world: str, tick: int) -> None:
    """Mark the calling (loop) thread as computing ``tick`` of ``world``."""
    _loop.world = world
    _loop.tick = tick


def loop_context() -> tuple[str | None, int | None]:
    """The (world, tick) of the calling thread, or (None, None) off the loop."""
    return getattr(_loop, "world", None), getattr(_loop, "tick", None)


class LoopContextFilter(logging.Filter):
    """Adds ``world`` and ``tick`` attributes to every record (None off the loop thread)."""

    def filter(self, record: logging.LogRecord) -> bool:
        world, tick = loop_context()
        if not hasattr(record, "world"):
            record.world = world
        if not hasattr(record, "tick"):
            record.tick = tick
        return True


class TextFormatter(logging.Formatter):
    """``time level logger [world tick=N] message``; tracebacks folded onto the same line."""

    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ctx = ""
        tick = getattr(record, "tick", None)
        if tick is not None:
            ctx = f" [{getattr(record, 'world', None) or '-'} tick={tick}]"
        line = (
            f"{when}.{int(record.msecs):03d}Z {record.levelname} {record.name}{ctx} "
            f"{record.getMessage()}"
        )
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        elif record.stack_info:
            line += " | " + record.stack_info.replace("\n", " | ")
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, world, tick, pid, thread, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
            "thread": record.threadName,
        }
        tick = getattr(record, "tick", None)
        if tick is not None:
            out["world"] = getattr(record, "world", None)
            out["tick"] = tick
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def configure_logging(
    *, json_lines: bool | None = None, level: str | int | None = None, stream: TextIO | None = None
) -> logging.Handler:
    """Install worldloop's one handler on the root logger (idempotent: a later call replaces it).

    ``json_lines`` defaults to $WORLDLOOP_LOG_JSON, ``level`` to $WORLDLOOP_LOG_LEVEL or INFO.
    On the root logger so server lines (werkzeug, the app) share the format; handlers others
    installed are left alone, and worldloop's loggers keep propagating (pytest's caplog works).
    """
    global _handler
    if json_lines is None:
        json_lines = os.environ.get("WORLDLOOP_LOG_JSON", "").strip().lower() in TRUTHY
    if level is None:
        level = os.environ.get("WORLDLOOP_LOG_LEVEL", "INFO").upper()
    root = logging.getLogger()
    with _configured_lock:
        if _handler is not None:
            root.removeHandler(_handler)
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
        handler.addFilter(LoopContextFilter())
        root.addHandler(handler)
        root.setLevel(level)
        _handler = handler
    return handler


def is_configured() -> bool:
    """Whether worldloop installed its handler in this process."""
    return _handler is not None


def host_configured_logging() -> bool:
    """Whether the host configured logging already: the root logger has a handler that is not
    worldloop's (``logging.config.fileConfig``/``dictConfig``, gunicorn ``--log-config``,
    ``logging.basicConfig``). Adding one more would print every line twice."""
    return any(h is not _handler for h in logging.getLogger().handlers)
