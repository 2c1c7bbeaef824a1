"""Two hosts serving one world in the Redis mode (issue 14), each host a network namespace of
its own (tests/netns.py) running a real gunicorn server that reaches Redis and PostgreSQL only
over the lab's bridge, through forwarders in the root namespace: the same wire a second
machine would use, on one machine.

Faults: kill -9 of every process of the host that owns the world, and a real partition of the
owning host from Redis, from PostgreSQL, or from both (blackhole routes inside its namespace;
the client still reaches it). In each, the other host takes the world over and the commands
keep being acknowledged; a partitioned host says why on /readyz and, once healed, serves again
as a standby. After each, the oracles of SCALEOUT.md (tests/test_scaleout_services.py's
``check_oracles``): every acknowledged command journaled exactly once, contiguous ticks, no
tick published under two epochs, snapshot + replay reproduces the hashes, no reads went back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests import netns
from tests.forwarder import Forwarder
from tests.redis_support import REDIS_URL
from tests.store_support import PG_URL
from tests.support import BIN, Server
from tests.test_scaleout_services import (
    POLL,
    TTL,
    Clients,
    check_oracles,
    env,
    gave_up,
    owner_pid,
    pg_state,
    reasons,
    unready_for,
    wait_for,
    wait_owning,
    wait_ready,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.netns,
    pytest.mark.timeout(90),  # each test is bounded; they take 5 to 40 s on a loaded machine
]

PORT = 8000  # host i serves on PORT + i (Clients tells servers apart by port)
ARGV = [
    str(BIN / "gunicorn"),
    "--bind",
    "{host}:{port}",
    "-w",
    "1",
    "-k",
    "gthread",
    "--threads",
    "6",
    "tests.durability_app:create_app()",
]
REASON = {"redis": "redis_unreachable", "postgres": "store_unreachable"}
"""The /readyz reason of a host cut off from each service."""


@contextlib.contextmanager
def services(lab: netns.Lab) -> Iterator[tuple[str, str]]:
    """Forwarders from the lab's Redis and PostgreSQL addresses to the services on loopback;
    the Redis and store URLs a host uses."""
    redis_port = int(REDIS_URL.split(":")[-1].split("/")[0])
    fr = Forwarder(("127.0.0.1", redis_port), host=lab.service("redis"))
    # PostgreSQL's end of a host's connection is the forwarder's: it probes the host as the
    # server would, so a partitioned host's session ends as it would without a forwarder
    fp = Forwarder(("127.0.0.1", 5432), host=lab.service("postgres"), keepalive=True)
    try:
        yield (
            REDIS_URL.replace(f"127.0.0.1:{redis_port}", f"{fr.host}:{fr.port}"),
            PG_URL.replace("127.0.0.1:5432", f"{fp.host}:{fp.port}"),
        )
    finally:
        fr.close()
        fp.close()


def serve(host: netns.Host, tmp_path: Path, cfg: dict[str, str]) -> Server:
    """A gunicorn server in ``host``'s namespace, reached at the host's address."""
    cwd = tmp_path / host.name
    cwd.mkdir()
    port = PORT + host.lab.hosts.index(host)
    return host.server(ARGV, cwd, port=port, env=cfg, name=host.name)


def runs_on(client: redis.Redis, prefix: str, host: netns.Host) -> bool:
    """Whether the world's lease is held by a process of ``host``."""
    return owner_pid(client, prefix) in host.pids()


@contextlib.contextmanager
def owner_and_standby(
    tmp_path: Path, prefix: str, schema: str
) -> Iterator[tuple[netns.Host, netns.Host, Server, Server, Clients, int]]:
    """Two hosts in their namespaces: a owns the world, b stands by, clients load both (30
    acknowledgements in); yields (host a, host b, a's server, b's server, the clients, the epoch
    then). The SCALEOUT.md oracles are checked once the test's body is done."""
    client = redis.Redis.from_url(REDIS_URL)
    clients: Clients | None = None
    with netns.lab(2) as lab, services(lab) as (redis_url, pg_url):
        ha, hb = lab.hosts
        cfg = env(redis_url, prefix, pg_url, schema)
        a = serve(ha, tmp_path, cfg)
        wait_ready(a, 30, "host a ready (it owns the world)")
        b = serve(hb, tmp_path, cfg)
        try:
            wait_ready(b, 30, "host b ready")
            assert runs_on(client, prefix, ha)
            clients = Clients([a, b], REDIS_URL, prefix)
            clients.more(30)
            yield ha, hb, a, b, clients, pg_state(schema)[0]
        finally:
            if clients is not None:
                clients.stop()
    assert clients is not None
    check_oracles(schema, clients)


def test_two_hosts_serve_one_world_and_one_takes_over_when_the_other_is_killed(
    tmp_path: Path, prefix: str, schema: str
) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    with owner_and_standby(tmp_path, prefix, schema) as (ha, hb, _a, b, clients, epoch):
        killed = ha.kill()  # every process of the owning host, gunicorn master and worker
        assert len(killed) >= 2
        wait_for(lambda: not ha.pids(), 10, "host a's processes to be gone")
        wait_for(lambda: pg_state(schema)[0] > epoch, TTL + POLL + 20, "host b to take over")
        assert runs_on(client, prefix, hb)
        clients.more(30)
        wait_owning(b, 10, "host b to run the world after the takeover")


@pytest.mark.parametrize("cut", [("redis",), ("postgres",), ("redis", "postgres")])
def test_the_owning_host_partitioned_hands_the_world_over_and_rejoins_as_standby(
    tmp_path: Path, prefix: str, schema: str, cut: tuple[str, ...]
) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    with owner_and_standby(tmp_path, prefix, schema) as (ha, hb, a, b, clients, epoch):
        for service in cut:
            ha.cut(service)
        for service in cut:
            wait_for(lambda s=service: unready_for(a, REASON[s]), 30, f"a: {REASON[service]}")
        wait_for(lambda: gave_up(a) > 0, 30, "host a to give the world up")
        wait_for(lambda: pg_state(schema)[0] > epoch, TTL + POLL + 20, "host b to take over")
        assert runs_on(client, prefix, hb)
        # b's first journal write may wait on the rows a's cut-off session still holds,
        # until the server ends that session (10 s idle, or ~19 s of unanswered keepalives)
        clients.more(30, timeout=50)
        wait_owning(b, 10, "host b to run the world after the takeover")
        status, codes = reasons(a)
        assert status == 503 and {REASON[s] for s in cut} <= codes, codes

        for service in cut:
            ha.heal(service)
        wait_ready(a, 30, "host a ready again, as a standby")
        assert runs_on(client, prefix, hb)
        b_tick = clients.ticks[b.port][-1]
        wait_for(lambda: clients.ticks[a.port][-1] > b_tick, 15, "a's reads to catch up")
        clients.more(20)
