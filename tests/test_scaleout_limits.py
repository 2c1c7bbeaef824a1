"""Rate limits and players across workers (issue 14, part 6), in a real ``gunicorn -w 2`` of the
demo game in the Redis mode (local Redis and PostgreSQL): a player's token works on every
worker, from the request right after its join on; a per-token limit (burst 5) and the
per-address sign-up limit (burst 3) hold for the deployment, not per worker.

Which worker answered each request is read from gunicorn's access log (the worker's pid beside
a probe header the test sends), so the test can tell that both workers served the token and
that a worker refused once the deployment's budget was spent, not its own."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.redis_support import REDIS_URL
from tests.store_support import PG_URL
from tests.support import ROOT, SRC, Server, gunicorn_argv, http, running_server, wait_for
from worldloop.store.sql import SqlStore

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

TOKEN_BURST, JOIN_BURST = 5, 3
PLAYERS = 100
SLOW = "0.001"
"""Tokens a second: nothing refills during the test, so exactly the burst passes."""

_probes = itertools.count()


class Probed:
    """Sends requests tagged with a probe header (a new connection each, so gunicorn hands
    them to either worker) and tells, from the access log, which worker answered each."""

    LINE = re.compile(r"^probe=(\S+) pid=<(\d+)> status=(\d+)$", re.M)

    def __init__(self, srv: Server) -> None:
        self.srv = srv

    def send(
        self, method: str, path: str, body: Any = None, **headers: str
    ) -> tuple[str, int, dict[str, Any]]:
        probe = f"p{next(_probes)}"
        status, _, reply = http(
            method, self.srv.base + path, body, headers={"X-Probe": probe, **headers}
        )
        return probe, status, reply

    def workers(self, probes: list[str]) -> dict[str, int]:
        """The pid that answered each probe (waiting for the access log lines)."""

        def seen() -> dict[str, int] | None:
            found = {m[0]: int(m[1]) for m in self.LINE.findall(self.srv.log)}
            return found if all(p in found for p in probes) else None

        found = wait_for(seen, 10, 0.05, "the access log lines of the probes")
        return {p: found[p] for p in probes}


def spent_elsewhere(answers: list[tuple[int, int]], burst: int) -> bool:
    """Whether some worker refused (429) although it had itself granted fewer than ``burst``:
    the budget it enforced was the deployment's, not its own."""
    granted: Counter[int] = Counter(pid for pid, status in answers if status != 429)
    refused = {pid for pid, status in answers if status == 429}
    return any(granted[pid] < burst for pid in refused)


def test_limits_and_tokens_hold_for_the_whole_deployment(
    tmp_path: Path, prefix: str, schema: str
) -> None:
    env = {
        "PYTHONPATH": f"{SRC}:{ROOT}",
        "WORLDLOOP_REDIS_URL": REDIS_URL,
        "WORLDLOOP_REDIS_PREFIX": prefix,
        "WORLDLOOP_STORE_URL": PG_URL,
        "WORLDLOOP_STORE_SCHEMA": schema,
        "WORLDLOOP_LEASE_TTL": "2",
        "WORLDLOOP_STANDBY_POLL": "0.2",
        "WORLDLOOP_RATE_HZ": "20",
        "WORLDLOOP_RATE_LIMIT": SLOW,
        "WORLDLOOP_RATE_BURST": str(TOKEN_BURST),
        "WORLDLOOP_JOIN_RATE_LIMIT": SLOW,
        "WORLDLOOP_JOIN_RATE_BURST": str(JOIN_BURST),
        "WORLDLOOP_TRUSTED_PROXIES": "1",  # each player signs up from an address of its own
        "MEADOW_ENTITIES": "200",
    }
    argv = gunicorn_argv(
        *("-w", "2", "-k", "gthread", "--threads", "4", "--access-logfile", "-"),
        *("--access-logformat", "probe=%({x-probe}i)s pid=%(p)s status=%(s)s"),
    )
    # The store made before the workers start (opening a new schema from two workers at once
    # is serialized by the store itself, tests/test_store.py; here it is not the subject).
    store = SqlStore(PG_URL, schema=schema)
    store.open()
    store.close()
    with running_server(argv, tmp_path, env=env, name="gunicorn") as srv:
        api = Probed(srv)
        wait_for(lambda: srv.get("/readyz")[0] == 200, 30, 0.1, "the world to run")

        # A token works on every worker from the first request after its join on: a join
        # acknowledged by one worker reaches the other's snapshot a moment later (about 2 in
        # 100 such requests found the token unknown before api/common.py caught up).
        players: list[dict[str, Any]] = []
        sent: list[tuple[str, str]] = []  # (probe, player) of each command
        answers: dict[str, int] = {}
        for n in range(PLAYERS):
            _, status, joined = api.send(
                "POST", "/api/v1/players", {"name": f"p{n}"}, **{"X-Forwarded-For": f"10.2.0.{n}"}
            )
            assert status == 201, joined
            players.append(joined)
            probe, status, reply = api.send(
                "POST",
                "/api/v1/commands",
                {"type": "stop"},
                Authorization=f"Bearer {joined['token']}",
            )
            sent.append((probe, joined["player_id"]))
            answers[probe] = status
        assert Counter(answers.values()) == {202: PLAYERS}, "a fresh token refused somewhere"
        _, status, reply = api.send(
            "POST", "/api/v1/commands", {"type": "stop"}, Authorization="Bearer not-a-token"
        )
        assert status == 401 and reply["error"]["code"] == "unauthorized", reply
        pids = api.workers([p for p, _ in sent])
        assert len(set(pids.values())) == 2, "both workers should have served the tokens"

        # One player's burst of 5 is the deployment's: 1 spent above, 4 left on any worker.
        token = {"Authorization": f"Bearer {players[0]['token']}"}
        own = [p for p, player in sent if player == players[0]["player_id"]]
        for _ in range(40):
            probe, status, reply = api.send("POST", "/api/v1/commands", {"type": "stop"}, **token)
            assert status in (202, 429), (status, reply)
            if status == 429:
                assert reply["error"]["code"] == "rate_limited"
            own.append(probe)
            answers[probe] = status
            pids = api.workers(own)
            tally = [(pids[p], answers[p]) for p in own]
            if len(own) >= 20 and spent_elsewhere(tally, TOKEN_BURST):
                break
        statuses = Counter(answers[p] for p in own)
        assert statuses[202] == TOKEN_BURST, statuses
        assert spent_elsewhere(tally, TOKEN_BURST), tally
        assert len({pid for pid, _ in tally}) == 2

        # The sign-up limit of one address is the deployment's too.
        joins: list[str] = []
        for _ in range(40):
            probe, status, reply = api.send(
                "POST", "/api/v1/players", {"name": "late"}, **{"X-Forwarded-For": "10.3.0.1"}
            )
            assert status in (201, 429), (status, reply)
            joins.append(probe)
            answers[probe] = status
            pids = api.workers(joins)
            tally = [(pids[p], answers[p]) for p in joins]
            if len(joins) >= 12 and spent_elsewhere(tally, JOIN_BURST):
                break
        assert Counter(answers[p] for p in joins)[201] == JOIN_BURST
        assert spent_elsewhere(tally, JOIN_BURST), tally

        client = redis.Redis.from_url(REDIS_URL)
        keys = {k.decode() for k in client.scan_iter(match=f"{prefix}ratelimit:*")}
        client.close()
        assert f"{prefix}ratelimit:join:ip:10.3.0.1" in keys
        assert sum(k.startswith(f"{prefix}ratelimit:token:") for k in keys) == PLAYERS
