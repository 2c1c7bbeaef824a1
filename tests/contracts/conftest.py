"""Fixtures of the contract suites: one empty backend of each kind per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.store_support import PG_URL, drop_pg_schema, require_postgres
from worldloop.store import Store, open_store


@dataclass(frozen=True)
class StoreBackend:
    """Where one empty store lives; ``open`` gives a new store object on the same data."""

    kind: str
    url: str
    schema: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def open(self, *, readonly: bool = False) -> Store:
        return open_store(self.url, schema=self.schema, readonly=readonly, **self.options)


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        "sqlite-ungrouped",
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreBackend]:
    """An empty store: a named in-memory one, a fresh SQLite file (journal writes through the
    group committer, the default, or one transaction each), or a fresh PostgreSQL schema
    (skipped when PostgreSQL is unreachable, except under CI=true)."""
    if request.param == "memory":
        yield StoreBackend("memory", f"memory://contract-{uuid.uuid4().hex}")
    elif request.param == "sqlite":
        yield StoreBackend("sqlite", f"sqlite:///{tmp_path / 'worldloop.db'}")
    elif request.param == "sqlite-ungrouped":
        url = f"sqlite:///{tmp_path / 'worldloop.db'}"
        yield StoreBackend("sqlite", url, options={"group_commit": False})
    else:
        require_postgres()
        schema = f"wl_test_{uuid.uuid4().hex[:12]}"
        try:
            yield StoreBackend("postgres", PG_URL, schema)
        finally:
            drop_pg_schema(schema)


@pytest.fixture
def store(backend: StoreBackend) -> Iterator[Store]:
    """A writable store on ``backend``, closed after the test."""
    s = backend.open()
    try:
        yield s
    finally:
        s.close()
