"""The server accepts exactly what its /openapi.json allows (issue 10: schemathesis' ``all``
checks, ST202 "schema-valid request rejected" and ST101 "server error"): for each parameter
and body field that a fuzz run caught, values on both sides of the documented bounds are
judged by the served document (JSON Schema, as schemathesis reads it) and sent to the server,
and the two must agree.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
from flask import Flask
from flask.testing import FlaskClient

from worldloop import Settings
from worldloop.bus.local import LocalBus
from worldloop.demo import create_app

from .support import wait_for

ADMIN = {"Authorization": "Bearer admin-secret-0123456"}
LONG_POLL_MAX = 0.5
STREAM_MAX_LIMIT = 700


@pytest.fixture
def app(tmp_path: Any) -> Iterator[Flask]:
    os.environ.pop("WERKZEUG_RUN_MAIN", None)
    flask_app = create_app(
        {
            "TESTING": True,
            "WORLDLOOP_HANDLE_SIGNALS": False,
            "WORLDLOOP_ADMIN_TOKEN": "admin-secret-0123456",
            "WORLDLOOP_RATE_HZ": 50.0,
            "WORLDLOOP_LONG_POLL_MAX": LONG_POLL_MAX,
            "WORLDLOOP_STREAM_MAX_LIMIT": STREAM_MAX_LIMIT,
            "WORLDLOOP_STREAM_MAX_SECONDS": 0.2,
            "WORLDLOOP_COMMAND_WAIT": 1.0,
            "MEADOW_ENTITIES": 300,
            "MEADOW_WIDTH": 400.0,
            "MEADOW_HEIGHT": 300.0,
        },
        instance_path=str(tmp_path / "instance"),
    )
    yield flask_app
    flask_app.extensions["worldloop"].stop()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def doc(client: FlaskClient) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/openapi.json").json
    return document


def _validator(doc: dict[str, Any], schema: dict[str, Any]) -> Any:
    return jsonschema_rs.validator_for({**schema, "components": doc["components"]})


def param_fits(doc: dict[str, Any], path: str, name: str, value: str) -> bool:
    """Whether the document allows query parameter ``name`` = ``value`` on GET ``path`` (an
    empty value only with ``allowEmptyValue``; a value read as JSON first when it parses as a
    number, as a query string carries it)."""
    params = doc["paths"][path]["get"]["parameters"]
    param = next(p for p in params if p["name"] == name and p["in"] == "query")
    if value == "":
        return bool(param.get("allowEmptyValue"))
    schema = param["schema"]
    if schema.get("type") in ("integer", "number"):
        try:
            number = float(value)
        except ValueError:
            return False
        candidate: Any = int(number) if number.is_integer() and "." not in value else number
        return bool(_validator(doc, schema).is_valid(candidate))
    return bool(_validator(doc, schema).is_valid(value))


def body_fits(doc: dict[str, Any], path: str, body: dict[str, Any]) -> bool:
    schema = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return bool(_validator(doc, schema).is_valid(body))


def join(client: FlaskClient, name: str = "ann") -> tuple[dict[str, str], int]:
    """A new player's Authorization header and avatar id."""
    resp = client.post("/api/v1/players", json={"name": name})
    assert resp.status_code == 201, resp.json
    return {"Authorization": f"Bearer {resp.json['token']}"}, int(resp.json["entity_id"])


# -- query parameters --------------------------------------------------------------------------

BBOXES = [
    ("100,50,250,200", True),
    ("250,200,100,50", True),  # any two opposite corners
    ("250,50,100,200", True),
    ("0,0,2e9,-3e9", True),  # beyond ±1e9: clamped
    ("1e999,0,0,1", True),  # a decimal number too large for a float: clamped too
    ("+1,.5,2.,3E2", True),
    ("5,5,5,5", True),  # a point: nothing in it
    ("", True),  # the whole world
    ("a,b,c,d", False),
    ("1,2,3", False),
    ("0,0,10,nan", False),
    ("0,0,inf,10", False),
    ("1,2,3,4\n", False),
    (" 1,2,3,4", False),
    ("1_0,0,20,20", False),
    ("\u0661,2,3,4", False),  # an Arabic-Indic digit: float() reads it, the pattern does not
]


@pytest.mark.parametrize(("bbox", "valid"), BBOXES)
def test_bbox_is_accepted_exactly_when_the_document_allows_it(
    client: FlaskClient, doc: dict[str, Any], bbox: str, valid: bool
) -> None:
    """Found by fuzzing (ST202): bbox was a plain string in the document, the server wanted
    x0<x1, y0<y1 and values within ±1e9."""
    for path in ("/api/v1/entities", "/api/v1/frame", "/api/v1/stream"):
        assert param_fits(doc, path, "bbox", bbox) is valid, path
        resp = client.get(path, query_string={"bbox": bbox, "limit": 5})
        assert resp.status_code == (200 if valid else 400), (path, resp.data[:300])
        resp.close()


def test_a_bbox_is_normalized_from_its_corners(client: FlaskClient) -> None:
    client.post("/api/v1/admin/pause", headers=ADMIN)
    one = client.get("/api/v1/entities?bbox=100,50,250,200&limit=1000").json
    other = client.get("/api/v1/entities?bbox=250,50,100,200&limit=1000").json
    assert one["items"] and one == other
    frame = client.get("/api/v1/frame?bbox=250,200,100,50").json
    assert frame["bbox"] == [100.0, 50.0, 250.0, 200.0]
    everything = client.get("/api/v1/entities?bbox=-5e9,-5e9,5e9,5e9&limit=1000").json
    assert everything == client.get("/api/v1/entities?limit=1000").json
    assert client.get("/api/v1/entities?bbox=5,5,5,5").json["items"] == []


@pytest.mark.parametrize(
    ("cursor", "valid"),
    [
        *[("0", True), ("42", True), ("99999999999999999999999", True), ("", True)],
        *[("-1", False), ("abc", False), ("\u00b2", False), ("1 ", False)],
    ],
)
def test_cursor_is_accepted_exactly_when_the_document_allows_it(
    client: FlaskClient, doc: dict[str, Any], cursor: str, valid: bool
) -> None:
    assert param_fits(doc, "/api/v1/entities", "cursor", cursor) is valid
    resp = client.get("/api/v1/entities", query_string={"cursor": cursor})
    assert resp.status_code == (200 if valid else 400), resp.data[:300]
    if cursor == "99999999999999999999999":  # beyond every id: the last page
        assert resp.json["items"] == [] and resp.json["next_cursor"] is None


def test_bounds_from_settings_are_in_the_served_document(
    client: FlaskClient, doc: dict[str, Any]
) -> None:
    """Found by fuzzing (ST202): ``timeout`` above WORLDLOOP_LONG_POLL_MAX and ``limit`` above
    WORLDLOOP_STREAM_MAX_LIMIT were refused although the document allowed them."""
    cases = [
        ("/api/v1/world/snapshot", "timeout", LONG_POLL_MAX, "0.5", "0.51"),
        ("/api/v1/frame", "limit", STREAM_MAX_LIMIT, "700", "701"),
        ("/api/v1/stream", "limit", STREAM_MAX_LIMIT, "700", "701"),
    ]
    for path, name, bound, at, above in cases:
        params = doc["paths"][path]["get"]["parameters"]
        schema = next(p for p in params if p["name"] == name)["schema"]
        assert schema["maximum"] == bound
        assert param_fits(doc, path, name, at) and not param_fits(doc, path, name, above)
        ok = client.get(path, query_string={name: at})
        assert ok.status_code == 200, ok.data[:200]
        ok.close()
        resp = client.get(path, query_string={name: above})
        assert resp.status_code == 400 and resp.json["error"]["details"]["param"] == name


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/v1/world/snapshot", "after_tick=&timeout="),
        ("/api/v1/frame", "hz=&limit=&bbox="),
        ("/api/v1/stream", "hz=&limit=&bbox="),
        ("/api/v1/entities", "limit=&cursor=&bbox="),
    ],
)
def test_empty_values_are_documented_as_allowed(
    client: FlaskClient, doc: dict[str, Any], path: str, query: str
) -> None:
    """Found by fuzzing (ST201 "schema-violating request accepted"): ``?hz=&limit=`` means
    absent to the server, but the document typed them as numbers only."""
    for name in (part.split("=")[0] for part in query.split("&")):
        assert param_fits(doc, path, name, ""), name
    resp = client.get(f"{path}?{query}")
    assert resp.status_code == 200
    resp.close()


def test_an_empty_if_none_match_is_no_condition(client: FlaskClient) -> None:
    for path in ("/api/v1/world/snapshot", "/api/v1/frame"):
        resp = client.get(path, headers={"If-None-Match": ""})
        assert resp.status_code == 200 and resp.data, path


# -- bodies --------------------------------------------------------------------------------------

NAMES = [
    ("ann", True),
    (" ann ", True),
    ("x" * 32, True),
    ("\u3000", True),  # an ideographic space is a character, not a blank
    ("", False),
    ("   ", False),
    ("x" * 33, False),
    ("a\u0000b", False),
    ("ann\n", False),
]


@pytest.mark.parametrize(("name", "valid"), NAMES)
def test_a_name_is_accepted_exactly_when_the_document_allows_it(
    client: FlaskClient, doc: dict[str, Any], name: str, valid: bool
) -> None:
    """Found by fuzzing (ST202): ``{"name": ""}`` fitted the document but was refused."""
    assert body_fits(doc, "/api/v1/players", {"name": name}) is valid
    resp = client.post("/api/v1/players", json={"name": name})
    assert resp.status_code == (201 if valid else 422), resp.data[:300]
    if valid:
        assert resp.json["name"] == name.strip(" ")


TEXTS = [
    ("hello", True),
    ("x" * 200, True),
    ("a\nb", True),  # control characters become spaces
    ("\u3000", True),
    ("", False),
    ("  ", False),
    ("\t\x01 ", False),
    ("x" * 201, False),
    (" " * 199 + "xx", False),  # the length is the text's as sent
]


@pytest.mark.parametrize(("text", "valid"), TEXTS)
def test_say_text_is_accepted_exactly_when_the_document_allows_it(
    client: FlaskClient, doc: dict[str, Any], text: str, valid: bool
) -> None:
    """Found by fuzzing (ST202): ``{"type": "say", "text": ""}`` fitted the document."""
    body = {"type": "say", "text": text}
    assert body_fits(doc, "/api/v1/commands", body) is valid
    resp = client.post("/api/v1/commands?wait=true", json=body, headers=join(client)[0])
    assert resp.status_code == (200 if valid else 422), resp.data[:300]
    if valid:
        assert resp.json["result"]["text"] == text.replace("\n", " ").strip(" ")


def test_integers_written_as_floats_are_integers(client: FlaskClient, doc: dict[str, Any]) -> None:
    """Found by fuzzing (ST202): JSON Schema's ``integer`` allows 556.0; strict models did not."""
    h, me = join(client)
    move = {"type": "move_to", "x": 1, "y": 2, "entity_id": float(me)}
    assert body_fits(doc, "/api/v1/commands", move)
    resp = client.post("/api/v1/commands?wait=true", json=move, headers=h)
    assert resp.status_code == 200, resp.data[:300]
    assert body_fits(doc, "/api/v1/forecast", {"ticks": 5.0})
    assert client.post("/api/v1/forecast", json={"ticks": 5.0}).status_code == 202
    assert client.post("/api/v1/admin/pause", headers=ADMIN).status_code == 200
    assert body_fits(doc, "/api/v1/admin/step", {"n": 3.0})
    tick = client.get("/api/v1/admin/status", headers=ADMIN).json["tick"]
    resp = client.post("/api/v1/admin/step", json={"n": 3.0}, headers=ADMIN)
    assert resp.status_code == 200 and resp.json["tick"] == tick + 3
    for bad in (3.5, True, "3", 1e300):
        assert not body_fits(doc, "/api/v1/admin/step", {"n": bad})
        resp = client.post("/api/v1/admin/step", json={"n": bad}, headers=ADMIN)
        assert resp.status_code == 422, bad


# -- the admin run's 5xx -----------------------------------------------------------------------


def test_a_forecast_asked_while_paused_is_refused_at_once(client: FlaskClient) -> None:
    """Found by fuzzing as the admin (ST101): with the world paused, POST /forecast waited 5 s
    for a tick that could not come, answered 503, and the forecast ran later on resume anyway.
    Now: 409 clock_state at once, and nothing is queued."""
    assert client.post("/api/v1/admin/pause", headers=ADMIN).status_code == 200
    started = time.monotonic()
    resp = client.post("/api/v1/forecast", json={"ticks": 10})
    assert time.monotonic() - started < 2.0
    assert resp.status_code == 409 and resp.json["error"]["code"] == "clock_state"
    assert client.get("/api/v1/admin/status", headers=ADMIN).json["queue_depth"] == 0
    resp = client.post("/api/v1/players", json={"name": "ann"})
    assert resp.status_code == 409 and resp.json["error"]["code"] == "clock_state"
    assert client.post("/api/v1/admin/resume", headers=ADMIN).status_code == 200
    assert client.post("/api/v1/forecast", json={"ticks": 10}).status_code == 202


def test_a_forecast_on_a_slow_clock_is_queued_not_a_503(
    client: FlaskClient, doc: dict[str, Any]
) -> None:
    """Found by fuzzing as the admin (ST101): at 0.01 Hz (a tick every 100 s) POST /forecast
    answered 503 "did not record the request in time", and the forecast was recorded at the
    next tick anyway. Now: 202 queued (documented), and it is recorded once the clock ticks."""
    app = client.application
    tick = client.post("/api/v1/admin/rate", json={"rate_hz": 0.01}, headers=ADMIN).json["tick"]
    with contextlib.suppress(AssertionError):  # a tick due before the change may still come
        wait_for(lambda: app.extensions["worldloop"].runtime.tick > tick, 1.0)
    resp = client.post("/api/v1/forecast", json={"ticks": 10})
    if resp.status_code == 202 and "task_id" in resp.json:
        pytest.skip("the last fast tick took the request after all")
    assert resp.status_code == 202, resp.data[:300]
    assert resp.json["status"] == "queued" and resp.json["ticks"] == 10
    schema = doc["paths"]["/api/v1/forecast"]["post"]["responses"]["202"]["content"]
    assert _validator(doc, schema["application/json"]["schema"]).is_valid(resp.json)
    ticket = app.extensions["worldloop"].runtime.bus.ticket(resp.json["command_id"])
    assert ticket is not None and not ticket.done
    assert client.post("/api/v1/admin/rate", json={"rate_hz": 50}, headers=ADMIN).json
    assert ticket.wait(10.0) and ticket.outcome is not None and ticket.outcome.ok


def test_every_503_and_429_documents_retry_after(client: FlaskClient, doc: dict[str, Any]) -> None:
    """Found by fuzzing (response_headers_conformance): 503s carry Retry-After, undocumented."""
    seen = 0
    for item in doc["paths"].values():
        for op in item.values():
            for status in ("429", "503"):
                if status in op["responses"]:
                    header = op["responses"][status]["headers"]["Retry-After"]
                    assert header["required"] is True
                    seen += 1
    assert seen > 10
    client.application.extensions["worldloop"].stop()
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.headers["Retry-After"].isdigit()


# -- settings ------------------------------------------------------------------------------------


def test_the_idempotency_bounds_are_settings_and_reach_the_queue(tmp_path: Any) -> None:
    env = {"WORLDLOOP_IDEMPOTENCY_KEYS": "3", "WORLDLOOP_IDEMPOTENCY_SECONDS": "7.5"}
    s = Settings.from_config(env)
    assert (s.idempotency_keys, s.idempotency_seconds) == (3, 7.5)
    assert (Settings().idempotency_keys, Settings().idempotency_seconds) == (10_000, 600.0)
    app = create_app(
        {
            "TESTING": True,
            "WORLDLOOP_HANDLE_SIGNALS": False,
            "WORLDLOOP_AUTOSTART": "never",
            "WORLDLOOP_STORE_URL": "memory://",
            **env,
        },
        instance_path=str(tmp_path / "instance"),
    )
    rt = app.extensions["worldloop"].runtime
    assert isinstance(rt.bus, LocalBus)
    queue = rt.bus._queue
    assert (queue._keys_max, queue._key_seconds) == (3, 7.5)
