"""Run every benchmark and write its markdown table to bench/results/<name>.md.

python bench/run_all.py            # all of them (many minutes on a 2-core machine)
python bench/run_all.py jitter     # only the named ones
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = Path("bench") / "results"
"""Relative to the repository root, where every script runs (so each table's header shows the
command as one would type it there)."""
ROOT = HERE.parent

BENCHES: dict[str, list[str]] = {
    "jitter": ["jitter.py", "--out", str(RESULTS / "jitter.md")],
    "many_worlds": ["many_worlds.py", "--out", str(RESULTS / "many_worlds.md")],
    "hibernation": ["hibernation.py", "--out", str(RESULTS / "hibernation.md")],
    "meadow_tick": ["meadow_tick.py", "--out", str(RESULTS / "meadow_tick.md")],
    "flee": ["flee.py", "--out", str(RESULTS / "flee.md")],
    "durability": ["durability.py", "--out", str(RESULTS / "durability.md")],
    "recovery": ["recovery.py", "--out", str(RESULTS / "recovery.md")],
    "snapshot_share": ["snapshot_share.py", "--out", str(RESULTS / "snapshot_share.md")],
    "shutdown": ["shutdown.py", "--out", str(RESULTS / "shutdown.md")],
    "observe": ["observe.py", "--out", str(RESULTS / "observe.md")],
    "jobs_overhead": ["jobs_overhead.py"],
    "deploy_sizing": ["deploy_sizing.py", "--out", str(RESULTS / "deploy_sizing.md")],
    "players": ["players.py", "--out", str(RESULTS / "players.md")],
    "celery_offload": ["celery_offload.py", "--out", str(RESULTS / "celery_offload.md")],
    "runner_split": ["runner_split.py", "--out", str(RESULTS / "runner_split.md")],
    "runner_prio": ["runner_prio.py", "--out", str(RESULTS / "runner_prio.md")],
    "readpath": ["readpath.py", "--out", str(RESULTS / "readpath.md")],
    "frames_binary": ["frames_binary.py", "--out", str(RESULTS / "frames_binary.md")],
    "ratelimit": ["ratelimit.py", "--out", str(RESULTS / "ratelimit.md")],
    "group_commit": ["group_commit.py", "--out", str(RESULTS / "group_commit.md")],
    "gateway": ["gateway.py", "--out", str(RESULTS / "gateway.md")],
    "gateway_200": [
        "gateway.py",
        *("--viewers", "200", "--hz", "10", "--seconds", "20", "--client-procs", "2"),
        *("--players", "50", "--out", str(RESULTS / "gateway_200.md")),
    ],
    "scaleout": ["scaleout.py", "--out", str(RESULTS / "scaleout.md")],
    "scaleout_placement": [
        "scaleout_placement.py",
        *("--out", str(RESULTS / "scaleout_placement.md")),
    ],
    "faults": [str(Path("faults") / "run.py"), "--out", str(RESULTS / "faults.md")],
    "soak": ["soak.py", "--minutes", "10", "--out", str(RESULTS / "soak.md")],
}


def main(names: list[str]) -> int:
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHES)}")
        return 2
    failed = []
    for name in names or list(BENCHES):
        script, *args = BENCHES[name]
        print(f"== {name}", flush=True)
        argv = [sys.executable, str(Path("bench") / script), *args]
        if "--out" in args:
            code = subprocess.run(argv, cwd=ROOT).returncode
        else:  # this one prints its table: keep a copy
            proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
            print(proc.stdout, proc.stderr, sep="", end="")
            if proc.returncode == 0:
                (ROOT / RESULTS / f"{name}.md").write_text(proc.stdout)
            code = proc.returncode
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
