"""Who runs a world: exactly one holder of a world's lease advances it."""

from .base import Lease
from .file import FileLease, MemoryLease

__all__ = ["FileLease", "Lease", "MemoryLease"]
