"""A bounded stop with a store: the final snapshot is best effort within the bound.

The journal holds every acknowledged tick, so a final snapshot that cannot be written in time
(a locked or slow store) is abandoned rather than breaking the shutdown bound; the next start
replays the journal to the same state. A loop stuck in journal retries is abandoned too, and
must never write (or acknowledge) after the stop has closed the store and released the lease.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.durability_app import Drift
from tests.support import wait_for
from tests.test_durability import Load, server_env, start_server
from worldloop import WorldRuntime
from worldloop.errors import StoreError
from worldloop.store import SqlStore

pytestmark = pytest.mark.slow

BOUND = 1.0
EXIT_SLACK = 2.0
"""Interpreter and server teardown after the stop returned (generous: the box is shared)."""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_with_a_locked_store_exits_within_the_bound_and_loses_nothing(
    tmp_path: Path, sig: signal.Signals
) -> None:
    db = tmp_path / "instance" / "worldloop.db"
    url = f"sqlite:///{db}"
    env = server_env(
        tmp_path,
        url,
        None,
        WORLDLOOP_SNAPSHOT_EVERY="100000",
        WORLDLOOP_RECOVERY_SECONDS="0",  # no interim snapshots either: only tick 0's exists
        WORLDLOOP_SHUTDOWN_TIMEOUT=str(BOUND),
        DRIFT_PARTICLES="200000",  # a 3 MB state: the final snapshot has real work to do
    )
    first = start_server(tmp_path, env, "first")
    try:
        with Load(first, seed=3) as load:
            wait_for(lambda: load.count() >= 30, 30, what="30 acknowledgements")
        first.signal_group(signal.SIGKILL)  # no final snapshot: only tick 0's exists
        first.proc.wait(10)
    finally:
        first.stop()
    acked = load.acked

    paused = {**env, "WORLDLOOP_START_PAUSED": "true"}
    second = start_server(tmp_path, paused, "second")
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        status, _, state = second.get("/test/state")
        assert status == 200 and state["tick"] >= max(t for t, _, _ in acked.values())
        blocker.execute("BEGIN IMMEDIATE")  # the final snapshot cannot be written now
        started = time.monotonic()
        second.proc.send_signal(sig)
        second.proc.wait(BOUND + EXIT_SLACK + 10)
        took = time.monotonic() - started
        assert took < BOUND + EXIT_SLACK, f"stop took {took:.2f}s:\n{second.log}"
        assert "did not finish within" in second.log, second.log
        assert f"stopped at tick {state['tick']}" in second.log
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        second.stop()

    store = SqlStore(url, readonly=True)
    try:
        assert [s.tick for s in store.snapshots("drift")] == [0]  # nothing half-written
        for cid, (tick, _payload, status_) in acked.items():
            found = store.find_command("drift", cid)
            assert found is not None, f"acknowledged command {cid} lost"
            assert found["tick"] == tick and found["status"] == status_
    finally:
        store.close()
    third = start_server(tmp_path, paused, "third")
    try:
        assert third.get("/test/state")[2] == state  # the journal brought it all back
    finally:
        third.stop()
    assert "final snapshot at tick" in third.log  # unlocked, the final snapshot fits the bound


def test_a_loop_stuck_in_journal_retries_is_abandoned_and_never_writes_after_stop(
    tmp_path: Path,
) -> None:
    db = tmp_path / "w.db"
    store = SqlStore(f"sqlite:///{db}", busy_timeout=0.05)
    rt = WorldRuntime(Drift(particles=8), store=store, start_paused=True, store_retry_seconds=30.0)
    rt.start()
    done = rt.submit("kick", {"i": 1, "dv": 1.0})
    rt.step(1)
    assert done.status == "applied"
    durable = rt.world.tick

    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        pending = rt.submit("kick", {"i": 2, "dv": 1.0})
        rt.ticker.step(1)  # the loop thread now retries the journal write for up to 30 s
        dur = rt.durability
        assert dur is not None
        wait_for(lambda: dur.journal_retries > 0, 5, what="a failed journal write")
        started = time.monotonic()
        assert rt.stop(timeout=0.5) is False  # the loop could not finish: abandoned
        assert time.monotonic() - started < 1.5
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # The store is writable again. The abandoned loop must give up, not write after the stop.
    assert pending.wait(5)  # resolved by the abandoned loop as it gives up
    assert pending.status == "rejected"
    assert pending.outcome is not None and pending.outcome.error_code == "store_unavailable"
    check = SqlStore(f"sqlite:///{db}", readonly=True)
    try:
        assert check.head("drift") == durable
        assert check.find_command("drift", pending.id) is None
    finally:
        check.close()


class SlowDrift(Drift):
    """Drift whose validation (in the caller's thread) can be held at a gate."""

    def __init__(self) -> None:
        super().__init__(particles=8)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.hold = False

    def validate(self, type_: str, payload: Mapping[str, Any], actor: str | None) -> dict[str, Any]:
        if self.hold:
            self.entered.set()
            assert self.gate.wait(10)
        return super().validate(type_, payload, actor)


def test_a_command_validated_while_the_journal_halts_is_refused_not_stranded(
    tmp_path: Path,
) -> None:
    """submit() checked 'not halted', then the loop halted and drained the queue, then the
    command was queued: in a paused world nothing would ever resolve it. It is refused at once."""
    db = tmp_path / "w.db"
    world = SlowDrift()
    rt = WorldRuntime(
        world,
        store=SqlStore(f"sqlite:///{db}", busy_timeout=0.05),
        start_paused=True,
        store_retry_seconds=0.2,
    )
    rt.start()
    try:
        world.hold = True
        got: list[object] = []
        submitter = threading.Thread(target=lambda: got.append(_submit_or_error(rt)), daemon=True)
        submitter.start()
        assert world.entered.wait(5)  # past the 'halted?' check, inside validation
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            rt.step(1)  # the journal write fails for good: the world halts
            assert rt.degraded is not None
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        world.gate.set()
        submitter.join(5)
        assert len(got) == 1 and isinstance(got[0], StoreError), got
        assert rt.queue_depth == 0  # nothing left waiting for a tick that will never run
    finally:
        rt.stop()


def _submit_or_error(rt: WorldRuntime) -> object:
    try:
        return rt.submit("kick", {"i": 1, "dv": 1.0})
    except StoreError as exc:
        return exc
