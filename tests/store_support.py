"""Store helpers shared by the durability tests: SQLite files, PostgreSQL schemas, a Drift
runtime on any store URL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.durability_app import Drift
from tests.support import service_required
from worldloop import WorldRuntime
from worldloop.store import open_store

PG_URL = os.environ.get(
    "WORLDLOOP_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PG_DSN = PG_URL.replace("postgresql+psycopg://", "postgresql://")
"""PG_URL as psycopg takes it (no SQLAlchemy driver name)."""


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=3):
            return True
    except Exception:
        return False


def require_postgres() -> None:
    if not postgres_available():
        if service_required("postgres"):
            pytest.fail(f"PostgreSQL is required under CI=true but {PG_URL} is unreachable")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")


def drop_pg_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def pg_session_alive(pid: int) -> bool:
    """Whether the PostgreSQL server still has the session of backend ``pid``."""
    import psycopg

    with psycopg.connect(PG_DSN) as conn:
        row = conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is not None


def make_runtime(url: str, schema: str | None, **kw: object) -> WorldRuntime:
    """A paused Drift runtime on the store at ``url`` (opened by URL, any backend)."""
    opts: dict[str, object] = {"snapshot_every": 10, "hash_every": 5, "retention_ticks": 1000}
    opts.update(kw)
    return WorldRuntime(
        Drift(particles=16, seed=3),
        store=open_store(url, schema=schema),
        start_paused=True,
        **opts,  # type: ignore[arg-type]
    )


def run_ticks(rt: WorldRuntime, ticks: int, per_tick: int = 2) -> list[str]:
    """Step ``ticks`` ticks, submitting ``per_tick`` kicks before each; return their ids."""
    ids = []
    for t in range(ticks):
        for j in range(per_tick):
            i = (t * 7 + j) % 20  # 16..19 do not exist: rejected commands are journaled too
            ids.append(rt.submit("kick", {"i": i, "dv": 0.5 + j}).id)
        rt.step(1)
    return ids


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """A fresh SQL database, each test twice: a SQLite file, then a PostgreSQL schema of the
    test's own (dropped afterwards): ``(url, schema)``."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'worldloop.db'}", None
    else:
        require_postgres()
        schema = f"wl_test_{uuid.uuid4().hex[:12]}"
        try:
            yield PG_URL, schema
        finally:
            drop_pg_schema(schema)
