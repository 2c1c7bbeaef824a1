"""Cheap memory estimates, so in-memory histories and caches are bounded by bytes, not by count.

A count bound says nothing about memory: 100,000 tickets of 2 KB are 200 MB. Each bounded
structure charges an entry once, when it is made, with an estimate from the length of its JSON
form (what the entry would weigh on the wire) plus a fixed overhead measured for that kind of
entry; never a ``sys.getsizeof`` walk on a hot path. ``tests/test_bounds.py`` checks the
estimates against what ``tracemalloc`` sees.
"""

from __future__ import annotations

from typing import Any

from .snapshot import dumps

MiB = 1024 * 1024

TICKET_OVERHEAD = 768
"""A ticket in the command history with a small payload and result: the envelope and the
history's entry (measured ~0.7-0.9 KB on CPython 3.11; a ticket makes its event, a condition
and a lock, ~1.2 KB more, only for a thread that waits on it)."""

PYTHON_PER_JSON_BYTE = 3
"""Python objects weigh a few times their JSON text (a small dict or float is tens of bytes for
a few characters); payloads and results are charged this many bytes per JSON byte."""

BUCKET_OVERHEAD = 200
"""One rate-limiter bucket: the ordered dict's node, a tuple of two floats, the key object."""


def json_size(value: Any) -> int:
    """The length of ``value``'s compact JSON form (its ``repr`` when it is not JSON-able)."""
    if value is None:
        return 4
    try:
        return len(dumps(value))
    except (TypeError, ValueError):
        return len(repr(value))


def object_size(value: Any) -> int:
    """Estimated bytes ``value`` holds in memory as Python objects (bytes: their length)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    return PYTHON_PER_JSON_BYTE * json_size(value)
