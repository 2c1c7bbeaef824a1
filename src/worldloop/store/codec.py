"""Full world states as bytes: an ``.npz`` archive of the arrays plus a JSON document of the rest.

No pickle anywhere, so a snapshot from an untrusted or damaged file can only fail to decode,
never run code. Decoding failures raise :class:`StoreError`.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import StoreError

_META = "__meta__"
FORMAT = 1


def encode_state(state: Mapping[str, Any]) -> bytes:
    """Serialize a full state (arrays, JSON-able scalars) to bytes."""
    arrays: dict[str, np.ndarray] = {}
    names: dict[str, str] = {}
    scalars: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise StoreError(f"state array {key!r} has dtype object; it cannot be stored")
            names[key] = member = f"a{len(arrays)}"
            arrays[member] = value
        elif isinstance(value, np.generic):
            scalars[key] = value.item()
        else:
            scalars[key] = value
    try:
        meta = json.dumps(
            {"format": FORMAT, "values": scalars, "arrays": names}, sort_keys=True, allow_nan=True
        )
    except (TypeError, ValueError) as exc:
        raise StoreError(f"state is not serializable: {exc}") from exc
    buf = io.BytesIO()
    arrays[_META] = np.frombuffer(meta.encode(), dtype=np.uint8)
    members: dict[str, Any] = arrays
    np.savez(buf, allow_pickle=False, **members)
    return buf.getvalue()


def decode_state(data: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_state`; raises StoreError on anything malformed."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            meta = json.loads(bytes(npz[_META]).decode())
            if meta.get("format") != FORMAT:
                raise StoreError(f"unknown snapshot format {meta.get('format')!r}")
            values: dict[str, Any] = dict(meta["values"])
            for key, member in dict(meta["arrays"]).items():
                values[key] = npz[member]
    except StoreError:
        raise
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as exc:
        raise StoreError(f"snapshot data is corrupt: {type(exc).__name__}: {exc}") from exc
    return values
