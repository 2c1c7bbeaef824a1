"""What the CLI prints: aligned lines for a person, one JSON object with ``--json``, and a
progress bar on a terminal's stderr for long replays."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import click

from ..progress import ReplayProgress


def emit(data: dict[str, Any], as_json: bool, lines: Sequence[tuple[str, Any]]) -> None:
    """Print ``data`` as JSON, or ``lines`` as aligned ``key  value`` pairs."""
    if as_json:
        click.echo(json.dumps(data, sort_keys=True))
        return
    width = max((len(k) for k, _ in lines), default=0)
    for key, value in lines:
        click.echo(f"{key:<{width}}  {value}".rstrip() if key else f"  {value}")


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows (the first one is the header) as aligned text lines."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def n(value: int | None) -> str:
    """A tick or count for a person: thousands separated, ``-`` for none."""
    return "-" if value is None else f"{value:,}"


def short(state_hash: str | None) -> str:
    return "-" if not state_hash else state_hash[:16]


def size(nbytes: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000  # type: ignore[assignment]
    return str(nbytes)  # pragma: no cover


def when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


@contextlib.contextmanager
def progress_bar(label: str) -> Iterator[ReplayProgress | None]:
    """A replay progress callback drawing a bar on stderr, or None when stderr is no terminal
    (so pipes, logs and ``--json`` consumers see no bar)."""
    if not sys.stderr.isatty():
        yield None
        return
    state: dict[str, Any] = {"bar": None, "done": 0}

    def update(done: int, total: int) -> None:
        if total <= 0:
            return
        if state["bar"] is None:
            bar = click.progressbar(length=total, label=label, file=sys.stderr, show_eta=True)
            state["bar"] = bar.__enter__()
        state["bar"].update(done - state["done"])
        state["done"] = done

    try:
        yield update
    finally:
        if state["bar"] is not None:
            state["bar"].__exit__(None, None, None)
