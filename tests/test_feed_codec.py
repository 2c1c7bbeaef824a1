"""The feed's snapshot bytes (bus/feed_codec.py): shuffled + deflated losslessly for large
worlds, raw for small ones and at level 0, entries of the raw layout still read; on Redis, a
worker that reads several entries at once decodes only the newest, shows it, then resolves the
tickets of all of them."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.redis_support import REDIS_URL
from tests.test_redis_bus import until
from worldloop.bus import feed_codec
from worldloop.bus.feed_codec import MAGIC, decode, encode
from worldloop.bus.redis import RedisBus
from worldloop.commands import Outcome
from worldloop.lease.redis import connect
from worldloop.runner.shm import pack
from worldloop.snapshot import Snapshot


def tree(n: int) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    return {
        "width": 500.0,
        "names": ["a", "b"],
        "entities": {
            "id": np.arange(n, dtype=np.int64),
            "kind": (np.arange(n) % 3).astype(np.int8),
            "pos": rng.uniform(0, 500, (n, 2)),
            "age": rng.integers(0, 1000, n, dtype=np.int32),
            "alive": np.ones(n, dtype=bool),
        },
        "grid": np.arange(12, dtype=">u2").reshape(3, 4),  # big-endian, 2-D
        "every_other": np.arange(2 * n, dtype=np.float32)[::2],  # not contiguous
        "empty": np.zeros((0, 3)),
        "pairs": {(1, 2): np.arange(3, dtype=np.uint32)},
    }


def same(a: Any, b: Any) -> None:
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and b.dtype == a.dtype and b.shape == a.shape
        assert np.array_equal(a, b) and not b.flags.writeable
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b)
        for k in a:
            same(a[k], b[k])
    else:
        assert a == b


def test_a_large_tree_is_shuffled_deflated_and_comes_back_bit_for_bit() -> None:
    data = tree(20_000)
    raw, packed = pack(data), encode(data)
    assert packed.startswith(MAGIC)
    assert len(packed) < 0.7 * len(raw)
    same(data, decode(packed))
    same(data, decode(raw))  # an entry written before compression is read as it was


def test_small_bodies_and_level_zero_stay_raw() -> None:
    small = tree(10)
    assert encode(small) == pack(small)
    big = tree(20_000)
    assert encode(big, level=0) == pack(big)


def test_the_shuffle_is_what_makes_it_small() -> None:
    """Plain deflate of the raw layout at the same level gives much more (the reason for it)."""
    data = tree(20_000)
    plain = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    unshuffled = len(plain.compress(pack(data)) + plain.flush())
    assert len(encode(data)) < 0.85 * unshuffled


def test_damaged_entries_raise_value_error() -> None:
    packed = encode(tree(20_000))
    with pytest.raises(ValueError):
        decode(packed[:-100])
    with pytest.raises(ValueError):
        decode(packed[:4] + b"\x09" + packed[5:])  # unknown version
    with pytest.raises(ValueError):
        decode(b"nonsense")


@pytest.fixture
def buses(prefix: str) -> Iterator[list[RedisBus]]:
    made: list[RedisBus] = []
    yield made
    for b in made:
        b.close()


@pytest.mark.redis
def test_a_reader_behind_decodes_only_the_newest_and_resolves_every_ticket(
    buses: list[RedisBus], prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    gate = threading.Event()

    def held_decode(buf: bytes) -> dict[str, Any]:
        decoded.append(len(buf))
        assert gate.wait(10)  # the first entry holds the reader while three more arrive
        return feed_codec.decode(buf)

    monkeypatch.setattr("worldloop.bus.redis.decode", held_decode)
    owner = RedisBus(connect(REDIS_URL), "w", prefix=prefix, read=False)
    reader = RedisBus(connect(REDIS_URL), "w", prefix=prefix)
    buses += [owner, reader]
    tickets = [reader.put("kick", {"i": i}) for i in range(4)]
    owner.start_at("0-0", 1)
    taken = owner.take()
    assert [c.id for c in taken] == [t.id for t in tickets]
    data = tree(20_000)["entities"]
    for tick, command in enumerate(taken, start=1):
        owner.publish(Snapshot("w", tick, tick / 20, data, {"n": tick}), [Outcome(command, True)])
        assert owner.flush(10)
        if tick == 1:
            until(lambda: len(decoded) == 1)
    entries: Any = owner.client.xrange(owner.feed_key)
    assert len(entries) == 4 and all(e[1][b"snap"].startswith(MAGIC) for e in entries)
    gate.set()
    until(lambda: all(t.done for t in tickets))
    assert [t.tick for t in tickets] == [1, 2, 3, 4]
    assert reader.latest is not None and reader.latest.tick == 4
    same(data, reader.latest.data)
    assert len(decoded) == 2  # tick 1, then only tick 4 of the three read together
