"""The stream gateway with real processes: gunicorn -w 2, its runner, and the gateway it runs.

Viewers are redirected from the web workers to the gateway, where many streams at once cost
no worker thread: the API stays answered while they watch. A gateway killed with -9 is
started again by the runner.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from worldloop import frame_binary as fb

from .support import Server, gateway_server, http, wait_for

VIEWERS = 200
FRAMES_EACH = 3


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    env = {
        "WORLDLOOP_JOIN_RATE_BURST": "1000",  # sixty players join from one address
        # A loaded CI box may take longer than the default 5 s to apply sixty commands; the
        # waits' length is not what these tests are about (a run out wait is a 202).
        "WORLDLOOP_COMMAND_WAIT": "30",
    }
    with gateway_server(tmp_path_factory.mktemp("gateway"), workers=2, env=env) as served:
        yield served


def _health(gateway: str) -> dict[str, Any]:
    status, _, body = http("GET", gateway + "/healthz", timeout=2)
    assert status == 200
    assert isinstance(body, dict)
    return body


def test_web_workers_redirect_the_stream_to_the_gateway(served: tuple[Server, str]) -> None:
    srv, gateway = served
    assert srv.redirect("/api/v1/stream?limit=5&hz=2") == (
        307,
        gateway + "/api/v1/stream?limit=5&hz=2",
    )


def test_the_gateway_checks_the_query_like_the_api(served: tuple[Server, str]) -> None:
    _, gateway = served
    status, headers, body = http("GET", gateway + "/api/v1/stream?hz=fast", timeout=5)
    assert status == 400
    assert body["error"]["code"] == "bad_request"
    assert body["error"]["details"]["param"] == "hz"
    assert headers["Access-Control-Allow-Origin"] == "*"


async def _watch(session: aiohttp.ClientSession, url: str) -> list[int]:
    """Follow the stream (redirect included) until FRAMES_EACH frames; their ticks."""
    ticks: list[int] = []
    async with session.get(url) as resp:
        assert resp.status == 200, resp.status
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        event = ""
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("id: ") and event == "frame":
                ticks.append(int(line[4:]))
                if len(ticks) >= FRAMES_EACH:
                    break
            elif line == "" and event == "end":
                break
    return ticks


async def _viewers_players_and_api(
    srv: Server, gateway: str
) -> tuple[list[list[int]], list[tuple[int, dict[str, Any]]], list[int]]:
    """VIEWERS viewers following the stream while PLAYERS players wait on their commands and
    an API client polls the world, all at once."""
    url = srv.base + "/api/v1/stream?limit=20&hz=10"
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=90)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        viewers = asyncio.gather(*(_watch(session, url) for _ in range(VIEWERS)))
        players = asyncio.ensure_future(_players_wait(srv, gateway, PLAYERS, "p"))
        api: list[int] = []
        while not (viewers.done() and players.done()):
            status = await asyncio.to_thread(
                lambda: http("GET", srv.base + "/api/v1/world", timeout=10)[0]
            )
            api.append(status)
            await asyncio.sleep(0.1)  # pacing the API probe, not waiting on an outcome
        return await viewers, await players, api


PLAYERS = 50


def test_many_viewers_and_players_at_once_while_the_api_answers(
    served: tuple[Server, str],
) -> None:
    """200 viewers and 50 waiting players at once: every viewer gets its frames in order,
    every player its applied answer, and the API answers throughout."""
    srv, gateway = served
    streams, answers, api = asyncio.run(
        asyncio.wait_for(_viewers_players_and_api(srv, gateway), 150)
    )
    assert len(streams) == VIEWERS
    for ticks in streams:
        assert len(ticks) == FRAMES_EACH, ticks
        assert ticks == sorted(set(ticks)), ticks
    assert [a[0] for a in answers] == [200] * PLAYERS, answers
    assert all(a[1]["status"] == "applied" for a in answers), answers
    assert api and all(status == 200 for status in api), api
    health = _health(gateway)
    assert health["streams_served"] >= VIEWERS
    assert health["clients_dropped"] == 0


def test_web_workers_redirect_the_websocket_and_name_it_to_the_viewer(
    served: tuple[Server, str],
) -> None:
    srv, gateway = served
    assert srv.redirect("/api/v1/ws?limit=5") == (307, gateway + "/api/v1/ws?limit=5")
    status, _, body = http("GET", srv.base + "/api/v1/live", timeout=5)
    assert status == 200
    assert body == {"stream": "/api/v1/stream", "websocket": "ws" + gateway[4:] + "/api/v1/ws"}


async def _binary(
    session: aiohttp.ClientSession, url: str, frames: int, *, ask_keyframe_after: int = 0
) -> list[tuple[bytes, fb.Decoded]]:
    """Follow the WebSocket for ``frames`` binary frames, decoding each against the last."""
    got: list[tuple[bytes, fb.Decoded]] = []
    held: fb.Decoded | None = None
    async with session.ws_connect(url) as ws:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                continue
            held = fb.decode(msg.data, held)
            got.append((msg.data, held))
            if len(got) == ask_keyframe_after:
                await ws.send_str("keyframe")
            if len(got) >= frames:
                break
    return got


def _kind(message: bytes) -> int:
    return fb.body_of(message)[0]


def test_the_gateway_sends_a_keyframe_then_deltas_that_decode(served: tuple[Server, str]) -> None:
    _, gateway = served
    url = gateway.replace("http", "ws") + "/api/v1/ws?limit=50"

    async def run() -> list[list[tuple[bytes, fb.Decoded]]]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            return list(
                await asyncio.gather(
                    _binary(session, url, 12), _binary(session, url, 12, ask_keyframe_after=6)
                )
            )

    plain, asking = asyncio.run(asyncio.wait_for(run(), 90))
    for got in (plain, asking):
        ticks = [d.state.tick for _, d in got]
        assert ticks == sorted(ticks), ticks  # the ask may bring the same tick, as a keyframe
        assert len(set(ticks)) >= len(ticks) - (got is asking), ticks
        assert _kind(got[0][0]) == fb.KEY
        assert any(_kind(m) == fb.DELTA for m, _ in got[1:])
        frame = got[-1][1].frame
        kinds = [layer["kind"] for layer in frame["layers"]]
        assert kinds == ["sheep", "avatar"], kinds
        sheep = frame["layers"][0]
        assert 0 < len(sheep["x"]) <= 50 and len(sheep["id"]) == len(sheep["x"])
        assert frame["grid"]["kind"] == "grass" and frame["grid"]["levels"].size > 0
        assert frame["stats"]["running"] is True and frame["summary"]["creature_count"] > 0
    # A keyframe follows the ask: the next frame built, though a frame or two already on their
    # way when the ask arrived (a loaded machine) come first.
    assert any(_kind(m) == fb.KEY for m, _ in asking[6:9]), [_kind(m) for m, _ in asking]
    # The same tick against the same base is the same bytes for both (encoded once per class).
    mine = {(d.state.tick, fb.body_of(m)[8:12]): m for m, d in plain}
    shared = [(m, mine[k]) for m, d in asking if (k := (d.state.tick, fb.body_of(m)[8:12])) in mine]
    assert shared and all(a == b for a, b in shared)
    health = _health(gateway)
    assert health["websockets_served"] >= 2
    assert health["clients_dropped"] == 0


def test_the_websocket_checks_the_query_like_the_api(served: tuple[Server, str]) -> None:
    _, gateway = served
    status, _, body = http("GET", gateway + "/api/v1/ws?limit=-3", timeout=5)
    assert status == 400
    assert body["error"]["details"]["param"] == "limit"


WAITERS = 60
"""Players waiting at once: far more than the gateway's 4 submission threads."""


async def _players_wait(
    srv: Server, gateway: str, count: int = WAITERS, prefix: str = "w"
) -> list[tuple[int, dict[str, Any]]]:
    """``count`` players join, then each sends one command with ?wait=true at the same time."""
    tokens = []
    for i in range(count):
        status, _, body = await asyncio.to_thread(
            http, "POST", srv.base + "/api/v1/players", {"name": f"{prefix}{i}"}
        )
        assert status == 201, body
        tokens.append(body["token"])
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=timeout
    ) as session:

        async def send(token: str) -> tuple[int, dict[str, Any]]:
            async with session.post(
                gateway + "/api/v1/commands?wait=true",
                json={"type": "move_to", "x": 10.0, "y": 20.0},
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                return resp.status, await resp.json()

        return await asyncio.gather(*(send(t) for t in tokens))


def test_command_waits_on_the_gateway_cost_no_thread_each(served: tuple[Server, str]) -> None:
    """Sixty players wait at once on the gateway (4 submission threads): every one gets its
    200 applied answer, as a web worker would give it; a bad token is the API's 401."""
    srv, gateway = served
    answers = asyncio.run(asyncio.wait_for(_players_wait(srv, gateway), 120))
    assert [a[0] for a in answers] == [200] * WAITERS, answers
    assert all(a[1]["status"] == "applied" and a[1]["result"] for a in answers), answers
    assert _health(gateway)["commands_waiting_peak"] > 4
    moved = _health(gateway)["commands_moved_to_pool"]
    status, _, body = http(
        "POST",
        gateway + "/api/v1/commands?wait=true",
        {"type": "move_to", "x": 1.0, "y": 1.0},
        headers={"Authorization": "Bearer nobody-has-this-token"},
    )
    assert status == 401 and body["error"]["code"], body
    # begun on the event loop, the unknown token's look-up for a newer snapshot (a wait) ran
    # on a submission thread instead
    assert _health(gateway)["commands_moved_to_pool"] == moved + 1


def test_a_killed_gateway_is_started_again_by_the_runner(served: tuple[Server, str]) -> None:
    srv, gateway = served
    old = int(_health(gateway)["pid"])
    os.kill(old, signal.SIGKILL)

    def replaced() -> bool:
        health = _health(gateway)
        return int(health["pid"]) != old and bool(health["running"])

    wait_for(replaced, 60, 0.2, "a new gateway")
    assert "the gateway exited (code -9)" in srv.log
    streams, _ = asyncio.run(asyncio.wait_for(_one_viewer(srv), 60))
    assert len(streams) == FRAMES_EACH


async def _one_viewer(srv: Server) -> tuple[list[int], None]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        return await _watch(session, srv.base + "/api/v1/stream?limit=5"), None
