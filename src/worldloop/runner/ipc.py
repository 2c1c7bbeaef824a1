"""Where a runner and its web workers meet on one host, and what travels between them.

Two ZeroMQ sockets per world, on Unix-domain endpoints in a private folder (mode 0700, so no
other local user can reach the runner): **requests** (workers' DEALER → the runner's ROUTER:
put a command, look up a key or a command, forward an admin request) and the **feed** (the
runner's PUB → every worker's SUB: one message per published tick with the snapshot file's
name, the tick's command outcomes and the loop's counters). Messages are JSON (orjson); errors
travel as ``{"error": {code, message, details}}`` and come back as the same WorldLoopError.
pyzmq does the framing, reconnection and queueing; nothing here is a wire protocol of its own.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..errors import WorldLoopError
from ..snapshot import dumps


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The IPC addresses and files of one world's runner."""

    folder: Path
    prefix: str
    """Names of this world's snapshot files start with it (in worldloop.runner.shm.shm_dir)."""

    @property
    def requests(self) -> str:
        return f"ipc://{self.folder / 'requests'}"

    @property
    def feed(self) -> str:
        return f"ipc://{self.folder / 'feed'}"

    @property
    def lock(self) -> Path:
        """Held by the one supervisor that may start runners for this world."""
        return self.folder / "supervisor.lock"


def endpoints(instance_path: str | os.PathLike[str], world: str) -> Endpoints:
    """The endpoints of ``world`` served from ``instance_path``: every process of one
    deployment (same instance folder, same world) finds the same ones.

    Unix socket paths are limited to ~100 bytes, so they live in a short private folder named
    by a digest of the instance folder and the world, not inside the instance folder itself.
    """
    key = f"{os.path.realpath(instance_path)}\0{world}".encode()
    digest = hashlib.blake2b(key, digest_size=8).hexdigest()
    root = Path(tempfile.gettempdir()) / f"worldloop-{os.getuid()}"
    root.mkdir(mode=0o700, exist_ok=True)
    if root.stat().st_uid != os.getuid() or root.stat().st_mode & 0o077:
        os.chmod(root, 0o700)
    folder = root / digest
    folder.mkdir(mode=0o700, exist_ok=True)
    return Endpoints(folder, f"worldloop-{digest}-")


def pack(message: dict[str, Any]) -> bytes:
    """One message as JSON (the snapshot encoder: NumPy values, sets and bytes too)."""
    return dumps(message)


def unpack(data: bytes) -> dict[str, Any]:
    message = orjson.loads(data)
    if not isinstance(message, dict):
        raise ValueError("an IPC message must be a JSON object")
    return message


def error_message(exc: WorldLoopError) -> dict[str, Any]:
    """An error as it travels back to the worker that asked."""
    return {
        "error": {
            "code": exc.code,
            "message": exc.message,
            "details": exc.details,
            "retry_after": exc.retry_after,
        }
    }


def _classes(cls: type[WorldLoopError]) -> list[type[WorldLoopError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_classes(sub))
    return out


def raise_error(error: dict[str, Any]) -> None:
    """Raise, in the worker, the WorldLoopError the runner raised (same code, status, text)."""
    code = str(error.get("code") or WorldLoopError.code)
    message = str(error.get("message") or code)
    details = dict(error.get("details") or {})
    for cls in _classes(WorldLoopError):
        if cls.code == code:
            try:
                exc = cls(message, details=details)
            except TypeError:
                continue
            raise exc
    remote = _remote.get(code)
    if remote is None:
        remote = _remote[code] = type(f"RemoteError_{code}", (RemoteError,), {"code": code})
    exc = remote(message, details=details)
    exc.retry_after = error.get("retry_after")
    raise exc


class RemoteError(WorldLoopError):
    """Base of errors of the runner whose class this worker does not know (same code)."""


_remote: dict[str, type[RemoteError]] = {}
