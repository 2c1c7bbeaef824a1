"""How an app is being loaded: to serve it, or only to inspect its world (the CLI).

The CLI imports the user's app inside :func:`inspecting`; the extension checks
:func:`is_inspecting` before any start policy, so a world loaded for ``worldloop info`` is never
started and its lease never taken, whatever the app's config says.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_inspecting: ContextVar[bool] = ContextVar("worldloop_inspecting", default=False)


@contextlib.contextmanager
def inspecting() -> Iterator[None]:
    """Apps loaded in this block build their world but never start it (nor take its lease)."""
    token = _inspecting.set(True)
    try:
        yield
    finally:
        _inspecting.reset(token)


def is_inspecting() -> bool:
    """True while an app is being loaded by the CLI (see :func:`inspecting`)."""
    return _inspecting.get()
