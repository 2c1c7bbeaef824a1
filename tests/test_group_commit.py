"""Group commit (store/group.py) on real SQLite files and PostgreSQL schemas: the worlds that
journal while a write is in flight share the next transaction (commits counted with a
SQLAlchemy event), a lone world commits at once, a fenced world or a world whose rows fail is
left out alone while the others commit, a failed transaction makes nobody durable, and the
setting turns it off."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError

from tests.support import wait_for
from worldloop.config import Settings
from worldloop.errors import StoreError, WorldFenced
from worldloop.store import SqlStore, open_store
from worldloop.store.epoch import EpochFence
from worldloop.store.group import GroupCommit, group_for


@pytest.fixture
def stores(sql_db: tuple[str, str | None]) -> Iterator[list[SqlStore]]:
    """Six store objects on that database, one per world, as a server makes them."""
    url, schema = sql_db
    made = [SqlStore(url, schema=schema) for _ in range(6)]
    for s in made:
        s.open()
    try:
        yield made
    finally:
        for s in made:
            s.close()


def rec(world: str, seq: int) -> dict[str, Any]:
    return {"id": f"{world}-c{seq}", "seq": seq, "type": "kick", "payload": {"i": seq}, "ok": True}


class Commits:
    """Counts the commits on some engines; can hold the first one until others have queued."""

    def __init__(self, engines: list[Engine]) -> None:
        self.engines = engines
        self.count = 0
        self.hold: Callable[[], None] | None = None
        self.holding = threading.Event()
        self.fail_next = False
        for engine in engines:
            event.listen(engine, "commit", self._on_commit)

    def _on_commit(self, conn: Any) -> None:
        hold, self.hold = self.hold, None
        if hold is not None:  # the held commit itself goes through
            self.holding.set()
            hold()
            self.count += 1
            return
        if self.fail_next:
            self.fail_next = False
            raise OperationalError("COMMIT", {}, Exception("disk I/O error (injected)"))
        self.count += 1

    def remove(self) -> None:
        for engine in self.engines:
            event.remove(engine, "commit", self._on_commit)


def together(
    stores: list[SqlStore], group: GroupCommit, commits: Commits, tick: int = 1
) -> dict[str, BaseException | None]:
    """Each store journals its world's ``tick`` on its own thread: the first one's transaction
    is held at its commit until every other world has queued behind it. Returns each world's
    error (None: durable)."""
    results: dict[str, BaseException | None] = {}
    others = len(stores) - 1
    commits.hold = lambda: wait_for(lambda: group.waiting == others, 10, what="worlds queued")

    def write(i: int, store: SqlStore) -> None:
        world = f"w{i}"
        try:
            store.append(world, tick, [rec(world, tick * 10), rec(world, tick * 10 + 1)], None)
            results[world] = None
        except BaseException as exc:
            results[world] = exc

    threads = [threading.Thread(target=write, args=(i, s)) for i, s in enumerate(stores)]
    threads[0].start()
    assert commits.holding.wait(10)  # the first world leads and is inside its transaction
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(20)
    commits.holding.clear()
    return results


def test_worlds_that_journal_together_share_one_transaction(stores: list[SqlStore]) -> None:
    group = stores[0].group
    assert group is not None and all(s.group is group for s in stores)  # one per database
    commits = Commits([s.engine for s in stores])
    try:
        results = together(stores, group, commits)
    finally:
        commits.remove()
    assert results == {f"w{i}": None for i in range(6)}
    assert commits.count == 2  # the leader's own, then one for the five that queued meanwhile
    assert group.stats().largest == 5
    for i in range(len(stores)):  # every world's tick is durable, read back by another
        other = stores[(i + 1) % len(stores)]
        assert other.head(f"w{i}") == 1
        assert other.find_command(f"w{i}", f"w{i}-c11") is not None
    again = SqlStore(stores[0].url, schema=stores[0].schema)
    try:
        assert again.journal_range("w3") == (1, 1, 2)
    finally:
        again.close()


def test_a_lone_world_commits_at_once(stores: list[SqlStore]) -> None:
    """No timer: each write finds no other in flight, commits alone, and returns durable."""
    store = stores[0]
    group = store.group
    assert group is not None
    before = group.stats()
    commits = Commits([store.engine])
    try:
        for tick in range(1, 21):
            store.append("solo", tick, [rec("solo", tick)], f"h{tick}" if tick % 5 == 0 else None)
            assert stores[1].head("solo") == tick  # durable when append returns
    finally:
        commits.remove()
    after = group.stats()
    assert commits.count == 20 and after.commits - before.commits == 20
    assert after.largest == 1
    assert store.journal_range("solo") == (1, 20, 20)


def test_a_fenced_world_fails_alone(stores: list[SqlStore]) -> None:
    fences = [EpochFence(s, "runner a") for s in stores[:3]]
    for i, fence in enumerate(fences):
        fence.claim(f"w{i}")
        fence.stage(f"w{i}", f"{i}-1")
    newer = EpochFence(stores[5], "runner b")
    newer.claim("w1")  # w1 moved to another runner: runner a's epoch of it is stale
    group = stores[0].group
    assert group is not None
    commits = Commits([s.engine for s in stores[:3]])
    try:
        results = together(stores[:3], group, commits)
    finally:
        commits.remove()
    assert results["w0"] is None and results["w2"] is None
    assert isinstance(results["w1"], WorldFenced)
    assert commits.count == 2
    reader = stores[4]
    assert (reader.head("w0"), reader.head("w1"), reader.head("w2")) == (1, None, 1)
    assert reader.find_command("w1", "w1-c10") is None  # nothing of the fenced world
    claims = [newer.current(f"w{i}") for i in range(3)]
    assert [c.cursor if c else None for c in claims] == ["0-1", "0-0", "2-1"]


def test_a_world_whose_rows_fail_fails_alone(stores: list[SqlStore]) -> None:
    """w1 journals tick 1 a second time (its rows are there already): the shared transaction
    is retried with each world in a savepoint, and only w1's write fails."""
    stores[1].append("w1", 1, [rec("w1", 10), rec("w1", 11)])
    group = stores[0].group
    assert group is not None
    commits = Commits([s.engine for s in stores[:4]])
    try:
        results = together(stores[:4], group, commits)
    finally:
        commits.remove()
    assert {w: e for w, e in results.items() if w != "w1"} == {"w0": None, "w2": None, "w3": None}
    failed = results["w1"]
    assert isinstance(failed, StoreError) and not isinstance(failed, WorldFenced)
    assert "'w1'" in failed.message
    assert [stores[4].head(f"w{i}") for i in range(4)] == [1, 1, 1, 1]
    assert stores[4].journal_range("w1") == (1, 1, 2)  # the first write, once


def test_a_failed_transaction_makes_no_world_durable(stores: list[SqlStore]) -> None:
    """The shared commit fails: none of its worlds is durable, and each one's retry (as
    Durability.record retries) commits it."""
    group = stores[0].group
    assert group is not None
    commits = Commits([s.engine for s in stores[:4]])
    try:
        assert set(together(stores[:4], group, commits, tick=1).values()) == {None}
        commits.fail_next = True  # the leader's commit goes through, the shared one fails
        results = together(stores[:4], group, commits, tick=2)
    finally:
        commits.remove()
    assert results["w0"] is None
    assert all(isinstance(results[f"w{i}"], StoreError) for i in (1, 2, 3)), results
    assert "disk I/O error (injected)" in str(results["w2"])
    assert [stores[4].head(f"w{i}") for i in range(4)] == [2, 1, 1, 1]
    assert stores[4].find_command("w2", "w2-c20") is None
    for i in (1, 2, 3):
        stores[i].append(f"w{i}", 2, [rec(f"w{i}", 20)])
    assert [stores[4].head(f"w{i}") for i in range(4)] == [2, 2, 2, 2]
    assert [stores[4].journal_range(f"w{i}")[2] for i in range(4)] == [4, 3, 3, 3]


def test_group_commit_can_be_turned_off(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'worldloop.db'}"
    assert Settings.from_config({}).group_commit is True
    assert Settings.from_config({"WORLDLOOP_GROUP_COMMIT": "false"}).group_commit is False
    off = open_store(url, group_commit=False)
    on = open_store(url)
    memory = SqlStore("sqlite://")
    try:
        assert isinstance(off, SqlStore) and isinstance(on, SqlStore)
        assert off.group is None and on.group is group_for(url, None)
        assert memory.group is None  # an in-memory database is no other store's
        off.append("w", 1, [rec("w", 1)])
        assert on.head("w") == 1
    finally:
        off.close()
        on.close()
        memory.close()
