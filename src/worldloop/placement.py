"""Which runner should run each world: weighted rendezvous hashing with bounded loads.

Pure arithmetic, no I/O: every process of a deployment computes the same answer from the
same two lists (the worlds of the catalog, the runners registered in Redis), so no one has to
hand placements out and nothing is stored.

- **Rendezvous (highest random weight) hashing, weighted by capacity**: each (world, runner)
  pair gets a score ``-capacity / ln(u)`` where ``u`` in (0, 1) is a hash of the pair; a world
  ranks the runners by score. A runner that joins or leaves changes only the rankings in which
  it stands, so only its share of worlds has to move (Thaler & Ravishankar; the logarithm
  makes the share of a runner proportional to its capacity, Schindelhauer & Schomaker).
- **Bounded loads**: plain rendezvous with 30 worlds on 3 runners gives ~10 each with a spread
  of several worlds. Each runner gets a quota instead, proportional to its capacity, with the
  quotas adding up to the number of worlds (largest remainders), and each world, in a fixed
  order, goes to its best-ranked runner that still has room. Loads are then within one world
  of the capacity-proportional share.
- **Sticky**: a runner that runs worlds now keeps those that fit its quota, so a runner that
  joins takes only its share (from the runners over their new quota), one that leaves gives
  away only its own, and a lone world never moves between equal runners just because one
  more joined. A move costs the world a pause (final snapshot, release, recovery elsewhere).

The lease and the store's epoch, not the placement, make ownership exclusive: two processes
that briefly disagree (one has not seen a new runner yet) can at worst both *want* a world;
only one can hold its lease.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Runner:
    """A process that may run worlds, as it registered itself (worldloop.registry)."""

    id: str
    """Unique per process start (host, pid and a random part)."""
    host: str = ""
    pid: int = 0
    capacity: float = 1.0
    """Its weight: twice the capacity, twice the worlds. 0: it runs none."""

    def describe(self) -> dict[str, object]:
        return {"id": self.id, "host": self.host, "pid": self.pid, "capacity": self.capacity}


def _unit(world: str, runner: str) -> float:
    """A uniform number in (0, 1) for the pair, the same in every process and Python run."""
    digest = hashlib.blake2b(f"{world}\x00{runner}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2.0**64


def score(world: str, runner: Runner) -> float:
    """The pair's weighted rendezvous score: higher is preferred."""
    if runner.capacity <= 0:
        return -math.inf
    return -runner.capacity / math.log(_unit(world, runner.id))


def ranking(world: str, runners: Iterable[Runner]) -> list[Runner]:
    """The runners with capacity, best first for ``world`` (ties by id)."""
    able = [r for r in runners if r.capacity > 0]
    return sorted(able, key=lambda r: (-score(world, r), r.id))


def quotas(
    count: int, runners: Sequence[Runner], held: Mapping[str, int] | None = None
) -> dict[str, int]:
    """How many of ``count`` worlds each runner takes: proportional to capacity, adding up to
    ``count``. The worlds left over by rounding go to the largest remainders; among equal
    remainders, to the runners that hold more worlds now (``held``: so a lone world stays
    where it runs), then by id. Runners without capacity take none."""
    able = sorted((r for r in runners if r.capacity > 0), key=lambda r: r.id)
    given = {r.id: 0 for r in runners}
    total = sum(r.capacity for r in able)
    if not able or count <= 0:
        return given
    now = held or {}
    exact = {r.id: count * r.capacity / total for r in able}
    for rid, share in exact.items():
        given[rid] = math.floor(share + 1e-9)
    left = count - sum(given.values())

    def order(rid: str) -> tuple[float, int, str]:
        return (-round(exact[rid] - given[rid], 9), -now.get(rid, 0), rid)

    for rid in sorted(exact, key=order)[:left]:
        given[rid] += 1
    return given


def place(
    worlds: Iterable[str], runners: Sequence[Runner], holders: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Each world's runner id; a world is absent when no runner has capacity.

    ``holders`` (world -> runner id) are the runners that run worlds now: a holder keeps as
    many of its worlds as its quota allows (those it ranks highest), so only a runner's surplus
    and the worlds of runners that left move. The others go, in a fixed order (by their best
    score, highest first), each to its best-ranked runner with quota left."""
    names = sorted(set(worlds))
    able = [r for r in runners if r.capacity > 0]
    if not able:
        return {}
    ids = {r.id for r in able}
    current = {w: h for w, h in (holders or {}).items() if w in names and h in ids}
    held: dict[str, int] = {}
    for rid in current.values():
        held[rid] = held.get(rid, 0) + 1
    room = quotas(len(names), able, held)
    placed: dict[str, str] = {}
    for runner in sorted(able, key=lambda r: r.id):  # the holders keep what fits their quota
        mine = sorted(
            (w for w, h in current.items() if h == runner.id), key=lambda w: (-score(w, runner), w)
        )
        for world in mine[: room[runner.id]]:
            placed[world] = runner.id
        room[runner.id] -= min(len(mine), room[runner.id])
    rest = [w for w in names if w not in placed]
    ranked = {w: ranking(w, able) for w in rest}
    for world in sorted(rest, key=lambda w: (-score(w, ranked[w][0]), w)):
        for runner in ranked[world]:
            if room[runner.id] > 0:
                room[runner.id] -= 1
                placed[world] = runner.id
                break
    return placed


def loads(placed: dict[str, str], runners: Sequence[Runner]) -> dict[str, int]:
    """How many worlds each runner got (0 for those that got none)."""
    counts = {r.id: 0 for r in runners}
    for rid in placed.values():
        counts[rid] = counts.get(rid, 0) + 1
    return counts
