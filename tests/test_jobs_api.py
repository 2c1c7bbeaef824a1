"""The jobs admin API, the demo's jobs, config-registered jobs, and a real server running them."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support import gunicorn_argv, running_server, wait_for
from worldloop import JobContext, World
from worldloop.snapshot import Snapshot

TOKEN = "s3cret-admin-token-for-jobs"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

config_runs: list[tuple[int, int]] = []


def config_job(snapshot: Snapshot, ctx: JobContext) -> int:
    """A background job registered through WORLDLOOP_JOBS."""
    config_runs.append((snapshot.tick, ctx.tick))
    return snapshot.tick


def config_world_job(world: World, ctx: JobContext) -> int:
    return world.tick


@pytest.fixture
def jobs_app(tmp_path: Path) -> Iterator[Flask]:
    from worldloop.demo import create_app

    os.environ.pop("WERKZEUG_RUN_MAIN", None)
    app = create_app(
        {
            "TESTING": True,
            "WORLDLOOP_HANDLE_SIGNALS": False,
            "WORLDLOOP_ADMIN_TOKEN": TOKEN,
            "WORLDLOOP_JOBS": [
                {
                    "name": "cfg-bg",
                    "func": "tests.test_jobs_api:config_job",
                    "every_ticks": 2,
                    "misfire": "skip",
                },
                {
                    "name": "cfg-world",
                    "func": "tests.test_jobs_api:config_world_job",
                    "kind": "world",
                    "every_ticks": 3,
                },
            ],
        },
        instance_path=str(tmp_path / "instance"),
    )
    yield app
    app.extensions["worldloop"].stop()


@pytest.fixture
def jc(jobs_app: Flask) -> FlaskClient:
    return jobs_app.test_client()


def _job(client: FlaskClient, name: str) -> dict[str, Any]:
    resp = client.get(f"/api/v1/admin/jobs/{name}", headers=AUTH)
    assert resp.status_code == 200
    return resp.get_json()["job"]  # type: ignore[no-any-return]


def test_admin_jobs_needs_the_admin_token(jc: FlaskClient) -> None:
    for method, path in [("get", ""), ("post", "/leaderboard/run"), ("post", "/leaderboard/pause")]:
        resp = getattr(jc, method)(f"/api/v1/admin/jobs{path}")
        assert resp.status_code == 401
        assert resp.get_json()["error"]["code"] == "unauthorized"
        resp = getattr(jc, method)(
            f"/api/v1/admin/jobs{path}", headers={"Authorization": "Bearer wrong"}
        )
        assert resp.status_code == 403


def test_list_jobs_shows_schedule_next_last_and_counters(jc: FlaskClient) -> None:
    wait_for(lambda: _job(jc, "cfg-world")["runs"] >= 1, 10, what="the config world job")
    jobs = {j["name"]: j for j in jc.get("/api/v1/admin/jobs", headers=AUTH).get_json()["jobs"]}
    assert set(jobs) == {"reseed-grass", "leaderboard", "cfg-bg", "cfg-world"}
    reseed = jobs["reseed-grass"]
    assert reseed["kind"] == "world" and reseed["schedule"] == "cron '0 4 * * *' UTC"
    assert reseed["next_run"]["at"].endswith("T04:00:00Z")
    lb = jobs["leaderboard"]
    assert lb["kind"] == "background" and lb["misfire"] == "skip" and lb["timeout"] == 30.0
    world = jobs["cfg-world"]
    assert world["last_result"]["status"] == "ok" and world["errors"] == 0
    assert world["last_slot"]["tick"] % 3 == 0
    for key in ("running", "paused", "errors", "last_run", "last_result", "next_run"):
        assert key in lb
    wait_for(lambda: len(config_runs) >= 2, 10, what="the config background job")
    snap_tick, ctx_tick = config_runs[-1]
    assert snap_tick == ctx_tick + 1


def test_run_now_writes_the_leaderboard_and_reseeds_the_grass(jc: FlaskClient) -> None:
    assert jc.get("/api/v1/leaderboard").status_code == 404
    resp = jc.post("/api/v1/admin/jobs/leaderboard/run", headers=AUTH)
    assert resp.status_code == 202
    board = wait_for(
        lambda: (
            jc.get("/api/v1/leaderboard").get_json()
            if jc.get("/api/v1/leaderboard").status_code == 200
            else None
        ),
        10,
        what="the leaderboard file",
    )
    assert board["world"] == "meadow" and len(board["entries"]) == 10
    scores = [e["score"] for e in board["entries"]]
    assert scores == sorted(scores, reverse=True)
    # The file is written inside the run; the result is recorded just after it returns.
    result = wait_for(lambda: _job(jc, "leaderboard")["last_result"], 10)
    assert result["status"] == "ok" and result["value"]["entries"] == 10

    # Paused and stepped once: the world read below is the very tick the job ran in (running
    # freely, a loaded machine let several ticks of growth pass and the bound below flaked).
    jc.application.extensions["worldloop"].runtime.pause()
    before = jc.get("/api/v1/world").get_json()["grass_total"]
    resp = jc.post("/api/v1/admin/jobs/reseed-grass/run", headers=AUTH)
    assert resp.status_code == 202 and resp.get_json()["run"]["command_id"]
    jc.application.extensions["worldloop"].runtime.step(1)
    wait_for(lambda: _job(jc, "reseed-grass")["runs"] == 1, 10, what="the reseed run")
    total = _job(jc, "reseed-grass")["last_result"]["value"]["grass_total"]
    assert total != before
    # the systems of the same tick grow and graze the fresh grass a little after the job ran
    now = jc.get("/api/v1/world").get_json()["grass_total"]
    assert abs(now - total) < 0.05 * total, (before, total, now)


def test_pause_and_resume_over_the_api(jc: FlaskClient) -> None:
    resp = jc.post("/api/v1/admin/jobs/cfg-world/pause", headers=AUTH)
    assert resp.status_code == 200 and resp.get_json()["job"]["paused"] is True
    # A run already queued for the next tick may still land; after that, nothing.
    tick = jc.get("/api/v1/world").get_json()["tick"]
    wait_for(lambda: jc.get("/api/v1/world").get_json()["tick"] > tick + 1, 10)
    runs = _job(jc, "cfg-world")["runs"]
    tick = jc.get("/api/v1/world").get_json()["tick"]
    wait_for(lambda: jc.get("/api/v1/world").get_json()["tick"] > tick + 8, 10)
    assert _job(jc, "cfg-world")["runs"] == runs
    resp = jc.post("/api/v1/admin/jobs/cfg-world/resume", headers=AUTH)
    assert resp.status_code == 200 and resp.get_json()["job"]["paused"] is False
    wait_for(lambda: _job(jc, "cfg-world")["runs"] > runs, 10, what="runs after resume")


def test_job_api_errors_are_json(jc: FlaskClient) -> None:
    resp = jc.post("/api/v1/admin/jobs/nope/run", headers=AUTH)
    assert resp.status_code == 404
    assert resp.get_json()["error"]["code"] == "job_not_found"
    resp = jc.get("/api/v1/admin/jobs/leaderboard/run", headers=AUTH)
    assert resp.status_code == 405 and "error" in resp.get_json()
    resp = jc.post("/api/v1/admin/jobs/%00%ff/pause", headers=AUTH)
    assert resp.status_code == 404 and "error" in resp.get_json()


def test_bad_jobs_config_refuses_to_start(tmp_path: Path) -> None:
    from worldloop import ConfigError
    from worldloop.demo import create_app

    with pytest.raises(ConfigError, match="WORLDLOOP_JOBS"):
        create_app(
            {
                "WORLDLOOP_HANDLE_SIGNALS": False,
                "WORLDLOOP_AUTOSTART": "never",
                "WORLDLOOP_JOBS": [{"func": "tests.test_jobs_api:missing", "every": 1}],
            },
            instance_path=str(tmp_path),
        )


def test_jobs_prometheus_collector(jobs_app: Flask) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from worldloop.jobs import JobsCollector

    registry = CollectorRegistry()
    registry.register(JobsCollector(jobs_app.extensions["worldloop"].jobs))
    jc = jobs_app.test_client()
    wait_for(lambda: _job(jc, "cfg-world")["runs"] >= 1, 10)
    text = generate_latest(registry).decode()
    assert 'worldloop_job_runs_total{job="cfg-world",kind="world"}' in text
    assert 'worldloop_job_paused{job="leaderboard",kind="background"} 0.0' in text


@pytest.mark.slow
def test_a_real_server_runs_the_leaderboard_on_schedule_and_stops_cleanly(tmp_path: Path) -> None:
    env = {"WORLDLOOP_ADMIN_TOKEN": TOKEN, "MEADOW_LEADERBOARD_EVERY": "0.5"}
    with running_server(gunicorn_argv("-w", "1", "--threads", "4"), tmp_path, env=env) as srv:
        status, _, board = wait_for(
            lambda: (r := srv.get("/api/v1/leaderboard"))[0] == 200 and r,
            20,
            what="the scheduled leaderboard",
        )
        assert len(board["entries"]) == 10
        status, _, body = srv.get("/api/v1/admin/jobs", headers=AUTH)
        assert status == 200
        lb = {j["name"]: j for j in body["jobs"]}["leaderboard"]
        assert lb["runs"] >= 1 and lb["last_slot"]["ts"] % 0.5 == 0
        assert (tmp_path / "instance" / "leaderboard.json").is_file()
        started = time.monotonic()
        srv.signal_group(signal.SIGTERM)
        srv.proc.wait(15)
        assert time.monotonic() - started < 10
        assert "Traceback" not in srv.log
