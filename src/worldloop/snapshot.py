"""Snapshots out: an immutable view of the world after a tick, serialized at most once.

The loop builds a :class:`Snapshot` after each tick and publishes it by swapping one reference,
so readers never take a lock the tick holds. Serialization (and any other derived value) is
computed lazily, once per snapshot, however many readers ask for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np
import orjson

T = TypeVar("T")

DEFAULT_CACHE_BYTES = 32 * 1024 * 1024
"""Default bound on one snapshot's cached serializations (WORLDLOOP_SNAPSHOT_CACHE_BYTES)."""


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):  # orjson hands over only arrays it cannot encode itself
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__}")


_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(data: Any) -> bytes:
    """Compact JSON with native NumPy support (orjson); the one encoder used for every snapshot.

    NumPy arrays are written straight from their buffers (float32 in its shortest form), which
    is an order of magnitude faster than ``tolist()`` + ``json`` for large worlds. NaN and
    infinities become ``null``.
    """
    return orjson.dumps(data, default=_default, option=_OPTIONS)


def freeze_arrays(data: Mapping[str, Any]) -> dict[str, Any]:
    """Read-only NumPy arrays for a snapshot (recursively through dicts): a copy of each array,
    except of one that is already read-only through and through (:func:`is_frozen`), which is
    shared as it is.

    A world that replaces an array rather than mutating it once published can hand it over
    read-only (``arr.flags.writeable = False``) and so spare every tick the copy; NumPy then
    refuses any later in-place write to it, so a snapshot can never see it change.
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, np.ndarray):
            if is_frozen(value):
                out[key] = value
                continue
            arr = value.copy()
            arr.flags.writeable = False
            out[key] = arr
        elif isinstance(value, Mapping):
            out[key] = freeze_arrays(value)
        else:
            out[key] = value
    return out


def is_frozen(arr: np.ndarray[Any, Any]) -> bool:
    """Whether ``arr`` and every array it is a view of are read-only (nobody can write its
    data through NumPy without first making one of them writeable again)."""
    base: Any = arr
    while isinstance(base, np.ndarray):
        if base.flags.writeable:
            return False
        base = base.base
    return True


class Snapshot:
    """The world as it was after ``tick``: data, plus lazily cached derived values."""

    __slots__ = (
        "__weakref__",  # readers' caches refer to a snapshot without keeping it alive
        "_cache",
        "_cache_bytes",
        "_lock",
        "cache_max_bytes",
        "created_at",
        "data",
        "sim_time",
        "summary",
        "tick",
        "world",
    )

    def __init__(
        self,
        world: str,
        tick: int,
        sim_time: float,
        data: Mapping[str, Any],
        summary: Mapping[str, Any] | None = None,
        created_at: float | None = None,
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.world = world
        self.tick = tick
        self.sim_time = sim_time
        self.data = data
        self.summary: Mapping[str, Any] = summary or {}
        self.created_at = time.time() if created_at is None else created_at
        self._cache: dict[str, Any] = {}
        self._cache_bytes = 0
        self.cache_max_bytes = cache_bytes
        """Bound on the serialized values (``bytes``) this snapshot keeps: per-region frames
        are keyed by what clients ask for, so their number has no bound of its own."""
        self._lock = threading.RLock()  # a computation may use other cached values

    @property
    def etag(self) -> str:
        return f'"{self.world}-{self.tick}"'

    @property
    def cache_bytes(self) -> int:
        """Bytes of serialized values kept in this snapshot's cache."""
        return self._cache_bytes

    def cached(self, key: str, compute: Callable[[Snapshot], T]) -> T:
        """Compute a derived value once per snapshot; concurrent callers wait for the first.

        A ``bytes`` value is kept only while the cache's bytes stay under ``cache_max_bytes``
        (the first one always is, so the full serialization is shared however large); past the
        bound it is computed for its caller and not kept. Other values (indexes, views over the
        snapshot's own arrays) are few, fixed keys and are always kept.
        """
        try:
            return self._cache[key]  # type: ignore[no-any-return]
        except KeyError:
            pass
        with self._lock:
            if key in self._cache:
                return self._cache[key]  # type: ignore[no-any-return]
            value = compute(self)
            if isinstance(value, bytes):
                size = len(value)
                if self._cache_bytes and self._cache_bytes + size > self.cache_max_bytes:
                    return value
                self._cache_bytes += size
            self._cache[key] = value
            return value

    def to_json(self) -> bytes:
        """The whole snapshot as JSON bytes, serialized once."""
        return self.cached("json", lambda s: dumps(s.envelope()))

    def envelope(self) -> dict[str, Any]:
        """The serialized form. Data keys starting with ``_`` are private (indexes, secrets)."""
        return {
            "world": self.world,
            "tick": self.tick,
            "sim_time": self.sim_time,
            "created_at": self.created_at,
            "summary": self.summary,
            "data": {k: v for k, v in self.data.items() if not k.startswith("_")},
        }


class SnapshotBoard:
    """Holds the latest snapshot; readers get it without locks and may wait for a newer one."""

    def __init__(self) -> None:
        self._latest: Snapshot | None = None
        self._cv = threading.Condition()

    @property
    def latest(self) -> Snapshot | None:
        return self._latest

    def publish(self, snap: Snapshot) -> None:
        self._latest = snap  # one reference swap: atomic for readers
        with self._cv:
            self._cv.notify_all()

    def wait_after(self, tick: int, timeout: float) -> Snapshot | None:
        """Return the first snapshot with tick > ``tick``, or the latest one on timeout."""
        snap = self._latest
        if snap is not None and snap.tick > tick:
            return snap
        with self._cv:
            self._cv.wait_for(
                lambda: self._latest is not None and self._latest.tick > tick, timeout
            )
        return self._latest
