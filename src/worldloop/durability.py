"""Durability for a running world: journal every tick, snapshot now and then, recover on start.

The runtime calls :meth:`Durability.record` on the loop thread after ``world.step`` and before
it publishes the tick or acknowledges its commands, so nothing is reported applied before its
journal write has committed. Snapshots are copied on the loop thread (a memcpy of the arrays)
and encoded, hashed and written by one background writer thread, so a large world does not
stall the tick while its snapshot is written.

Journal failure policy: a failed write is retried with backoff for up to ``retry_seconds``
(the loop waits: ticks stall, nothing is lost or acknowledged meanwhile). If it still fails,
the runtime halts: the tick's commands are refused (never acknowledged), no further ticks run,
no snapshot is written (the in-memory world is now ahead of the journal), and the runtime
reports itself degraded with the reason. A restart recovers the last durable tick.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from .commands import Outcome
from .config import SNAPSHOT_WRITE_SHARE
from .errors import StoreError, WorldFenced
from .progress import ReplayLog
from .replay import ReplayResult, copy_state, replay
from .store.base import Recovery, Store, journal_record
from .world import World, hash_state

__all__ = ["Durability", "ReplayResult", "Sequencer", "copy_state", "replay", "replay_cost"]

log = logging.getLogger("worldloop.durability")

WRITER_IDLE_SECONDS = 2.0
"""A snapshot writer with nothing to write for this long exits; the next snapshot starts one."""

StoreEvent = Callable[[str, int, float], None]
"""Called with (world name, seconds) after a journal append or a snapshot save (metrics)."""


def replay_cost(wall: float, cpu: float) -> float:
    """What replaying a tick would cost a restart, from what its step took: the CPU time the
    process spent meanwhile (``time.process_time``), capped at the step's wall time.

    The wall time alone also counts the waits for a core and for the GIL, which a loaded host
    stretches and a restart does not pay: paced by it, interim snapshots came several times as
    often under load as without (every ~10 ticks instead of ~40 for the 100k meadow), each a
    7 MB burst of store I/O that the ticks' journal commits then waited behind, starting the
    next ticks a period late. Process CPU time counts every thread a parallel step uses; capped
    at the wall time, the process's other threads running meanwhile never make it more.
    """
    return max(0.0, min(wall, cpu))


class Sequencer(Protocol):
    """Numbers commands (a bus, or a bare CommandQueue); told where the journal left off."""

    def set_last_seq(self, seq: int) -> None: ...


class Durability:
    """The runtime's side of the store: recovery, journaling, snapshots and their writer."""

    def __init__(
        self,
        store: Store,
        *,
        snapshot_every: int = 1000,
        hash_every: int = 100,
        retention_ticks: int = 3000,
        retry_seconds: float = 5.0,
        recovery_seconds: float = 0.25,
        write_share: float = SNAPSHOT_WRITE_SHARE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.clock = clock
        """Times the recovery progress log (injectable for tests)."""
        self.snapshot_every = max(0, int(snapshot_every))
        self.recovery_seconds = max(0.0, float(recovery_seconds))
        """Replay bound: a snapshot is also due once the ticks since the last one took this many
        seconds of stepping (0: only every ``snapshot_every`` ticks). A restart replays about
        that much, whatever the world's size (or the write time / ``write_share`` when that is
        longer); these interim snapshots are pruned as soon as two newer ones exist, so the
        store does not grow with them."""
        self.write_share = min(1.0, max(1e-3, float(write_share)))
        """See worldloop.config.SNAPSHOT_WRITE_SHARE."""
        self._interim: collections.deque[int] = collections.deque(maxlen=16)
        """Ticks of the interim snapshots this process wrote (the writer prunes them)."""
        self.hash_every = max(0, int(hash_every))
        self.retention_ticks = max(0, int(retention_ticks))
        self.retry_seconds = float(retry_seconds)
        self.failed: str | None = None
        """Why journaling stopped for good (None while healthy)."""
        self.snapshot_errors = 0
        self.journal_retries = 0
        """Journal write attempts that failed and were retried (a struggling store shows here)."""
        self.snapshots_written = 0
        self.snapshots_skipped = 0
        self.last_snapshot_tick: int | None = None
        self.last_recovery: ReplayResult | None = None
        self._pending = False
        self._stepped = 0.0
        """Seconds of stepping since the last snapshot handed to the writer (loop thread)."""
        self._write_seconds = 0.0
        """What the last snapshot took the writer: interim snapshots wait for that much
        stepping divided by ``write_share``."""
        self._closed = False
        self._write_lock = threading.Lock()
        self._jobs: queue.Queue[tuple[str, int, dict[str, Any], str] | None] = queue.Queue(
            maxsize=1
        )
        self._busy = threading.Event()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self.hand_over = False
        """Set when the world moves to another runner while this process goes on (the Redis
        mode's rebalance): :meth:`final_snapshot` then skips a snapshot that would take
        longer to write than its ticks take to replay, since the next owner waits on it."""
        self.notify: StoreEvent | None = None
        """Told ``("journal_written" | "snapshot_saved", tick, seconds)`` after each durable
        write (loop thread, or the snapshot writer); the runtime forwards it to its plug-ins."""

    # -- start ------------------------------------------------------------------------------

    def recover(self, world: World, commands: Sequencer) -> ReplayResult | None:
        """Bring ``world`` to its last durable tick (or store its initial state if new), and
        continue command numbering after the journal's last sequence number."""
        started = time.perf_counter()
        try:
            log.info("world %r: loading its last snapshot and journal from the store", world.name)
            reading = self.clock()
            rec = self.store.load(world.name)
            loaded_in = self.clock() - reading
            if rec.state is None:
                world.outbox.begin()  # a new world: its task ids are its own (worldloop.outbox)
                state = copy_state(world)
                saving = time.perf_counter()
                self.store.save_snapshot(world.name, world.tick, state, hash_state(state))
                self._tell("snapshot_saved", world.tick, saving)
                self.last_snapshot_tick = world.tick
                log.info("world %r: new store, initial snapshot at tick %d", world.name, world.tick)
                return None
            progress = ReplayLog(
                world.name, clock=self.clock, snapshot_tick=rec.snapshot_tick, loaded_in=loaded_in
            )
            result = replay(world, rec, progress=progress)
        except StoreError as exc:
            snaps = self.store.snapshots(world.name)
            if not snaps:
                raise
            rec, result = self._recover_from_older(world, snaps[-1].tick, exc)
        commands.set_last_seq(rec.last_seq)
        self.last_snapshot_tick = rec.snapshot_tick
        self.last_recovery = result
        self._stepped = result.seconds  # what the next restart would replay, so far
        log.info(
            "world %r recovered at tick %d from the snapshot of tick %d + %d journaled ticks "
            "(%d commands, %d hashes checked) in %.3f s",
            world.name,
            result.tick,
            result.snapshot_tick,
            result.ticks,
            result.commands,
            result.hashes_checked,
            time.perf_counter() - started,
        )
        return result

    def _recover_from_older(
        self, world: World, failed_tick: int, error: StoreError
    ) -> tuple[Recovery, ReplayResult]:
        """The latest snapshot cannot be used: rebuild from an older one plus more journal.

        Only snapshots the journal still reaches are tried; the recorded hashes are checked
        as always. If none works, the original error is raised.
        """
        for info in reversed(self.store.snapshots(world.name)):
            if info.tick >= failed_tick:
                continue
            try:
                rec = self.store.load(world.name, snapshot_tick=info.tick)
                progress = ReplayLog(world.name, clock=self.clock, snapshot_tick=info.tick)
                result = replay(world, rec, progress=progress)
            except StoreError as exc:
                log.error(
                    "world %r: snapshot of tick %d unusable too: %s",
                    world.name,
                    info.tick,
                    exc.message,
                )
                continue
            log.error(
                "world %r: the latest snapshot was unusable (%s); recovered from the snapshot "
                "of tick %d and the journal instead",
                world.name,
                error.message,
                info.tick,
            )
            return rec, result
        raise error

    # -- every tick ---------------------------------------------------------------------------

    def record(self, world: World, outcomes: Sequence[Outcome]) -> None:
        """Journal the tick ``world`` just completed; StoreError if it cannot be made durable."""
        tick = world.tick
        records = [journal_record(o) for o in outcomes]
        state_hash = world.state_hash() if self.hash_every and tick % self.hash_every == 0 else None
        started = time.perf_counter()
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.02
        attempt = 0
        while True:
            attempt += 1
            # One attempt at a time under the write lock, which close() takes: once the store
            # is closed (the stop gave up on this loop) no attempt starts, and none is in flight.
            with self._write_lock:
                if self._closed:
                    self.failed = f"journal write for tick {tick} abandoned: the store was closed"
                    raise StoreError(self.failed, details={"tick": tick})
                try:
                    self.store.append(world.name, tick, records, state_hash)
                    error: StoreError | None = None
                except WorldFenced as exc:  # another owner: retrying or probing the head
                    self.failed = exc.message  # (theirs) could only acknowledge wrongly
                    raise
                except StoreError as exc:
                    error = exc
                if error is None or self._committed_anyway(world.name, tick):
                    self._tell("journal_written", tick, started)
                    return
            if time.monotonic() + delay > deadline:
                self.failed = (
                    f"journal write for tick {tick} failed after {attempt} attempts: "
                    f"{error.message}"
                )
                raise StoreError(self.failed, details={"tick": tick}) from error
            self.journal_retries += 1
            log.warning(
                "world %r: journal write for tick %d failed (attempt %d), retrying: %s",
                world.name,
                tick,
                attempt,
                error.message,
            )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _tell(self, event: str, tick: int, started: float) -> None:
        """Report a durable write and its time; failures are contained by the receiver."""
        if self.notify is not None:
            self.notify(event, tick, time.perf_counter() - started)

    def _committed_anyway(self, name: str, tick: int) -> bool:
        """After an error, did the commit land anyway (e.g. the connection died after it)? With
        an epoch fence (scale-out), only while this owner's epoch is current: a head moved by a
        newer owner is not this write's commit."""
        if self._closed:
            return False
        fence = getattr(self.store, "fence", None)
        try:
            head = self.store.head(name)
            mine = fence is None or fence.owns(name)
        except StoreError:
            return False
        return head is not None and head >= tick and mine

    def snapshot_due(self, world: World, step_seconds: float = 0.0) -> bool:
        """Whether ``after_tick(world, step_seconds)`` would ask for a snapshot (no side effect):
        every ``snapshot_every`` ticks, or once ``recovery_seconds`` of stepping (and at least
        the last snapshot's write time / ``write_share``) has built up since the last one."""
        if not self.snapshot_every or self.failed:
            return False
        if self._pending or world.tick % self.snapshot_every == 0:
            return True
        budget = self.recovery_seconds
        if not budget:
            return False
        return self._stepped + step_seconds >= max(budget, self._write_seconds / self.write_share)

    def after_tick(self, world: World, step_seconds: float = 0.0) -> None:
        """Hand a snapshot to the writer when one is due (copy now, write in the background).

        ``step_seconds`` is what a restart would spend replaying the tick (the runtime gives
        :func:`replay_cost` of its step), and so paces the snapshots that bound that replay.
        """
        if not self.snapshot_every or self.failed:
            return
        if self.snapshot_due(world, step_seconds):
            self._pending = True
        self._stepped += step_seconds
        if not self._pending:
            return
        if self._busy.is_set():
            if world.tick % self.snapshot_every == 0:
                self.snapshots_skipped += 1
            return
        self._pending = False
        self._stepped = 0.0
        interim = world.tick % self.snapshot_every != 0
        self._hand((world.name, world.tick, copy_state(world), "interim" if interim else ""))

    # -- stop ---------------------------------------------------------------------------------

    def final_snapshot(self, world: World, timeout: float = 30.0) -> bool:
        """Snapshot the stopped world, best effort within ``timeout`` s; True if written.

        Best effort because the stop is bounded (issue 2) and the journal already holds every
        durable tick: a final snapshot that cannot finish in time only makes the next start
        replay a little more. The write runs on the writer thread, so a slow store cannot hold
        the stopping thread past its bound; a write still running at exit is abandoned (its
        transaction never commits, so the store keeps its last complete snapshot).
        """
        deadline = time.monotonic() + max(0.0, timeout)
        if self.failed:
            log.error(
                "world %r: no final snapshot, the journal failed: %s", world.name, self.failed
            )
            return False
        if not self.drain(timeout):
            log.warning(
                "world %r: no final snapshot: the writer was still busy after %.3g s "
                "(the journal holds every tick up to %d)",
                world.name,
                timeout,
                world.tick,
            )
            return False
        if self.last_snapshot_tick == world.tick:
            return True
        if self.hand_over and self._stepped < self._write_seconds:
            log.info(
                "world %r: no final snapshot for the hand-over: replaying %.3f s of ticks "
                "since tick %s costs the next owner less than writing one (%.3f s)",
                world.name,
                self._stepped,
                self.last_snapshot_tick,
                self._write_seconds,
            )
            return False
        self._hand((world.name, world.tick, copy_state(world), "final"))
        if self.drain(deadline - time.monotonic()) and self.last_snapshot_tick == world.tick:
            return True
        if self._busy.is_set():
            log.warning(
                "world %r: the final snapshot of tick %d did not finish within the %.3g s "
                "shutdown bound; abandoned (the journal holds every tick, recovery replays it)",
                world.name,
                world.tick,
                timeout,
            )
        return False

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until the writer has nothing in hand; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._busy.is_set():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 30.0) -> bool:
        """Stop journaling and snapshots and close the store within ``timeout`` s.

        No journal write starts after this, and one in flight is waited for (within the
        bound), so an abandoned loop never writes after the lease is released. False if a
        write was still in flight: the store is then left open to it (closing it mid-write
        helps nobody) and the process exit ends it.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        self._closed = True
        quiet = self._write_lock.acquire(timeout=max(0.0, timeout))
        try:
            idle = self.drain(deadline - time.monotonic())
            with self._writer_lock:
                writer, self._writer = self._writer, None
            if writer is not None:
                with contextlib.suppress(queue.Full):
                    self._jobs.put_nowait(None)
                writer.join(max(0.0, deadline - time.monotonic()))
                idle = idle and not writer.is_alive()
            if not (quiet and idle):
                log.warning(
                    "store close: a %s write was still in flight after %.3g s; the store is "
                    "left to it and to process exit",
                    "journal" if not quiet else "snapshot",
                    timeout,
                )
                return False
            self.store.close()
            return True
        finally:
            if quiet:
                self._write_lock.release()

    # -- the writer -----------------------------------------------------------------------------

    def _hand(self, job: tuple[str, int, dict[str, Any], str]) -> None:
        """Give the writer a job (the queue is empty: ``_busy`` was clear) and mark it busy,
        starting it if none is running. Under the writer lock, so an idle writer never exits
        with the job queued."""
        self._busy.set()
        with self._writer_lock:
            self._jobs.put(job)
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(
                    target=self._write_loop, name="worldloop-snapshot-writer", daemon=True
                )
                self._writer.start()

    def _write_loop(self) -> None:
        """Write snapshots as they come; exit after WRITER_IDLE_SECONDS without one, so a
        process of many worlds keeps a writer only for those writing now, not one per world."""
        while True:
            try:
                job = self._jobs.get(timeout=WRITER_IDLE_SECONDS)
            except queue.Empty:
                with self._writer_lock:
                    if self._jobs.empty():
                        if self._writer is threading.current_thread():
                            self._writer = None
                        return
                continue
            if job is None:
                return
            name, tick, state, kind = job
            try:
                self._write(name, tick, state, kind=kind)
            except Exception:
                self.snapshot_errors += 1
                log.exception("world %r: snapshot of tick %d failed", name, tick)
            finally:
                self._busy.clear()

    def _write(self, name: str, tick: int, state: Mapping[str, Any], *, kind: str) -> None:
        """Save one snapshot; ``kind`` is ``""`` (periodic), ``"interim"`` or ``"final"``."""
        started = time.perf_counter()
        self.store.save_snapshot(name, tick, state, hash_state(state))
        self._write_seconds = time.perf_counter() - started
        self._tell("snapshot_saved", tick, started)
        self.last_snapshot_tick = tick
        self.snapshots_written += 1
        if kind == "interim":
            self._interim.append(tick)
        if kind == "final":  # no pruning at stop: it is not needed, and the stop is bounded
            log.info(
                "world %r: final snapshot at tick %d written in %.3f s",
                name,
                tick,
                time.perf_counter() - started,
            )
            return
        self.store.prune(name, self.retention_ticks, interim=set(self._interim))
        log.info(
            "world %r: %ssnapshot of tick %d written in %.3f s",
            name,
            "interim " if kind else "",
            tick,
            time.perf_counter() - started,
        )
