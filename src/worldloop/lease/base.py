"""The lease protocol: who may run a world. Acquire before the first tick, release after the last.

Every backend (``lease/memory.py``, ``lease/file.py``, the Redis lease of SCALEOUT.md) has the
same contract, checked by one suite (``tests/contracts/test_lease_contract.py``): one holder at
a time per world name and place; ``acquire`` waits up to its bound, then raises
:class:`~worldloop.errors.WorldLockedError` naming the holder; a holder that dies frees it.
"""

from __future__ import annotations

from typing import Protocol


class Lease(Protocol):
    """Exclusive right to run one world. Opened by URL with :func:`worldloop.lease.open_lease`."""

    world: str
    """The world this lease is for (named in messages)."""

    wait: float
    """Seconds ``acquire`` keeps trying while another holder has it (a graceful restart hands
    over within this); 0 refuses at once."""

    @property
    def url(self) -> str:
        """Where the lease lives (``memory://``, ``file:///path.lock``)."""
        ...

    @property
    def held(self) -> bool:
        """True between a successful ``acquire`` and ``release`` on this object."""
        ...

    @property
    def token(self) -> int:
        """A fencing token that grows with every successful acquisition (0 before the first)."""
        ...

    def holder(self) -> str | None:
        """Who holds the lease now, for messages ("pid 1234"), or None when it is free."""
        ...

    def acquire(self, wait: float | None = None) -> None:
        """Take the lease, trying for ``wait`` s (default: :attr:`wait`); no-op when held.

        Raises WorldLockedError (with ``details["holder"]``) when another holder keeps it.
        """
        ...

    def release(self) -> None:
        """Give the lease up (no-op when not held); another holder may take it at once."""
        ...
