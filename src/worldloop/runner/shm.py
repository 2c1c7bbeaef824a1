"""Published snapshots in shared memory: written once by the runner, mapped read-only by workers.

A snapshot's data is a tree of dicts, lists, JSON scalars and NumPy arrays (``World.view``).
The runner writes it once per tick into a file on a RAM-backed filesystem (``/dev/shm``): a
header, a JSON document of everything that is not an array (arrays replaced by references,
dicts with non-string keys tagged so they come back as they were), then each array's raw bytes
at an aligned offset. A web worker maps the file read-only and rebuilds the tree with NumPy
views on the mapping: no copy of the arrays, whatever their size, and no process can change
them (the mapping is read-only; the runner never writes a file twice). Unlinked files stay
readable through existing mappings, so the runner removes old files on a time bound and a
worker holding an old snapshot keeps it whole. No pickle: a damaged file can only fail to map.

Hand-written because no library maps a tree of NumPy arrays from shared memory without a copy
(``np.savez`` copies on load; Arrow/pyarrow would add a large dependency for this one job).
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..snapshot import dumps

MAGIC = b"WLSNAP01"
ALIGN = 64
_HEADER = struct.Struct("<8sQ")  # magic, length of the JSON document
_ARRAY = "__nd__"
_PAIRS = "__pairs__"


def shm_dir() -> Path:
    """Where snapshot files live: ``/dev/shm`` (RAM) when there is one, else the temp dir."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    import tempfile

    return Path(tempfile.gettempdir())


_PLAIN = frozenset({str, int, float, bool, type(None)})
"""Types a JSON encoder takes as they are: kept without a call each (the runner flattens every
tick's snapshot, and the players' records are mostly such values)."""


def _flatten(value: Any, arrays: list[np.ndarray]) -> Any:
    """The JSON-able form of ``value``; arrays are appended to ``arrays`` and referenced."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("arrays of Python objects cannot be shared")
        arrays.append(np.ascontiguousarray(value))
        return {_ARRAY: len(arrays) - 1}
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value):
            if _ARRAY in value or _PAIRS in value:
                return {_PAIRS: [[k, _flatten(v, arrays)] for k, v in value.items()]}
            return {k: v if type(v) in _PLAIN else _flatten(v, arrays) for k, v in value.items()}
        return {
            _PAIRS: [[k, v if type(v) in _PLAIN else _flatten(v, arrays)] for k, v in value.items()]
        }
    if isinstance(value, (list, tuple)):
        return [v if type(v) in _PLAIN else _flatten(v, arrays) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def encode(
    data: Mapping[str, Any], meta: Mapping[str, Any] | None = None
) -> tuple[bytes, list[np.ndarray]]:
    """The header + JSON document of ``data`` (and of ``meta``, a JSON object kept beside it),
    and its arrays in reference order."""
    arrays: list[np.ndarray] = []
    tree = _flatten(data, arrays)
    layout = []
    offset = 0
    for arr in arrays:
        layout.append([arr.dtype.str, list(arr.shape), offset])
        offset += -(-arr.nbytes // ALIGN) * ALIGN
    body: dict[str, Any] = {"tree": tree, "arrays": layout}
    if meta is not None:
        body["meta"] = meta
    doc = dumps(body)
    return _HEADER.pack(MAGIC, len(doc)) + doc, arrays


def write(path: Path, data: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> int:
    """Write ``data`` to a new file at ``path`` (mode 0600, never overwritten); its size.

    ``meta`` (a JSON object: the snapshot's tick, times, summary) travels in the file too, so a
    worker that never heard the feed can still serve the newest file it finds (see read_meta).
    """
    head, arrays = encode(data, meta)
    base = -(-len(head) // ALIGN) * ALIGN
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(head)
            out.write(b"\0" * (base - len(head)))
            for arr in arrays:
                out.write(arr.tobytes() if arr.nbytes < 4096 else arr.data.cast("B"))
                pad = -arr.nbytes % ALIGN
                if pad:
                    out.write(b"\0" * pad)
            size = out.tell()
    finally:
        os.close(fd)
    return size


_NESTED = (dict, list)


def _rebuild(value: Any, arrays: list[np.ndarray]) -> Any:
    """``value`` (a JSON document's node) with its array references and key-pair lists made
    arrays and dicts again. Scalars, most of a snapshot, are kept without a call each: a
    reader maps every tick's file, and the calls were most of its cost. The document is the
    caller's own (just decoded), so its dicts and lists are changed in place where a node
    nested in them is rebuilt, never copied (a copy of each player's record was most of what
    was left: issue 11, a gateway maps every tick)."""
    if type(value) is dict:
        if len(value) == 1:
            if _ARRAY in value:
                return arrays[int(value[_ARRAY])]
            if _PAIRS in value:
                return {
                    _key(k): _rebuild(v, arrays) if type(v) in _NESTED else v
                    for k, v in value[_PAIRS]
                }
        for k, v in value.items():
            if type(v) in _NESTED:
                value[k] = _rebuild(v, arrays)  # a value replaced: the dict keeps its size
        return value
    if type(value) is list:
        for i, v in enumerate(value):
            if type(v) in _NESTED:
                value[i] = _rebuild(v, arrays)
        return value
    return value


def _key(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def read(path: Path) -> dict[str, Any]:
    """Map the file at ``path`` read-only and rebuild its data (arrays are views on the map).

    The mapping lives as long as any of the arrays does. Raises OSError when the file is gone
    (removed before it was mapped) and ValueError when it is not a snapshot file.
    """
    return read_meta(path)[0]


def read_meta(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`read`, and the ``meta`` object written with the data (empty if none was)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < _HEADER.size:
            raise ValueError(f"{path} is not a snapshot file")
        mapped = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
    magic, doc_len = _HEADER.unpack_from(mapped, 0)
    if magic != MAGIC or _HEADER.size + doc_len > size:
        raise ValueError(f"{path} is not a snapshot file")
    doc = orjson.loads(mapped[_HEADER.size : _HEADER.size + doc_len])
    base = -(-(_HEADER.size + doc_len) // ALIGN) * ALIGN
    arrays: list[np.ndarray] = []
    for dtype, shape, offset in doc["arrays"]:
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        arr = np.frombuffer(mapped, dtype=dt, count=count, offset=base + int(offset))
        arrays.append(arr.reshape(shape))
    data = _rebuild(doc["tree"], arrays)
    meta = doc.get("meta") or {}
    if not isinstance(data, dict) or not isinstance(meta, dict):
        raise ValueError(f"{path} does not hold a mapping")
    return data, meta


def pack(data: Mapping[str, Any]) -> bytes:
    """``data`` as one bytes value in the layout of :func:`write` (for a Redis feed entry)."""
    head, arrays = encode(data)
    parts = [head, b"\0" * (-len(head) % ALIGN)]
    for arr in arrays:
        parts.append(arr.tobytes())
        parts.append(b"\0" * (-arr.nbytes % ALIGN))
    return b"".join(parts)


def unpack(buf: bytes) -> dict[str, Any]:
    """Inverse of :func:`pack` (arrays are read-only views on ``buf``); ValueError if malformed."""
    if len(buf) < _HEADER.size:
        raise ValueError("not a packed snapshot")
    magic, doc_len = _HEADER.unpack_from(buf, 0)
    if magic != MAGIC or _HEADER.size + doc_len > len(buf):
        raise ValueError("not a packed snapshot")
    doc = orjson.loads(buf[_HEADER.size : _HEADER.size + doc_len])
    base = -(-(_HEADER.size + doc_len) // ALIGN) * ALIGN
    arrays: list[np.ndarray] = []
    for dtype, shape, offset in doc["arrays"]:
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        arr = np.frombuffer(buf, dtype=np.dtype(dtype), count=count, offset=base + int(offset))
        arrays.append(arr.reshape(shape))
    data = _rebuild(doc["tree"], arrays)
    if not isinstance(data, dict):
        raise ValueError("a packed snapshot holds a mapping")
    return data
