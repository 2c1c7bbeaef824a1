"""The world catalog (worldloop.store.catalog), one suite over every backend: memory, SQLite,
PostgreSQL (own schema per test)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store_support import PG_URL, drop_pg_schema, require_postgres
from worldloop.errors import WorldExists
from worldloop.store import open_store
from worldloop.store.catalog import Catalog, CatalogEntry, Sleep, open_catalog


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    if request.param == "memory":
        yield f"memory://catalog-{uuid.uuid4().hex}", None
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'w.db'}", None
    else:
        require_postgres()
        schema = f"t_catalog_{uuid.uuid4().hex[:12]}"
        try:
            yield PG_URL, schema
        finally:
            drop_pg_schema(schema)


@pytest.fixture
def catalog(where: tuple[str, str | None]) -> Iterator[Catalog]:
    url, schema = where
    cat = open_catalog(url, schema=schema)
    yield cat
    cat.close()


def test_entries_survive_a_reopen_in_creation_order(
    catalog: Catalog, where: tuple[str, str | None]
) -> None:
    catalog.add(CatalogEntry("b", "drift", {"seed": 2, "deep": {"x": [1, 2]}}, False, 2.0))
    catalog.add(CatalogEntry("a", "faulty", {}, True, 1.0))
    catalog.close()
    again = open_catalog(where[0], schema=where[1])
    try:
        entries = again.entries()
        assert [(e.name, e.kind, e.paused) for e in entries] == [
            ("a", "faulty", True),
            ("b", "drift", False),
        ]
        assert entries[1].config == {"seed": 2, "deep": {"x": [1, 2]}}
    finally:
        again.close()


def test_a_taken_name_is_refused(catalog: Catalog) -> None:
    catalog.add(CatalogEntry("a", "drift", {}, False, 1.0))
    with pytest.raises(WorldExists):
        catalog.add(CatalogEntry("a", "other", {}, False, 2.0))
    assert [e.kind for e in catalog.entries()] == ["drift"]


def test_remove_and_pause(catalog: Catalog) -> None:
    catalog.add(CatalogEntry("a", "drift", {}, False, 1.0))
    catalog.set_paused("a", True)
    assert catalog.entries()[0].paused
    catalog.set_paused("a", False)
    assert not catalog.entries()[0].paused
    assert catalog.remove("a")
    assert not catalog.remove("a")
    assert catalog.entries() == []


def test_drop_data_forgets_one_worlds_journal(
    catalog: Catalog, where: tuple[str, str | None]
) -> None:
    url, schema = where
    store = open_store(url, schema=schema)
    try:
        for world in ("gone", "kept"):
            store.save_snapshot(world, 0, {"v": 1}, "h0")
            store.append(world, 1, [], None)
        catalog.drop_data("gone")
        assert store.head("gone") is None and store.snapshots("gone") == []
        assert store.head("kept") == 1 and [s.tick for s in store.snapshots("kept")] == [0]
    finally:
        store.close()


def test_a_world_marked_asleep_stays_asleep_across_a_reopen_until_woken(
    catalog: Catalog, where: tuple[str, str | None]
) -> None:
    catalog.add(CatalogEntry("a", "drift", {}, False, 1.0))
    catalog.add(CatalogEntry("b", "drift", {}, False, 2.0))
    catalog.set_asleep("a", Sleep(120, 20.0, 1_700_000_000.5, 1_700_000_060.0))
    catalog.set_asleep("a", Sleep(123, 20.0, 1_700_000_000.5, None))  # the final tick
    catalog.set_asleep("b", Sleep(7, 10.0, 1_700_000_001.0, 1_700_000_002.0))
    catalog.set_asleep("b", None)  # woke up
    catalog.close()
    again = open_catalog(where[0], schema=where[1])
    try:
        a, b = again.entries()
        assert a.asleep == Sleep(123, 20.0, 1_700_000_000.5, None) and b.asleep is None
        assert again.remove("a")  # a deleted world's sleep record goes with it
        again.add(CatalogEntry("a", "drift", {}, False, 3.0))
        assert [e.asleep for e in again.entries()] == [None, None]
    finally:
        again.close()
