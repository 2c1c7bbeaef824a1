"""The epoch fence (store/epoch.py) on SQLite and PostgreSQL: each claim bumps the epoch, and a
journal, snapshot or prune write of an older epoch commits nothing (WorldFenced); the journal
write commits the stream cursor with the tick; a runtime whose world was claimed elsewhere
halts without acknowledging the tick."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.durability_app import Drift
from worldloop import WorldRuntime
from worldloop.errors import WorldFenced
from worldloop.store.epoch import EpochFence, fenced_store


@pytest.fixture
def fences(sql_db: tuple[str, str | None]) -> Iterator[tuple[EpochFence, EpochFence]]:
    url, schema = sql_db
    a = fenced_store(url, "runner a", schema=schema)
    b = fenced_store(url, "runner b", schema=schema)
    try:
        yield a, b
    finally:
        a.store.close()
        b.store.close()


def rec(seq: int) -> dict[str, object]:
    return {"id": f"c{seq}", "seq": seq, "type": "kick", "payload": {}, "actor": None, "ok": True}


def test_each_claim_bumps_the_epoch_and_fences_the_older_owner(
    fences: tuple[EpochFence, EpochFence],
) -> None:
    a, b = fences
    first = a.claim("w")
    assert (first.epoch, first.cursor) == (1, "0-0")
    a.store.save_snapshot("w", 0, {"x": 1}, "h0")
    a.stage("w", "5-0")
    a.store.append("w", 1, [rec(1)])
    a.store.save_snapshot("w", 1, {"x": 2}, "h1")
    second = b.claim("w")
    assert (second.epoch, second.cursor) == (2, "5-0")  # the cursor came with tick 1
    a.stage("w", "9-0")
    with pytest.raises(WorldFenced) as err:
        a.store.append("w", 2, [rec(2)])
    assert err.value.status == 503 and "another runner" in err.value.message
    with pytest.raises(WorldFenced):
        a.store.save_snapshot("w", 2, {"x": 3}, "h2")
    with pytest.raises(WorldFenced):
        a.store.prune("w", 0)
    assert b.store.head("w") == 1  # nothing of a's committed
    assert [s.tick for s in b.store.snapshots("w")] == [0, 1]
    assert b.store.find_command("w", "c2") is None
    b.stage("w", "6-0")
    b.store.append("w", 2, [rec(3)])
    current = a.current("w")
    assert current is not None and (current.epoch, current.cursor) == (2, "6-0")


def test_a_world_never_claimed_or_given_up_is_not_written(
    fences: tuple[EpochFence, EpochFence],
) -> None:
    a, _ = fences
    with pytest.raises(WorldFenced, match="does not own"):
        a.store.append("w", 1, [])
    a.claim("w")
    a.store.append("w", 1, [])
    a.forget("w")
    with pytest.raises(WorldFenced):
        a.store.append("w", 2, [])


def test_a_runtime_whose_world_was_claimed_elsewhere_halts_unacknowledged(
    fences: tuple[EpochFence, EpochFence],
) -> None:
    a, b = fences
    a.claim("drift")
    rt = WorldRuntime(
        Drift(particles=8, seed=1),
        store=a.store,
        start_paused=True,
        store_retry_seconds=5.0,
        snapshot_every=1000,
    )
    rt.start()
    try:
        rt.submit("kick", {"i": 1, "dv": 1.0})
        rt.step(1)
        assert a.store.head("drift") == 1
        b.claim("drift")
        ticket = rt.submit("kick", {"i": 2, "dv": 1.0})
        rt.step(1)  # fenced at once: no retries against another owner's epoch
        assert ticket.done and ticket.status == "rejected"
        assert rt.degraded is not None and "another runner" in rt.degraded
        assert b.store.head("drift") == 1
        assert b.store.find_command("drift", ticket.id) is None
        assert rt.durability is not None and rt.durability.journal_retries == 0
    finally:
        rt.stop()


def test_a_head_moved_by_a_newer_owner_is_not_taken_for_this_owners_commit(
    fences: tuple[EpochFence, EpochFence],
) -> None:
    from worldloop.durability import Durability

    a, b = fences
    a.claim("w")
    a.store.append("w", 1, [rec(1)])
    assert a.owns("w") and not b.owns("w")
    b.claim("w")
    b.store.append("w", 2, [rec(2)])
    assert not a.owns("w") and b.owns("w")
    # a's journal write of tick 2 failed in flight: the head says 2, but it is b's commit
    assert not Durability(a.store)._committed_anyway("w", 2)
    assert Durability(b.store)._committed_anyway("w", 2)
