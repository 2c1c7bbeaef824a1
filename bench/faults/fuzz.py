"""Schemathesis against a live server: every check, every phase (examples, coverage, fuzzing,
stateful), as a player, as the admin and with no credentials.

Runs the ``schemathesis`` CLI (a real client over real sockets) and reads its HAR report:
every request it made and every answer. Counted: cases (requests), 5xx (a 503 with
Retry-After is counted apart), the commands it got applied (they must be journaled, once), and
each check's failures as schemathesis reports them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from common import ADMIN_TOKEN, Row, Target, admin, check_journal, join_player, verify

FUZZ_ENV = {
    "WORLDLOOP_STREAM_MAX_SECONDS": "0.3",
    "WORLDLOOP_COMMAND_WAIT": "0.5",
    "WORLDLOOP_LONG_POLL_MAX": "0.3",
    "MEADOW_ENTITIES": "200",
    # The admin run sets any documented rate, up to 1000 Hz, which a shared 2-core machine
    # cannot keep: /readyz would then truthfully answer 503 "overrunning". Readiness by
    # overrun has its own tests; here it would only hide the other 5xx.
    "WORLDLOOP_READY_MAX_OVERRUN_RATIO": "1",
}
HOOKS = Path(__file__).resolve().parent / "st_hooks.py"
"""A well-behaved client's Idempotency-Key: fresh per request, kept for a retry."""
PHASES = "examples,coverage,fuzzing,stateful"
_FAILURE = re.compile(r"❌ (ST\d+ [^:]+): (\d+)")
_ERROR = re.compile(r"🚫 ([^:]+): (\d+)")


def _run(
    target: Target, who: str, token: str | None, examples: int, seed: int, out: Path, quick: bool
) -> str:
    argv = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        target.base + "/openapi.json",
        *("--checks", "all", "--phases", PHASES, "-n", str(examples), "--seed", str(seed)),
        *("--report", "har", "--report-har-path", str(out / f"{who}.har.json")),
        # One worker: with two, Python 3.11.7's AST validator (not thread-safe before 3.11.8,
        # CPython gh-106905) fails Hypothesis in the coverage phase with "AST constructor
        # recursion depth mismatch", a crash in the fuzzer, not in the server.
        *("--workers", "1", "--request-timeout", "15", "--continue-on-failure"),
        "--no-color",
    ]
    if quick:  # inside make test: a time budget instead of the coverage phase's full sweep
        argv += ["--max-time", "15"]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=3600, cwd=out, env=env)
    (out / f"{who}.txt").write_text(proc.stdout + proc.stderr)
    return proc.stdout


def _read_har(path: Path, row: Row, applied: set[str], fivexx: list[str]) -> int:
    entries = json.loads(path.read_text())["log"]["entries"]
    for e in entries:
        req, resp = e["request"], e["response"]
        status = int(resp["status"])
        headers = {h["name"].lower(): h["value"] for h in resp.get("headers", [])}
        row.tries += 1
        row.count(status, headers)
        if status >= 500 and not (status == 503 and "retry-after" in headers):
            sent = (req.get("postData") or {}).get("text") or ""
            got = (resp.get("content") or {}).get("text") or ""
            path = req["url"].split("/", 3)[-1]
            fivexx.append(f"{status} {req['method']} /{path} {sent[:120]!r} -> {got[:200]!r}")
        if status == 200 and req["method"] == "POST" and "/api/v1/commands" in req["url"]:
            try:
                body = json.loads(resp.get("content", {}).get("text") or "{}")
            except ValueError:
                continue
            if body.get("status") == "applied":
                applied.add(str(body["command_id"]))
    return len(entries)


def fuzz(
    work: Path, examples: int, seed: int = 1, *, quick: bool = False
) -> tuple[Row, dict[str, Counter[str]]]:
    row = Row(f"schemathesis, all checks, {PHASES.replace(',', '+')} (-n {examples})")
    target = Target(work, "fuzz", **FUZZ_ENV)
    out = target.work / "reports"
    out.mkdir(parents=True, exist_ok=True)
    failures: dict[str, Counter[str]] = {}
    applied: set[str] = set()
    fivexx: list[str] = []
    target.start()
    try:
        admin(target, "POST", "/api/v1/admin/jobs/leaderboard/run")  # GET /leaderboard: 200
        token = join_player(target.base, "fuzzer")
        # admin last: it pauses the world and changes its clock, which the others would inherit
        runs = [("player", token), ("anonymous", None), ("admin", ADMIN_TOKEN)]
        for who, cred in runs[:1] if quick else runs:
            text = _run(target, who, cred, examples, seed, out, quick)
            cases = _read_har(out / f"{who}.har.json", row, applied, fivexx)
            found: Counter[str] = Counter()
            for name, n in _FAILURE.findall(text):
                found[name] += int(n)
            for name, n in _ERROR.findall(text):
                found[f"error: {name}"] += int(n)
            failures[who] = found
            row.notes.append(f"{who}: {cases} cases")
            # the admin run may pause the world or slow its clock: put it back for the next run
            admin(target, "POST", "/api/v1/admin/rate", {"rate_hz": 20})
            admin(target, "POST", "/api/v1/admin/resume")
            alive = admin(target, "GET", "/api/v1/admin/status")
            if alive[0] != 200:
                row.notes.append(f"after {who}: admin status {alive[0]}")
    finally:
        target.stop()
    check_journal(row, applied, target.store_url)
    verify(target, row)
    row.details = sorted(set(fivexx))
    return row, failures
