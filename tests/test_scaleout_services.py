"""Service faults of the Redis mode (part 5 of issue 14) in real gunicorn servers: Redis
restarting (a test-owned redis-server without persistence: the lease, the streams and the keys
are gone), PostgreSQL unreachable from one host or from every host, and one host cut off from
Redis only, and PostgreSQL ending every connection of the servers (pg_terminate_backend, what
its restart does to clients). The shared Redis and PostgreSQL are never stopped: a host's path to
them goes through a :class:`~tests.forwarder.Forwarder` the test cuts and clears.

In each fault the world stops rather than diverge (or goes on on a host that still reaches both),
/readyz says why (``redis_unreachable``, ``store_unreachable``, ``lease_lost``) and answers 200
again once the fault clears, and the world resumes. Then the oracles of SCALEOUT.md: every
acknowledged command is in the journal exactly once, journal ticks are contiguous, no tick was
committed under two epochs, snapshot + replay reproduces the recorded hashes, and no server's
reads went back.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from tests.durability_app import Drift
from tests.forwarder import Forwarder
from tests.redis_support import REDIS_URL, OwnRedis, scaleout_env
from tests.scaleout_oracles import check_journal
from tests.store_support import PG_DSN, PG_URL
from tests.support import BIN, Server, http, running_server
from tests.support import wait_for as _wait_for
from worldloop.durability import replay
from worldloop.store.sql import SqlStore

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

TTL, POLL = 1.5, 0.2
ARGV = [
    str(BIN / "gunicorn"),
    "--bind",
    "127.0.0.1:{port}",
    "-w",
    "1",
    "-k",
    "gthread",
    "--threads",
    "6",
    "tests.durability_app:create_app()",
]


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    return _wait_for(cond, timeout, 0.05, what)


def env(redis_url: str, prefix: str, pg_url: str, schema: str) -> dict[str, str]:
    return scaleout_env(
        prefix,
        schema,
        ttl=TTL,
        poll=POLL,
        redis_url=redis_url,
        pg_url=pg_url,
        WORLDLOOP_STORE_RETRY_SECONDS="1",
    )


def via(port: int) -> str:
    """PG_URL through a forwarder on ``port``."""
    return PG_URL.replace("127.0.0.1:5432", f"127.0.0.1:{port}")


def reasons(srv: Server) -> tuple[int, set[str]]:
    """/readyz of ``srv``: its status and the codes of its reasons."""
    try:
        status, _, body = srv.get("/readyz", timeout=5)
    except OSError:
        return 0, set()
    return status, {r["code"] for r in body.get("reasons", ())}


def wait_owning(srv: Server, timeout: float, what: str) -> None:
    """Wait until ``srv`` runs its world again after a takeover: /readyz 200, or 503 for no
    other reason than ``overrunning`` (a loaded machine's truthful answer while the new owner's
    clock catches up, which says nothing about the takeover); on timeout, say what it answered."""

    def owning() -> bool:
        status, codes = reasons(srv)
        return status == 200 or (status == 503 and codes == {"overrunning"})

    try:
        wait_for(owning, timeout, what)
    except AssertionError as exc:
        with contextlib.suppress(OSError):
            exc.add_note(f"last /readyz: {srv.get('/readyz', timeout=5)}")
        raise


def unready_for(srv: Server, code: str) -> bool:
    status, codes = reasons(srv)
    return status == 503 and code in codes


def ready(srv: Server) -> bool:
    return reasons(srv)[0] == 200


def wait_ready(srv: Server, timeout: float, what: str) -> None:
    """Wait for /readyz of ``srv`` to answer 200; on timeout, say what it answered last."""
    try:
        wait_for(lambda: ready(srv), timeout, what)
    except AssertionError as exc:
        with contextlib.suppress(OSError):
            exc.add_note(f"last /readyz: {srv.get('/readyz', timeout=5)}")
        raise


def gave_up(*servers: Server) -> int:
    """How many times the servers' workers gave the world up (their logs say it)."""
    return sum(srv.log.count("gives the world up") for srv in servers)


def terminate_backends(*forwarders: Forwarder) -> int:
    """pg_terminate_backend of every connection that came through ``forwarders``; how many."""
    ports = [port for f in forwarders for port in f.upstream_ports()]
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE client_port = ANY(%s)",
            (ports,),
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


def owner_pid(client: redis.Redis, prefix: str) -> int | None:
    raw = client.get(f"{prefix}drift:lease")
    return None if raw is None else int(raw.decode().split(" pid ")[1].split()[0])


def pg_state(schema: str) -> tuple[int, int]:
    """(epoch, journal head tick) as stored now, read directly (not through a forwarder)."""
    with psycopg.connect(PG_DSN) as conn:
        epoch = conn.execute(f'SELECT epoch FROM "{schema}".worldloop_epochs').fetchone()
        head = conn.execute(f'SELECT tick FROM "{schema}".worldloop_heads').fetchone()
    return (0 if epoch is None else int(epoch[0])), (0 if head is None else int(head[0]))


class Clients:
    """Players POSTing commands that wait for their acknowledgement (two threads a server),
    readers of every server's world (each server's ticks recorded in order), and a reader of
    the world's feed stream (every (epoch, tick) published), all tolerant of the faults."""

    def __init__(self, servers: list[Server], redis_url: str, prefix: str) -> None:
        self.acked: list[str] = []
        self.ticks: dict[int, list[int]] = {srv.port: [] for srv in servers}
        self.feed: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._threads = [
            *(
                threading.Thread(target=self._play, args=(srv, n))
                for srv in servers
                for n in (0, 1)
            ),
            *(threading.Thread(target=self._read, args=(srv,)) for srv in servers),
            threading.Thread(target=self._feed, args=(redis_url, f"{prefix}{{drift}}:feed")),
        ]
        for t in self._threads:
            t.start()

    def _play(self, srv: Server, n: int) -> None:
        i = n
        while not self._stop.is_set():
            body = {"type": "kick", "payload": {"i": i % 8, "dv": 0.01}}
            with contextlib.suppress(OSError, ValueError):
                status, _, reply = http("POST", srv.base + "/test/commands", body, timeout=15)
                if status == 200 and reply["status"] == "applied":
                    self.acked.append(reply["command_id"])
                elif status >= 500:
                    self._stop.wait(0.1)  # 503 + Retry-After: back off a little
            i += 2

    def _read(self, srv: Server) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(OSError, ValueError):
                status, _, body = srv.get("/api/v1/world", timeout=5)
                if status == 200:
                    self.ticks[srv.port].append(int(body["tick"]))

    def _feed(self, url: str, key: str) -> None:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1)
        last = "0-0"
        while not self._stop.is_set():
            try:
                reply: Any = client.xread({key: last}, count=1000, block=200)
            except redis.RedisError:
                self._stop.wait(0.1)
                continue
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    self.feed.append((int(fields[b"epoch"]), int(fields[b"tick"])))

    def more(self, n: int, timeout: float = 30.0) -> None:
        count = len(self.acked)
        wait_for(lambda: len(self.acked) >= count + n, timeout, f"{n} more acknowledgements")

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


def check_oracles(schema: str, clients: Clients) -> None:
    acked = clients.acked
    assert len(acked) > 50
    head = check_journal(schema, acked)
    # no tick under two epochs (each epoch's first entry re-publishes its recovered tick)
    by_tick: dict[int, set[int]] = {}
    seen_epochs: set[int] = set()
    for epoch, tick in clients.feed:
        if epoch not in seen_epochs:
            seen_epochs.add(epoch)
            continue
        by_tick.setdefault(tick, set()).add(epoch)
    doubled = {t: e for t, e in by_tick.items() if len(e) > 1}
    assert not doubled, f"ticks published under two epochs: {doubled}"
    for port, seen in clients.ticks.items():
        assert seen, f"server {port} never answered a read"
        assert seen == sorted(seen), f"server {port}'s reads went back"
    store = SqlStore(PG_URL, schema=schema)
    try:
        rec = store.load("drift", snapshot_tick=store.snapshots("drift")[0].tick)
        result = replay(Drift(8, 7), rec)
        assert result.tick == head and result.hashes_checked >= result.ticks
    finally:
        store.close()


def test_a_redis_restart_loses_every_key_and_the_world_resumes_without_diverging(
    tmp_path: Path, schema: str, own_redis: OwnRedis
) -> None:
    url, start_redis = own_redis
    proc = start_redis()
    prefix = "wl:"
    cfg = env(url, prefix, PG_URL, schema)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    clients: Clients | None = None
    with (
        running_server(ARGV, tmp_path / "a", env=cfg, name="a") as a,
        running_server(ARGV, tmp_path / "b", env=cfg, name="b") as b,
    ):
        try:
            wait_for(lambda: ready(a) and ready(b), 30, "both servers ready")
            clients = Clients([a, b], url, prefix)
            clients.more(30)
            epoch, _ = pg_state(schema)

            proc.send_signal(signal.SIGKILL)  # no persistence: the restart loses every key
            proc.wait(10)
            for srv in (a, b):
                wait_for(lambda s=srv: unready_for(s, "redis_unreachable"), 20, "redis_unreachable")
            wait_for(lambda: gave_up(a, b) > 0, 20, "the owner to give the world up")
            head = pg_state(schema)[1]
            time.sleep(TTL)  # nothing to wait on: no tick may commit while Redis is gone
            assert pg_state(schema)[1] == head, "ticks committed while Redis was down"

            proc = start_redis()
            for srv in (a, b):
                wait_ready(srv, 30, "ready again after the restart")
            clients.more(30)
            assert pg_state(schema)[0] > epoch, "the world resumed without a new epoch"
        finally:
            if clients is not None:
                clients.stop()
    assert clients is not None
    check_oracles(schema, clients)


def test_postgresql_cut_from_one_host_then_from_every_host(
    tmp_path: Path, prefix: str, schema: str
) -> None:
    fa, fb = Forwarder(("127.0.0.1", 5432)), Forwarder(("127.0.0.1", 5432))
    client = redis.Redis.from_url(REDIS_URL)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    clients: Clients | None = None
    try:
        with running_server(
            ARGV, tmp_path / "a", env=env(REDIS_URL, prefix, via(fa.port), schema), name="a"
        ) as a:
            wait_ready(a, 30, "a ready (it owns the world)")
            a_owner = owner_pid(client, prefix)
            with running_server(
                ARGV, tmp_path / "b", env=env(REDIS_URL, prefix, via(fb.port), schema), name="b"
            ) as b:
                try:
                    wait_ready(b, 30, "b ready")
                    clients = Clients([a, b], REDIS_URL, prefix)
                    clients.more(30)

                    # every connection of the servers to PostgreSQL ended by the server (what a
                    # restart does to its clients): they reconnect, the world goes on
                    assert terminate_backends(fa, fb) > 0
                    clients.more(30)
                    assert gave_up(a, b) == 0  # the journal write's retry reconnected
                    for srv in (a, b):
                        wait_ready(srv, 30, "ready after the connections ended")
                    epoch, _ = pg_state(schema)

                    # a (the owner) cut off from PostgreSQL only: it gives the world up, b runs it
                    fa.cut()
                    wait_for(lambda: unready_for(a, "store_unreachable"), 20, "a unready")
                    wait_for(lambda: pg_state(schema)[0] > epoch, TTL + POLL + 15, "b to take over")
                    assert owner_pid(client, prefix) not in (None, a_owner)
                    clients.more(30)
                    wait_owning(b, 10, "b to run the world after the takeover")
                    fa.clear()
                    wait_ready(a, 30, "a ready again")
                    clients.more(10)

                    # PostgreSQL gone for every host: the world stops, both say why
                    epoch = pg_state(schema)[0]
                    given = gave_up(a, b)
                    fa.cut()
                    fb.cut()
                    for srv in (a, b):
                        wait_for(lambda s=srv: unready_for(s, "store_unreachable"), 20, "unready")
                    wait_for(lambda: gave_up(a, b) > given, 20, "the owner to give the world up")
                    head = pg_state(schema)[1]
                    time.sleep(TTL)  # nothing to wait on: no tick may commit in this window
                    assert pg_state(schema)[1] == head, "ticks committed without a store"
                    fa.clear()
                    fb.clear()
                    for srv in (a, b):
                        wait_ready(srv, 30, "ready after PostgreSQL is back")
                    clients.more(30)
                    assert pg_state(schema)[0] > epoch
                finally:
                    if clients is not None:
                        clients.stop()
    finally:
        fa.close()
        fb.close()
    assert clients is not None
    check_oracles(schema, clients)


def test_a_host_cut_off_from_redis_only_hands_the_world_over_and_catches_up(
    tmp_path: Path, prefix: str, schema: str
) -> None:
    host, port = "127.0.0.1", int(REDIS_URL.split(":")[-1].split("/")[0])
    ra = Forwarder((host, port))
    client = redis.Redis.from_url(REDIS_URL)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    clients: Clients | None = None
    a_url = REDIS_URL.replace(f":{port}", f":{ra.port}")
    try:
        with running_server(
            ARGV, tmp_path / "a", env=env(a_url, prefix, PG_URL, schema), name="a"
        ) as a:
            wait_ready(a, 30, "a ready (it owns the world)")
            a_owner = owner_pid(client, prefix)
            with running_server(
                ARGV, tmp_path / "b", env=env(REDIS_URL, prefix, PG_URL, schema), name="b"
            ) as b:
                try:
                    wait_ready(b, 30, "b ready")
                    clients = Clients([a, b], REDIS_URL, prefix)
                    clients.more(30)
                    epoch, _ = pg_state(schema)

                    ra.cut()
                    wait_for(lambda: unready_for(a, "redis_unreachable"), 20, "a unready")
                    wait_for(lambda: pg_state(schema)[0] > epoch, TTL + POLL + 15, "a takeover")
                    assert owner_pid(client, prefix) not in (None, a_owner)
                    clients.more(30)
                    wait_owning(b, 10, "b to run the world after the takeover")
                    assert "gives the world up" in a.log
                    assert {"redis_unreachable", "lease_lost"} <= reasons(a)[1]

                    ra.clear()
                    wait_ready(a, 30, "a ready again")
                    b_tick = clients.ticks[b.port][-1]
                    wait_for(
                        lambda: clients is not None and clients.ticks[a.port][-1] > b_tick,
                        10,
                        "a's reads to catch up",
                    )
                    clients.more(20)
                finally:
                    if clients is not None:
                        clients.stop()
    finally:
        ra.close()
    assert clients is not None
    check_oracles(schema, clients)
