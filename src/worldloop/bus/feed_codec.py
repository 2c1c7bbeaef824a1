"""The bytes of a snapshot on the Redis feed: packed once by the owner, unpacked once per worker.

The uncompressed layout is :func:`worldloop.runner.shm.pack` (a JSON document of the tree, then
each array's raw bytes). A large world's arrays are mostly floats and integers whose high bytes
vary little from one element to the next (ids, ages, the exponents of positions), which deflate
cannot see in the raw interleaved layout. So, as Blosc and HDF5 do, :func:`encode` *shuffles*
each array into byte planes (its first bytes of every element, then its second bytes, ...) and
deflates each plane that a sample shows to shrink (zlib level 1, run-length strategy); the
planes of random-looking low mantissa bytes go as they are, which is where deflate would spend
most of its time for nothing, and a plane of one repeated byte (the high bytes of small
integers) is stored as that byte. The demo meadow at 100k creatures goes from 4.1 MB to 2.5 MB per
tick (-40%); deflating every plane gave the same bytes for three times the time, and plain
deflate of the raw layout 2.9 MB for five times (bench/scaleout.py measures the publisher's
and a reader's time beside the raw layout's; zlib lets go of the GIL while it works).
Why on by default although it costs CPU (a few ms per tick at 100k creatures on the publisher,
and again in each worker's reader): Redis is the one component every worker and host shares,
and the feed is most of what it stores (its last 64 entries per world) and sends (one entry
per worker and tick); the CPU is spent in the runners and workers, which scale out.
``level=0`` (or a body under :data:`MIN_BYTES`) writes the raw layout, which :func:`decode`
reads too, so feed entries written before this format are still served.

Compressed entry (little-endian)::

    b"WLFZ" u8 version u8 level u16 0   u32 planes   u32 size[planes] (bit 31: deflated,
                                                                      bit 30: one byte repeated)
    the shm header + JSON document      the planes, array by array, byte 0 first

Lossless: the JSON a worker serves is the same whichever layout carried the snapshot. zlib is
the standard library's; zstd would pack faster for the same size but is no dependency of
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
VERSION = 2
DEFAULT_LEVEL = 1
"""zlib level 1: levels above it cost 2-5 times the time for a few % fewer bytes here."""
MIN_BYTES = 16 * 1024
"""Bodies smaller than this go raw: a small world's entry is cheap to send as it is."""
SAMPLE = 8192
"""Bytes of a plane deflated first to see whether the whole plane is worth it."""
WORTH = 0.8
"""A plane is deflated when its sample shrinks below this fraction."""
DEFLATED = 1 << 31
CONSTANT = 1 << 30
"""Size flags: a deflated plane, or a plane of one repeated byte (stored as that byte: the
high bytes of small integers, which then cost neither deflate nor inflate)."""
_HEAD = struct.Struct("<4sBBHI")


def _deflate(data: bytes, level: int) -> bytes:
    packer = zlib.compressobj(level, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    return packer.compress(data) + packer.flush()


def _planes(arr: np.ndarray) -> np.ndarray:
    """``arr``'s bytes as a (itemsize, count) uint8 matrix: row k holds byte k of each element."""
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    return flat.reshape(-1, arr.dtype.itemsize).T


def encode(data: Mapping[str, Any], level: int = DEFAULT_LEVEL) -> bytes:
    """``data`` (a snapshot tree) as one feed value: byte planes, each deflated at ``level``
    (1-9) when that pays, or the raw ``shm.pack`` layout for ``level`` 0 and small bodies."""
    if level <= 0:
        return shm.pack(data)
    head, arrays = shm.encode(data)
    if len(head) + sum(arr.nbytes for arr in arrays) < MIN_BYTES:
        return shm.pack(data)
    level = min(level, 9)
    sizes: list[int] = []
    parts: list[bytes] = []
    for arr in arrays:
        for plane in _planes(arr):
            if plane.size >= 512 and plane[0] == plane.min() == plane.max():
                sizes.append(1 | CONSTANT)
                parts.append(plane[:1].tobytes())
                continue
            raw = plane.tobytes()
            packed = None
            if len(raw) >= 512 and len(_deflate(raw[:SAMPLE], level)) < WORTH * len(raw[:SAMPLE]):
                packed = _deflate(raw, level)
            if packed is not None and len(packed) < len(raw):
                sizes.append(len(packed) | DEFLATED)
                parts.append(packed)
            else:
                sizes.append(len(raw))
                parts.append(raw)
    table = struct.pack(f"<{len(sizes)}I", *sizes)
    return b"".join([_HEAD.pack(MAGIC, VERSION, level, 0, len(sizes)), table, head, *parts])


def decode(buf: bytes) -> dict[str, Any]:
    """The snapshot tree in a feed value of either layout; ValueError if it is neither."""
    if not buf.startswith(MAGIC):
        return shm.unpack(buf)
    if len(buf) < _HEAD.size:
        raise ValueError("a truncated compressed feed entry")
    _, version, _, _, count = _HEAD.unpack_from(buf)
    if version != VERSION:
        raise ValueError(f"a compressed feed entry of version {version}, not {VERSION}")
    try:
        sizes = struct.unpack_from(f"<{count}I", buf, _HEAD.size)
        at = _HEAD.size + 4 * count
        magic, doc_len = shm._HEADER.unpack_from(buf, at)
    except struct.error as exc:
        raise ValueError(f"a truncated compressed feed entry: {exc}") from exc
    if magic != shm.MAGIC:
        raise ValueError("not a packed snapshot")
    at += shm._HEADER.size
    doc = orjson.loads(buf[at : at + doc_len])
    at += doc_len
    planes = iter(sizes)
    arrays: list[np.ndarray] = []
    for dtype_str, shape, _ in doc["arrays"]:
        dtype = np.dtype(dtype_str)
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        matrix = np.empty((count, dtype.itemsize), dtype=np.uint8)
        for k in range(dtype.itemsize):
            size = next(planes, None)
            if size is None:
                raise ValueError("a compressed feed entry with too few planes")
            length = size & ~(DEFLATED | CONSTANT)
            stored = buf[at : at + length]
            at += length
            if size & CONSTANT and len(stored) == 1:
                matrix[:, k] = stored[0]
                continue
            try:
                plane = zlib.decompress(stored) if size & DEFLATED else stored
            except zlib.error as exc:
                raise ValueError(f"a damaged compressed feed entry: {exc}") from exc
            if len(plane) != count:
                raise ValueError("a damaged compressed feed entry: a plane of the wrong size")
            matrix[:, k] = np.frombuffer(plane, dtype=np.uint8)
        arr = matrix.view(dtype).reshape(shape)
        arr.flags.writeable = False  # snapshots are immutable, as the raw layout's views are
        arrays.append(arr)
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
