"""Scheduled jobs on a driven clock: schedules, world jobs as journaled commands, replay,
background jobs in the pool, misfire policies, concurrency, timeouts, errors, pause/resume,
and exactly-once per slot across a restart."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support import wait_for
from worldloop import (
    Command,
    ConfigError,
    Cron,
    Every,
    EveryTicks,
    JobContext,
    JobScheduler,
    ManualClock,
    System,
    World,
    WorldRuntime,
)
from worldloop.errors import CommandInvalid
from worldloop.jobs import JobBusy, JobNotFound, Misfire, load_config_jobs, make_spec
from worldloop.lease import MemoryLease
from worldloop.plugins import TickListener
from worldloop.snapshot import Snapshot
from worldloop.world import State

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a whole multiple of 10 s and of 60 s


class FakeTime:
    """A hand-driven clock usable as the scheduler's wall or monotonic time."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Tally(World):
    """A tiny world whose state is a list of job-run records and a counter."""

    name = "tally"

    def __init__(self) -> None:
        super().__init__()
        self.events: list[list[Any]] = []
        self.counter = 0

    def validate(self, type_: str, payload: Mapping[str, Any], actor: str | None) -> dict[str, Any]:
        if type_ != "inc":
            raise CommandInvalid(f"unknown command {type_!r}")
        return {}

    def apply(self, command: Command) -> Any:
        self.counter += 1
        return self.counter

    def systems(self) -> Sequence[System]:
        return (System("count", self._count),)

    def _count(self) -> None:
        self.counter += 1

    def get_state(self) -> State:
        return {"events": json.dumps(self.events), "counter": self.counter}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.events = json.loads(str(state["events"]))
        self.counter = int(state["counter"])  # type: ignore[arg-type]

    def view(self) -> dict[str, Any]:
        return {"counter": self.counter, "runs": len(self.events)}


def record(world: World, ctx: JobContext) -> dict[str, Any]:
    """A world job: appends what it was told to the world state (deterministic)."""
    assert isinstance(world, Tally)
    world.events.append([ctx.name, ctx.slot, ctx.tick, ctx.missed, ctx.manual])
    world.counter += 100
    return {"n": len(world.events)}


class Harness:
    """A runtime paused on a ManualClock, a scheduler on hand-driven wall and monotonic time."""

    def __init__(self, setup: Callable[[JobScheduler], None], world: Tally | None = None) -> None:
        self.wall = FakeTime(T0 + 0.5)  # just after a slot: the first look runs nothing
        self.mono = FakeTime(0.0)
        self.world = world or Tally()
        self.jobs = JobScheduler(wall=self.wall, monotonic=self.mono, workers=2)
        setup(self.jobs)
        self.rt = WorldRuntime(
            self.world,
            clock=ManualClock(),
            start_paused=True,
            lease=MemoryLease(f"tally-{uuid.uuid4().hex}"),
        )
        self.journal: list[tuple[int, list[dict[str, Any]]]] = []
        self.rt.add_plugin(
            TickListener(
                lambda r: self.journal.append((r.tick, [o.command.to_record() for o in r.outcomes]))
            )
        )
        self.jobs.attach(self.rt)
        self.rt.start()

    def step(self, n: int = 1) -> int:
        return self.rt.step(n)

    def status(self, name: str) -> dict[str, Any]:
        return self.jobs.status(name)

    def stop(self) -> None:
        self.rt.stop()


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(setup: Callable[[JobScheduler], None], world: Tally | None = None) -> Harness:
        h = Harness(setup, world)
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()


# -- schedules ------------------------------------------------------------------------------------


def test_interval_slots_are_aligned_to_the_epoch() -> None:
    s = Every(10)
    assert s.next_after(T0 + 3.2) == T0 + 10
    assert s.next_after(T0) == T0 + 10
    assert s.latest_at_or_before(T0) == T0
    assert s.latest_at_or_before(T0 + 9.99) == T0
    assert Every(0.25).next_after(1.0) == 1.25


def test_tick_slots() -> None:
    s = EveryTicks(5)
    assert s.next_after(0) == 5
    assert s.next_after(-1) == 0
    assert s.latest_at_or_before(14) == 10


def test_cron_slots_follow_the_time_zone_across_dst() -> None:
    paris = Cron("30 2 * * *", "Europe/Paris")
    # 2027-03-28 is the spring-forward day in Paris: 02:30 local does not exist that night.
    before = datetime(2027, 3, 27, 12, 0, tzinfo=UTC).timestamp()
    first = paris.next_after(before)
    # croniter runs the missing 02:30 at the jump (03:00 CEST = 01:00 UTC), once that day.
    assert datetime.fromtimestamp(first, UTC) == datetime(2027, 3, 28, 1, 0, tzinfo=UTC)
    second = paris.next_after(first)
    assert datetime.fromtimestamp(second, UTC) == datetime(2027, 3, 29, 0, 30, tzinfo=UTC)
    # In summer 02:30 Paris is 00:30 UTC; in winter it is 01:30 UTC.
    summer = paris.next_after(datetime(2027, 7, 1, tzinfo=UTC).timestamp())
    winter = paris.next_after(datetime(2027, 12, 1, tzinfo=UTC).timestamp())
    assert datetime.fromtimestamp(summer, UTC) == datetime(2027, 7, 1, 0, 30, tzinfo=UTC)
    assert datetime.fromtimestamp(winter, UTC) == datetime(2027, 12, 1, 1, 30, tzinfo=UTC)
    assert paris.latest_at_or_before(summer) == summer
    assert paris.latest_at_or_before(summer - 1) < summer
    assert paris.next_after(summer) > summer


@pytest.mark.parametrize(
    "bad",
    [
        {"every": 0},
        {"every": -1},
        {"every_ticks": 0},
        {"cron": "not a cron"},
        {"cron": "61 * * * *"},
        {"cron": "0 3 * * *", "tz": "Mars/Olympus"},
        {"every": 5, "cron": "* * * * *"},
        {},
        {"every": 5, "misfire": "sometimes"},
        {"every": 5, "kind": "both"},
        {"every": 5, "max_concurrent": 0},
        {"every": 5, "timeout": 0},
    ],
)
def test_bad_job_options_are_config_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        make_spec("j", record, **bad)


def test_bad_job_names_and_duplicates_are_refused() -> None:
    s = JobScheduler()
    with pytest.raises(ConfigError):
        s.add(make_spec("has space", record, every=1))
    s.add(make_spec("ok", record, every=1))
    with pytest.raises(ConfigError):
        s.add(make_spec("ok", record, every=2))


def test_config_jobs_load_by_import_path() -> None:
    specs = load_config_jobs(
        [{"name": "rec", "func": "tests.test_jobs:record", "kind": "world", "every_ticks": 3}]
    )
    assert specs[0].func is record and specs[0].schedule == EveryTicks(3)
    with pytest.raises(ConfigError):
        load_config_jobs([{"func": "tests.test_jobs:nope", "every": 1}])
    with pytest.raises(ConfigError):
        load_config_jobs([{"func": "tests.test_jobs:record", "every": 1, "colour": "red"}])
    with pytest.raises(ConfigError):
        load_config_jobs({"func": "tests.test_jobs:record"})  # type: ignore[arg-type]


# -- world jobs -----------------------------------------------------------------------------------


def test_tick_interval_world_job_runs_as_a_journaled_command(harness: Any) -> None:
    h = harness(lambda s: s.job("rec", kind="world", every_ticks=5)(record))
    h.step(12)
    assert h.world.events == [["rec", 0.0, 0, 0, False], ["rec", 5.0, 5, 0, False],
                              ["rec", 10.0, 10, 0, False]]  # fmt: skip
    assert h.world.job_slots == {"rec": 10.0}
    journaled = [(tick, r["type"]) for tick, recs in h.journal for r in recs]
    assert journaled == [(1, "job:rec"), (6, "job:rec"), (11, "job:rec")]
    st = h.status("rec")
    assert st["runs"] == 3 and st["errors"] == 0
    assert st["last_slot"] == {"tick": 10} and st["next_run"] == {"tick": 15}
    assert st["last_result"]["status"] == "ok" and st["last_result"]["value"] == {"n": 3}


def test_replaying_the_journal_reaches_the_job_and_reproduces_the_state(harness: Any) -> None:
    def setup(s: JobScheduler) -> None:
        s.job("rec", kind="world", every_ticks=3)(record)
        s.job("cron", kind="world", every=10)(record)

    h = harness(setup)
    start_state = h.world.full_state()
    for _ in range(8):
        h.step(2)
        h.wall.advance(4)
    assert len(h.world.events) >= 8
    final_hash = h.world.state_hash()

    # A fresh process: new world, new scheduler with the same jobs, journal replay via step.
    fresh = Tally()
    replayer = JobScheduler()
    setup(replayer)
    replayer.bind(fresh)  # what init_app does before the runtime (and any recovery) exists
    fresh.restore(start_state)
    for _tick, records in h.journal:
        outcomes = fresh.step([Command.from_record(r) for r in records])
        assert all(o.ok for o in outcomes)
    assert fresh.events == h.world.events
    assert fresh.job_slots == h.world.job_slots
    assert fresh.state_hash() == final_hash
    # The replay did not count as runs of the replaying scheduler.
    assert replayer.status("rec")["runs"] == 0


def test_job_slots_survive_a_snapshot_restore() -> None:
    w = Tally()
    w.job_slots["a"] = 123.0
    state = w.full_state()
    other = Tally()
    other.restore(state)
    assert other.job_slots == {"a": 123.0}
    assert other.state_hash() == w.state_hash()
    other.restore(Tally().full_state())
    assert other.job_slots == {}


def test_cron_world_job_runs_at_its_time_in_its_zone(harness: Any) -> None:
    h = harness(
        lambda s: s.job("nightly", kind="world", cron="0 3 * * *", tz="Europe/Paris")(record)
    )
    # 2027-01-16 01:59:30 UTC is 02:59:30 in Paris (winter, UTC+1).
    h.wall.t = datetime(2027, 1, 16, 1, 59, 30, tzinfo=UTC).timestamp()
    h.step(3)
    assert h.world.events == []
    slot = datetime(2027, 1, 16, 2, 0, tzinfo=UTC).timestamp()
    assert h.status("nightly")["next_run"]["ts"] == slot
    assert h.status("nightly")["next_run"]["at"] == "2027-01-16T02:00:00Z"
    h.wall.advance(30.2)
    h.step(3)
    assert [e[1] for e in h.world.events] == [slot]
    h.wall.advance(3600)
    h.step(3)
    assert len(h.world.events) == 1  # once per slot


def test_world_job_error_is_logged_counted_and_the_job_stays_scheduled(
    harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def flaky(world: World, ctx: JobContext) -> None:
        calls.append(ctx.tick)
        if len(calls) == 1:
            raise RuntimeError("boom")

    h = harness(lambda s: s.job("flaky", kind="world", every_ticks=2)(flaky))
    with caplog.at_level(logging.ERROR, logger="worldloop.jobs"):
        h.step(5)
    assert calls == [0, 2, 4]
    st = h.status("flaky")
    assert st["errors"] == 1 and st["runs"] == 3
    assert st["last_result"]["status"] == "ok"
    failed = [r for r in caplog.records if "flaky" in r.getMessage()]
    assert failed and failed[0].exc_info is not None and "boom" in str(failed[0].exc_info[1])
    rejected = [o for _, recs in h.journal for o in recs if o["type"] == "job:flaky"]
    assert len(rejected) == 3  # the failed run is journaled too: its slot was consumed
    assert h.rt.rejected["job:flaky"] == 1 and h.rt.applied["job:flaky"] == 2


# -- misfire policies -----------------------------------------------------------------------------


def _missed_three(policy: str, harness: Any) -> Harness:
    h = harness(lambda s: s.job("j", kind="world", every=10, misfire=policy)(record))
    h.step()  # first look at T0: slots before now are history, not misses
    assert h.world.events == []
    h.wall.advance(35)  # slots T0+10, +20, +30 were missed; now is 5 s past the last one
    return h


def test_misfire_coalesce_runs_once_for_the_newest_slot(harness: Any) -> None:
    h = _missed_three("coalesce", harness)
    h.step(3)
    assert h.world.events == [["j", T0 + 30, 1, 2, False]]
    assert h.status("j")["skipped"] == 2


def test_misfire_skip_drops_late_slots_and_runs_the_next_on_time(harness: Any) -> None:
    h = _missed_three("skip", harness)
    h.step(3)
    assert h.world.events == []
    assert h.status("j")["skipped"] == 3
    h.wall.advance(5)  # T0+40.5: the slot T0+40 is on time (within the 1 s grace)
    h.step()
    assert [e[1] for e in h.world.events] == [T0 + 40]


def test_misfire_run_late_runs_every_missed_slot_once(harness: Any) -> None:
    h = _missed_three("run_late", harness)
    h.step(5)
    assert [e[1] for e in h.world.events] == [T0 + 10, T0 + 20, T0 + 30]
    assert h.status("j")["skipped"] == 0


def test_on_time_runs_are_not_misfires(harness: Any) -> None:
    h = harness(lambda s: s.job("j", kind="world", every=10, misfire="skip")(record))
    h.step()
    for _ in range(3):
        h.wall.advance(10)
        h.step(2)
    assert [e[1] for e in h.world.events] == [T0 + 10, T0 + 20, T0 + 30]


# -- pause, resume, run now ------------------------------------------------------------------------


def test_pause_resume_and_run_now(harness: Any) -> None:
    h = harness(lambda s: s.job("j", kind="world", every=10)(record))
    h.step()
    assert h.jobs.pause("j")["paused"] is True
    h.wall.advance(25)
    h.step(2)
    assert h.world.events == []
    assert h.jobs.status("j")["next_run"] is None
    h.jobs.resume("j")
    h.step(2)
    assert h.world.events == []  # a pause is not caught up
    h.wall.advance(5)  # T0+30
    h.step()
    assert [e[1] for e in h.world.events] == [T0 + 30]
    run = h.jobs.run_now("j")
    assert run["command_id"]
    h.step()
    assert h.world.events[-1] == ["j", None, h.world.tick - 1, 0, True]
    assert h.world.job_slots["j"] == T0 + 30  # a manual run takes no slot
    with pytest.raises(JobNotFound):
        h.jobs.pause("nope")


# -- background jobs ------------------------------------------------------------------------------


def test_background_job_runs_in_the_pool_with_the_snapshot_and_never_blocks_the_tick(
    harness: Any,
) -> None:
    release = threading.Event()
    seen: list[tuple[int, int, Any, str]] = []

    def slow(snapshot: Snapshot, ctx: JobContext) -> int:
        seen.append((snapshot.tick, ctx.tick, ctx.slot, threading.current_thread().name))
        release.wait(10)
        return int(snapshot.data["counter"])

    h = harness(lambda s: s.job("slow", every=10, misfire="skip")(slow))
    h.step()
    h.wall.advance(10)
    h.step()
    wait_for(lambda: seen, 5, what="the background run to start")
    # The job blocks, yet the world keeps ticking, and the next slot is skipped as busy.
    h.wall.advance(10)
    assert h.step(5) == 7
    st = h.status("slow")
    assert st["running"] == 1 and st["skipped"] == 1 and st["runs"] == 0
    release.set()
    wait_for(lambda: h.status("slow")["runs"] == 1, 5, what="the run to finish")
    snap_tick, ctx_tick, slot, thread = seen[0]
    assert slot == T0 + 10 and thread.startswith("worldloop-job")
    assert snap_tick == ctx_tick + 1  # the snapshot of the tick that claimed the slot
    assert h.status("slow")["last_result"]["status"] == "ok"
    # The claim is journaled and the slot recorded in world state.
    assert h.world.job_slots["slow"] == T0 + 10
    assert [r["type"] for _, recs in h.journal for r in recs] == ["job:slow"]


def test_background_run_late_waits_for_the_busy_run(harness: Any) -> None:
    release = threading.Event()
    slots: list[Any] = []

    def slow(snapshot: Snapshot, ctx: JobContext) -> None:
        slots.append(ctx.slot)
        release.wait(10)

    h = harness(lambda s: s.job("slow", every=10, misfire="run_late")(slow))
    h.step()
    h.wall.advance(20)
    h.step(3)
    wait_for(lambda: slots == [T0 + 10], 5)
    h.step(3)
    assert slots == [T0 + 10]  # the next slot waits, it is not dropped
    release.set()
    wait_for(lambda: h.status("slow")["runs"] == 1, 5)
    h.step()
    wait_for(lambda: h.status("slow")["runs"] == 2, 5)
    assert slots == [T0 + 10, T0 + 20]


def test_background_timeout_is_counted_and_the_run_told_to_cancel(harness: Any) -> None:
    cancelled: list[bool] = []

    def hang(snapshot: Snapshot, ctx: JobContext) -> None:
        cancelled.append(ctx.cancelled.wait(10))

    h = harness(lambda s: s.job("hang", every=10, timeout=5)(hang))
    h.step()
    h.wall.advance(10)
    h.step()
    wait_for(lambda: h.status("hang")["running"] == 1, 5)
    h.mono.advance(4)
    h.step()
    assert h.status("hang")["timeouts"] == 0
    h.mono.advance(2)
    h.step()
    st = h.status("hang")
    assert st["timeouts"] == 1 and st["errors"] == 1
    assert st["last_result"]["status"] == "timeout"
    wait_for(lambda: cancelled == [True], 5, what="the job to see its cancel flag")
    wait_for(lambda: h.status("hang")["running"] == 0, 5)
    assert h.status("hang")["runs"] == 1  # the late finish is not counted again


def test_background_error_is_logged_counted_and_the_job_stays_scheduled(
    harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(snapshot: Snapshot, ctx: JobContext) -> None:
        raise ValueError("no disk")

    h = harness(lambda s: s.job("broken", every=10)(broken))
    h.step()
    with caplog.at_level(logging.ERROR, logger="worldloop.jobs"):
        for i in (1, 2):
            h.wall.advance(10)
            h.step()
            wait_for(lambda i=i: h.status("broken")["errors"] == i, 5)
    st = h.status("broken")
    assert st["runs"] == 2 and "no disk" in st["last_result"]["error"]
    assert any(r.exc_info and "no disk" in str(r.exc_info[1]) for r in caplog.records)


def test_background_run_now_respects_max_concurrent(harness: Any) -> None:
    release = threading.Event()
    h = harness(
        lambda s: s.job("bg", every=3600, max_concurrent=2)(lambda snap, ctx: release.wait(10))
    )
    h.step()
    h.jobs.run_now("bg")
    h.jobs.run_now("bg")
    with pytest.raises(JobBusy):
        h.jobs.run_now("bg")
    release.set()
    wait_for(lambda: h.status("bg")["runs"] == 2, 5)


# -- exactly once per slot ------------------------------------------------------------------------


def test_a_restarted_world_does_not_rerun_a_slot(harness: Any) -> None:
    bg_slots: list[Any] = []

    def setup(s: JobScheduler) -> None:
        s.job("w", kind="world", every=10, misfire="coalesce")(record)
        s.job("bg", every=10, misfire="coalesce")(lambda snap, ctx: bg_slots.append(ctx.slot))

    h = harness(setup)
    h.step()
    h.wall.advance(10)
    h.step()
    wait_for(lambda: bg_slots == [T0 + 10], 5)
    state = h.world.full_state()
    h.stop()

    # A successor whose clock is a little behind (failover to another machine): the slot
    # T0+10 comes round again on its clock, but the world state says it already ran.
    world2 = Tally()
    world2.restore(state)
    h2 = harness(setup, world2)
    h2.wall.t = T0 + 9.7
    h2.step()
    h2.wall.advance(0.5)
    h2.step(3)
    assert [e[1] for e in world2.events] == [T0 + 10]
    assert bg_slots == [T0 + 10]
    h2.stop()

    # A successor after downtime: the slots it missed (T0+20, T0+30) coalesce into one run.
    world3 = Tally()
    world3.restore(state)
    h3 = harness(setup, world3)
    h3.wall.t = T0 + 35.5
    h3.step(3)
    wait_for(lambda: len(bg_slots) == 2, 5)
    assert [(e[1], e[3]) for e in world3.events] == [(T0 + 10, 0), (T0 + 30, 1)]  # (slot, missed)
    assert bg_slots == [T0 + 10, T0 + 30]
    assert h3.status("w")["skipped"] == 1


def test_a_duplicate_claim_for_a_slot_is_rejected(harness: Any) -> None:
    h = harness(lambda s: s.job("w", kind="world", every_ticks=100)(record))
    h.step()
    assert h.world.job_slots == {"w": 0.0}
    payload = {"slot": 0.0, "tick": 0, "scheduled_at": T0, "missed": 0, "manual": False}
    ticket = h.rt.bus.put("job:w", payload)
    h.step()
    assert ticket.outcome is not None and not ticket.outcome.ok
    assert ticket.outcome.error_code == "command_rejected"
    assert len(h.world.events) == 1


def test_only_the_running_world_schedules(harness: Any) -> None:
    """A scheduler whose runtime never started (no lease) runs nothing and refuses run-now."""
    s = JobScheduler(wall=FakeTime(T0))
    s.job("w", kind="world", every_ticks=1)(record)
    rt = WorldRuntime(Tally(), lease=MemoryLease(f"idle-{uuid.uuid4().hex}"))
    s.attach(rt)
    from worldloop.errors import WorldNotRunning

    with pytest.raises(WorldNotRunning):
        s.run_now("w")
    assert s.status("w")["runs"] == 0


def test_misfire_enum_values_are_the_documented_names() -> None:
    assert {m.value for m in Misfire} == {"run_late", "skip", "coalesce"}
