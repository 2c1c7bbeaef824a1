"""The standing fault suite: break a live demo server in every way we know and check that
nothing acknowledged is lost, nothing is applied twice, nothing answers 500, and
``worldloop verify`` passes after each phase. Writes a markdown results table.

    python bench/faults/run.py                      # the long version (make faults), ~15 min
    python bench/faults/run.py --short              # the one inside make test, ~1-2 min
    python bench/faults/run.py --kills 20 --fuzz-examples 30 --out bench/results/faults.md

Phases: kill -9 under command load (SQLite), SIGTERM with open streams, a read-only database
file, a locked database, PostgreSQL backends terminated (skipped when PostgreSQL is unreachable,
except under CI=true), schemathesis against the live server. Exit status 1 when a phase is
not clean (lost, duplicated, 5xx, verify).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import crash
import fuzz
import store
from common import Row, env_flag

from liveserver import versions

PHASES = ("kill9", "sigterm", "readonly", "locked", "postgres", "fuzz")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--short", action="store_true", help="small counts (inside make test)")
    ap.add_argument("--kills", type=int)
    ap.add_argument("--sigterm-rounds", type=int)
    ap.add_argument("--pg-kills", type=int)
    ap.add_argument("--fuzz-examples", type=int)
    ap.add_argument("--only", default=",".join(PHASES), help="comma-separated phases")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    short = args.short
    kills = args.kills or (2 if short else 20)
    rounds = args.sigterm_rounds or (1 if short else 3)
    pg_kills = args.pg_kills or (1 if short else 5)
    examples = args.fuzz_examples or (1 if short else 30)
    only = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(only) - set(PHASES)
    if unknown:
        ap.error(f"unknown phases {sorted(unknown)}; known: {', '.join(PHASES)}")
    cmd = "python bench/faults/run.py " + shlex.join(sys.argv[1:])

    rows: list[Row] = []
    failures: dict[str, Counter[str]] = {}
    took: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="wl-faults-") as tmp:
        work = Path(tmp)

        def phase(name: str, run: Callable[[], Row]) -> None:
            if name not in only:
                return
            started = time.monotonic()
            print(f"== {name}", flush=True)
            row = run()
            took[row.phase] = time.monotonic() - started
            rows.append(row)
            print(f"   {row}", flush=True)

        phase("kill9", lambda: crash.kill9(work, kills))
        phase("sigterm", lambda: crash.sigterm(work, rounds, streams=4 if short else 8))
        phase("readonly", lambda: store.read_only(work, seconds=1.5 if short else 3.0))
        phase("locked", lambda: store.locked(work, holds=(2.0,) if short else (2.0, 15.0)))
        if "postgres" in only:
            if store.postgres_available():
                phase("postgres", lambda: store.pg_killed(work, pg_kills))
            elif env_flag("CI"):
                rows.append(Row("PostgreSQL backends killed", verify="FAILED: unreachable"))
            else:
                print("== postgres: skipped (unreachable)", flush=True)
        if "fuzz" in only:

            def run_fuzz() -> Row:
                row, found = fuzz.fuzz(work, examples, quick=short)
                failures.update(found)
                return row

            phase("fuzz", run_fuzz)

    text = report(cmd, rows, failures, took, kills)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if rows and all(r.ok for r in rows) else 1


def report(
    cmd: str,
    rows: list[Row],
    failures: dict[str, Counter[str]],
    took: dict[str, float],
    kills: int,
) -> str:
    lines = [
        "# Fault suite",
        "",
        f"Command: `{cmd}`  ",
        f"Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Machine: {versions()}.  ",
        "Server: the demo under gunicorn gthread (1 worker), its world in the runner process "
        "(`WORLDLOOP_RUNNER=process`, the default), a fresh instance per phase; kill -9 "
        "alternates the whole process group (master, worker, runner) and the runner alone.  ",
        "Acknowledged = `POST /api/v1/commands?wait=true` answered 200 `applied` (for the fuzz "
        "phase: the applied commands schemathesis got); lost = acknowledged but not in the "
        "journal; duplicated = command ids journaled more than once; 5xx = 500s and any 5xx "
        "but a 503 with Retry-After (counted apart: documented backpressure); verify = "
        "`python -m worldloop verify --app worldloop.demo:create_app --json` after the phase.  ",
        "Schemathesis runs its CLI with `--checks all` (positive and negative data acceptance, "
        "status codes, content types, response schemas and headers, server errors); its "
        "`before_call` hook (bench/faults/st_hooks.py) gives each distinct request its own "
        "`Idempotency-Key`, as the header's contract asks of clients.",
        "",
        "| phase | tries | acknowledged | lost | duplicated | 5xx | 503 + Retry-After | verify "
        "| time (s) | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.phase} | {r.tries} | {r.acknowledged} | {r.lost} | {r.duplicated} "
            f"| {r.server_errors} | {r.retry_503} | {r.verify} | {took.get(r.phase, 0):.0f} "
            f"| {'; '.join(r.notes)} |"
        )
    lines += ["", "Statuses seen, by phase:", ""]
    for r in rows:
        lines.append(f"- {r.phase}: {dict(sorted(r.statuses.items()))} (0 = no answer)")
    details = [(r.phase, d) for r in rows for d in r.details]
    if details:
        lines += ["", "## 5xx answers (request → answer)", ""]
        lines += [f"- {phase}: `{d}`" for phase, d in details]
    if failures:
        lines += ["", "## Schemathesis findings (its own check names), by run", ""]
        lines += ["| run | findings |", "|---|---|"]
        for who, found in failures.items():
            text = ", ".join(f"{k}: {v}" for k, v in sorted(found.items())) or "none"
            lines.append(f"| {who} | {text} |")
    fuzz_cases = sum(r.tries for r in rows if r.phase.startswith("schemathesis"))
    findings = sum(sum(found.values()) for found in failures.values())
    lost = sum(r.lost for r in rows)
    errors = sum(r.server_errors for r in rows)
    lines += [
        "",
        "## Done when",
        "",
        f"- kills: {kills} (≥ 20) — lost {lost}, 5xx {errors}, fuzz cases {fuzz_cases} "
        f"(≥ 3,000); every phase clean: {'yes' if rows and all(r.ok for r in rows) else 'NO'}.",
        f"- schemathesis findings (all checks): {findings} (0 wanted)."
        if failures
        else "- schemathesis: not run.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
