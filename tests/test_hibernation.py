"""Hibernation of idle worlds (issue 13), in process: an idle world is snapshotted and
unloaded (its objects really freed), listed as hibernated with its tick, comes back asleep
after a restart, and wakes on a request or on a due job, caught up by its kind's policy
(skip or simulate). The sweep is driven by hand, on a clock the test moves."""

from __future__ import annotations

import gc
import os
import threading
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

import worldloop.host
from tests.durability_app import Drift, create_world
from tests.support import wait_for
from worldloop import WorldLoop
from worldloop.hibernation import Hibernator
from worldloop.host import WorldHost
from worldloop.jobs import JobContext, make_spec
from worldloop.state import state_of

TOKEN = "hibernate-admin-token-0123"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def beat(world: Drift, ctx: JobContext) -> None:
    """A world job: one more kick counted (world state, so it is journaled and recovered)."""
    world.kicks += 1


def drift(config: Mapping[str, Any]) -> Drift:
    return Drift(int(config.get("particles", 16)), int(config.get("seed", 7)))


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_app(store: str, instance: Path, **config: Any) -> tuple[Flask, WorldLoop]:
    os.environ.pop("WERKZEUG_RUN_MAIN", None)
    app = Flask(__name__, instance_path=str(instance))
    defaults: dict[str, Any] = {
        "TESTING": True,
        "WORLDLOOP_HANDLE_SIGNALS": False,
        "WORLDLOOP_ADMIN_TOKEN": TOKEN,
        "WORLDLOOP_STORE_URL": store,
        "WORLDLOOP_RATE_HZ": 50.0,
        "WORLDLOOP_SNAPSHOT_EVERY": 20,
        "WORLDLOOP_HIBERNATE_AFTER": 30.0,
    }
    app.config.update({**defaults, **config})
    loop = WorldLoop(world=create_world, json_errors="all")
    loop.kind("drift")(drift)
    loop.kind("sim", catch_up="simulate", max_simulate=50)(drift)
    loop.kind("never", hibernate_after=0)(drift)
    loop.kind(
        "beating", hibernate_after=0.4, jobs=[make_spec("beat", beat, kind="world", every=2.0)]
    )(drift)
    loop.init_app(app)
    return app, loop


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Flask, FlaskClient, Clock]]:
    app, _ = make_app(f"sqlite:///{tmp_path / 'worlds.db'}", tmp_path / "instance")
    clock = Clock()
    host = state_of(app).host
    host.hibernator.stop()  # the test sweeps by hand
    host.hibernator.clock = clock
    yield app, app.test_client(), clock
    state_of(app).stop()


def create(client: FlaskClient, name: str, kind: str = "drift", **config: Any) -> None:
    resp = client.post(
        "/api/v1/worlds", json={"name": name, "kind": kind, "config": config}, headers=ADMIN
    )
    assert resp.status_code == 201, resp.get_json()


def listed(client: FlaskClient) -> dict[str, dict[str, Any]]:
    body = client.get("/api/v1/worlds").get_json()
    return {w["name"]: w for w in body["worlds"]}


def kick(host: WorldHost, world: str) -> int:
    """Submit a kick to ``world`` (waking it if it sleeps) and wait until it is applied."""
    ticket = host.get(world).runtime.submit("kick", {"i": 0, "dv": 1.0})
    assert ticket.wait(10.0) and ticket.tick is not None, ticket.to_dict()
    return ticket.tick


def put_to_sleep(host: WorldHost, clock: Clock, name: str) -> None:
    """Sweep until ``name`` sleeps, moving the idle clock on by the idle time each time."""

    def slept() -> bool:
        clock.now += 31.0
        host.hibernator.sweep()
        return name in {e.name for e in host.sleeping()}

    wait_for(slept, timeout=15, interval=0.05, what=f"world {name} asleep")


def test_an_idle_world_sleeps_unloaded_and_a_request_wakes_it(server: Any) -> None:
    app, client, clock = server
    host = state_of(app).host
    create(client, "north", particles=8)
    create(client, "busy", particles=8)
    kick(host, "north")
    hosted = host.get("north")
    world_ref, runtime_ref = weakref.ref(hosted.runtime.world), weakref.ref(hosted.runtime)
    del hosted

    host.hibernator.sweep()  # first look: idle from now
    clock.now += 29.0
    kick(host, "busy")  # activity: its idle time starts again
    assert host.hibernator.sweep() == ([], [])  # 29 s < 30 s
    clock.now += 2.0
    slept, woken = host.hibernator.sweep()
    assert slept == ["north"] and woken == []

    # A pool thread may still be finishing the world's last tick as it stops, and its
    # snapshot writer its last write: they let go then (on a loaded CI box, seconds later).
    wait_for(
        lambda: gc.collect() >= 0 and world_ref() is None and runtime_ref() is None,
        30,
        0.02,
        "the sleeping world to be freed (nothing may keep a reference to it)",
    )
    entry = listed(client)["north"]
    assert entry["status"] == "hibernated"
    [record] = host.sleeping()
    assert record.asleep is not None and entry["tick"] == record.asleep.tick > 0
    assert listed(client)["busy"]["status"] == "running"

    # a per-world read wakes it, recovered where it slept (the kick is still there)
    resp = client.get("/api/v1/worlds/north/snapshot")
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["tick"] >= record.asleep.tick
    assert resp.get_json()["summary"]["kicks"] == 1
    assert listed(client)["north"]["status"] == "running"
    assert host.sleeping() == []
    kick(host, "north")  # and it takes commands again
    assert host.get("north").runtime.snapshot.summary["kicks"] == 2


def test_a_world_with_players_or_commands_stays_awake_and_some_kinds_never_sleep(
    server: Any,
) -> None:
    app, client, clock = server
    host = state_of(app).host
    create(client, "crowded")
    create(client, "forever", kind="never")
    crowded = host.get("crowded").runtime
    summary = crowded.world.summary
    crowded.world.summary = lambda: {**summary(), "players": 2}  # type: ignore[method-assign]
    wait_for(lambda: crowded.snapshot.summary.get("players") == 2)
    for _ in range(3):
        clock.now += 60.0
        assert host.hibernator.sweep() == ([], [])
    assert {w["status"] for w in listed(client).values()} == {"running"}


def test_concurrent_requests_wake_a_world_once(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, client, clock = server
    host = state_of(app).host
    create(client, "popular")
    put_to_sleep(host, clock, "popular")
    calls: list[str] = []
    real = worldloop.host.revive

    def counting(h: WorldHost, entry: Any) -> Any:
        calls.append(entry.name)
        return real(h, entry)

    monkeypatch.setattr(worldloop.host, "revive", counting)
    barrier = threading.Barrier(8)
    got: list[Any] = []

    def ask() -> None:
        barrier.wait()
        got.append(host.get("popular"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert calls == ["popular"] and len(got) == 8 and len({id(h) for h in got}) == 1
    assert got[0].runtime.running


def test_catch_up_skip_and_simulate(server: Any) -> None:
    app, client, clock = server
    host = state_of(app).host
    create(client, "skipper")
    create(client, "simmer", kind="sim")
    wall = [1_000_000.0]
    host.hibernator.wall = lambda: wall[0]
    put_to_sleep(host, clock, "skipper")
    put_to_sleep(host, clock, "simmer")
    ticks = {e.name: e.asleep.tick for e in host.sleeping() if e.asleep is not None}
    wall[0] += 100.0  # 5,000 ticks at 50 Hz: "sim" steps 50 of them at once (its max)
    for name in ("skipper", "simmer"):
        rt = host.get(name).runtime
        rt.pause()
        woke_at = rt.world.tick - ticks[name]
        if name == "simmer":
            assert 50 <= woke_at <= 50 + 25, woke_at  # 50 stepped, then the clock's own
        else:
            assert 0 <= woke_at < 25, woke_at


def test_a_due_job_wakes_a_sleeping_world(server: Any) -> None:
    """A world of a kind with a job every 2 s sleeps between its runs; the sweep wakes it
    when the job is due (its due time is in the catalog) and the job runs."""
    app, client, clock = server
    host = state_of(app).host
    create(client, "pulse", kind="beating")
    rt = host.get("pulse").runtime
    wait_for(lambda: rt.snapshot.summary["kicks"] >= 1, what="the first beat")
    beats = rt.snapshot.summary["kicks"]
    del rt
    put_to_sleep(host, clock, "pulse")
    [entry] = host.sleeping()
    assert entry.asleep is not None and entry.asleep.wake_at is not None
    assert entry.asleep.wake_at > entry.asleep.slept_at
    [stored] = [e for e in host.catalog.entries() if e.name == "pulse"]  # in the store
    assert stored.asleep == entry.asleep

    def woke() -> bool:
        return "pulse" in host.hibernator.sweep()[1]

    wait_for(woke, timeout=10, interval=0.05, what="the due job waking the world")
    rt = host.get("pulse").runtime
    wait_for(
        lambda: (
            rt.snapshot.summary["kicks"] > beats
            and rt.world.job_slots.get("beat", 0) >= entry.asleep.wake_at
        ),  # type: ignore[union-attr]
        timeout=5,
        what="the due slot run after waking",
    )


def test_a_sleeping_world_comes_back_asleep_and_can_be_deleted_asleep(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'worlds.db'}"
    app, _ = make_app(store, tmp_path / "instance")
    client = app.test_client()
    host = state_of(app).host
    host.hibernator.stop()
    clock = Clock()
    host.hibernator.clock = clock
    create(client, "north")
    create(client, "south")
    kick(host, "north")
    put_to_sleep(host, clock, "north")
    put_to_sleep(host, clock, "south")
    asleep = {e.name: e.asleep for e in host.sleeping()}
    state_of(app).stop()

    again, _ = make_app(store, tmp_path / "instance")
    try:
        host2 = state_of(again).host
        client2 = again.test_client()
        assert len(host2.worlds()) == 1  # the default world only: nothing loaded
        entries = listed(client2)
        assert entries["north"]["status"] == entries["south"]["status"] == "hibernated"
        assert entries["north"]["tick"] == asleep["north"].tick  # type: ignore[union-attr]
        resp = client2.delete("/api/v1/worlds/south?journal=drop", headers=ADMIN)
        assert resp.status_code == 200 and resp.get_json()["tick"] == asleep["south"].tick  # type: ignore[union-attr]
        assert "south" not in listed(client2) and len(host2.worlds()) == 1
        body = client2.get("/api/v1/worlds/north").get_json()
        assert body["tick"] >= asleep["north"].tick and body["kicks"] == 1  # type: ignore[union-attr]
        assert listed(client2)["north"]["status"] == "running"
        assert [e.name for e in host2.catalog.entries() if e.asleep] == []
    finally:
        state_of(again).stop()


def test_the_sweep_thread_runs_by_itself(tmp_path: Path) -> None:
    """With a short idle time the host's own thread puts a world to sleep (no hand sweep)."""
    app, _ = make_app(
        f"sqlite:///{tmp_path / 'worlds.db'}", tmp_path / "instance", WORLDLOOP_HIBERNATE_AFTER=0.3
    )
    try:
        client = app.test_client()
        create(client, "drowsy")
        hibernator = state_of(app).host.hibernator
        assert isinstance(hibernator, Hibernator) and hibernator.interval == pytest.approx(0.075)
        wait_for(lambda: listed(client)["drowsy"]["status"] == "hibernated", timeout=10)
        resp = client.get("/api/v1/worlds/drowsy")  # woken by the request
        assert resp.status_code == 200 and resp.get_json()["running"], resp.get_json()
    finally:
        state_of(app).stop()
