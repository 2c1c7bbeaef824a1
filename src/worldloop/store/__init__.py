"""Where worlds are kept: the journal of applied commands and full snapshots."""

from .base import Recovery, SnapshotInfo, Store, journal_record
from .sql import SCHEMA_VERSION, SqlStore, default_store_url

__all__ = [
    "SCHEMA_VERSION",
    "Recovery",
    "SnapshotInfo",
    "SqlStore",
    "Store",
    "default_store_url",
    "journal_record",
]
