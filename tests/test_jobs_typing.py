"""``job(...)`` is typed: mypy --strict (the project's config) checks a decorated job's function
against its kind, on JobScheduler.job, WorldLoop.job and WorldLoopState.job alike. A world job
is f(world, ctx) with any World subclass, a background job (the default kind) f(snapshot, ctx).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parent.parent
TYPED = ROOT / "tests" / "typecheck" / "jobs_typed.py"

MISTYPED = """
from worldloop import JobContext, JobKind, JobScheduler, Snapshot, World, WorldLoop, WorldLoopState

s = JobScheduler()
ext = WorldLoop()

@s.job("a", kind="world", every=1)  # E: cannot be "Snapshot"
def a(snapshot: Snapshot, ctx: JobContext) -> None: ...

@s.job("b", every=1)  # E: expected "Callable[[Snapshot, JobContext], None]"
def b(world: World, ctx: JobContext) -> None: ...

@s.job("c", kind=JobKind.WORLD, every=1)  # E: expected "Callable[[World, JobContext], None]"
def c(world: World) -> None: ...

@ext.job("d", kind="background", every=1)  # E: expected "Callable[[Snapshot, JobContext], None]"
def d(world: World, ctx: JobContext) -> None: ...

@s.job("e", kind="both", every=1)  # E: No overload variant of "__call__"
def e(world: World, ctx: JobContext) -> None: ...

@ext.job("f", kind="world", every=1, misfire="sometimes")  # E: No overload variant of "__call__"
def f(world: World, ctx: JobContext) -> None: ...

@ext.job("g", kind="world", every_ticks=1)  # E: cannot be "int"
def g(world: int, ctx: JobContext) -> None: ...

def on_one_app(state: WorldLoopState) -> None:
    @state.job("h", kind="world", every=1)  # E: cannot be "Snapshot"
    def h(snapshot: Snapshot, ctx: JobContext) -> None: ...
"""


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[str]]]:
    """Run mypy once over the typed example and the mistyped snippet: error lines per file."""
    tmp = tmp_path_factory.mktemp("mypy")
    bad = tmp / "jobs_mistyped.py"
    bad.write_text(MISTYPED)
    args = ["--config-file", str(ROOT / "pyproject.toml"), "--strict"]
    args += ["--cache-dir", str(tmp / "cache"), "--no-error-summary", str(TYPED), str(bad)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MYPYPATH", str(ROOT / "src"))  # this checkout's worldloop, not an install
        stdout, stderr, _ = api.run(args)
    errors: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        m = re.match(r"(.+?):(\d+): error: (.*)", line)
        if m:
            errors.setdefault(os.path.basename(m[1]), []).append(f"{m[2]}: {m[3]}")
    assert "jobs_mistyped.py" in errors, stdout + stderr  # mypy ran and found the module
    yield errors


def test_rightly_typed_jobs_pass_mypy_strict(mypy_errors: dict[str, list[str]]) -> None:
    assert mypy_errors.get("jobs_typed.py", []) == []


def test_wrongly_typed_jobs_are_mypy_errors(mypy_errors: dict[str, list[str]]) -> None:
    expected = {
        str(n): note.strip()
        for n, text in enumerate(MISTYPED.splitlines(), start=1)
        for _, _, note in [text.partition("# E:")]
        if note
    }
    found: dict[str, list[str]] = {}
    for error in mypy_errors["jobs_mistyped.py"]:
        line, _, message = error.partition(": ")
        found.setdefault(line, []).append(message)
    assert sorted(found, key=int) == sorted(expected, key=int), mypy_errors
    for line, fragment in expected.items():
        assert any(fragment in message for message in found[line]), (fragment, found[line])
