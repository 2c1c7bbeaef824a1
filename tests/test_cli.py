"""The one CLI (``worldloop``, ``python -m worldloop``, ``flask world``): how it loads apps,
what it prints, and that it never starts a world nor takes its lease."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import pty
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.durability_app import Drift
from tests.support import BIN, ROOT, child_env, running_server, wait_for
from worldloop import System, World, WorldLoop
from worldloop._loading import inspecting
from worldloop.cli.loading import masked
from worldloop.commands import Command, CommandQueue
from worldloop.durability import Durability, replay
from worldloop.progress import ReplayLog
from worldloop.store import Recovery, SqlStore


class Tally(World):
    name = "tally"

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def validate(self, type_: str, payload: Mapping[str, Any], actor: str | None) -> dict[str, Any]:
        return dict(payload)

    def apply(self, command: Command) -> Any:
        return None

    def systems(self) -> Sequence[System]:
        return [System("count", self._count)]

    def _count(self) -> None:
        self.n += 1

    def get_state(self) -> dict[str, Any]:
        return {"n": self.n}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.n = int(state["n"])

    def view(self) -> dict[str, Any]:
        return {"n": self.n}


class StepClock:
    """A clock that advances ``step`` seconds each time it is read (no sleeping)."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``worldloop ...`` as a user runs it (the console script's code: worldloop.cli:main)."""
    return subprocess.run(
        [sys.executable, "-m", "worldloop", *args],
        cwd=cwd,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def readme_counter() -> str:
    """The Counter app of README.md's "Use it in your app", as a newcomer copies it."""
    section = (ROOT / "README.md").read_text().split("## Use it in your app", 1)[1]
    return section.split("```python", 1)[1].split("```", 1)[0]


# -- in-process ------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["auto", "eager", "lazy", "never"])
def test_an_app_loaded_for_inspection_never_starts_whatever_its_config(tmp_path, policy):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    app = Flask("inspected", instance_path=str(tmp_path))
    app.config.update(WORLDLOOP_AUTOSTART=policy, WORLDLOOP_STORE_URL=url)
    with inspecting():
        loop = WorldLoop(app, world=lambda config: Tally())
        loop.start()  # even an app that starts its world by hand
    app.test_client().get("/")  # nor on a first request (the lazy policy)
    assert loop.runtime is not None and not loop.runtime.running
    assert not loop.runtime.lease.held
    assert not (tmp_path / "w.db.lock").exists()


def test_replay_reports_progress_and_the_log_says_rate_and_time_left(caplog):
    world = Tally()
    rec = Recovery(snapshot_tick=0, state=world.full_state(), state_hash=None, head_tick=1000)
    seen: list[tuple[int, int]] = []
    replay(Tally(), rec, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i * 100, 1000) for i in range(11)]

    caplog.set_level(logging.INFO, logger="worldloop")
    log = ReplayLog("tally", interval=5.0, clock=StepClock(2.0))  # read at 2, 4, 6, ...
    replay(Tally(), rec, progress=log)
    lines = [r.getMessage() for r in caplog.records if "replayed" in r.getMessage()]
    # started at 2; at 200 ticks the clock reads 8: 200 / 6 s = 33 ticks/s, 800 left = 24 s
    assert lines[0] == "world 'tally': replayed 200 of 1,000 ticks (33 ticks/s, ~24 s left)"
    assert len(lines) == 3  # every 5 s of the injected clock, not every call


def test_recovery_at_start_logs_its_progress(tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    world = Tally()
    store = SqlStore(url)
    store.save_snapshot("tally", 0, world.full_state(), world.state_hash())
    for _ in range(300):
        world.step([])
        store.append("tally", world.tick, [])
    store.close()
    caplog.set_level(logging.INFO, logger="worldloop")
    durability = Durability(SqlStore(url), clock=StepClock(3.0))
    fresh = Tally()
    try:
        result = durability.recover(fresh, CommandQueue(10))
    finally:
        durability.close()
    assert result is not None and fresh.tick == 300 and fresh.n == 300
    messages = [r.getMessage() for r in caplog.records]
    # the clock reads 3 before the store is read and 6 after: said before the replay starts
    loading = "world 'tally': loading its last snapshot and journal from the store"
    loaded = "world 'tally': snapshot of tick 0 loaded in 3.00 s, replaying 300 journaled ticks"
    assert messages.index(loading) < messages.index(loaded)
    assert "world 'tally': replayed 100 of 300 ticks (17 ticks/s, ~12 s left)" in messages
    assert any("recovered at tick 300" in m for m in messages)


def test_store_urls_are_printed_without_their_password():
    assert (
        masked("postgresql+psycopg://ann:s3cr:et@db:5432/w")
        == "postgresql+psycopg://ann:***@db:5432/w"
    )
    assert masked("sqlite:////srv/w.db") == "sqlite:////srv/w.db"


def test_flask_world_is_declared_as_a_flask_plugin_command():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert declared["entry-points"]["flask.commands"] == {"world": "worldloop.cli:world"}
    assert declared["scripts"] == {"worldloop": "worldloop.cli:main"}


# -- real processes --------------------------------------------------------------------------


@pytest.mark.slow
def test_worldloop_info_on_the_readme_counter_beside_its_running_server(tmp_path):
    (tmp_path / "counter.py").write_text(readme_counter())
    argv = [str(BIN / "flask"), "--app", "counter:app", "run", "--host", "127.0.0.1"]
    store = tmp_path / "instance" / "worldloop.db"  # the default: SQLite in the instance folder
    lock = Path(f"{store}.lock")

    def head() -> int:
        s = SqlStore(f"sqlite:///{store}", readonly=True)
        try:
            return s.head("counter") or 0
        finally:
            s.close()

    with running_server([*argv, "--port", "{port}"], tmp_path, ready=False) as srv:
        wait_for(lambda: srv.get("/n")[0] == 200, 30, what="the counter server")
        wait_for(lambda: lock.exists() and head() > 5, 30, what="journaled ticks")
        server_pid = lock.read_text()
        # The world runs in the runner process the server started (worldloop.runner).
        argv_of = Path(f"/proc/{server_pid}/cmdline").read_bytes().split(b"\0")
        assert b"worldloop.runner" in argv_of and str(srv.proc.pid).encode() in argv_of

        shown = subprocess.run(  # the newcomer's command, as the console script runs it
            [str(BIN / "worldloop"), "info", "--app", "counter:app"],
            cwd=tmp_path,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert "Traceback" not in shown.stderr and "WORLDLOOP_WORLD" not in shown.stderr
        lines = dict(line.split(None, 1) for line in shown.stdout.splitlines()[:5])
        assert lines["world"] == "counter" and lines["head"].startswith("tick ")
        assert lines["store"] == f"sqlite:///{store}"

        as_json = cli("info", "--app", "counter:app", "--json", cwd=tmp_path)
        assert as_json.returncode == 0, as_json.stderr
        data = json.loads(as_json.stdout)
        assert data["world"] == "counter" and data["head"] > 5
        assert [s["tick"] for s in data["snapshots"]] == [0]

        verified = cli("--app", "counter:app", "verify", "--json", cwd=tmp_path)
        assert verified.returncode == 0, verified.stderr
        assert json.loads(verified.stdout)["ok"] is True

        via_flask = subprocess.run(
            [str(BIN / "flask"), "--app", "counter:app", "world", "info"],
            cwd=tmp_path,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert via_flask.returncode == 0, via_flask.stderr
        assert via_flask.stdout.splitlines()[0].split() == ["world", "counter"]

        # none of them took the lease: the server holds it and its world goes on
        assert lock.read_text() == server_pid
        after = head()
        wait_for(lambda: head() > after, 10, what="the server to keep ticking")
        assert srv.proc.poll() is None


@pytest.mark.slow
def test_version_and_bad_apps_are_one_clear_line(tmp_path):
    version = cli("--version", cwd=tmp_path)
    assert version.returncode == 0
    assert version.stdout.strip() == f"worldloop, version {importlib.metadata.version('worldloop')}"

    (tmp_path / "broken.py").write_text("import no_such_module_here\n")
    (tmp_path / "plain.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
    expected = {
        "missing:app": "cannot load the app 'missing:app': Could not import 'missing'.",
        "broken:app": "While importing 'broken', an ImportError was raised: "
        "ModuleNotFoundError: No module named 'no_such_module_here'",
        "plain:app": "the app 'plain:app' does not use worldloop",
    }
    for app, message in expected.items():
        done = cli("info", "--app", app, cwd=tmp_path)
        assert done.returncode != 0
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith("Error: ") and message in done.stderr
        assert "WORLDLOOP_WORLD" not in done.stderr and done.stdout == ""
    nothing = cli("info", cwd=tmp_path)
    assert nothing.returncode != 0 and "give --app" in nothing.stderr


def make_drift_store(url: str, ticks: int) -> str:
    """A store holding Drift's snapshot at tick 0 and ``ticks`` journaled ticks."""
    world = Drift()
    store = SqlStore(url)
    try:
        store.save_snapshot("drift", 0, world.full_state(), world.state_hash())
        for tick in range(1, ticks + 1):
            world.step([])
            store.append("drift", tick, [], world.state_hash() if tick % 50 == 0 else None)
    finally:
        store.close()
    return world.state_hash()


@pytest.mark.slow
def test_verify_draws_a_bar_on_a_terminal_and_keeps_json_on_stdout(tmp_path):
    url = f"sqlite:///{tmp_path / 'drift.db'}"
    final = make_drift_store(url, 400)
    by_world = ("--world", "tests.durability_app:create_world", "--store", url)
    primary, replica = pty.openpty()
    terminal: list[bytes] = []

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:
                return
            if not chunk:
                return
            terminal.append(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "worldloop", "verify", "--json", *by_world],
            cwd=ROOT,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=replica,
            text=True,
            timeout=60,
        )
    finally:
        os.close(replica)
        reader.join(10)
        os.close(primary)
    assert done.returncode == 0
    data = json.loads(done.stdout)  # the bar never reaches stdout
    assert data["ok"] is True and data["tick"] == 400 and data["state_hash"] == final
    assert data["hashes_checked"] == 9
    drawn = b"".join(terminal).decode(errors="replace")
    assert "verifying drift" in drawn and "100%" in drawn

    piped = cli("restore", *by_world, cwd=ROOT)
    assert piped.returncode == 0 and piped.stderr == ""  # no bar without a terminal
    assert re.search(r"^tick +400$", piped.stdout, re.MULTILINE), piped.stdout


@pytest.mark.slow
def test_flask_world_through_its_entry_point_never_starts_even_an_eager_app(tmp_path):
    """As installed, `flask world` is a plugin command: FlaskGroup finds it without loading the
    app, and the group loads the app itself, inside the scope the extension honours."""
    site = tmp_path / "site"
    dist = site / "worldloop_plugin_check-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: worldloop-plugin-check\nVersion: 0\n"
    )
    (dist / "entry_points.txt").write_text("[flask.commands]\nworld = worldloop.cli:world\n")
    eager = readme_counter().replace(
        "loop = WorldLoop(", 'app.config["WORLDLOOP_AUTOSTART"] = "eager"\nloop = WorldLoop('
    )
    assert "eager" in eager
    (tmp_path / "counter.py").write_text(eager)
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(site)])
    for argv in (
        [str(BIN / "flask"), "--app", "counter:app", "world", "info"],
        [sys.executable, "-m", "worldloop", "info", "--app", "counter:app"],
    ):
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
        # a started world would have created its store and taken the lease beside it
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == f"Error: no store file at {tmp_path}/instance/worldloop.db"
        assert not (tmp_path / "instance").exists()
