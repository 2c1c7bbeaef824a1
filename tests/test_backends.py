"""Backends by URL: the registries of stores, leases and buses, the lease that goes with each
store, and the SQL store loading only when a SQL URL is opened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import child_env
from worldloop.bus import LocalBus, open_bus, register_bus
from worldloop.errors import ConfigError
from worldloop.lease import FileLease, MemoryLease, default_lease_url, open_lease
from worldloop.store import MemoryStore, default_store_url, open_store, register_store


def run_python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_import_worldloop_does_not_import_sqlalchemy() -> None:
    out = run_python(
        "import sys, worldloop, worldloop.store, worldloop.lease, worldloop.bus, worldloop.cli\n"
        "from worldloop.store import default_store_url, open_store\n"
        "open_store('memory://').close()\n"
        "default_store_url('/tmp/instance')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'))\n"
    )
    assert out.strip() == "[]"


def test_opening_a_sql_url_loads_the_sql_store(tmp_path: Path) -> None:
    out = run_python(
        "import sys\n"
        "from worldloop.store import open_store\n"
        f"store = open_store('sqlite:///{tmp_path / 'w.db'}')\n"
        "print(type(store).__name__, 'sqlalchemy' in sys.modules)\n"
        "from worldloop.store import SqlStore, SCHEMA_VERSION\n"
        "print(SqlStore is type(store), SCHEMA_VERSION)\n"
    )
    assert out.split("\n")[:2] == ["SqlStore True", "True 2"]  # schema 2: idempotency keys


def test_store_urls_pick_their_backend(tmp_path: Path) -> None:
    from worldloop.store import SqlStore

    assert isinstance(open_store("memory://"), MemoryStore)
    assert isinstance(open_store(f"sqlite:///{tmp_path / 'w.db'}"), SqlStore)
    pg = open_store("postgresql+psycopg://u@h/db", schema="s", readonly=True)
    assert isinstance(pg, SqlStore) and pg.schema == "s" and pg.readonly
    assert default_store_url(tmp_path) == f"sqlite:///{tmp_path / 'worldloop.db'}"
    with pytest.raises(ConfigError, match="unknown scheme 'mysql'; known: memory, postgresql"):
        open_store("mysql://u@h/db")


def test_a_plug_in_registers_its_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    import worldloop.bus
    import worldloop.store

    for module in (worldloop.store, worldloop.bus):  # the registries are restored afterwards
        monkeypatch.setattr(module, "_factories", dict(module._factories))
    seen = []

    def factory(url: str, *, schema: str | None, readonly: bool, **options: object) -> MemoryStore:
        seen.append((url, schema, readonly, options))
        return MemoryStore()

    register_store("test-plugin", factory)
    assert isinstance(open_store("test-plugin://x", schema="s", busy_timeout=1), MemoryStore)
    assert seen == [("test-plugin://x", "s", False, {"busy_timeout": 1})]

    register_bus("test-bus", lambda url, world, *, queue_size, **o: LocalBus(world, queue_size=2))
    assert open_bus("test-bus://", "w", queue_size=9).world == "w"


def test_each_store_gets_its_lease(tmp_path: Path) -> None:
    inst = tmp_path / "instance"
    db = tmp_path / "w.db"
    cases = {
        f"sqlite:///{db}": f"file://{db}.lock",
        "sqlite://": "memory://",
        "sqlite:///:memory:": "memory://",
        "memory://": "memory://",
        "memory://named": "memory://",
        "postgresql+psycopg://u@h/db": f"file://{inst / 'worldloop-meadow.lock'}",
    }
    for store_url, lease_url in cases.items():
        assert default_lease_url(store_url, "meadow", inst) == lease_url, store_url
    file_lease = open_lease(f"file://{db}.lock", "meadow", wait=2.5)
    assert isinstance(file_lease, FileLease) and file_lease.path == Path(f"{db}.lock")
    assert (file_lease.world, file_lease.wait, file_lease.url) == (
        "meadow",
        2.5,
        f"file://{db}.lock",
    )
    memory = open_lease("memory://", "meadow")
    assert isinstance(memory, MemoryLease) and memory.name == "meadow"
    with pytest.raises(ConfigError, match="unknown scheme 'zk'"):
        open_lease("zk://h/x", "meadow")
    with pytest.raises(ConfigError, match="unknown scheme 'amqp'"):
        open_bus("amqp://h", "meadow")
    assert open_bus().url == "local://"


@pytest.mark.parametrize("url", ["memory://", "memory://journaled"])
def test_an_app_on_a_memory_url(tmp_path: Path, url: str) -> None:
    """``memory://`` journals nothing (the world lives in memory only); ``memory://NAME``
    journals into process memory. Neither writes a file; both take an in-process lease."""
    from tests.support import wait_for
    from worldloop.demo import create_app

    instance = tmp_path / "instance"
    app = create_app(
        {"TESTING": True, "WORLDLOOP_HANDLE_SIGNALS": False, "WORLDLOOP_STORE_URL": url},
        instance_path=str(instance),
    )
    try:
        rt = app.extensions["worldloop"].runtime
        assert isinstance(rt.lease, MemoryLease) and rt.lease.held
        assert isinstance(rt.bus, LocalBus)
        tick = rt.tick
        wait_for(lambda: rt.tick > tick + 2, 10, what="a few ticks")
        stored = rt.checkpoint(10)["stored"]
        if url == "memory://":
            assert rt.store is None and stored is False
        else:
            assert isinstance(rt.store, MemoryStore) and stored is True
            assert rt.store.head(rt.name) >= tick + 2
        assert not list(instance.glob("worldloop*"))
    finally:
        app.extensions["worldloop"].stop()
