"""Snapshots in shared memory: what the runner writes, a worker maps back, unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from worldloop.runner import shm


def test_a_snapshot_tree_comes_back_whole_with_read_only_arrays(tmp_path: Path) -> None:
    data = {
        "width": 10.0,
        "grass": np.arange(12, dtype=np.float32).reshape(3, 4),
        "entities": {"id": np.arange(5, dtype=np.int64), "pos": np.ones((5, 2), np.float32)},
        "empty": np.zeros(0, dtype=np.int32),
        "players": [{"player_id": "a", "entity_id": 3}],
        "_owner": {3: "a", 7: "b"},
        "tricky": {"__nd__": 1},
        "flag": True,
        "none": None,
    }
    path = tmp_path / "snap"
    shm.write(path, data)
    back = shm.read(path)
    assert back["_owner"] == {3: "a", 7: "b"}  # integer keys stay integers
    assert back["tricky"] == {"__nd__": 1}  # a dict that looks like a reference stays a dict
    assert back["players"] == data["players"] and back["flag"] is True and back["none"] is None
    np.testing.assert_array_equal(back["grass"], data["grass"])
    np.testing.assert_array_equal(back["entities"]["pos"], data["entities"]["pos"])
    assert back["grass"].dtype == np.float32 and back["empty"].shape == (0,)
    with pytest.raises(ValueError):
        back["grass"][0, 0] = 1.0  # mapped read-only: no worker can change a snapshot
    path.unlink()  # the runner removes old files; a mapping already made stays whole
    assert float(back["grass"][2, 3]) == 11.0


def test_a_file_that_is_not_a_snapshot_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"not a snapshot at all, no")
    with pytest.raises(ValueError):
        shm.read(bad)
    with pytest.raises(TypeError):
        shm.write(tmp_path / "obj", {"a": np.array([object()], dtype=object)})


def test_the_snapshot_description_travels_in_the_file(tmp_path: Path) -> None:
    """A worker that never heard the feed rebuilds a snapshot from the file alone."""
    meta = {"tick": 42, "sim_time": 2.1, "created_at": 1.5, "summary": {"tags": {"b", "a"}}}
    shm.write(tmp_path / "snap", {"x": np.arange(3)}, meta)
    data, back = shm.read_meta(tmp_path / "snap")
    assert back == {**meta, "summary": {"tags": ["a", "b"]}}  # JSON-able, as the feed sends it
    np.testing.assert_array_equal(data["x"], np.arange(3))
    shm.write(tmp_path / "bare", {"x": 1})
    assert shm.read_meta(tmp_path / "bare") == ({"x": 1}, {})


def test_arrays_and_integer_keys_deep_in_lists_and_dicts_come_back(tmp_path: Path) -> None:
    """The decoded document is rebuilt in place: references at every depth, in a list of
    records, in a list in a list, under a dict with integer keys, become arrays and dicts."""
    data = {
        "rows": [
            {"name": "a", "ids": np.arange(3), "owner": {1: "x"}},
            [np.ones(2, np.float32), {"deep": [{2: "y"}, "s", 4]}],
        ],
        "by_id": {5: {"ids": np.arange(2), "tags": ["t"]}},
    }

    def check(back: dict[str, object]) -> None:
        rows = back["rows"]
        assert isinstance(rows, list) and rows[0]["name"] == "a"
        np.testing.assert_array_equal(rows[0]["ids"], np.arange(3))
        assert rows[0]["owner"] == {1: "x"}
        np.testing.assert_array_equal(rows[1][0], np.ones(2, np.float32))
        assert rows[1][1] == {"deep": [{2: "y"}, "s", 4]}
        by_id = back["by_id"]
        assert isinstance(by_id, dict) and list(by_id) == [5] and by_id[5]["tags"] == ["t"]
        np.testing.assert_array_equal(by_id[5]["ids"], np.arange(2))

    shm.write(tmp_path / "snap", data)
    check(shm.read(tmp_path / "snap"))
    check(shm.unpack(shm.pack(data)))
