"""The Lease contract: every backend (in-process memory, file lock) gives one holder at a time,
hands over on release, waits within its bound, names the holder when it refuses, and grows its
fencing token. A holder process killed with SIGKILL frees a cross-process lease (a Redis lease
once its ttl has run out)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.redis_support import REDIS_URL, drop_prefix, require_redis
from tests.support import child_env
from worldloop.errors import WorldLockedError
from worldloop.lease import Lease, open_lease


@dataclass(frozen=True)
class LeaseBackend:
    kind: str
    url: str
    cross_process: bool
    expires: float = 0.0
    """Seconds a dead holder keeps it (a Redis lease's ttl; 0: freed at once)."""

    def open(self, world: str = "w", wait: float = 0.0) -> Lease:
        return open_lease(self.url, world, wait=wait)


@pytest.fixture(params=["memory", "file", pytest.param("redis", marks=pytest.mark.redis)])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LeaseBackend]:
    if request.param == "memory":
        yield LeaseBackend("memory", f"memory://lease-{uuid.uuid4().hex}", False)
    elif request.param == "file":
        yield LeaseBackend("file", f"file://{tmp_path / 'locks' / 'w.lock'}", True)
    else:
        require_redis()
        prefix = f"wltest-{uuid.uuid4().hex[:12]}:"
        try:
            yield LeaseBackend("redis", f"{REDIS_URL}?prefix={prefix}&ttl=1", True, 1.0)
        finally:
            drop_prefix(prefix)


@pytest.fixture
def leases(place: LeaseBackend) -> Iterator[Callable[..., Lease]]:
    """Opens leases on ``place``; every one still held is released after the test."""
    made: list[Lease] = []

    def make(world: str = "w", wait: float = 0.0) -> Lease:
        lease = place.open(world, wait)
        made.append(lease)
        return lease

    yield make
    for lease in made:
        lease.release()


def test_one_holder_at_a_time(leases: Callable[..., Lease]) -> None:
    first, second = leases(), leases()
    assert first.holder() is None and first.token == 0
    first.acquire()
    assert first.held and not second.held
    with pytest.raises(WorldLockedError) as err:
        second.acquire()
    assert "already running" in err.value.message and "'w'" in err.value.message
    holder = err.value.details["holder"]
    assert str(os.getpid()) in holder
    assert second.holder() == holder
    assert not second.held


def test_release_hands_over_and_the_token_grows(leases: Callable[..., Lease]) -> None:
    first, second = leases(), leases()
    first.acquire()
    token = first.token
    assert token >= 1
    first.acquire()  # already held: nothing changes
    assert first.token == token
    first.release()
    first.release()  # not held: a no-op
    assert not first.held and first.holder() is None
    second.acquire()
    second.release()
    first.acquire()
    assert first.token > token


def test_acquire_waits_within_its_bound_then_names_the_holder(
    leases: Callable[..., Lease],
) -> None:
    first, second = leases(), leases(wait=0.3)
    first.acquire()
    started = time.monotonic()
    with pytest.raises(WorldLockedError) as err:
        second.acquire()
    assert time.monotonic() - started >= 0.3
    assert str(os.getpid()) in err.value.details["holder"]
    started = time.monotonic()
    with pytest.raises(WorldLockedError):
        second.acquire(wait=0.0)  # a per-call bound overrides the lease's own
    assert time.monotonic() - started < 0.3


def test_a_waiting_acquire_takes_over_when_the_holder_releases(
    leases: Callable[..., Lease],
) -> None:
    first, second = leases(), leases(wait=10.0)
    first.acquire()
    timer = threading.Timer(0.2, first.release)
    timer.start()
    try:
        second.acquire()
    finally:
        timer.join()
    assert second.held and not first.held


def test_a_killed_holder_process_frees_the_lease(
    place: LeaseBackend, leases: Callable[..., Lease]
) -> None:
    if not place.cross_process:
        pytest.skip(f"a {place.kind} lease lives in one process")
    code = (
        "import sys, time\n"
        "from worldloop.lease import open_lease\n"
        f"lease = open_lease({place.url!r}, 'w')\n"
        "lease.acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=child_env()
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        lease = leases()
        with pytest.raises(WorldLockedError) as err:
            lease.acquire()
        assert err.value.details["holder"].endswith(f"pid {proc.pid}")
        assert lease.holder() == err.value.details["holder"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # the kernel dropped the dead holder's lock; Redis lets its key expire after the ttl
        lease.acquire(wait=place.expires * 3)
        assert lease.held
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
