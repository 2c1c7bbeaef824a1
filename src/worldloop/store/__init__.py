"""Where worlds are kept: the journal of applied commands and full snapshots."""

from .base import Recovery, Store

__all__ = ["Recovery", "Store"]
