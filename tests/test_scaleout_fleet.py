"""Many worlds over many runners in the Redis mode (issue 14, part 4), with real servers.

Servers of tests/fleet_app.py (gunicorn, one worker each: one runner each) on the local Redis
and PostgreSQL. Thirty worlds created through the API are placed over the runners within one
world of each other; a runner joining takes only its share (handed over gracefully), a runner
killed with -9 spreads its worlds over the others within ttl + poll + recovery while the
others keep theirs; ``GET /api/v1/worlds`` on every server names each world's runner and epoch.
Under a command load the whole time: every acknowledged command of every world is in that
world's journal exactly once, on contiguous ticks. A world deleted on one server stops
everywhere and is not taken again.
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.redis_support import REDIS_URL, scaleout_env
from tests.scaleout_oracles import balanced, check_journal, holders, journal_of
from tests.support import (
    BIN,
    Background,
    Server,
    free_port,
    gunicorn_argv,
    http,
    running_server,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

TTL, POLL = 3.0, 0.2
RECOVERY = 6.0
"""Seconds for a loaded 2-core box to recover a tiny world and publish (the bound's last part)."""
TOKEN = "fleet-admin-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
WORLDS = [f"w{i:02d}" for i in range(30)]
ARGV = gunicorn_argv(
    "-w", "1", "-k", "gthread", "--threads", "8", app="tests.fleet_app:create_app()"
)


def env(prefix: str, schema: str) -> dict[str, str]:
    return scaleout_env(
        prefix,
        schema,
        ttl=TTL,
        poll=POLL,
        WORLDLOOP_RATE_HZ="5",
        WORLDLOOP_SNAPSHOT_EVERY="50",
        WORLDLOOP_ADMIN_TOKEN=TOKEN,
        WORLDLOOP_WORLD_CREATE_RATE="1000",
        DRIFT_PARTICLES="4",
    )


def worker_of(server: Server, held: dict[str, int | None]) -> set[int]:
    """The pids among ``held`` that are children of ``server``'s gunicorn master."""
    mine = set()
    for pid in {p for p in held.values() if p is not None}:
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{pid}/status").read_text()
            ppid = int(next(x for x in status.splitlines() if x.startswith("PPid:")).split()[1])
            if ppid == server.proc.pid:
                mine.add(pid)
    return mine


class Load(Background):
    """Commands to random worlds through random servers; the acknowledged ids by world."""

    def __init__(self, servers: list[Server], names: list[str]) -> None:
        super().__init__()
        self.servers, self.names = servers, names
        self.acked: dict[str, list[str]] = {n: [] for n in names}

    def count(self) -> int:
        return sum(len(v) for v in self.acked.values())

    def _run(self, seed: int) -> None:
        rnd = random.Random(seed)
        i = 0
        while not self._stop.is_set() and i < 20_000:
            i += 1
            name = rnd.choice(self.names)
            srv = rnd.choice(self.servers)
            body = {"type": "kick", "payload": {"i": i % 4, "dv": 0.01}}
            with contextlib.suppress(OSError):
                status, _, reply = http(
                    "POST", f"{srv.base}/test/worlds/{name}/commands", body, timeout=15
                )
                if status == 200 and reply["status"] == "applied":
                    self.acked[name].append(reply["command_id"])
            self._stop.wait(0.02)


def create_worlds(server: Server) -> None:
    for name in WORLDS:
        body = {"name": name, "kind": "drift", "config": {"particles": 4, "seed": len(name)}}
        status, _, reply = server.post("/api/v1/worlds", body, headers=ADMIN)
        assert status == 201, reply


def listed(server: Server) -> dict[str, dict[str, object]]:
    status, _, body = server.get("/api/v1/worlds")
    assert status == 200, body
    return {w["name"]: w for w in body["worlds"]}


@contextlib.contextmanager
def servers(tmp_path: Path, prefix: str, schema: str, *names: str) -> Iterator[list[Server]]:
    with contextlib.ExitStack() as stack:
        started = []
        for name in names:
            (tmp_path / name).mkdir(exist_ok=True)
            started.append(
                stack.enter_context(
                    running_server(
                        ARGV, tmp_path / name, env=env(prefix, schema), name=name, port=free_port()
                    )
                )
            )
        yield started


def test_thirty_worlds_over_three_runners_a_join_and_a_kill(
    tmp_path: Path, prefix: str, schema: str
) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    names = ["drift", *WORLDS]
    with servers(tmp_path, prefix, schema, "a", "b") as (a, b):
        create_worlds(a)
        two = wait_for(lambda: balanced(holders(client, prefix, names), 2), 60, 0.1, "2 runners")
        with Load([a, b], names) as load:
            wait_for(lambda: load.count() > 30, 30, 0.1, "acknowledged commands")
            (tmp_path / "c").mkdir()
            with running_server(
                ARGV, tmp_path / "c", env=env(prefix, schema), name="c", port=free_port()
            ) as c:
                three = wait_for(
                    lambda: balanced(holders(client, prefix, names), 3), 60, 0.1, "3 runners"
                )
                [c_pid] = worker_of(c, three)
                moved = {w for w in names if three[w] != two[w]}
                assert moved == {w for w in names if three[w] == c_pid}, "only c's share moved"
                assert sorted(Counter(three.values()).values()) == [10, 10, 11]
                for srv in (a, b, c):  # every server lists every world with its runner
                    wait_for(
                        lambda s=srv: all(
                            (w.get("runner") or {}).get("pid") == three[n] and w.get("epoch")
                            for n, w in listed(s).items()
                        ),
                        30,
                        0.2,
                        f"{srv.base} to list each world's runner",
                    )
                count = load.count()
                wait_for(lambda: load.count() > count + 30, 30, 0.1, "acks with 3 runners")
                killed_at = time.monotonic()
                c.signal_group(signal.SIGKILL)  # the master and its worker: the runner is gone
                after = wait_for(
                    lambda: balanced(holders(client, prefix, names), 2), 60, 0.05, "2 again"
                )
                took = time.monotonic() - killed_at
            assert c_pid not in after.values()
            kept = {w for w in names if three[w] != c_pid}
            assert all(after[w] == three[w] for w in kept), "a survivor's world moved"
            print(f"kill -9 of a runner with {len(moved)} worlds: all placed again in {took:.2f} s")
            assert took <= TTL + POLL + RECOVERY
            count = load.count()
            wait_for(lambda: load.count() > count + 30, 30, 0.1, "acks after the kill")
    for name in names:
        check_journal(schema, load.acked[name], world=name)
    assert all(load.acked[n] for n in names[:5])


def test_a_world_created_on_one_server_and_deleted_on_another(
    tmp_path: Path, prefix: str, schema: str
) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    with servers(tmp_path, prefix, schema, "a", "b") as (a, b):
        body = {"name": "solo", "kind": "drift", "config": {}}
        status, _, reply = a.post("/api/v1/worlds", body, headers=ADMIN)
        assert status == 201, reply
        # b serves it at once (it looks the name up in the catalog), and runs or forwards it
        status, _, reply = b.post(
            "/test/worlds/solo/commands", {"type": "kick", "payload": {"i": 0, "dv": 0.1}}
        )
        assert status == 200 and reply["status"] == "applied", reply
        wait_for(lambda: "solo" in listed(b), 10, 0.1, "b to list the new world")
        wait_for(lambda: holders(client, prefix, ["solo"])["solo"], 20, 0.1, "a runner")
        status, _, reply = http(
            "DELETE", f"{b.base}/api/v1/worlds/solo?journal=drop", headers=ADMIN
        )
        assert status == 200, reply
        wait_for(lambda: "solo" not in listed(a), 10, 0.1, "a to drop the deleted world")
        assert a.get("/api/v1/worlds/solo")[0] == 404
        wait_for(lambda: holders(client, prefix, ["solo"])["solo"] is None, TTL + 5, 0.1, "free")
        time.sleep(TTL + 4 * POLL)  # long past the grace after which a free world is taken
        assert holders(client, prefix, ["solo"])["solo"] is None, "a deleted world ran again"
        counts, ticks, head = journal_of(schema, "solo")
        assert not counts and not ticks and head is None, "the deleted world's journal came back"


@pytest.mark.netns
@pytest.mark.timeout(150)
def test_thirty_worlds_on_two_hosts_of_two_workers_and_a_host_killed(
    tmp_path: Path, prefix: str, schema: str
) -> None:
    """Two hosts (network namespaces, tests/netns.py), ``gunicorn -w 2`` each: four runners
    share the 31 worlds within one; every process of one host killed with -9, the other
    host's two workers take its worlds within ttl + poll + recovery and keep their own."""
    from tests import netns
    from tests.test_scaleout_hosts import services

    client = redis.Redis.from_url(REDIS_URL)
    names = ["drift", *WORLDS]
    argv = [
        a.replace("127.0.0.1", "{host}") if a.startswith("127.0.0.1") else a
        for a in gunicorn_argv(
            "-w", "2", "-k", "gthread", "--threads", "6", app="tests.fleet_app:create_app()"
        )
    ]
    with netns.lab(2) as lab, services(lab) as (redis_url, pg_url):
        ha, hb = lab.hosts
        cfg = {
            **env(prefix, schema),
            "WORLDLOOP_REDIS_URL": redis_url,
            "WORLDLOOP_STORE_URL": pg_url,
        }
        started = []
        for i, host in enumerate(lab.hosts):
            (tmp_path / host.name).mkdir()
            started.append(
                host.server(argv, tmp_path / host.name, port=8100 + i, env=cfg, name=host.name)
            )
        a, b = started
        for srv in started:
            srv.wait_ready(60)
        create_worlds(a)
        four = wait_for(lambda: balanced(holders(client, prefix, names), 4), 90, 0.1, "4 runners")
        assert sorted(Counter(four.values()).values()) == [7, 8, 8, 8]
        with Load([a, b], names) as load:
            wait_for(lambda: load.count() > 30, 30, 0.1, "acknowledged commands")
            b_pids = set(hb.pids())
            killed_at = time.monotonic()
            hb.kill()
            after = wait_for(
                lambda: balanced(holders(client, prefix, names), 2), 60, 0.05, "2 runners"
            )
            took = time.monotonic() - killed_at
            assert set(after.values()) <= set(ha.pids())
            kept = {w for w in names if four[w] not in b_pids}
            assert all(after[w] == four[w] for w in kept), "a world of host a moved"
            print(f"host b killed (-9): its worlds placed on host a in {took:.2f} s")
            assert took <= TTL + POLL + RECOVERY
            count = load.count()
            wait_for(lambda: load.count() > count + 30, 30, 0.1, "acks after the kill")
    for name in names:
        check_journal(schema, load.acked[name], world=name)


def test_dedicated_runners_run_the_worlds_and_hand_them_over_on_a_stop(
    tmp_path: Path, prefix: str, schema: str
) -> None:
    """``worldloop runner`` processes run the worlds, weighted by ``--capacity``; the web
    workers (capacity 0) only serve. A runner stopped with SIGTERM hands its worlds over
    gracefully: the other runner has them long before a lease could have expired."""
    client = redis.Redis.from_url(REDIS_URL)
    names = ["drift", *WORLDS[:6]]
    web_env = {**env(prefix, schema), "WORLDLOOP_RUNNER_CAPACITY": "0"}
    cfg = env(prefix, schema)

    def runner(capacity: int) -> list[str]:
        app = "tests.fleet_app:create_app()"
        return [
            str(BIN / "python"),
            "-m",
            "worldloop",
            "runner",
            "--app",
            app,
            "--capacity",
            str(capacity),
        ]

    for name in ("web", "big", "small"):
        (tmp_path / name).mkdir()
    with (
        running_server(runner(2), tmp_path / "big", env=cfg, ready=False, name="big") as big,
        running_server(runner(1), tmp_path / "small", env=cfg, ready=False, name="small") as small,
        running_server(
            gunicorn_argv(
                "-w", "2", "-k", "gthread", "--threads", "6", app="tests.fleet_app:create_app()"
            ),
            tmp_path / "web",
            env=web_env,
            name="web",
        ) as web,
    ):
        for name in names[1:]:
            status, _, reply = web.post(
                "/api/v1/worlds", {"name": name, "kind": "drift", "config": {}}, headers=ADMIN
            )
            assert status == 201, reply
        pids = {big.proc.pid: "big", small.proc.pid: "small"}
        placed = wait_for(
            lambda: (
                (h := holders(client, prefix, names))
                and Counter(pids.get(p or 0) for p in h.values()) == {"big": 5, "small": 2}
                and h
            ),
            60,
            0.1,
            "the runners to run 5 and 2 worlds",
        )
        with Load([web], names) as load:
            wait_for(lambda: load.count() > 20, 30, 0.1, "acknowledged commands")
            stopped_at = time.monotonic()
            big.signal_group(signal.SIGTERM)
            wait_for(
                lambda: set(holders(client, prefix, names).values()) == {small.proc.pid},
                TTL,
                0.02,
                "the small runner to run every world (before any lease could expire)",
            )
            took = time.monotonic() - stopped_at
            print(f"SIGTERM of a runner with 5 worlds: all handed over in {took:.2f} s")
            count = load.count()
            wait_for(lambda: load.count() > count + 20, 30, 0.1, "acks after the hand-over")
        assert "hands the world over" not in web.log  # capacity 0: it never ran one
        assert placed
    for name in names:
        check_journal(schema, load.acked[name], world=name)
