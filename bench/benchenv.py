"""The header every benchmark table starts with: the command that made it, and the machine
and versions it ran on (so a figure can be traced to the code and box that produced it)."""

from __future__ import annotations

import os
import platform
import shlex
import sqlite3
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def command() -> str:
    """The command line that is running, as one would type it from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(ROOT))
    except ValueError:
        shown = str(script)
    return "python " + shlex.join([shown, *sys.argv[1:]])


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine() -> str:
    """``Machine: ...`` with CPU count, OS, Python and the versions that set the figures."""
    cpus = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cpus
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", 1-min load average {os.getloadavg()[0]:.1f}"
    return (
        f"Machine: {platform.machine()} {platform.processor() or ''}".rstrip()
        + f", {usable} of {cpus} CPUs usable (shared with other jobs{load}), "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}, "
        f"NumPy {_version('numpy')}, numba {_version('numba')}, "
        f"SQLAlchemy {_version('sqlalchemy')}, SQLite {sqlite3.sqlite_version}, "
        f"Flask {_version('flask')}."
    )


def header(title: str) -> list[str]:
    """A markdown title, the command and the machine line (two-space line breaks)."""
    return [f"# {title}", "", f"Command: `{command()}`  ", machine(), ""]


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by rank, no interpolation; NaN when empty."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def ratio_ci(
    num: list[float], den: list[float], q: float, level: float = 0.9, draws: int = 2000
) -> tuple[float, float]:
    """A bootstrap confidence interval (``level``, percentile method) of
    ``pct(num, q) / pct(den, q)``: both samples resampled with replacement ``draws`` times,
    with a fixed seed, so a ratio of two tail percentiles is reported with how far chance alone
    moves it (the p99 of a few hundred latencies rests on its few highest)."""
    import random

    rng = random.Random(20261126)
    ratios = sorted(
        pct(rng.choices(num, k=len(num)), q) / pct(rng.choices(den, k=len(den)), q)
        for _ in range(draws)
    )
    tail = (1.0 - level) / 2.0
    return ratios[int(tail * draws)], ratios[min(draws - 1, int((1.0 - tail) * draws))]


def meadow_config(creatures: int) -> dict[str, str]:
    """The MEADOW_* settings of a benchmarked demo world of ``creatures`` sheep that stays at
    ``creatures`` for as long as the benchmark runs.

    The default rules feed about 850 sheep on the demo's 1000 x 1000 meadow: 100,000 of them
    starve within ~15 s (to none at all), so a benchmark that only set MEADOW_ENTITIES measured
    an empty world after its first seconds. Here they never starve (``MEADOW_METABOLISM=0``)
    and births are capped at the count (all the arithmetic of ``creatures`` sheep every tick,
    a snapshot of ``creatures`` rows every tick); the results report the count they saw."""
    return {
        "MEADOW_ENTITIES": str(creatures),
        "MEADOW_MAX_CREATURES": str(creatures),
        "MEADOW_METABOLISM": "0",
    }


def rss_kib() -> int:
    """This process's resident set size in KiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def emit(lines: list[str], out: Path | None) -> None:
    """Print a result table's lines and write them to ``out`` (when given)."""
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
