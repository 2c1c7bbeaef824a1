"""The Store contract: every backend (memory, SQLite, PostgreSQL) keeps the same journal and
snapshots with the same semantics. One suite, parametrized over every backend by the
``backend`` fixture (tests/contracts/conftest.py); backend-specific behaviour (schema version,
damaged files, lock contention, dropped connections) is in tests/test_store.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.contracts.conftest import StoreBackend
from tests.durability_app import Drift
from tests.store_support import make_runtime, run_ticks
from worldloop import StoreError
from worldloop.commands import Command, CommandTicket, IdempotencyKey, Outcome
from worldloop.durability import replay
from worldloop.plugins import TickListener
from worldloop.store import Recovery, Store, journal_record
from worldloop.world import hash_state

W = "drift"


def records(tick: int, n: int = 2, *, seq0: int | None = None) -> list[dict[str, Any]]:
    """``n`` journal records for ``tick``: applied ones, and a rejected one when n > 1."""
    out = []
    base = tick * 10 if seq0 is None else seq0
    for j in range(n):
        cmd = Command(f"c{tick}-{j}", base + j, "kick", {"i": j, "dv": 0.5, "note": "é"}, "ann")
        if j == 1:
            outcome = Outcome(cmd, False, None, "command_rejected", "no particle", {"i": j})
        else:
            outcome = Outcome(cmd, True, {"i": j, "v": np.float64(1.5)})
        out.append(journal_record(outcome))
    return out


def state_at(tick: int) -> tuple[dict[str, Any], str]:
    world = Drift(particles=8, seed=tick)
    for _ in range(tick):
        world.step([])
    state = world.full_state()
    return state, hash_state(state)


def fill(store: Store, upto: int, snapshots_at: tuple[int, ...], hash_every: int = 5) -> None:
    """Journal ticks 1..upto (tick 3 empty) and save snapshots at the given ticks."""
    for tick in range(0, upto + 1):
        if tick:
            store.append(
                W,
                tick,
                [] if tick == 3 else records(tick),
                f"h{tick}" if tick % hash_every == 0 else None,
            )
        if tick in snapshots_at:
            state, digest = state_at(tick)
            store.save_snapshot(W, tick, state, digest)


def test_an_empty_store_holds_nothing(store: Store) -> None:
    assert store.head(W) is None
    assert store.load(W) == Recovery(None, None, None)
    assert store.snapshots(W) == []
    assert store.find_command(W, "nope") is None
    assert store.journal_range(W) == (None, None, 0)
    store.check_writable()
    with pytest.raises(StoreError, match="no snapshot at or before tick 4"):
        store.load(W, upto=4)


def test_append_advances_the_head_and_load_returns_the_window(store: Store) -> None:
    fill(store, 10, (0, 6))
    assert store.head(W) == 10
    rec = store.load(W)
    assert (rec.snapshot_tick, rec.head_tick) == (6, 10)
    assert rec.state_hash == state_at(6)[1]
    assert rec.state is not None and hash_state(rec.state) == state_at(6)[1]
    assert sorted(rec.commands) == [7, 8, 9, 10]
    assert rec.commands[7] == records(7)  # exactly what was appended, in order
    assert dict(rec.hashes) == {10: "h10"}
    assert rec.last_seq == 101

    early = store.load(W, upto=5)
    assert (early.snapshot_tick, early.head_tick) == (0, 5)
    assert sorted(early.commands) == [1, 2, 4, 5]  # tick 3 ran without commands
    assert dict(early.hashes) == {5: "h5"}

    chosen = store.load(W, snapshot_tick=0)
    assert (chosen.snapshot_tick, chosen.head_tick) == (0, 10)
    assert sorted(chosen.hashes) == [5, 10]
    with pytest.raises(StoreError, match="after the last journaled tick"):
        store.load(W, upto=11)
    assert store.journal_range(W) == (1, 10, 18)


def test_find_command_shows_applied_and_rejected_commands(store: Store) -> None:
    fill(store, 4, (0,))
    applied = store.find_command(W, "c2-0")
    assert applied == {
        "command_id": "c2-0",
        "type": "kick",
        "status": "applied",
        "tick": 2,
        "actor": "ann",
        "result": {"i": 0, "v": 1.5},
    }
    rejected = store.find_command(W, "c4-1")
    assert rejected is not None and rejected["status"] == "rejected" and rejected["tick"] == 4
    assert rejected["error"]["code"] == "command_rejected"
    assert rejected["error"]["details"] == {"i": 1}
    assert store.find_command("another-world", "c2-0") is None


def test_worlds_are_kept_apart(store: Store) -> None:
    fill(store, 3, (0,))
    state, digest = state_at(0)
    store.save_snapshot("other", 0, state, digest)
    store.append("other", 1, records(1, seq0=500))
    assert store.head("other") == 1 and store.head(W) == 3
    assert [s.tick for s in store.snapshots("other")] == [0]
    assert store.load("other").last_seq == 501
    assert store.find_command("other", "c1-0") is not None
    assert store.find_command(W, "c1-0") is not None


def test_snapshots_are_listed_oldest_first_and_replaced_by_tick(store: Store) -> None:
    for tick in (5, 0, 10):
        state, digest = state_at(tick)
        store.save_snapshot(W, tick, state, digest)
    infos = store.snapshots(W)
    assert [s.tick for s in infos] == [0, 5, 10]
    assert all(s.size > 0 and s.created_at > 0 for s in infos)
    assert infos[1].state_hash == state_at(5)[1]
    state, _ = state_at(6)
    store.save_snapshot(W, 5, state, "replaced")
    assert [(s.tick, s.state_hash) for s in store.snapshots(W)][1] == (5, "replaced")


def test_a_stored_snapshot_is_a_copy(store: Store) -> None:
    state, digest = state_at(2)
    store.save_snapshot(W, 2, state, digest)
    state["x"][:] = -1.0  # the caller goes on changing its arrays
    loaded = store.load(W).state
    assert loaded is not None and hash_state(loaded) == digest
    loaded["x"][:] = -2.0  # nor can a reader change what is stored
    again = store.load(W).state
    assert again is not None and hash_state(again) == digest


def test_a_state_that_cannot_be_stored_is_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="dtype object"):
        store.save_snapshot(W, 0, {"x": np.array([object()], dtype=object)}, "h")
    assert store.snapshots(W) == []


def test_prune_keeps_what_rebuilds_every_retained_tick(store: Store) -> None:
    fill(store, 80, (0, 10, 20, 30, 40, 50, 60, 70, 80), hash_every=10)
    store.prune(W, 25)
    # latest 80, previous 70, base = newest snapshot <= min(70, 80 - 25) = 50
    assert [s.tick for s in store.snapshots(W)] == [50, 60, 70, 80]
    assert store.journal_range(W) == (51, 80, 2 * 30)
    assert store.find_command(W, "c50-0") is None and store.find_command(W, "c51-0") is not None
    rec = store.load(W, upto=63)
    assert (rec.snapshot_tick, rec.head_tick, sorted(rec.hashes)) == (60, 63, [])
    assert sorted(store.load(W, snapshot_tick=50).hashes) == [60, 70, 80]
    with pytest.raises(StoreError, match="no snapshot at or before tick 49"):
        store.load(W, upto=49)
    store.prune(W, 25)  # idempotent
    assert [s.tick for s in store.snapshots(W)] == [50, 60, 70, 80]


def test_prune_drops_interim_snapshots_once_two_newer_exist(store: Store) -> None:
    fill(store, 80, (0, 10, 15, 20, 25, 30, 35), hash_every=10)
    store.prune(W, 1000, interim={15, 25, 35})
    # 35 is the latest: kept; 25 and 15 have two newer snapshots: gone; the journal stays
    assert [s.tick for s in store.snapshots(W)] == [0, 10, 20, 30, 35]
    assert store.journal_range(W) == (1, 80, 2 * 79)
    rec = store.load(W, upto=27)
    assert (rec.snapshot_tick, rec.head_tick) == (20, 27)


def test_prune_needs_two_snapshots(store: Store) -> None:
    fill(store, 12, (10,))
    store.prune(W, 0)
    assert store.journal_range(W) == (1, 12, 2 * 11)
    assert [s.tick for s in store.snapshots(W)] == [10]


def keyed(tick: int, scope: str, *, ok: bool = True) -> dict[str, Any]:
    """A journal record of a command sent with idempotency key ``scope``."""
    cmd = Command(f"k{tick}", 900 + tick, "kick", {"i": 0}, "ann", key=IdempotencyKey(scope, "fp"))
    if ok:
        return journal_record(Outcome(cmd, True, {"v": tick}))
    return journal_record(Outcome(cmd, False, None, "command_rejected", "no", {"i": 0}))


def test_a_keyed_command_is_found_by_its_key_after_a_reopen(backend: StoreBackend) -> None:
    first = backend.open()
    fill(first, 4, (0,))
    first.append(W, 5, [*records(5), keyed(5, "cmd:ann:key-5")])
    first.append(W, 6, [keyed(6, "cmd:ann:key-6", ok=False)])
    first.close()
    store = backend.open()
    try:
        found = store.find_key(W, "cmd:ann:key-5")
        assert found is not None
        tick, record = found
        assert tick == 5 and record["id"] == "k5" and record["key_fp"] == "fp"
        ticket = CommandTicket.from_journal(tick, record)
        assert ticket.done and ticket.tick == 5 and ticket.outcome is not None
        assert ticket.outcome.ok and ticket.outcome.result == {"v": 5}
        assert ticket.command.key == IdempotencyKey("cmd:ann:key-5", "fp")
        rejected = store.find_key(W, "cmd:ann:key-6")
        assert rejected is not None and rejected[1]["error"]["code"] == "command_rejected"
        assert store.find_key(W, "cmd:bob:key-5") is None
        assert store.find_key("another-world", "cmd:ann:key-5") is None
        assert store.find_command(W, "k5") == {
            "command_id": "k5",
            "type": "kick",
            "status": "applied",
            "tick": 5,
            "actor": "ann",
            "result": {"v": 5},
        }
    finally:
        store.close()


def test_a_pruned_key_is_forgotten(store: Store) -> None:
    fill(store, 4, (0,))
    store.append(W, 5, [keyed(5, "cmd:ann:old")])
    fill_from = 6
    for tick in range(fill_from, 31):
        store.append(W, tick, records(tick))
    for tick in (10, 20, 30):
        state, digest = state_at(0)
        store.save_snapshot(W, tick, state, digest)
    store.prune(W, 5)
    assert store.find_key(W, "cmd:ann:old") is None


def test_a_reopened_store_finds_everything(backend: StoreBackend) -> None:
    first = backend.open()
    fill(first, 6, (0, 4))
    first.close()
    first.open()  # a closed store opens again on the same data
    assert first.head(W) == 6
    first.close()
    again = backend.open()
    try:
        assert again.head(W) == 6
        assert [s.tick for s in again.snapshots(W)] == [0, 4]
        assert again.load(W).last_seq == 61
        assert again.find_command(W, "c5-0") is not None
        again.append(W, 7, records(7))  # and goes on from there
        assert again.load(W).head_tick == 7
    finally:
        again.close()


def test_a_read_only_store_reads_and_refuses_every_write(backend: StoreBackend) -> None:
    writer = backend.open()
    fill(writer, 4, (0,))
    writer.close()
    reader = backend.open(readonly=True)
    try:
        assert reader.head(W) == 4 and reader.load(W).head_tick == 4
        assert reader.find_command(W, "c1-0") is not None
        state, digest = state_at(0)
        with pytest.raises(StoreError, match="read-only"):
            reader.append(W, 5, records(5))
        with pytest.raises(StoreError, match="read-only"):
            reader.save_snapshot(W, 5, state, digest)
        with pytest.raises(StoreError, match="read-only"):
            reader.check_writable()
        assert reader.head(W) == 4
    finally:
        reader.close()


# -- the runtime over every store: recovery and pruning ------------------------------------


def test_recovery_reproduces_state_after_clean_stop(backend: StoreBackend) -> None:
    url, schema = backend.url, backend.schema
    rt = make_runtime(url, schema)
    rt.start()
    ids = run_ticks(rt, 37)
    tick, expected = rt.world.tick, rt.world.state_hash()
    last_seq = rt.bus.last_seq
    assert rt.stop()

    rt2 = make_runtime(url, schema)
    rt2.start()
    try:
        assert rt2.world.tick == tick == 37
        assert rt2.world.state_hash() == expected
        assert rt2.snapshot.tick == tick
        assert rt2.bus.last_seq == last_seq  # sequence numbers continue
        assert rt2.submit("kick", {"i": 1, "dv": 1.0}).command.seq == last_seq + 1
        assert rt2.command_status(ids[0]) == rt2.store.find_command(  # type: ignore[union-attr]
            "drift", ids[0]
        )
        found = rt2.command_status(ids[0])
        assert found is not None and found["status"] == "applied" and found["tick"] == 1
        rejected = [rt2.store.find_command("drift", i) for i in ids]  # type: ignore[union-attr]
        assert any(r is not None and r["status"] == "rejected" for r in rejected)
        assert rt2.store.find_command("drift", "nope") is None  # type: ignore[union-attr]
    finally:
        rt2.stop()


def test_recovery_replays_the_journal_past_the_last_snapshot(backend: StoreBackend) -> None:
    """Without a final snapshot (as after a crash) the journal brings back every tick."""
    url, schema = backend.url, backend.schema
    rt = make_runtime(url, schema, snapshot_every=10)
    rt.start()
    assert rt.durability is not None
    for n in (10, 10, 6):  # let each due snapshot finish (a busy writer defers the next one)
        run_ticks(rt, n)
        assert rt.durability.drain(10)
    tick, expected = rt.world.tick, rt.world.state_hash()
    # Crash-like: end the loop and drop the lease without stop()'s final snapshot.
    rt.ticker.stop()
    rt.durability.close()
    rt.lease.release()

    store = backend.open(readonly=True)
    snaps = [s.tick for s in store.snapshots("drift")]
    store.close()
    assert max(snaps) == 20 and tick == 26

    rt2 = make_runtime(url, schema)
    rt2.start()
    try:
        assert rt2.durability is not None and rt2.durability.last_recovery is not None
        rec = rt2.durability.last_recovery
        assert (rec.snapshot_tick, rec.tick, rec.ticks) == (20, 26, 6)
        assert rec.hashes_checked >= 2  # the snapshot's and tick 25's
        assert rt2.world.state_hash() == expected
    finally:
        rt2.stop()


def test_pruning_keeps_what_restore_needs(backend: StoreBackend) -> None:
    url, schema = backend.url, backend.schema
    rt = make_runtime(url, schema, snapshot_every=10, retention_ticks=25, hash_every=0)
    hashes: dict[int, str] = {0: rt.world.state_hash()}
    rt.add_plugin(
        TickListener(lambda report: hashes.__setitem__(report.tick, rt.world.state_hash()))
    )
    rt.start()
    for _ in range(8):
        run_ticks(rt, 10)
        assert rt.durability is not None and rt.durability.drain(10)
    assert rt.stop()

    store = backend.open(readonly=True)
    try:
        snaps = [s.tick for s in store.snapshots("drift")]
        first, head, _count = store.journal_range("drift")
        # latest 80, previous 70, base = newest snapshot <= min(70, 80 - 25) = 50
        assert snaps == [50, 60, 70, 80]
        assert head == 80 and first == 51
        for tick in (50, 51, 63, 79, 80):
            world = Drift()
            replay(world, store.load("drift", upto=tick))
            assert world.tick == tick and world.state_hash() == hashes[tick]
        with pytest.raises(StoreError, match="no snapshot at or before tick 49"):
            store.load("drift", upto=49)
        with pytest.raises(StoreError, match="after the last journaled tick"):
            store.load("drift", upto=81)
    finally:
        store.close()
