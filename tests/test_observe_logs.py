"""Logging: one line per event, JSON on request, the tick number on lines from the loop."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from tests.observe_world import GardenWorld
from worldloop import WorldRuntime
from worldloop.logs import JsonFormatter, TextFormatter, configure_logging
from worldloop.metrics import LoopObserver


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    configure_logging(json_lines=False, level="INFO", stream=sys.stderr)


def run_failing_ticks(buf: io.StringIO) -> int:
    """Run a paused world, fail its system on one stepped tick, return that tick's number."""
    rt = WorldRuntime(GardenWorld(creatures=10), rate_hz=50, start_paused=True)
    LoopObserver(rt).attach()
    rt.start()
    try:
        rt.step(2)
        rt.submit("boom", {})
        failed_tick = rt.world.tick + 1
        rt.step(1)
        rt.step(1)
    finally:
        rt.stop()
    return failed_tick


def test_json_lines_carry_world_and_tick(restore_logging: None) -> None:
    buf = io.StringIO()
    configure_logging(json_lines=True, level="INFO", stream=buf)
    failed_tick = run_failing_ticks(buf)
    lines = buf.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert len(records) >= 3  # started, the failure, stopped
    (failure,) = [r for r in records if "system 'wander' failed" in r["msg"]]
    assert failure["level"] == "ERROR"
    assert failure["world"] == "garden"
    assert failure["tick"] == failed_tick
    assert "RuntimeError: boom" in failure["exc"]
    started = next(r for r in records if "started" in r["msg"])
    assert "tick" not in started  # logged off the loop thread: no tick to claim


def test_text_lines_fold_tracebacks_onto_one_line(restore_logging: None) -> None:
    buf = io.StringIO()
    configure_logging(json_lines=False, level="INFO", stream=buf)
    failed_tick = run_failing_ticks(buf)
    lines = buf.getvalue().splitlines()
    (failure,) = [line for line in lines if "failed" in line]
    assert f"[garden tick={failed_tick}]" in failure
    assert "ERROR worldloop.world" in failure
    assert "RuntimeError: boom" in failure  # the traceback is on the same line


def test_configure_is_idempotent_one_handler(restore_logging: None) -> None:
    configure_logging(json_lines=True, stream=io.StringIO())
    configure_logging(json_lines=False, stream=io.StringIO())
    ours = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h.formatter, (JsonFormatter, TextFormatter))
    ]
    assert len(ours) == 1
    assert isinstance(ours[0].formatter, TextFormatter)
    assert logging.getLogger("worldloop").propagate is True


def test_env_switches_json_on(monkeypatch: pytest.MonkeyPatch, restore_logging: None) -> None:
    monkeypatch.setenv("WORLDLOOP_LOG_JSON", "true")
    buf = io.StringIO()
    configure_logging(stream=buf)
    logging.getLogger("worldloop.test").warning("hello %s", "there")
    (line,) = buf.getvalue().splitlines()
    assert json.loads(line)["msg"] == "hello there"
