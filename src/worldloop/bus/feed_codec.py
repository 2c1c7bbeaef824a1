"""The bytes of a snapshot on the Redis feed: packed once by the owner, unpacked once per worker.

The uncompressed layout is :func:`worldloop.runner.shm.pack` (a JSON document of the tree, then
each array's raw bytes). A large world's arrays are mostly floats and integers whose high bytes
vary little from one element to the next (ids, ages, the exponents of positions), which deflate
cannot see in the raw interleaved layout. So, as Blosc and HDF5 do, :func:`encode` *shuffles*
each array (its first bytes of every element, then its second bytes, ...) and deflates the whole
with zlib's run-length strategy at level 1: the demo meadow at 100k creatures goes from 4.1 MB
to 2.5 MB per tick (-40%) in about 20 ms on the publisher thread (zlib lets go of the GIL
meanwhile), where plain deflate level 1 gives 2.9 MB in about 100 ms; a reader inflates and
unshuffles it in under 10 ms (bench/scaleout.py measures both beside the raw layout).
``level=0`` (or a body under :data:`MIN_BYTES`) writes the raw layout, which :func:`decode`
reads too, so feed entries written before this format are still served.

Compressed entry: ``b"WLFZ"`` u8 version u8 zlib level u16 0, then deflate of the body, which
is ``shm.pack``'s layout with each array's bytes shuffled (same lengths, same offsets).
Lossless: the JSON a worker serves is the same whichever layout carried the snapshot.
zlib is the standard library's; zstd would pack faster for the same size but is no dependency of
worldloop (and Python 3.11 has no ``compression.zstd``).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from ..runner import shm

MAGIC = b"WLFZ"
VERSION = 1
DEFAULT_LEVEL = 1
"""zlib level 1: levels above it cost 2-5 times the time for a few % fewer bytes here."""
MIN_BYTES = 16 * 1024
"""Bodies smaller than this go raw: a small world's entry is cheap to send as it is."""
_HEAD = struct.Struct("<4sBBH")


def _shuffled(arr: np.ndarray) -> bytes:
    """The bytes of ``arr`` grouped by their position in the element (byte 0 of all, ...)."""
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    return flat.reshape(-1, arr.dtype.itemsize).T.tobytes()


def _unshuffled(body: bytes, base: int, dtype: np.dtype[Any], shape: list[int]) -> np.ndarray:
    """Inverse of :func:`_shuffled` for the array at ``base`` in ``body`` (read-only)."""
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    size = dtype.itemsize
    planes = np.frombuffer(body, dtype=np.uint8, count=count * size, offset=base)
    out = np.ascontiguousarray(planes.reshape(size, count).T).view(dtype).reshape(shape)
    out.flags.writeable = False  # snapshots are immutable, as the raw layout's views are
    return out


def encode(data: Mapping[str, Any], level: int = DEFAULT_LEVEL) -> bytes:
    """``data`` (a snapshot tree) as one feed value: shuffled and deflated at ``level`` (1-9),
    or the raw ``shm.pack`` layout for ``level`` 0 and for small bodies."""
    if level <= 0:
        return shm.pack(data)
    head, arrays = shm.encode(data)
    size = len(head) + sum(arr.nbytes for arr in arrays)
    if size < MIN_BYTES:
        return shm.pack(data)
    parts = [head, b"\0" * (-len(head) % shm.ALIGN)]
    for arr in arrays:
        parts.append(_shuffled(arr))
        parts.append(b"\0" * (-arr.nbytes % shm.ALIGN))
    deflate = zlib.compressobj(min(level, 9), zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    body = b"".join(parts)
    return _HEAD.pack(MAGIC, VERSION, level, 0) + deflate.compress(body) + deflate.flush()


def decode(buf: bytes) -> dict[str, Any]:
    """The snapshot tree in a feed value of either layout; ValueError if it is neither."""
    if not buf.startswith(MAGIC):
        return shm.unpack(buf)
    if len(buf) < _HEAD.size or _HEAD.unpack_from(buf)[1] != VERSION:
        raise ValueError("a compressed feed entry of an unknown version")
    try:
        body = zlib.decompress(memoryview(buf)[_HEAD.size :])
    except zlib.error as exc:
        raise ValueError(f"a damaged compressed feed entry: {exc}") from exc
    magic, doc_len = shm._HEADER.unpack_from(body, 0)
    if magic != shm.MAGIC or shm._HEADER.size + doc_len > len(body):
        raise ValueError("not a packed snapshot")
    doc = orjson.loads(body[shm._HEADER.size : shm._HEADER.size + doc_len])
    base = -(-(shm._HEADER.size + doc_len) // shm.ALIGN) * shm.ALIGN
    arrays = [
        _unshuffled(body, base + int(offset), np.dtype(dtype), list(shape))
        for dtype, shape, offset in doc["arrays"]
    ]
    data = shm._rebuild(doc["tree"], arrays)
    if not isinstance(data, dict):
        raise ValueError("a packed snapshot holds a mapping")
    return data


def entry_position(fields: Mapping[bytes, Any]) -> tuple[int, int]:
    """A feed entry's (epoch, tick); (-1, -1) when it has none (a bad entry)."""
    try:
        return int(fields[b"epoch"]), int(fields[b"tick"])
    except (KeyError, TypeError, ValueError):
        return -1, -1
