"""Placing worlds over runners (worldloop.placement): weighted rendezvous, bounded and sticky."""

from __future__ import annotations

from collections import Counter

from worldloop.placement import Runner, loads, place, quotas, ranking

WORLDS = [f"w{i:03d}" for i in range(30)]


def runners(n: int, **capacity: float) -> list[Runner]:
    return [Runner(f"r{i}", capacity=capacity.get(f"r{i}", 1.0)) for i in range(n)]


def test_thirty_worlds_over_three_runners_are_balanced_within_one() -> None:
    rs = runners(3)
    for worlds in (WORLDS, [*WORLDS, "extra"], WORLDS[:7], [f"x{i}" for i in range(100)]):
        counts = loads(place(worlds, rs), rs)
        assert sum(counts.values()) == len(worlds)
        assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_capacity_weights_the_shares_and_zero_runs_nothing() -> None:
    rs = [Runner("big", capacity=2.0), Runner("small"), Runner("web", capacity=0.0)]
    counts = loads(place(WORLDS, rs), rs)
    assert counts == {"big": 20, "small": 10, "web": 0}
    assert place(WORLDS, [Runner("web", capacity=0.0)]) == {}
    assert quotas(5, [Runner("a"), Runner("b")]) in ({"a": 3, "b": 2}, {"a": 2, "b": 3})


def test_every_process_computes_the_same_placement() -> None:
    rs = runners(4)
    first = place(WORLDS, rs)
    assert place(list(reversed(WORLDS)), list(reversed(rs))) == first
    assert ranking("w001", rs) == ranking("w001", list(reversed(rs)))


def test_a_runner_leaving_moves_only_its_own_worlds() -> None:
    rs = runners(3)
    before = place(WORLDS, rs)
    after = place(WORLDS, rs[:2], before)
    moved = {w for w in WORLDS if after[w] != before[w]}
    assert moved == {w for w in WORLDS if before[w] == "r2"}
    assert sorted(Counter(after.values()).values()) == [15, 15]


def test_a_runner_joining_takes_only_its_share() -> None:
    rs = runners(3)
    before = place(WORLDS, rs)
    joined = [*rs, Runner("r3")]
    after = place(WORLDS, joined, before)
    moved = {w for w in WORLDS if after[w] != before[w]}
    assert all(after[w] == "r3" for w in moved)
    assert len(moved) == loads(after, joined)["r3"] in (7, 8)


def test_a_lone_world_stays_where_it_runs() -> None:
    rs = runners(2)
    for holder in ("r0", "r1"):
        assert place(["only"], rs, {"only": holder}) == {"only": holder}
    # everything on one runner at first (it started alone): the others get their share
    piled = place(WORLDS, rs, dict.fromkeys(WORLDS, "r0"))
    assert sorted(Counter(piled.values()).values()) == [15, 15]
    # a holder that is no runner any more (it died) holds nothing
    assert set(place(WORLDS, rs, dict.fromkeys(WORLDS, "gone")).values()) == {"r0", "r1"}
