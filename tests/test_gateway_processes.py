"""Several gateway processes on one address (WORLDLOOP_GATEWAY_PROCESSES=2), real processes:
gunicorn -w 1, its runner, and the two gateways the runner keeps. Connections are spread among
them by the kernel (SO_REUSEPORT), each answers the waits and streams of its own connections,
and one killed with -9 is started again while the other serves on.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from .support import Server, gateway_server, http, wait_for

PLAYERS = 40

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    env = {
        "WORLDLOOP_GATEWAY_PROCESSES": "2",
        "WORLDLOOP_JOIN_RATE_BURST": "1000",  # the players join from one address
        "WORLDLOOP_COMMAND_WAIT": "30",  # a loaded box: a run out wait (202) is not the point
    }
    tmp = tmp_path_factory.mktemp("gateways")
    with gateway_server(tmp, workers=1, env=env, ready=lambda g: len(_pids(g)) == 2) as served:
        yield served


def _pids(gateway: str, looks: int = 16) -> set[int]:
    """The pids of the running gateways that answered ``looks`` fresh connections (each one
    its own: the kernel picks a gateway per connection)."""
    pids = set()
    for _ in range(looks):
        try:
            status, _, body = http("GET", gateway + "/healthz", timeout=2)
        except OSError:
            continue
        if status == 200 and isinstance(body, dict) and body.get("running"):
            pids.add(int(body["pid"]))
    return pids


async def _players(srv: Server, gateway: str) -> list[tuple[int, dict[str, Any]]]:
    """PLAYERS join on the web worker, then each waits on the gateway for one command, on a
    connection of its own."""
    tokens = []
    for i in range(PLAYERS):
        status, _, body = http("POST", srv.base + "/api/v1/players", {"name": f"g{i}"})
        assert status == 201, body
        tokens.append(body["token"])

    async def send(token: str) -> tuple[int, dict[str, Any]]:
        connector = aiohttp.TCPConnector(force_close=True)
        timeout = aiohttp.ClientTimeout(total=90)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.post(
                gateway + "/api/v1/commands?wait=true",
                json={"type": "move_to", "x": 5.0, "y": 5.0},
                headers={"Authorization": f"Bearer {token}"},
            ) as resp,
        ):
            return resp.status, await resp.json()

    return await asyncio.gather(*(send(t) for t in tokens))


def test_both_gateways_answer_waits_and_streams(served: tuple[Server, str]) -> None:
    srv, gateway = served
    answers = asyncio.run(asyncio.wait_for(_players(srv, gateway), 120))
    assert [a[0] for a in answers] == [200] * PLAYERS, answers
    assert all(a[1]["status"] == "applied" for a in answers), answers
    # every gateway took some of the waits: the connections were spread among them
    peaks: dict[int, int] = {}
    for _ in range(32):
        status, _, body = http("GET", gateway + "/healthz", timeout=2)
        assert status == 200, body
        peaks[int(body["pid"])] = int(body["commands_waiting_peak"])
    assert len(peaks) == 2 and all(peak > 0 for peak in peaks.values()), peaks
    # viewers sent on by the web worker get frames from whichever gateway took them
    frames = asyncio.run(asyncio.wait_for(_viewers(srv, gateway, 8), 60))
    assert all(n == 2 for n in frames), frames


async def _viewers(srv: Server, gateway: str, n: int) -> list[int]:
    """``n`` viewers, each on a connection of its own, redirected from the web worker: how
    many frames each read (it stops at two)."""

    async def watch() -> int:
        connector = aiohttp.TCPConnector(force_close=True)
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.get(srv.base + "/api/v1/stream?limit=5") as resp,
        ):
            assert resp.status == 200 and str(resp.url).startswith(gateway), resp.url
            frames = 0
            async for line in resp.content:
                if line.startswith(b"data:"):
                    frames += 1
                    if frames == 2:
                        break
            return frames

    return await asyncio.gather(*(watch() for _ in range(n)))


def test_one_gateway_killed_the_other_serves_and_it_comes_back(
    served: tuple[Server, str],
) -> None:
    srv, gateway = served
    before = _pids(gateway, 32)
    assert len(before) == 2, before
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    survivor = (before - {victim}).pop()
    # from its death on, new connections go to the gateway that is left (and, once started
    # again, to the new one)
    wait_for(lambda: victim not in _pids(gateway, 8), 30, 0.1, "the kernel to drop its socket")
    assert survivor in _pids(gateway, 16)
    wait_for(lambda: len(_pids(gateway, 32) - {victim}) == 2, 120, 0.2, "a new second gateway")
    assert "the gateway exited (code -9)" in srv.log
