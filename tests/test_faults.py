"""The fault suite's short version (bench/faults/run.py --short, the same code as `make faults`
with small counts): kill -9 under load, SIGTERM with streams, store faults and a live
schemathesis run each lose nothing acknowledged, answer no 500, and pass worldloop verify."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .support import ROOT, child_env


def _rows(text: str) -> list[dict[str, str]]:
    """The rows of the results table (the first markdown table of the report)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("| phase |")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for ln in text.splitlines():
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        if ln.startswith("| ") and len(cells) == len(header) and cells[1].isdigit():
            rows.append(dict(zip(header, cells, strict=True)))
    return rows


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "phases", ["kill9,sigterm", "readonly,locked,postgres", "fuzz"], ids=lambda p: p
)
def test_fault_suite_short(phases: str, tmp_path) -> None:
    out = tmp_path / "faults.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "faults" / "run.py"),
            *("--short", "--only", phases, "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=220,
        env=child_env(),
        cwd=tmp_path,
    )
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = _rows(out.read_text())
    assert rows, out.read_text()
    for row in rows:
        assert row["lost"] == "0" and row["duplicated"] == "0", row
        assert row["5xx"] == "0", row
        assert row["verify"] == "ok", row
        assert "did not stop" not in row["notes"], row  # SIGTERM: stopped within its bound
        if row["phase"].startswith("schemathesis"):
            assert int(row["tries"]) >= 20, row  # cases ran (applied ones depend on the draw)
        else:
            assert int(row["acknowledged"]) > 0, row  # the oracle saw something to check
    assert proc.returncode == 0, proc.stdout[-3000:]
