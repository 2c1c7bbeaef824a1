"""The lease interface: acquire before running a world, release after."""

from __future__ import annotations

from typing import Protocol


class Lease(Protocol):
    """Exclusive right to run one world. ``acquire`` raises WorldLockedError when held elsewhere."""

    @property
    def held(self) -> bool: ...

    @property
    def token(self) -> int:
        """A fencing token that grows with every successful acquisition."""
        ...

    def acquire(self) -> None: ...

    def release(self) -> None: ...
