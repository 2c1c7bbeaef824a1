"""/readyz against the real SQL store: a locked journal halts the world, and readiness says so."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from tests.observe_world import create_app
from tests.store_support import PG_URL, drop_pg_schema, require_postgres
from tests.support import wait_for
from worldloop import JobContext, World, WorldRuntime
from worldloop.errors import StoreError
from worldloop.snapshot import Snapshot
from worldloop.store import SqlStore


def make_app(tmp_path: Path, **config: Any) -> Flask:
    base = {
        "TESTING": True,
        "WORLDLOOP_HANDLE_SIGNALS": False,
        "WORLDLOOP_RATE_HZ": 50.0,
        "WORLDLOOP_STORE_RETRY_SECONDS": 0.3,
        "WORLDLOOP_READY_STORE_CHECK_TTL": 0.0,
        "WORLDLOOP_AUTOSTART": "never",
    }
    return create_app({**base, **config}, instance_path=str(tmp_path / "instance"))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path)
    rt: WorldRuntime = app.extensions["worldloop"].runtime
    assert isinstance(rt.store, SqlStore)
    rt.store.busy_timeout = 0.05  # not opened yet: each append gives up on a lock quickly
    yield app
    app.extensions["worldloop"].stop()


def codes(body: dict[str, Any]) -> set[str]:
    return {r["code"] for r in body["reasons"]}


def db_path(app: Flask) -> Path:
    return Path(app.instance_path) / "worldloop.db"


def test_a_locked_journal_halts_the_world_and_readyz_says_503_with_the_reason(app: Flask) -> None:
    ext = app.extensions["worldloop"]
    rt: WorldRuntime = ext.runtime
    client = app.test_client()
    ext.start()
    assert rt.ticker.wait_for_ticks(3, 5)
    wait_for(lambda: client.get("/readyz").status_code == 200, 5, what="ready")

    blocker = sqlite3.connect(db_path(app), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database: appends fail
    try:
        wait_for(lambda: rt.degraded is not None, 10, what="the runtime to halt")
        resp = client.get("/readyz")
        assert resp.status_code == 503
        body = resp.get_json()
        assert body["ready"] is False and body["status"] == "unavailable"
        assert {"halted", "store_unwritable"} <= codes(body)
        halted = next(r for r in body["reasons"] if r["code"] == "halted")
        assert "journal write for tick" in halted["message"] and halted["fatal"]
        assert "worldloop_halted" in client.get("/metrics").get_data(as_text=True)
        halted_gauge = [
            s.value
            for fam in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))
            for s in fam.samples
            if s.name == "worldloop_halted" and s.labels.get("world") == "garden"
        ]
        assert halted_gauge == [1.0]  # alerting sees it on the scrape, with no tick needed
        # commands are refused (503 store_error at the API), never queued into a halted world
        with pytest.raises(StoreError, match="halted") as refused:
            rt.submit("join", {"name": "late"})
        assert refused.value.status == 503
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # The store is writable again, but the in-memory world is ahead of its journal: the only
    # truthful answer is still 503 (halted) until a restart recovers the last durable tick.
    wait_for(lambda: "store_unwritable" not in codes(client.get("/readyz").get_json()), 5)
    resp = client.get("/readyz")
    assert resp.status_code == 503 and "halted" in codes(resp.get_json())


def test_the_store_probe_sees_a_lock_before_any_tick_fails(app: Flask) -> None:
    """A paused world does not write, yet /readyz still tells that its store refuses writes."""
    rt: WorldRuntime = app.extensions["worldloop"].runtime
    app.extensions["worldloop"].start()
    rt.pause()
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    blocker = sqlite3.connect(db_path(app), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        resp = client.get("/readyz")
        assert resp.status_code == 503
        assert codes(resp.get_json()) == {"store_unwritable"}
        assert rt.degraded is None  # nothing failed yet: the loop is paused
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert client.get("/readyz").status_code == 200


def test_check_writable_is_bounded_and_refuses_read_only_stores(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    store = SqlStore(url)
    store.open()
    store.check_writable()
    blocker = sqlite3.connect(tmp_path / "w.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="write check failed"):
            store.check_writable(timeout=0.05)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.check_writable()
    store.close()
    ro = SqlStore(url, readonly=True)
    with pytest.raises(StoreError, match="read-only"):
        ro.check_writable()
    ro.close()


def _make_read_only(path: Path, on: bool) -> None:
    """Read-only even for root (the immutable attribute), or by mode for anyone else."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: cannot make a file read-only")
        done = subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"chattr is not supported here: {done.stderr!r}")
    else:
        path.chmod(0o444 if on else 0o644)


def test_check_writable_sees_a_read_only_database_file(tmp_path: Path) -> None:
    """The fault suite's finding: SQLite takes the write lock (BEGIN IMMEDIATE) on a read-only
    file and fails only at the first write, so /readyz said 200 until the journal gave up."""
    db = tmp_path / "w.db"
    store = SqlStore(f"sqlite:///{db}")
    store.open()
    store.check_writable()
    store.close()
    _make_read_only(db, True)
    try:
        again = SqlStore(f"sqlite:///{db}")
        with pytest.raises(StoreError, match=r"readonly|read-only"):
            again.check_writable()
        again.close()
    finally:
        _make_read_only(db, False)
    writable = SqlStore(f"sqlite:///{db}")
    writable.check_writable()  # and the probe itself wrote nothing
    assert writable.head("nothing") is None
    writable.close()


@pytest.mark.postgres
def test_check_writable_on_postgres(tmp_path: Path) -> None:
    require_postgres()
    schema = f"wl_test_{uuid.uuid4().hex[:12]}"
    store = SqlStore(PG_URL, schema=schema)
    try:
        store.check_writable()  # creates the schema on first use, then answers
        bad = SqlStore("postgresql+psycopg://postgres@127.0.0.1:1/test")  # nothing listens
        with pytest.raises(StoreError, match=r"Connection refused|connection failed"):
            bad.check_writable()  # a StoreError (a reason for /readyz), never a crash
        bad.close()
    finally:
        store.close()
        drop_pg_schema(schema)


def test_jobs_appear_in_metrics(tmp_path: Path) -> None:
    """Issue 6 asks for jobs in /metrics: the scheduler's counters are served with the rest."""
    app = make_app(tmp_path, WORLDLOOP_START_PAUSED=True)
    ext = app.extensions["worldloop"]

    @ext.job("census", kind="background", every_ticks=2)
    def census(snapshot: Snapshot, ctx: JobContext) -> int:
        return snapshot.tick

    @ext.job("broken", kind="world", every_ticks=3)
    def broken(world: World, ctx: JobContext) -> None:
        raise RuntimeError("job bug")

    client = app.test_client()
    ext.start()
    try:
        rt: WorldRuntime = ext.runtime
        rt.step(7)
        wait_for(lambda: ext.jobs.status("census")["runs"] >= 3, 5, what="census runs")
        values: dict[tuple[str, str], float] = {}
        resp = client.get("/metrics")
        for fam in text_string_to_metric_families(resp.get_data(as_text=True)):
            for s in fam.samples:
                if s.name.startswith("worldloop_job_"):
                    values[(s.name, s.labels["job"])] = s.value
        assert values[("worldloop_job_runs_total", "census")] >= 3
        assert values[("worldloop_job_runs_total", "broken")] == 3  # slots at ticks 0, 3, 6
        assert values[("worldloop_job_errors_total", "broken")] == 3
        assert values[("worldloop_job_paused", "census")] == 0
        assert "worldloop_ticks_total" in resp.get_data(as_text=True)  # the rest is still there
    finally:
        ext.stop()
    after = client.get("/metrics").get_data(as_text=True)
    assert "worldloop_job_runs_total" not in after  # not running here: nothing to report
