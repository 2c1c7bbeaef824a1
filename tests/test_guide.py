"""docs/your-world.md runs: its python blocks, joined in order, are one module (pond.py).

The pond is checked in this process (commands, replay and the state hash), then served by a
real `flask run` and drawn in real headless Chromium, while worldloop.client plays it."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tests.browser import ARTIFACTS
from tests.support import ROOT, SRC, Server, flask_argv, running_server
from tests.test_viewer_browser import open_viewer
from worldloop import Command

GUIDE = ROOT / "docs" / "your-world.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def guide_source() -> str:
    return "\n".join(BLOCK.findall(GUIDE.read_text()))


def write_pond(folder: Path) -> Path:
    path = folder / "pond.py"
    path.write_text(guide_source())
    return path


@pytest.fixture
def pond(tmp_path: Path) -> Iterator[ModuleType]:
    path = write_pond(tmp_path)
    spec = importlib.util.spec_from_file_location("pond", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pond"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("pond", None)


def test_the_guide_is_one_module_of_several_blocks() -> None:
    blocks = BLOCK.findall(GUIDE.read_text())
    assert len(blocks) >= 6
    compile(guide_source(), "pond.py", "exec")


def cmd(seq: int, type_: str, payload: dict[str, Any], actor: str | None) -> Command:
    return Command(id=f"c{seq}", seq=seq, type=type_, payload=payload, actor=actor)


def test_the_pond_plays_replays_and_its_hash_catches_a_break(pond: ModuleType) -> None:
    def run(world: Any, ticks: int) -> Any:
        join = world.validate("join", {"player_id": "p1", "name": "ann", "token_hash": "h"}, None)
        world.step([cmd(1, "join", join, None)])
        world.step([cmd(2, "move_to", world.validate("move_to", {"x": 10, "y": 20}, "p1"), "p1")])
        world.step([cmd(3, "feed", {}, "p1")])
        for _ in range(ticks):
            world.step([])
        return world

    a, b = run(pond.Pond(seed=4), 120), run(pond.Pond(seed=4), 120)
    assert a.state_hash() == b.state_hash()
    assert (a.players["p1"]["x"], a.players["p1"]["y"]) == (10, 20)  # it sailed there
    copy = pond.Pond(seed=99)
    copy.restore(a.full_state())
    assert copy.state_hash() == a.state_hash()
    # A world that draws randomness outside its state breaks determinism: the hash shows it.
    broken = run(pond.Pond(seed=4), 0)
    twin = run(pond.Pond(seed=4), 0)
    broken.vel += np.random.default_rng().normal(0, 1, broken.vel.shape)  # not from the state
    assert broken.state_hash() != twin.state_hash()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Server]:
    write_pond(tmp_path)
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(SRC)]), "WORLDLOOP_RATE_HZ": "20"}
    argv = flask_argv()
    argv[argv.index("worldloop.demo:create_app")] = "pond:create_app"
    with running_server(argv, tmp_path, env=env, name="pond") as srv:
        yield srv


@pytest.mark.browser
@pytest.mark.slow
def test_the_guides_world_is_served_drawn_and_played(
    page: Any, served: Server, pond: ModuleType, tmp_path: Path
) -> None:
    played = pond.play(served.base)  # the guide's own client code
    assert any(lay["kind"] == "boat" for lay in played["frame"]["layers"])
    open_viewer(page, served)
    page.wait_for_function(
        "() => { const b = window.worldloopViewer.layer('boat');"
        " return b && b.label[0] === 'captain' && b.x[0] === 100 && b.y[0] === 120; }"
    )
    fish = page.evaluate("() => window.worldloopViewer.layer('fish')")
    assert fish["total_in_view"] == 120 == len(fish["x"])
    assert page.text_content("#stat-fish") == "120"
    page.wait_for_function("() => window.worldloopViewer.framesDrawn > 3")
    assert (tmp_path / "instance" / "worldloop.db").exists()  # durable by default
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-guide-pond.png"))
