"""/healthz, /readyz and /metrics against a real running loop (Flask test client, real threads)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from tests.observe_world import make_test_app, runtime_of
from tests.support import wait_for
from worldloop import WorldRuntime
from worldloop.metrics import observe_journal_append, observe_snapshot_save

make_app = make_test_app


@pytest.fixture
def garden(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path)
    yield app
    app.extensions["worldloop"].stop()


def rt_of(app: Flask) -> WorldRuntime:
    runtime: WorldRuntime = runtime_of(app)
    return runtime


def samples(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.content_type.startswith("text/plain")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(resp.get_data(as_text=True)):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def reasons(resp: Any) -> set[str]:
    return {r["code"] for r in resp.get_json()["reasons"]}


def test_healthz_answers_without_touching_the_world(garden: Flask) -> None:
    client = garden.test_client()
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json()["status"] == "alive"
    rt_of(garden).stop()
    assert client.get("/healthz").status_code == 200  # alive even when the world is not


def test_readyz_ok_while_ticking_then_503_once_stopped(garden: Flask) -> None:
    client = garden.test_client()
    rt = rt_of(garden)
    assert rt.ticker.wait_for_ticks(3, 5)
    resp = client.get("/readyz")
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert body["status"] == "ok" and body["ready"] is True and body["reasons"] == []
    assert body["world"] == "garden" and body["tick"] >= 3
    rt.stop()
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["status"] == "unavailable"
    assert reasons(resp) == {"not_running"}


def test_readyz_reports_a_stalled_loop_and_recovers(tmp_path: Path) -> None:
    app = make_app(tmp_path, WORLDLOOP_READY_MAX_TICK_AGE=0.3)
    try:
        client = app.test_client()
        rt = rt_of(app)
        assert rt.ticker.wait_for_ticks(2, 5)
        rt.submit("hang", {"seconds": 1.5})
        resp = wait_for(
            lambda: (r := client.get("/readyz")).status_code == 503 and r, 5, what="stall seen"
        )
        assert "loop_stalled" in reasons(resp)
        wait_for(lambda: client.get("/readyz").status_code == 200, 10, what="recovery")
    finally:
        app.extensions["worldloop"].stop()


def test_readyz_paused_world_is_ready_and_says_so(garden: Flask) -> None:
    client = garden.test_client()
    rt = rt_of(garden)
    assert rt.ticker.wait_for_ticks(1, 5)
    rt.pause()
    rt.ticker.wait_for_ticks(rt.stats().ticks + 1, 0.1)  # a tick already under way may finish
    before = rt.stats().ticks
    # Quiet for longer than the stall bound (made small here), yet ready: paused on purpose.
    garden.config["WORLDLOOP_READY_MAX_TICK_AGE"] = 0.05
    assert rt.ticker.wait_for_ticks(before + 1, 0.3) is False  # really paused
    resp = client.get("/readyz")
    assert resp.status_code == 200
    assert resp.get_json()["paused"] is True


def test_readyz_503_when_overrun_rate_exceeds_the_bound(tmp_path: Path) -> None:
    app = make_app(tmp_path, WORLDLOOP_READY_MAX_OVERRUN_RATIO=0.0, WORLDLOOP_READY_MIN_WINDOW=1)
    try:
        client = app.test_client()
        rt = rt_of(app)
        assert rt.ticker.wait_for_ticks(2, 5)
        assert client.get("/readyz").status_code == 200
        before = metric(samples(client), "worldloop_overruns_total", world="garden")
        rt.submit("hang", {"seconds": 0.3})  # 15 periods late at 50 Hz: one overrun
        resp = wait_for(
            lambda: (r := client.get("/readyz")).status_code == 503 and r, 5, what="overrun"
        )
        assert "overrunning" in reasons(resp)
        after = metric(samples(client), "worldloop_overruns_total", world="garden")
        assert after >= before + 1
    finally:
        app.extensions["worldloop"].stop()


def test_contained_system_error_is_degraded_counted_and_logged(tmp_path: Path) -> None:
    # Overruns are not this test's subject: on a loaded machine a 50 Hz garden overruns and
    # /readyz would (rightly) say "unavailable" for that reason instead.
    garden = make_app(tmp_path, WORLDLOOP_READY_MAX_OVERRUN_RATIO=1.0)
    try:
        _check_contained_system_error(garden)
    finally:
        garden.extensions["worldloop"].stop()


def _check_contained_system_error(garden: Flask) -> None:
    client = garden.test_client()
    rt = rt_of(garden)
    before = metric(
        samples(client), "worldloop_system_errors_total", world="garden", system="wander"
    )
    rt.submit("boom", {})
    resp = wait_for(
        lambda: (r := client.get("/readyz")).get_json()["status"] == "degraded" and r, 5
    )
    assert resp.status_code == 200  # degraded, still serving
    (reason,) = resp.get_json()["reasons"]
    assert reason["code"] == "system_errors" and reason["fatal"] is False
    after = metric(
        samples(client), "worldloop_system_errors_total", world="garden", system="wander"
    )
    assert after == before + 1
    assert rt.running


class SqliteJournal:
    """A minimal real journal on an SQLite file, with the optional ``check_writable`` probe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, timeout=0.05, check_same_thread=False)
        self.conn.execute("CREATE TABLE IF NOT EXISTS journal (tick INTEGER, records TEXT)")
        self.conn.commit()

    def append(self, world: str, tick: int, records: Any, state_hash: str | None) -> None:
        self.conn.execute("INSERT INTO journal VALUES (?, ?)", (tick, repr(records)))
        self.conn.commit()

    def check_writable(self) -> None:
        probe = sqlite3.connect(self.path, timeout=0.05)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
        finally:
            probe.close()

    def close(self) -> None:
        self.conn.close()


def test_readyz_503_while_the_store_refuses_writes(tmp_path: Path) -> None:
    app = make_app(tmp_path, WORLDLOOP_AUTOSTART="never", WORLDLOOP_READY_STORE_CHECK_TTL=0.0)
    rt = rt_of(app)
    rt.store = SqliteJournal(tmp_path / "journal.db")  # type: ignore[assignment]
    app.extensions["worldloop"].start()
    blocker = sqlite3.connect(tmp_path / "journal.db", timeout=1)
    try:
        client = app.test_client()
        assert rt.ticker.wait_for_ticks(3, 5)
        assert client.get("/readyz").status_code == 200
        blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the database
        resp = client.get("/readyz")
        assert resp.status_code == 503
        assert "store_unwritable" in reasons(resp)
        blocker.execute("ROLLBACK")
        wait_for(lambda: client.get("/readyz").status_code == 200, 10, what="store back")
    finally:
        blocker.close()
        app.extensions["worldloop"].stop()


def test_metrics_cover_ticks_commands_queue_and_http(garden: Flask) -> None:
    client = garden.test_client()
    rt = rt_of(garden)
    assert rt.ticker.wait_for_ticks(2, 5)

    def between_ticks() -> Any:
        """The metrics with the loop held between two ticks: a tick's listener updates its
        counters one after another, and a scrape in the middle sees one ahead of the next."""
        rt.pause()
        try:
            rt.call(lambda: None).result(5)  # the tick in flight, its listeners included, is done
            return samples(client)
        finally:
            rt.resume()

    before = between_ticks()
    joined = rt.submit("join", {"name": "ann"})
    missing = rt.submit("move_to", {"player": "nobody", "x": 1, "y": 2})
    assert joined.wait(5) and missing.wait(5)
    for _ in range(3):
        assert client.get("/api/v1/world").status_code == 200
    assert client.get("/no/such/page").status_code == 404
    wait_for(
        lambda: (
            metric(
                samples(client),
                "worldloop_commands_rejected_total",
                world="garden",
                type="move_to",
                reason="command_rejected",
            )
            > 0
        ),
        5,
    )
    after = between_ticks()

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("worldloop_commands_applied_total", world="garden", type="join") == 1
    assert (
        delta(
            "worldloop_commands_rejected_total",
            world="garden",
            type="move_to",
            reason="command_rejected",
        )
        == 1
    )
    ticks = delta("worldloop_ticks_total", world="garden")
    assert ticks >= 1
    assert delta("worldloop_tick_duration_seconds_count", world="garden") == ticks
    assert delta("worldloop_tick_lateness_seconds_count", world="garden") == ticks
    assert metric(after, "worldloop_queue_depth", world="garden") == 0
    assert metric(after, "worldloop_rate_hz", world="garden") == 50.0
    assert (
        delta(
            "worldloop_http_request_duration_seconds_count",
            method="GET",
            endpoint="/api/v1/world",
            status="200",
        )
        == 3
    )
    assert (
        delta(
            "worldloop_http_request_duration_seconds_count",
            method="GET",
            endpoint="<unmatched>",
            status="404",
        )
        == 1
    )


def test_store_timing_hooks_feed_histograms(garden: Flask) -> None:
    # A world label of its own: the running garden's store feeds these histograms too.
    client = garden.test_client()
    before = samples(client)
    observe_journal_append("hooked", 0.002)
    observe_journal_append("hooked", 0.004)
    observe_snapshot_save("hooked", 0.5)
    after = samples(client)
    name = "worldloop_journal_append_seconds"
    assert (
        metric(after, f"{name}_count", world="hooked")
        - metric(before, f"{name}_count", world="hooked")
        == 2
    )
    assert metric(after, f"{name}_sum", world="hooked") - metric(
        before, f"{name}_sum", world="hooked"
    ) == pytest.approx(0.006)
    name = "worldloop_snapshot_save_seconds"
    assert (
        metric(after, f"{name}_count", world="hooked")
        - metric(before, f"{name}_count", world="hooked")
        == 1
    )


def test_the_real_store_feeds_journal_and_snapshot_timings(tmp_path: Path) -> None:
    """Durability reports each journal append (loop thread) and snapshot save (writer thread)."""
    app = make_app(tmp_path, WORLDLOOP_SNAPSHOT_EVERY=5, WORLDLOOP_START_PAUSED=True)
    client = app.test_client()
    rt = rt_of(app)
    try:
        before = samples(client)
        assert rt.durability is not None
        for _ in range(12):  # a due snapshot waits while the writer is busy: let each finish
            rt.step(1)
            assert rt.durability.drain(10)
        after = samples(client)

        def delta(name: str) -> float:
            return metric(after, name, world="garden") - metric(before, name, world="garden")

        assert delta("worldloop_journal_append_seconds_count") == 12  # one per durable tick
        assert delta("worldloop_journal_append_seconds_sum") > 0
        assert delta("worldloop_snapshot_save_seconds_count") == 2  # ticks 5 and 10
        assert delta("worldloop_snapshot_save_seconds_sum") > 0
        for _ in range(4):  # to tick 16: a snapshot at 15, and the final one at 16
            rt.step(1)
            assert rt.durability.drain(10)
        again = samples(client)
        name = "worldloop_journal_append_seconds_count"
        assert metric(again, name, world="garden") - metric(after, name, world="garden") == 4
        name = "worldloop_snapshot_save_seconds_count"
        assert metric(again, name, world="garden") - metric(after, name, world="garden") == 1
    finally:
        app.extensions["worldloop"].stop()
    # the final snapshot is timed too (it runs on the writer thread within the stop bound)
    final = metric(samples(client), "worldloop_snapshot_save_seconds_count", world="garden")
    assert final - metric(again, "worldloop_snapshot_save_seconds_count", world="garden") == 1


def test_state_gauges_follow_pause_and_rate_without_ticks(garden: Flask) -> None:
    client = garden.test_client()
    rt = rt_of(garden)
    assert rt.ticker.wait_for_ticks(1, 5)
    rt.pause()
    rt.set_rate(7.0)
    values = samples(client)  # no tick ran since: the scrape itself reads the live state
    assert metric(values, "worldloop_paused", world="garden") == 1
    assert metric(values, "worldloop_rate_hz", world="garden") == 7.0
    rt.resume()
    assert metric(samples(client), "worldloop_paused", world="garden") == 0
