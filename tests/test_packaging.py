"""Packaging: the runtime dependencies are what the core imports, extras stay optional, the locks
and the license agree with pyproject.toml. No network: the source is read with ``ast`` and the
import names are mapped to distributions with what is installed."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

# Modules that belong to an extra and so may import its packages when they are imported (a core
# module must not import them at module level). Add a module here with the extra it needs, e.g.
# "worldloop.lease.redis": "redis".
EXTRA_MODULES: dict[str, str] = {
    "worldloop.demo.kernels_numba": "fast",
    "worldloop.demo.kernels_loops": "fast",
    "worldloop.demo.kernels_pcg": "fast",
    "worldloop.offload.celery": "celery",
    "worldloop.demo.celery_app": "celery",
}


def _norm(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return _norm(match.group(1))


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


@dataclass(frozen=True)
class Declared:
    runtime: frozenset[str]
    extras: Mapping[str, frozenset[str]]


def declared(pyproject: Mapping[str, Any]) -> Declared:
    project = pyproject["project"]
    extras = project.get("optional-dependencies", {})
    return Declared(
        runtime=frozenset(_requirement_name(r) for r in project["dependencies"]),
        extras={e: frozenset(_requirement_name(r) for r in reqs) for e, reqs in extras.items()},
    )


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. "worldloop.runtime"
    target: str  # absolute name imported, e.g. "sqlalchemy.exc" or "worldloop.store.sql"
    line: int
    eager: bool  # runs when the importing module is imported (not inside a function)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, eager: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under ``node``; eager unless in a function or ``if TYPE_CHECKING``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, eager
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(child, False)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), False)
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), eager)
        else:
            yield from _walk(child, eager)


def imports(src: Path, package: str = "worldloop") -> list[Import]:
    """Every import in every module of ``src/<package>``, relative ones made absolute."""
    found = []
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        if is_init:
            parts.pop()
        module = ".".join(parts)
        base = parts if is_init else parts[:-1]  # the package a relative import starts from
        for node, eager in _walk(ast.parse(path.read_text(), str(path)), True):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                head = ".".join(base[: len(base) - node.level + 1]) if node.level else ""
                stem = ".".join(p for p in (head, node.module or "") if p)
                # `from a import b` may import the submodule a.b: count both
                targets = [stem] + [f"{stem}.{alias.name}" for alias in node.names]
            found += [Import(module, t, node.lineno, eager) for t in targets]
    return found


def _extra_of(module: str) -> str | None:
    for name, extra in EXTRA_MODULES.items():
        if module == name or module.startswith(name + "."):
            return extra
    return None


def problems(src: Path, decl: Declared, dists: Mapping[str, list[str]]) -> list[str]:
    """What breaks the packaging rules in ``src``, one line each (empty when all is well)."""
    out = []
    extra_dists = {d: e for e, ds in decl.extras.items() for d in ds}
    seen = set()
    for imp in imports(src):
        top = imp.target.split(".")[0]
        if top != "worldloop":  # one report per statement (`from a import b` yields a and a.b)
            if (imp.module, imp.line, top) in seen:
                continue
            seen.add((imp.module, imp.line, top))
        where = f"{imp.module}:{imp.line} imports {imp.target}"
        module_extra = _extra_of(imp.module)
        if top == "worldloop":
            target_extra = _extra_of(imp.target)
            if imp.eager and target_extra and target_extra != module_extra:
                out.append(f"{where} at import time, a module of the [{target_extra}] extra")
            continue
        if top in sys.stdlib_module_names or not top:
            continue
        names = {_norm(d) for d in dists.get(top, [])}
        if not names:
            out.append(f"{where}: no installed distribution provides {top!r}")
        elif names & decl.runtime:
            continue
        elif names & extra_dists.keys():
            extra = extra_dists[min(names & extra_dists.keys())]
            if imp.eager and extra != module_extra:
                out.append(f"{where} at import time: [{extra}] is an extra (import it lazily)")
        else:
            out.append(f"{where}: {sorted(names)} is not declared in pyproject.toml")
    return out


def test_the_core_imports_only_declared_runtime_dependencies_and_extras_lazily() -> None:
    assert problems(SRC, declared(_pyproject()), packages_distributions()) == []


def test_the_check_catches_an_undeclared_import_and_an_eager_extra(tmp_path: Path) -> None:
    pkg = tmp_path / "worldloop"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .runtime import run\n")
    (pkg / "runtime.py").write_text(
        "import requests\nimport flask\n\ndef run():\n    import redis\n    return redis\n"
    )
    (pkg / "store.py").write_text("import redis.client\n")
    decl = Declared(runtime=frozenset({"flask"}), extras={"redis": frozenset({"redis"})})
    dists = {"requests": ["requests"], "flask": ["Flask"], "redis": ["redis"]}
    found = problems(tmp_path, decl, dists)
    assert found == [
        "worldloop.runtime:1 imports requests: ['requests'] is not declared in pyproject.toml",
        "worldloop.store:1 imports redis.client at import time: [redis] is an extra "
        "(import it lazily)",
    ]
    EXTRA_MODULES["worldloop.store"] = "redis"
    try:
        assert problems(tmp_path, decl, dists) == [found[0]]
        (pkg / "__init__.py").write_text("from . import store\n")
        assert problems(tmp_path, decl, dists)[0] == (
            "worldloop:1 imports worldloop.store at import time, a module of the [redis] extra"
        )
    finally:
        del EXTRA_MODULES["worldloop.store"]


def test_every_core_module_imports_without_the_extras_installed() -> None:
    """Run for real: hide the extras' packages and import every module that is not an extra's."""
    decl = declared(_pyproject())
    extra = {d for ds in decl.extras.values() for d in ds}
    hidden = sorted(
        name for name, ds in packages_distributions().items() if {_norm(d) for d in ds} & extra
    )
    script = """
import importlib.abc, pkgutil, sys
hidden, skip = set(sys.argv[1].split(",")), set(sys.argv[2].split(",")) - {""}
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden)", name=name)
sys.meta_path.insert(0, Hide())
import worldloop
for info in pkgutil.walk_packages(worldloop.__path__, "worldloop."):
    if info.name.endswith(".__main__") or any(
        info.name == s or info.name.startswith(s + ".") for s in skip
    ):
        continue
    importlib.import_module(info.name)
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script, ",".join(hidden), ",".join(EXTRA_MODULES)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def _pins(lock: Path) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock.read_text(), re.MULTILINE)
    return {_norm(name): version for name, version in pins}


def test_the_locks_pin_what_pyproject_declares_runtime_and_dev_apart() -> None:
    pyproject = _pyproject()
    decl = declared(pyproject)
    runtime = _pins(ROOT / "requirements" / "runtime.lock")
    dev = _pins(ROOT / "requirements" / "dev.lock")
    group = {_requirement_name(r) for r in pyproject["dependency-groups"]["dev"]}
    extras = set().union(*decl.extras.values())
    assert decl.runtime <= runtime.keys()
    assert not (extras | group) & runtime.keys(), "runtime.lock holds an extra or a dev tool"
    assert decl.runtime | extras | group <= dev.keys()
    assert {k: dev[k] for k in runtime} == runtime, "dev.lock and runtime.lock disagree"
    for lock in ("runtime.lock", "dev.lock"):
        blocks = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / "requirements" / lock).read_text())
        unhashed = [b.split()[0] for b in blocks if "==" in b and "--hash=sha256:" not in b]
        assert unhashed == [], f"{lock}: pins without hashes"


def test_the_license_file_matches_pyproject() -> None:
    project = _pyproject()["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the worldloop authors" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text
