"""worldloop.api.jsonout: answers byte for byte as ``flask.jsonify`` makes them, whichever path
(orjson, or the app's provider) encodes them."""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest
from flask import Flask, jsonify
from flask.json.provider import DefaultJSONProvider

from worldloop.api import jsonout
from worldloop.api.jsonout import json_response


def _same(app: Flask, data: Any) -> None:
    with app.app_context():
        want = jsonify(data)
        for got in (json_response(data), json_response(data, app)):
            assert got.get_data() == want.get_data()
            assert list(got.headers.items()) == list(want.headers.items())
            assert got.status == want.status
            assert type(got) is type(want)


def _float(rnd: random.Random) -> float:
    pick = rnd.random()
    if pick < 0.4:
        return float(struct.unpack("d", struct.pack("Q", rnd.getrandbits(64)))[0])
    if pick < 0.8:
        return float(10 ** rnd.uniform(-7, 19) * rnd.choice((1, -1)))
    edges = [0.0, -0.0, 1e-4, 9.99e-5, 1e16, 9.999999999999998e15, 0.1, 1 / 3, float("inf")]
    return rnd.choice([*edges, float("nan")])


def _text(rnd: random.Random) -> str:
    chars = [rnd.randint(32, 126)] * 30 + [rnd.randint(0, 31), 127, rnd.randint(128, 0x2100)]
    return "".join(chr(rnd.choice(chars)) for _ in range(rnd.randint(0, 6)))


def _value(rnd: random.Random, depth: int = 0) -> Any:
    pick = rnd.random()
    if depth < 4 and pick < 0.15:
        return {_text(rnd): _value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))}
    if depth < 4 and pick < 0.25:
        return [_value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    if pick < 0.45:
        return _float(rnd)
    if pick < 0.6:
        ints = [rnd.randint(-1000, 1000), 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]
        return rnd.choice([*ints, True, False, None, (1, "a")])
    return _text(rnd)


def test_random_data_is_answered_as_jsonify_answers_it() -> None:
    app = Flask(__name__)
    rnd = random.Random(7)
    taken = 0
    for _ in range(3000):
        data = {"a": _value(rnd), "b": [_value(rnd), _value(rnd)]}
        taken += jsonout._plain(data)
        _same(app, data)
    assert 300 < taken < 2700  # both paths were exercised


@pytest.mark.parametrize(
    "data",
    [
        {"command_id": "0a1b", "status": "queued", "tick": 405},
        {"x": 5.0, "y": 1e-05, "z": 1e16, "w": 123456789012345.6, "n": None, "t": True},
        {"é": "ü", "ctl": "a\nb\x7f", "q": 'say "hi" \\ /'},
        {"b": 1, "a": {"d": [1, 2.5, "x"], "c": ()}, "B": 2**70},
        "text",
        None,
        [float("nan"), float("inf"), -0.0],
    ],
)
def test_known_shapes_are_answered_as_jsonify_answers_them(data: Any) -> None:
    _same(Flask(__name__), data)


def test_deep_wide_and_cyclic_data_take_the_providers_path() -> None:
    app = Flask(__name__)
    deep: list[Any] = []
    inner = deep
    for _ in range(300):  # deeper than orjson encodes
        inner.append([])
        inner = inner[0]
    _same(app, deep)
    _same(app, {str(i): i for i in range(jsonout.MAX_NODES + 10)})
    cycle: list[Any] = []
    cycle.append(cycle)
    with app.app_context(), pytest.raises(ValueError, match="Circular"):
        json_response(cycle)


def test_debug_mode_and_settings_of_the_provider_are_followed() -> None:
    app = Flask(__name__)
    data = {"b": [1, {"z": 2, "a": None}], "a": "x"}
    app.debug = True  # indented, as jsonify is in debug mode
    _same(app, data)
    app.debug = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    _same(app, data)
    app.json.compact = False  # type: ignore[attr-defined]
    _same(app, data)


def test_an_apps_own_provider_encodes_its_answers() -> None:
    class Upper(DefaultJSONProvider):
        def dumps(self, obj: Any, **kwargs: Any) -> str:
            return super().dumps(obj, **kwargs).upper()

    app = Flask(__name__)
    app.json = Upper(app)
    with app.app_context():
        assert json_response({"a": "b"}).get_data() == b'{"A":"B"}\n'
    _same(app, {"a": "b"})
