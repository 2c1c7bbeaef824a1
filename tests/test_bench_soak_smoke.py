"""bench/soak.py runs end to end against a real gunicorn server (a few seconds; the verdict
itself is not asserted: a flat RSS needs minutes)."""

from __future__ import annotations

import subprocess
import sys

from .support import ROOT, child_env


def test_soak_bench_runs_streams_and_commands_and_writes_its_table(tmp_path) -> None:
    out = tmp_path / "soak.md"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            *("--minutes", "0.1", "--interval", "1", "--streams", "3", "--players", "2"),
            *("--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
        check=True,
    )
    text = out.read_text()
    assert "## Verdict" in text and "## Series" in text
    assert "server alive" in text and "/readyz 200" in text
    assert "5xx or no answer: 0." in text
    assert "0 errors" in text
